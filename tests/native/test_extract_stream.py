"""extract_stream.c and extract_decompress.c: plain, gzip (ISA-L and zlib), zstd, digests, tee, pipes."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import shutil
import subprocess
import threading
import zlib

import pytest

from pycrio import native
from tests.support import tarcraft as tc

# ISA-L when built in, and zlib (forced): both gzip decoders must behave the same.
GZIP_DECODERS = pytest.mark.parametrize("decoder", [0, native.EXTRACT_NO_ISAL], ids=["isal", "zlib"])
needs_zstd_cli = pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd CLI (Debian package zstd)")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sample_tar(files: int = 20, big: int = 3 << 20) -> bytes:
    """Some small files, one big incompressible one, and tarfile-like record padding."""
    rnd = random.Random(1)
    out = tc.entry("dir/", type=b"5", mode=0o755)
    for i in range(files):
        out += tc.entry(f"dir/f{i}", rnd.randbytes(rnd.randrange(0, 3000)))
    out += tc.entry("dir/big", rnd.randbytes(big)) + tc.end()
    return out + b"\0" * (-len(out) % 10240)


def zstd_cli(data: bytes, *args: str) -> bytes:
    return subprocess.run(["zstd", "-q", "-c", *args], input=data, capture_output=True, check=True).stdout


def check_tree(dest: str, tar: bytes) -> None:
    rnd = random.Random(1)
    for i in range(20):
        with open(os.path.join(dest, "dir", f"f{i}"), "rb") as f:
            assert f.read() == rnd.randbytes(rnd.randrange(0, 3000))
    assert os.path.getsize(os.path.join(dest, "dir", "big")) == 3 << 20


@GZIP_DECODERS
def test_gzip_digests_and_counts(layout, extract, decoder):
    tar = sample_tar()
    blob = gzip.compress(tar, compresslevel=6)
    st = extract(blob, flags=decoder)
    assert st.compression == native.COMPRESSION_GZIP
    assert (st.compressed_bytes, st.uncompressed_bytes) == (len(blob), len(tar))
    assert (st.compressed_digest, st.diff_digest) == (sha(blob), sha(tar))
    assert (st.files, st.dirs) == (21, 1)
    check_tree(layout.dest, tar)


@GZIP_DECODERS
def test_multi_member_gzip(layout, extract, decoder):
    tar = sample_tar()
    cut = [0, 700, 700, 512 * 9 + 3, len(tar) // 2, len(tar)]  # includes an empty member
    blob = b"".join(gzip.compress(tar[a:b], compresslevel=1) for a, b in zip(cut, cut[1:], strict=False))
    st = extract(blob, flags=decoder)
    assert (st.diff_digest, st.compressed_digest, st.uncompressed_bytes) == (sha(tar), sha(blob), len(tar))
    check_tree(layout.dest, tar)


def test_plain_tar(layout, extract):
    tar = sample_tar()
    st = extract(tar)
    assert st.compression == native.COMPRESSION_NONE
    assert st.compressed_digest == st.diff_digest == sha(tar)
    assert st.compressed_bytes == st.uncompressed_bytes == len(tar)


def test_zstd_raw_frames(layout, extract):
    tar = sample_tar()
    blob = tc.zstd_raw(tar[:5000]) + tc.zstd_raw(b"") + tc.zstd_raw(tar[5000:])
    st = extract(blob)
    assert st.compression == native.COMPRESSION_ZSTD
    assert (st.diff_digest, st.compressed_digest) == (sha(tar), sha(blob))
    check_tree(layout.dest, tar)


@needs_zstd_cli
def test_zstd_compressed(layout, extract):
    tar = sample_tar()
    blob = zstd_cli(tar, "-3", "--check")
    st = extract(blob, compression=native.COMPRESSION_ZSTD)
    assert (st.compression, st.diff_digest, st.compressed_bytes) == (native.COMPRESSION_ZSTD, sha(tar), len(blob))
    check_tree(layout.dest, tar)


@pytest.mark.parametrize(
    "compression,pack",
    [
        (native.COMPRESSION_NONE, lambda t: t),
        (native.COMPRESSION_GZIP, gzip.compress),
        (native.COMPRESSION_ZSTD, tc.zstd_raw),
    ],
    ids=["none", "gzip", "zstd"],
)
def test_explicit_compression(layout, extract, compression, pack):
    tar = tc.entry("f", b"x") + tc.end()
    st = extract(pack(tar), compression=compression)
    assert st.compression == compression and st.diff_digest == sha(tar)


def test_forcing_gzip_on_a_plain_tar_is_an_error(layout, extract):
    with pytest.raises(native.NativeError) as e:
        extract(tc.entry("f", b"x") + tc.end(), compression=native.COMPRESSION_GZIP)
    assert e.value.errno == 74 and e.value.step == "gzip"  # EBADMSG


def test_tee_receives_exactly_the_input(layout, tmp_path):
    blob = gzip.compress(sample_tar())
    tee_path = str(tmp_path / "blob")
    in_fd = tc.memfd(blob)
    tee_fd = os.open(tee_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        st = native.extract_layer(in_fd, layout.dest, tee_fd=tee_fd)
    finally:
        os.close(in_fd)
        os.close(tee_fd)
    with open(tee_path, "rb") as f:
        assert f.read() == blob
    assert st.compressed_digest == sha(blob)


def feeder(w: int, data: bytes, seed: int) -> threading.Thread:
    """A thread writing data into the pipe's write end in small uneven chunks, then closing it."""

    def run() -> None:
        rnd = random.Random(seed)
        view = memoryview(data)
        try:
            while view:
                n = rnd.choice([1, 7, 511, 512, 513, 4096, 65536, 100_000])
                view = view[os.write(w, view[:n]) :]
        finally:
            os.close(w)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("pack", [lambda t: t, gzip.compress, tc.zstd_raw], ids=["none", "gzip", "zstd"])
def test_reading_from_a_pipe_in_uneven_chunks(layout, tmp_path, pack):
    tar = sample_tar(big=300_000)
    blob = pack(tar)
    r, w = os.pipe()
    tee_path = str(tmp_path / "tee")
    tee_fd = os.open(tee_path, os.O_WRONLY | os.O_CREAT, 0o600)
    t = feeder(w, blob, seed=len(blob))
    try:
        st = native.extract_layer(r, layout.dest, tee_fd=tee_fd)
    finally:
        os.close(r)
        os.close(tee_fd)
        t.join(10)
    assert (st.diff_digest, st.compressed_digest) == (sha(tar), sha(blob))
    with open(tee_path, "rb") as f:
        assert f.read() == blob


def test_concurrent_extractions_in_threads(tmpdir_short):
    tars = [sample_tar(files=20, big=1 << 20) for _ in range(4)]
    results: list[native.ExtractStats | BaseException] = [None] * 4  # type: ignore[list-item]

    def run(i: int) -> None:
        dest = os.path.join(tmpdir_short, f"d{i}")
        os.mkdir(dest)
        r, w = os.pipe()
        t = feeder(w, gzip.compress(tars[i], 1), seed=i)
        try:
            results[i] = native.extract_layer(r, dest)
        except BaseException as e:  # noqa: BLE001 - reported below
            results[i] = e
        finally:
            os.close(r)
            t.join(10)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, res in enumerate(results):
        assert isinstance(res, native.ExtractStats), res
        assert res.diff_digest == sha(tars[i])


def test_bytes_after_the_end_of_archive_are_hashed(layout, extract):
    tar = tc.entry("f", b"x") + tc.end() + b"\0" * 9000 + b"ignored junk after the end"
    st = extract(gzip.compress(tar))
    assert st.uncompressed_bytes == len(tar) and st.diff_digest == sha(tar)


# ---- broken compressed streams ----


def expect_error(extract, data: bytes, errnum: int, step: str, words: str, **kwargs) -> native.NativeError:
    with pytest.raises(native.NativeError) as e:
        extract(data, **kwargs)
    assert e.value.errno == errnum, e.value
    assert e.value.step == step, e.value
    assert words in e.value.strerror, e.value
    return e.value


@GZIP_DECODERS
def test_truncated_gzip(layout, extract, decoder):
    blob = gzip.compress(sample_tar())
    for cut in (10, len(blob) // 2, len(blob) - 8, len(blob) - 1):
        expect_error(extract, blob[:cut], 5, "gzip", "truncated", flags=decoder)  # EIO


@GZIP_DECODERS
def test_gzip_with_bad_crc_or_length(layout, extract, decoder):
    blob = bytearray(gzip.compress(tc.entry("f", b"x") + tc.end()))
    bad_crc = bytes(blob[:-8]) + bytes([blob[-8] ^ 1]) + bytes(blob[-7:])
    expect_error(extract, bad_crc, 74, "gzip", "gzip", flags=decoder)
    bad_len = bytes(blob[:-4]) + bytes([blob[-4] ^ 1]) + bytes(blob[-3:])
    expect_error(extract, bad_len, 74, "gzip", "gzip", flags=decoder)


@GZIP_DECODERS
def test_gzip_trailing_garbage(layout, extract, decoder):
    blob = gzip.compress(tc.entry("f", b"x") + tc.end())
    for tail in (b"\0", b"\0" * 100, b"garbage", b"\x1f"):
        expect_error(extract, blob + tail, 74, "gzip", "trailing data", flags=decoder)


@GZIP_DECODERS
def test_gzip_corrupt_deflate_data(layout, extract, decoder):
    raw = zlib.compressobj(6, zlib.DEFLATED, 31)
    blob = bytearray(raw.compress(os.urandom(1000) + tc.end()) + raw.flush())
    blob[12:20] = b"\xff" * 8
    with pytest.raises(native.NativeError) as e:
        extract(bytes(blob), flags=decoder)
    assert e.value.errno in (74, 5, 22)


def test_truncated_zstd(layout, extract):
    blob = tc.zstd_raw(sample_tar(big=200_000))
    for cut in (4, 9, len(blob) // 2, len(blob) - 1):
        expect_error(extract, blob[:cut], 5, "zstd", "truncated", compression=native.COMPRESSION_ZSTD)


def test_zstd_trailing_garbage(layout, extract):
    blob = tc.zstd_raw(tc.entry("f", b"x") + tc.end())
    expect_error(extract, blob + b"garbage!", 74, "zstd", "zstd")


@needs_zstd_cli
def test_zstd_corrupt_checksum(layout, extract):
    blob = bytearray(zstd_cli(tc.entry("f", b"x" * 5000) + tc.end(), "--check"))
    blob[-1] ^= 0xFF
    expect_error(extract, bytes(blob), 74, "zstd", "zstd")


def test_empty_input_is_an_error(layout, extract):
    expect_error(extract, b"", 5, "read", "no end-of-archive")
    expect_error(extract, b"", 5, "gzip", "truncated", compression=native.COMPRESSION_GZIP)
    expect_error(extract, b"", 5, "zstd", "truncated", compression=native.COMPRESSION_ZSTD)


@pytest.mark.skipif(os.environ.get("PYCRIO_SANITIZE") == "1", reason="ASan quarantine grows RSS by design")
def test_many_extractions_do_not_leak(tmpdir_short):
    import psutil

    blob = gzip.compress(tc.entry("d/f", b"x", mode=0o644) + tc.end())
    bad = blob[:-3]
    proc = psutil.Process()

    def once(i: int) -> None:
        dest = os.path.join(tmpdir_short, str(i))
        os.mkdir(dest)
        fd = tc.memfd(blob if i % 2 else bad)
        try:
            native.extract_layer(fd, dest)
        except native.NativeError:
            pass
        finally:
            os.close(fd)
            shutil.rmtree(dest)

    for i in range(300):
        once(i)
    before = proc.memory_info().rss
    for i in range(1500):
        once(i)
    assert proc.memory_info().rss - before < 8 * 1024 * 1024
