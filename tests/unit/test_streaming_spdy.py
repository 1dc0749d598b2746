"""The SPDY/3.1 frame codec against byte layouts written out from the SPDY/3 draft, and its limits."""

from __future__ import annotations

import struct
import zlib

import pytest

from pycrio.streaming import spdy
from pycrio.streaming.spdy_dict import DICTIONARY
from pycrio.streaming.status import exited, failed, status_json, status_text


def test_dictionary_is_the_draft_one():
    assert len(DICTIONARY) == 1423 and zlib.adler32(DICTIONARY) == 0xE3C6A7C2
    assert DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert DICTIONARY.endswith(b"charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def test_control_frame_layouts():
    # C bit, version 3, type; flags; 24-bit length; payload
    assert spdy.encode_ping(7) == bytes.fromhex("80030006 00000004 00000007")
    assert spdy.encode_rst_stream(5, spdy.CANCEL) == bytes.fromhex("80030003 00000008 00000005 00000005")
    assert spdy.encode_goaway(9, 1) == bytes.fromhex("80030007 00000008 00000009 00000001")
    assert spdy.encode_window_update(3, 65536) == bytes.fromhex("80030009 00000008 00000003 00010000")
    assert spdy.encode_settings({7: 1 << 20}) == bytes.fromhex("80030004 0000000c 00000001 00000007 00100000")


def test_data_frame_layout():
    assert spdy.encode_data(3, b"hi") == bytes.fromhex("00000003 00000002 6869")
    assert spdy.encode_data(3, b"", fin=True) == bytes.fromhex("00000003 01000000")


def test_parser_splits_partial_input():
    wire = spdy.encode_data(1, b"abc") + spdy.encode_ping(1) + spdy.encode_data(1, b"", fin=True)
    parser = spdy.FrameParser()
    frames = []
    for i in range(len(wire)):
        frames += parser.feed(wire[i : i + 1])
    assert [type(f).__name__ for f in frames] == ["Data", "Control", "Data"]
    assert frames[0].data == b"abc" and frames[2].flags == spdy.FLAG_FIN
    assert spdy.decode(frames[1], spdy.HeaderDecoder()) == spdy.Ping(1)


def test_header_block_round_trip_and_uncompressed_layout():
    block = spdy.header_block({"streamtype": ["error"], "port": ["80", "81"]})
    assert block == (
        struct.pack(">I", 2) + struct.pack(">I", 10) + b"streamtype" + struct.pack(">I", 5) + b"error"
        + struct.pack(">I", 4) + b"port" + struct.pack(">I", 5) + b"80\x0081"
    )  # fmt: skip
    enc, dec = spdy.HeaderEncoder(), spdy.HeaderDecoder()
    for i in range(3):  # one zlib context across frames, as on a connection
        frame = spdy.encode_syn_stream(enc, 2 * i + 1, {"streamtype": ["data"], "requestid": [str(i)]}, flags=1)
        (raw,) = spdy.FrameParser().feed(frame)
        syn = spdy.decode(raw, dec)
        assert syn == spdy.SynStream(2 * i + 1, 0, 0, 1, {"streamtype": ["data"], "requestid": [str(i)]})


def test_header_block_compressed_by_plain_zlib_with_the_dictionary():
    z = zlib.compressobj(zdict=DICTIONARY)
    payload = (
        struct.pack(">IIBB", 1, 0, 0, 0) + z.compress(spdy.header_block({"a": ["b"]})) + z.flush(zlib.Z_SYNC_FLUSH)
    )
    frame = struct.pack(">HHI", 0x8003, 1, len(payload)) + payload
    (raw,) = spdy.FrameParser().feed(frame)
    assert spdy.decode(raw, spdy.HeaderDecoder()).headers == {"a": ["b"]}


@pytest.mark.parametrize(
    "frame",
    [
        bytes.fromhex("80020001 00000000"),  # SPDY/2
        bytes.fromhex("80030003 00000004 00000001"),  # RST_STREAM too short
        bytes.fromhex("80030006 00000008 0000000100000001"),  # PING too long
        bytes.fromhex("80030009 00000008 00000001 00000000"),  # WINDOW_UPDATE of 0
        bytes.fromhex("80030004 00000008 00000002 00000000"),  # SETTINGS count lies
        bytes.fromhex("80030001 0000000c 00000001 00000000 0000") + b"zz",  # header block not zlib
    ],
)
def test_malformed_frames_are_protocol_errors(frame):
    parser = spdy.FrameParser()
    with pytest.raises(spdy.ProtocolError):
        for raw in parser.feed(frame):
            if isinstance(raw, spdy.Control):
                spdy.decode(raw, spdy.HeaderDecoder())


def test_control_frame_too_large_and_header_bomb():
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameParser().feed(bytes.fromhex("80030001 00ffffff"))
    z = zlib.compressobj(zdict=DICTIONARY)
    bomb = spdy.header_block({"x": ["a" * 200000]})
    payload = struct.pack(">IIBB", 1, 0, 0, 0) + z.compress(bomb) + z.flush(zlib.Z_SYNC_FLUSH)
    (raw,) = spdy.FrameParser().feed(struct.pack(">HHI", 0x8003, 1, len(payload)) + payload)
    with pytest.raises(spdy.ProtocolError, match="larger than"):
        spdy.decode(raw, spdy.HeaderDecoder())
    with pytest.raises(spdy.ProtocolError, match="lowercase"):
        spdy.parse_header_block(struct.pack(">I", 1) + struct.pack(">I", 1) + b"A" + struct.pack(">I", 0))
    pair = struct.pack(">I", 1) + b"a" + struct.pack(">I", 1) + b"1"
    with pytest.raises(spdy.ProtocolError, match="duplicate"):
        spdy.parse_header_block(struct.pack(">I", 2) + pair + pair)
    with pytest.raises(spdy.ProtocolError, match="truncated"):
        spdy.parse_header_block(struct.pack(">I", 2) + pair)


def test_unknown_control_types_are_ignored():
    (raw,) = spdy.FrameParser().feed(bytes.fromhex("8003000a 00000000"))
    assert spdy.decode(raw, spdy.HeaderDecoder()) == spdy.Unknown(10)


def test_status_documents_as_the_kubelet_writes_them():
    assert status_json(exited(0, ["true"])) == b'{"metadata":{},"status":"Success"}'
    doc = status_json(exited(3, ["sh", "-c", "exit 3"]))
    assert doc == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: '
        b'command \'sh -c exit 3\' exited with 3","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    )
    assert b'"reason":"InternalError"' in status_json(failed("boom")) and b'"code":500' in status_json(failed("boom"))
    assert status_text(exited(0, [])) == b"" and b"exited with 2" in status_text(exited(2, ["x"]))
