"""Layer extraction speed: MB/s (uncompressed) and files/s of native.extract_layer for gzip and zstd.

Usage: python benchmarks/extract_speed.py [--mb 200] [--files 30000] [--dir /var/tmp]
Run as root (ownership, devices). Prints one line per case; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import shutil
import subprocess
import tempfile
import time
import zlib

from pycrio import native

MB = 1_000_000


def text_corpus(size: int, rnd: random.Random) -> bytes:
    """Text-like bytes that compress about as well as typical layer content (~3-4x with gzip)."""
    words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz_./", k=rnd.randrange(2, 12))) for _ in range(4000)]
    out = io.BytesIO()
    while out.tell() < size:
        out.write(b" ".join(rnd.choices(words, k=64)) + b"\n")
    return out.getvalue()[:size]


def header(name: str, size: int, type: bytes = b"0", mode: int = 0o644) -> bytes:
    blk = bytearray(512)
    blk[0 : len(name)] = name.encode()
    blk[100:108] = b"%07o\0" % mode
    blk[108:116] = b"0000000\0"
    blk[116:124] = b"0000000\0"
    blk[124:136] = b"%011o\0" % size
    blk[136:148] = b"14000000000\0"
    blk[156:157] = type
    blk[257:265] = b"ustar\x0000"
    blk[148:156] = b" " * 8
    blk[148:156] = b"%06o\0 " % sum(blk)
    return bytes(blk)


def member(name: str, data: bytes, type: bytes = b"0") -> bytes:
    return header(name, len(data), type) + data + b"\0" * (-len(data) % 512)


def make_tar(total: int, files: int, rnd: random.Random) -> bytes:
    """files small files (about 40% of total, in 100 directories) plus a few big ones for the rest."""
    corpus = text_corpus(8 * MB, rnd)
    parts = [header(f"d{i}/", 0, b"5", 0o755) for i in range(100)]
    small = int(total * 0.4) // files
    for i in range(files):  # grouped by directory, as tar writes them
        n = rnd.randrange(0, 2 * small)
        off = rnd.randrange(0, len(corpus) - n)
        parts.append(member(f"d{i * 100 // files}/file{i}", corpus[off : off + n]))
    left = total - sum(map(len, parts))
    for i in range(4):
        chunk = b"".join(corpus[: 4 * MB] + rnd.randbytes(MB // 2) for _ in range(left // 4 // (4 * MB + MB // 2) + 1))
        parts.append(member(f"big{i}", chunk[: left // 4]))
    return b"".join(parts) + b"\0" * 1024


def many_tiny(files: int) -> bytes:
    parts = [header(f"t{i}/", 0, b"5", 0o755) for i in range(100)]
    parts += [member(f"t{i * 100 // files}/f{i}", b"x" * 100) for i in range(files)]
    return b"".join(parts) + b"\0" * 1024


def skipped(tar: bytes) -> bytes:
    """The same bytes as the data of a skipped AUFS entry: decode and hash only, nothing written."""
    return member(".wh..wh.bench", tar) + b"\0" * 1024


def timed_extract(blob: bytes, workdir: str, flags: int = 0) -> tuple[float, native.ExtractStats]:
    dest = tempfile.mkdtemp(dir=workdir)
    fd = os.memfd_create("layer")
    os.write(fd, blob)
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        t0 = time.perf_counter()
        st = native.extract_layer(fd, dest, flags=flags)
        return time.perf_counter() - t0, st
    finally:
        os.close(fd)
        shutil.rmtree(dest)


def timed_decode(blob: bytes, flags: int = 0, runs: int = 3) -> tuple[float, int]:
    """The best of runs of native.decompress_discard over blob: (seconds, decoded bytes)."""
    fd = os.memfd_create("blob")
    os.write(fd, blob)
    try:
        best, decoded = float("inf"), 0
        for _ in range(runs):
            os.lseek(fd, 0, os.SEEK_SET)
            t0 = time.perf_counter()
            _, decoded, _ = native.decompress_discard(fd, flags=flags)
            best = min(best, time.perf_counter() - t0)
        return best, decoded
    finally:
        os.close(fd)


def report(label: str, seconds: float, st: native.ExtractStats) -> None:
    entries = st.files + st.dirs + st.symlinks + st.hardlinks
    print(
        f"{label:<34} {seconds:7.3f} s {st.uncompressed_bytes / MB / seconds:8.0f} MB/s"
        f" {entries / seconds:9.0f} entries/s  (in {st.compressed_bytes / MB:.0f} MB)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="uncompressed size of the main tar (MB)")
    ap.add_argument("--files", type=int, default=30000, help="small files in the main tar")
    ap.add_argument("--dir", default="/var/tmp", help="where to extract (a real filesystem)")
    args = ap.parse_args()
    rnd = random.Random(42)
    feats = native.extract_features()
    print(f"features: isal={bool(feats & native.FEATURE_ISAL)} openat2={bool(feats & native.FEATURE_OPENAT2)}")
    tar = make_tar(args.mb * MB, args.files, rnd)
    gz = gzip.compress(tar, compresslevel=6)
    zst = subprocess.run(["zstd", "-q", "-3", "-c"], input=tar, capture_output=True, check=True).stdout
    print(f"tar {len(tar) / MB:.0f} MB, gzip -6 {len(gz) / MB:.0f} MB, zstd -3 {len(zst) / MB:.0f} MB")

    cases = [
        ("plain tar", tar, 0),
        ("gzip (ISA-L)", gz, 0),
        ("gzip (zlib)", gz, native.EXTRACT_NO_ISAL),
        ("zstd", zst, 0),
        ("gzip (ISA-L), fallback resolver", gz, native.EXTRACT_NO_OPENAT2),
    ]
    for label, blob, flags in cases:
        report(label, *timed_extract(blob, args.dir, flags))

    print("-- decode + both SHA-256, nothing written (data of a skipped entry):")
    inner = skipped(tar)
    for label, blob, flags in [
        ("gzip (ISA-L)", gzip.compress(inner, 6), 0),
        ("gzip (zlib)", gzip.compress(inner, 6), native.EXTRACT_NO_ISAL),
        ("zstd", subprocess.run(["zstd", "-q", "-3", "-c"], input=inner, capture_output=True).stdout, 0),
    ]:
        report(label, *timed_extract(blob, args.dir, flags))
    t0 = time.perf_counter()
    zlib.decompress(gz, 31)
    print(f"{'reference: python zlib.decompress':<34} {time.perf_counter() - t0:7.3f} s")

    print("-- decode only, one core (the extractor's decoder, output discarded: no tar, no digests):")
    for label, blob, flags in [
        ("gzip (ISA-L)", gz, 0),
        ("gzip (zlib)", gz, native.EXTRACT_NO_ISAL),
        ("zstd", subprocess.run(["zstd", "-q", "-3", "-c"], input=tar, capture_output=True).stdout, 0),
    ]:
        seconds, decoded = timed_decode(blob, flags)
        print(f"{label:<34} {seconds:7.3f} s {decoded / MB / seconds:8.0f} MB/s decoded (best of 3)")

    print("-- small files:")
    tiny = many_tiny(50000)
    report("50k x 100 B, plain", *timed_extract(tiny, args.dir))
    report("50k x 100 B, gzip", *timed_extract(gzip.compress(tiny, 6), args.dir))


if __name__ == "__main__":
    main()
