"""Seed corpus for `make fuzz`: small layers covering each entry type, format and compression."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

from tests.support import tarcraft as tc


def seeds() -> dict[str, bytes]:
    e = tc.entry
    base = (
        e("d/", type=b"5", mode=0o755)
        + e("d/f", b"hello", uid=1234, gid=5678, mode=0o4755)
        + e("d/l", type=b"2", linkname="../d/f")
        + e("d/h", type=b"1", linkname="d/f")
        + e("d/c", type=b"3", devmajor=1, devminor=3)
        + e("d/p", type=b"6")
        + tc.end()
    )
    return {
        "basic.tar": base,
        "basic.tar.gz": gzip.compress(base),
        "basic.tar.zst": tc.zstd_raw(base),
        "pax.tar": tc.pax({"path": "p" * 200, "mtime": "1.5", "SCHILY.xattr.user.k": "v"}) + e("x", b"1") + tc.end(),
        "gnu.tar": tc.gnu_long("g" * 150) + tc.gnu_long("t" * 120, b"K") + e("x", type=b"2") + tc.end(),
        "whiteout.tar": e("a/.wh.b") + e("a/.wh..wh..opq") + e(".wh..wh.plnk") + tc.end(),
        "escape.tar": e("up", type=b"2", linkname="../../..") + e("up/x", b"1") + e("../y", b"2") + tc.end(),
        "replace.tar": e("r/a", b"1") + e("r", b"file over dir") + e("r/", type=b"5") + tc.end(),
        "base256.tar": e("n", b"12345", size=tc.base256(5, 12), uid=tc.base256(70000, 8)) + tc.end(),
    }


def main(out: str) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (Path(out) / name).write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1])
