"""Fuzz target for the SPDY/3.1 frame parser and header decoder (make fuzz; atheris, libFuzzer inside).

Any input must either parse or raise spdy.ProtocolError: any other exception, a hang or a crash
is a finding. `python -m tests.support.fuzz_spdy CORPUS_DIR -max_total_time=N` runs it; the
corpus directory gets a few valid frames as seeds first.
"""

from __future__ import annotations

import os
import sys

from pycrio.streaming import spdy


def seeds() -> list[bytes]:
    enc = spdy.HeaderEncoder()
    return [
        spdy.encode_syn_stream(enc, 1, {"streamtype": ["error"]})
        + spdy.encode_syn_stream(enc, 3, {"streamtype": ["data"], "port": ["80"], "requestid": ["0"]}),
        spdy.encode_data(1, b"hello", fin=True) + spdy.encode_ping(1) + spdy.encode_window_update(0, 4096),
        spdy.encode_settings({7: 1 << 20}) + spdy.encode_rst_stream(3, 5) + spdy.encode_goaway(3),
    ]


def one_input(data: bytes) -> None:
    parser = spdy.FrameParser(max_data_length=1 << 16)
    decoder = spdy.HeaderDecoder()
    try:
        # fed in two pieces, so that partial frames are exercised too
        cut = data[0] % (len(data) + 1) if data else 0
        for piece in (data[:cut], data[cut:]):
            for frame in parser.feed(piece):
                if isinstance(frame, spdy.Control):
                    spdy.decode(frame, decoder)
    except spdy.ProtocolError:
        pass


def main() -> None:
    import atheris

    corpus = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus:
        os.makedirs(corpus, exist_ok=True)
        for i, seed in enumerate(seeds()):
            with open(os.path.join(corpus, f"seed-{i}"), "wb") as f:
                f.write(seed)
    atheris.instrument_func(spdy.FrameParser.feed)
    for fn in (spdy.decode, spdy.parse_header_block, spdy.HeaderDecoder.decode, one_input):
        atheris.instrument_func(fn)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
