"""extract_discard.c: pycrio_decompress_discard, the layer decoder with its output thrown away."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
import tempfile

import pytest

from pycrio import native

GZIP_DECODERS = pytest.mark.parametrize("decoder", [0, native.EXTRACT_NO_ISAL], ids=["isal", "zlib"])


def _data(size: int = 3 << 20) -> bytes:
    rnd = random.Random(7)
    return rnd.randbytes(size // 2) + b"text line of a layer\n" * (size // 2 // 21)


def discard(blob: bytes, **kw) -> tuple[int, int, int]:
    with tempfile.TemporaryFile() as f:
        f.write(blob)
        f.seek(0)
        return native.decompress_discard(f.fileno(), **kw)


@GZIP_DECODERS
def test_gzip_counts_both_sides_and_multi_member(decoder):
    data = _data()
    blob = gzip.compress(data)
    assert discard(blob, flags=decoder) == (len(blob), len(data), native.COMPRESSION_GZIP)
    two = gzip.compress(data[:1000]) + gzip.compress(data[1000:])
    assert discard(two, flags=decoder) == (len(two), len(data), native.COMPRESSION_GZIP)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd CLI (Debian package zstd)")
def test_zstd_and_plain():
    data = _data(1 << 20)
    blob = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    assert discard(blob) == (len(blob), len(data), native.COMPRESSION_ZSTD)
    assert discard(data, compression=native.COMPRESSION_NONE) == (len(data), len(data), native.COMPRESSION_NONE)


@GZIP_DECODERS
def test_bad_streams_are_errors_as_in_extraction(decoder):
    blob = gzip.compress(_data(1 << 20))
    for bad in (blob[: len(blob) // 2], blob + b"garbage", blob[:-8] + bytes([blob[-8] ^ 1]) + blob[-7:]):
        with pytest.raises(native.NativeError) as e:
            discard(bad, flags=decoder)
        assert e.value.errno in (5, 74), e.value  # EIO (truncated), EBADMSG (trailer, garbage)
        assert e.value.step == "gzip"


def test_invalid_arguments():
    with pytest.raises(native.NativeError) as e:
        native.decompress_discard(-1)
    assert e.value.errno == 22
    with tempfile.TemporaryFile() as f:
        for kw in ({"compression": 9}, {"flags": native.EXTRACT_SYNC}):
            with pytest.raises(native.NativeError) as e:
                native.decompress_discard(f.fileno(), **kw)
            assert e.value.errno == 22, kw


def test_no_descriptor_leaks():
    blob = gzip.compress(_data(1 << 16))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        discard(blob)
    assert len(os.listdir("/proc/self/fd")) == before
