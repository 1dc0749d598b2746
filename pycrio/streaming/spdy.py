"""SPDY/3.1 frames: parsing and encoding, and the zlib header blocks (docs/streaming.md).

Sans-IO: `FrameParser.feed(bytes)` returns whole frames; the `encode_*` functions return
bytes. Header blocks go through one compression context per direction for the whole
connection (`HeaderEncoder`, `HeaderDecoder`), primed with the SPDY/3 dictionary.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from pycrio.streaming.spdy_dict import DICTIONARY

VERSION = 3

# Control frame types.
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes.
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9
FRAME_TOO_LARGE = 11

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

SETTINGS_INITIAL_WINDOW_SIZE = 7
DEFAULT_WINDOW = 65536
MAX_WINDOW = 0x7FFFFFFF
MAX_LENGTH = 0xFFFFFF  # the 24-bit length field
MAX_CONTROL_LENGTH = 64 * 1024  # a control frame longer than this is refused (headers are tiny here)
MAX_HEADER_BLOCK = 64 * 1024  # decompressed header block limit (a zlib bomb stops here)
MAX_HEADERS = 100
HEADER = struct.Struct(">IBBH")  # first word, flags, length (24 bits as 8 + 16)


class ProtocolError(Exception):
    """The peer broke SPDY/3.1; stream_id 0 means the whole session (GOAWAY), else RST_STREAM."""

    def __init__(self, message: str, stream_id: int = 0, status: int = PROTOCOL_ERROR):
        super().__init__(message)
        self.stream_id = stream_id
        self.status = status


@dataclass
class Data:
    stream_id: int
    flags: int
    data: bytes


@dataclass
class Control:
    """A control frame as read off the wire; `decode()` turns it into one of the typed frames."""

    type: int
    flags: int
    payload: bytes
    version: int = VERSION


@dataclass
class SynStream:
    stream_id: int
    associated_id: int
    priority: int
    flags: int
    headers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class SynReply:
    stream_id: int
    flags: int
    headers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Headers:
    stream_id: int
    flags: int
    headers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class RstStream:
    stream_id: int
    status: int


@dataclass
class Settings:
    flags: int
    values: dict[int, int]


@dataclass
class Ping:
    id: int


@dataclass
class GoAway:
    last_good_stream_id: int
    status: int


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass
class Unknown:
    type: int


Frame = Data | SynStream | SynReply | Headers | RstStream | Settings | Ping | GoAway | WindowUpdate | Unknown


class FrameParser:
    """Splits a byte stream into Data and Control frames; checks the 8-byte headers and lengths."""

    def __init__(self, max_data_length: int = MAX_LENGTH):
        self.buf = bytearray()
        self.max_data_length = max_data_length

    def feed(self, data: bytes) -> list[Data | Control]:
        self.buf += data
        frames: list[Data | Control] = []
        while len(self.buf) >= 8:
            first, flags, len_hi, len_lo = HEADER.unpack_from(self.buf)
            length = (len_hi << 16) | len_lo
            control = bool(first & 0x80000000)
            if control:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise ProtocolError(f"unsupported SPDY version {version}", status=UNSUPPORTED_VERSION)
                if length > MAX_CONTROL_LENGTH:
                    raise ProtocolError(f"control frame of {length} bytes", status=FRAME_TOO_LARGE)
            elif length > self.max_data_length:
                raise ProtocolError(f"data frame of {length} bytes", first & 0x7FFFFFFF, FRAME_TOO_LARGE)
            if len(self.buf) < 8 + length:
                break
            payload = bytes(self.buf[8 : 8 + length])
            del self.buf[: 8 + length]
            if control:
                frames.append(Control(first & 0xFFFF, flags, payload))
            else:
                frames.append(Data(first & 0x7FFFFFFF, flags, payload))
        return frames


# ---------------------------------------------------------------- header blocks


class HeaderDecoder:
    """The receiving zlib context of a connection: one per direction, shared by every header block."""

    def __init__(self) -> None:
        self.z = zlib.decompressobj(zdict=DICTIONARY)

    def decode(self, block: bytes, stream_id: int) -> dict[str, list[str]]:
        try:
            raw = self.z.decompress(block, MAX_HEADER_BLOCK + 1)
        except zlib.error as e:
            raise ProtocolError(f"header block does not decompress: {e}") from e
        if len(raw) > MAX_HEADER_BLOCK or self.z.unconsumed_tail:
            raise ProtocolError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        return parse_header_block(raw, stream_id)


def parse_header_block(raw: bytes, stream_id: int = 0) -> dict[str, list[str]]:
    """An uncompressed name/value block: count, then (length, name, length, value) pairs; NUL splits values."""

    def need(n: int) -> None:
        if pos + n > len(raw):
            raise ProtocolError("truncated header block", stream_id)

    pos = 0
    need(4)
    (count,) = struct.unpack_from(">I", raw, pos)
    pos += 4
    if count > MAX_HEADERS:
        raise ProtocolError(f"{count} headers in one block", stream_id)
    headers: dict[str, list[str]] = {}
    for _ in range(count):
        need(4)
        (n,) = struct.unpack_from(">I", raw, pos)
        pos += 4
        need(n)
        name = raw[pos : pos + n].decode("latin-1")
        pos += n
        need(4)
        (n,) = struct.unpack_from(">I", raw, pos)
        pos += 4
        need(n)
        value = raw[pos : pos + n].decode("latin-1")
        pos += n
        if not name or name != name.lower():
            raise ProtocolError(f"header name {name!r} is empty or not lowercase", stream_id)
        if name in headers:
            raise ProtocolError(f"duplicate header {name!r}", stream_id)
        headers[name] = value.split("\0")
    if pos != len(raw):
        raise ProtocolError("trailing bytes after the header block", stream_id)
    return headers


def header_block(headers: dict[str, list[str]]) -> bytes:
    """The uncompressed block for headers (names lowercased, several values joined by NUL)."""
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        n, v = name.lower().encode("latin-1"), "\0".join(values).encode("latin-1")
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


class HeaderEncoder:
    """The sending zlib context of a connection; each block ends with a sync flush."""

    def __init__(self) -> None:
        self.z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zdict=DICTIONARY)

    def encode(self, headers: dict[str, list[str]]) -> bytes:
        return self.z.compress(header_block(headers)) + self.z.flush(zlib.Z_SYNC_FLUSH)


# ---------------------------------------------------------------- typed control frames


def _u31(payload: bytes, offset: int) -> int:
    return int.from_bytes(payload[offset : offset + 4], "big") & 0x7FFFFFFF


def decode(frame: Control, headers: HeaderDecoder) -> Frame:
    """The typed frame for a control frame; header blocks go through headers (in arrival order)."""
    p, t = frame.payload, frame.type

    def at_least(n: int) -> None:
        if len(p) < n:
            raise ProtocolError(f"control frame type {t} too short ({len(p)} bytes)")

    if t == SYN_STREAM:
        at_least(10)
        sid = _u31(p, 0)
        block = headers.decode(p[10:], sid)  # always decoded: the zlib context must advance
        if sid == 0:
            raise ProtocolError("SYN_STREAM for stream 0")
        return SynStream(sid, _u31(p, 4), p[8] >> 5, frame.flags, block)
    if t in (SYN_REPLY, HEADERS):
        at_least(4)
        sid = _u31(p, 0)
        block = headers.decode(p[4:], sid)
        return (SynReply if t == SYN_REPLY else Headers)(sid, frame.flags, block)
    if t == RST_STREAM:
        if len(p) != 8:
            raise ProtocolError(f"RST_STREAM of {len(p)} bytes")
        return RstStream(_u31(p, 0), int.from_bytes(p[4:8], "big"))
    if t == SETTINGS:
        at_least(4)
        count = int.from_bytes(p[:4], "big")
        if len(p) != 4 + 8 * count:
            raise ProtocolError(f"SETTINGS with {count} entries in {len(p)} bytes")
        values = {}
        for i in range(count):
            word, value = struct.unpack_from(">II", p, 4 + 8 * i)
            values[word & 0xFFFFFF] = value
        return Settings(frame.flags, values)
    if t == PING:
        if len(p) != 4:
            raise ProtocolError(f"PING of {len(p)} bytes")
        return Ping(int.from_bytes(p, "big"))
    if t == GOAWAY:
        if len(p) != 8:
            raise ProtocolError(f"GOAWAY of {len(p)} bytes")
        return GoAway(_u31(p, 0), int.from_bytes(p[4:8], "big"))
    if t == WINDOW_UPDATE:
        if len(p) != 8:
            raise ProtocolError(f"WINDOW_UPDATE of {len(p)} bytes")
        delta = _u31(p, 4)
        if delta == 0:
            raise ProtocolError("WINDOW_UPDATE with a zero delta", _u31(p, 0))
        return WindowUpdate(_u31(p, 0), delta)
    return Unknown(t)  # SPDY: unknown control frames are ignored


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError("control frame too long")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def encode_data(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    if len(data) > MAX_LENGTH:
        raise ValueError("data frame too long")
    return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def encode_syn_stream(
    enc: HeaderEncoder, stream_id: int, headers: dict[str, list[str]], flags: int = 0, priority: int = 0
) -> bytes:
    payload = struct.pack(">IIBB", stream_id, 0, (priority & 7) << 5, 0) + enc.encode(headers)
    return _control(SYN_STREAM, flags, payload)


def encode_syn_reply(enc: HeaderEncoder, stream_id: int, headers: dict[str, list[str]], flags: int = 0) -> bytes:
    return _control(SYN_REPLY, flags, struct.pack(">I", stream_id) + enc.encode(headers))


def encode_rst_stream(stream_id: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def encode_settings(values: dict[int, int], flags: int = 0) -> bytes:
    body = b"".join(struct.pack(">II", k & 0xFFFFFF, v) for k, v in values.items())
    return _control(SETTINGS, flags, struct.pack(">I", len(values)) + body)


def encode_ping(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def encode_goaway(last_good_stream_id: int, status: int = GOAWAY_OK) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_good_stream_id, status))


def encode_window_update(stream_id: int, delta: int) -> bytes:
    return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
