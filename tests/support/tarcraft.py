"""Crafting tar archives byte by byte (headers, PAX records, GNU long names) and raw zstd frames."""

from __future__ import annotations

import os
import struct

BLOCK = 512


def octal(value: int, width: int) -> bytes:
    """A NUL-terminated, zero-padded octal field of width bytes."""
    digits = format(value, "o").encode()
    if len(digits) > width - 1:
        raise ValueError(f"{value} does not fit {width} bytes in octal")
    return digits.rjust(width - 1, b"0") + b"\0"


def base256(value: int, width: int) -> bytes:
    """A GNU base-256 field: two's complement big-endian with the high bit of byte 0 set."""
    raw = (value % (1 << (8 * width))).to_bytes(width, "big")
    return bytes([raw[0] | 0x80]) + raw[1:]


def checksum(block: bytes) -> int:
    """The unsigned header sum, with the checksum field counted as spaces."""
    return sum(block[:148]) + 8 * 32 + sum(block[156:])


def header(
    name: str | bytes,
    *,
    type: bytes = b"0",
    size: int | bytes = 0,
    mode: int | bytes = 0o644,
    uid: int | bytes = 0,
    gid: int | bytes = 0,
    mtime: int | bytes = 0,
    linkname: str | bytes = b"",
    magic: bytes = b"ustar\x0000",
    devmajor: int | bytes = 0,
    devminor: int | bytes = 0,
    prefix: str | bytes = b"",
    chksum: bytes | None = None,
) -> bytes:
    """One 512-byte header; numeric arguments given as bytes are placed raw (for bad fields)."""

    def num(v: int | bytes, width: int) -> bytes:
        return v.ljust(width, b"\0")[:width] if isinstance(v, bytes) else octal(v, width)

    def text(v: str | bytes, width: int) -> bytes:
        raw = v.encode() if isinstance(v, str) else v
        if len(raw) > width:
            raise ValueError(f"{raw!r} is longer than {width} bytes")
        return raw.ljust(width, b"\0")

    blk = bytearray(BLOCK)
    blk[0:100] = text(name, 100)
    blk[100:108] = num(mode, 8)
    blk[108:116] = num(uid, 8)
    blk[116:124] = num(gid, 8)
    blk[124:136] = num(size, 12)
    blk[136:148] = num(mtime, 12)
    blk[156:157] = type
    blk[157:257] = text(linkname, 100)
    blk[257:265] = magic.ljust(8, b"\0")[:8]
    blk[329:337] = num(devmajor, 8)
    blk[337:345] = num(devminor, 8)
    blk[345:500] = text(prefix, 155)
    blk[148:156] = chksum if chksum is not None else octal(checksum(bytes(blk)), 7) + b" "
    return bytes(blk)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def entry(name: str | bytes, data: bytes = b"", **fields) -> bytes:
    """A header followed by its padded data (size defaults to len(data))."""
    fields.setdefault("size", len(data))
    return header(name, **fields) + pad(data)


def pax_record(key: str | bytes, value: str | bytes) -> bytes:
    """'<len> key=value\\n' where len counts the whole record, its own digits included."""
    k = key.encode() if isinstance(key, str) else key
    v = value.encode() if isinstance(value, str) else value
    body = b" " + k + b"=" + v + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def pax(records: dict | list, *, type: bytes = b"x", raw: bytes | None = None) -> bytes:
    """A PAX extended header ('x', or 'g' for global) with its records (or raw record bytes)."""
    items = records.items() if isinstance(records, dict) else records
    data = raw if raw is not None else b"".join(pax_record(k, v) for k, v in items)
    return entry("PaxHeaders/x", data, type=type)


def gnu_long(name: str | bytes, type: bytes = b"L") -> bytes:
    """A GNU long name ('L') or long link name ('K') header for the next entry."""
    raw = (name.encode() if isinstance(name, str) else name) + b"\0"
    return entry("././@LongLink", raw, type=type, magic=b"ustar  \0")


def end() -> bytes:
    """The end-of-archive marker: two zero blocks."""
    return b"\0" * (2 * BLOCK)


def zstd_raw(data: bytes) -> bytes:
    """A valid zstd frame holding data in raw (stored) blocks: no compressor needed."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out += bytes([0xA0]) + struct.pack("<I", len(data))  # single segment, 4-byte content size
    chunks = [data[i : i + 128 * 1024] for i in range(0, len(data), 128 * 1024)] or [b""]
    for i, chunk in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        out += (last | (len(chunk) << 3)).to_bytes(3, "little") + chunk
    return bytes(out)


def memfd(data: bytes) -> int:
    """A memfd holding data, positioned at its start (the caller closes it)."""
    fd = os.memfd_create("layer", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
