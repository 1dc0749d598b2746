"""csrc/extract*.c through cffi: entry types, metadata, names, whiteouts and replacements."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pycrio import native
from tests.support import tarcraft as tc

FORMATS = pytest.mark.parametrize(
    "fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["ustar", "gnu", "pax"]
)


def info(name: str, type: bytes = tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.mode = attrs.pop("mode", 0o755 if type == tarfile.DIRTYPE else 0o644)
    ti.mtime = attrs.pop("mtime", 1_600_000_000)
    for k, v in attrs.items():
        setattr(ti, k, v)
    return ti


def build(fmt: int, *members: tuple[tarfile.TarInfo, bytes | None] | tarfile.TarInfo) -> bytes:
    """A tar made by Python's tarfile: members are TarInfo or (TarInfo, data)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            ti, data = m if isinstance(m, tuple) else (m, None)
            if data is not None:
                ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file(name: str, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes]:
    return info(name, **attrs), data


def p(layout, *parts: str) -> str:
    return os.path.join(layout.dest, *parts)


def test_features_report_this_build():
    features = native.extract_features()
    assert features & native.FEATURE_ZSTD
    assert features & native.FEATURE_OPENAT2  # Linux >= 5.6
    assert features & ~(native.FEATURE_ISAL | native.FEATURE_ZSTD | native.FEATURE_OPENAT2) == 0
    assert bool(features & native.FEATURE_ISAL) == os.path.exists("/usr/include/isa-l.h")


@FORMATS
def test_every_entry_type(layout, extract, resolver, fmt):
    data = build(
        fmt,
        info("d", tarfile.DIRTYPE),
        file("d/f", b"hello\n"),
        info("d/link", tarfile.SYMTYPE, linkname="f"),
        info("d/hard", tarfile.LNKTYPE, linkname="d/f"),
        info("d/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        info("d/loop", tarfile.BLKTYPE, devmajor=7, devminor=200),
        info("d/fifo", tarfile.FIFOTYPE, mode=0o600),
        file("d/contig", b"c" * 700, type=tarfile.CONTTYPE),
    )
    st = extract(data, flags=resolver)
    assert (st.files, st.dirs, st.symlinks, st.hardlinks, st.devices, st.fifos) == (2, 1, 1, 1, 2, 1)
    assert st.compression == native.COMPRESSION_NONE
    with open(p(layout, "d/f"), "rb") as f:
        assert f.read() == b"hello\n"
    assert os.readlink(p(layout, "d/link")) == "f"
    assert os.stat(p(layout, "d/hard")).st_ino == os.stat(p(layout, "d/f")).st_ino
    assert os.stat(p(layout, "d/f")).st_nlink == 2
    null = os.lstat(p(layout, "d/null"))
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = os.lstat(p(layout, "d/loop"))
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 200)
    assert stat.S_ISFIFO(os.lstat(p(layout, "d/fifo")).st_mode)
    assert os.path.getsize(p(layout, "d/contig")) == 700


def test_root_files_get_their_exact_mode_and_owner_whatever_the_umask(layout, extract):
    """Plain root:root files are created with their mode at once (no fchown/fchmod) only when the
    umask keeps every bit; the others still get exactly what the layer says."""
    modes = {"plain": 0o644, "exec": 0o755, "private": 0o600, "group-w": 0o664, "world-w": 0o666, "none": 0o000}
    data = build(tarfile.PAX_FORMAT, *[file(name, b"x", mode=mode) for name, mode in modes.items()])
    old = os.umask(0o027)  # strips bits from 0644 and 0755 too: the fast path must not apply to them
    try:
        extract(data)
    finally:
        os.umask(old)
    for name, mode in modes.items():
        st = os.lstat(p(layout, name))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode), name


def test_root_files_under_a_setgid_directory_keep_group_0(layout, extract):
    """A set-group-ID directory gives new files its group: they must be chowned back to 0."""
    data = build(
        tarfile.PAX_FORMAT,
        file("before", b"x"),
        info("shared", tarfile.DIRTYPE, mode=0o2775, gid=4242),
        file("shared/f", b"x"),
        info("shared/sub", tarfile.DIRTYPE, mode=0o755),
        file("shared/sub/g", b"x", mode=0o600),
        file("after", b"x"),
    )
    extract(data)
    assert stat.S_IMODE(os.lstat(p(layout, "shared")).st_mode) == 0o2775
    for name in ("before", "shared/f", "shared/sub/g", "after"):
        st = os.lstat(p(layout, name))
        assert (st.st_uid, st.st_gid) == (0, 0), name


def test_a_setgid_destination_is_noticed(layout, extract):
    os.chown(layout.dest, 0, 4242)
    os.chmod(layout.dest, 0o2755)
    extract(build(tarfile.PAX_FORMAT, file("f", b"x"), info("d", tarfile.DIRTYPE, mode=0o755), file("d/g", b"x")))
    for name in ("f", "d/g"):
        st = os.lstat(p(layout, name))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644), name


def test_ownership_and_special_mode_bits(layout, extract):
    ids = {"uid": 1234, "gid": 5678}
    data = build(
        tarfile.PAX_FORMAT,
        info("sticky", tarfile.DIRTYPE, mode=0o1777, **ids),
        info("setgid", tarfile.DIRTYPE, mode=0o2755, **ids),
        file("setgid/suid", b"#!/bin/sh\n", mode=0o4755, **ids),
        file("sgid-file", b"x", mode=0o2711, **ids),
        info("lnk", tarfile.SYMTYPE, linkname="sgid-file", **ids),
        info("dev", tarfile.CHRTYPE, devmajor=1, devminor=5, mode=0o640, **ids),
        info("fifo", tarfile.FIFOTYPE, mode=0o620, **ids),
    )
    extract(data)
    expect = {"sticky": 0o1777, "setgid": 0o2755, "setgid/suid": 0o4755, "sgid-file": 0o2711, "dev": 0o640}
    expect["fifo"] = 0o620
    for name, mode in expect.items():
        st = os.lstat(p(layout, name))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, mode), name
    st = os.lstat(p(layout, "lnk"))
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_big_ids_and_base256_numbers(layout, extract):
    # GNU format writes ids that do not fit 7 octal digits in base-256.
    data = build(tarfile.GNU_FORMAT, file("f", b"x", uid=3_000_000_000, gid=2**24 + 5))
    extract(data)
    st = os.stat(p(layout, "f"))
    assert (st.st_uid, st.st_gid) == (3_000_000_000, 2**24 + 5)


def test_crafted_base256_numbers(layout, extract):
    hdr = tc.header("f", size=tc.base256(5, 12), mtime=tc.base256(-86400, 12), uid=tc.base256(70000, 8))
    extract(hdr + tc.pad(b"12345") + tc.end())
    st = os.stat(p(layout, "f"))
    assert (st.st_size, st.st_mtime, st.st_uid) == (5, -86400, 70000)


def test_signed_header_checksum_is_accepted(layout, extract):
    name = "caf\xe9-\xff\xfe".encode("latin-1")
    hdr = bytearray(tc.header(name, size=1))
    signed = sum(b - 256 if b >= 128 else b for b in hdr[:148] + b" " * 8 + hdr[156:])
    assert signed != tc.checksum(bytes(hdr))
    hdr[148:156] = tc.octal(signed, 7) + b" "
    extract(bytes(hdr) + tc.pad(b"s") + tc.end())
    assert Path(os.fsdecode(os.path.join(layout.dest.encode(), name))).read_bytes() == b"s"


def test_mtimes_of_files_symlinks_and_dirs(layout, extract):
    data = build(
        tarfile.PAX_FORMAT,
        info("d", tarfile.DIRTYPE, mtime=1_000_000_000),
        info("d/e", tarfile.DIRTYPE, mtime=1_100_000_000),
        file("d/e/f", b"data", mtime=1_200_000_000),
        info("d/e/l", tarfile.SYMTYPE, linkname="f", mtime=1_300_000_000),
        file("d/late", b"created after d's entry", mtime=1_400_000_000),
        info(".", tarfile.DIRTYPE, mode=0o711, mtime=900_000_000),
    )
    extract(data)
    assert os.lstat(p(layout, "d")).st_mtime == 1_000_000_000
    assert os.lstat(p(layout, "d/e")).st_mtime == 1_100_000_000
    assert os.lstat(p(layout, "d/e/f")).st_mtime == 1_200_000_000
    assert os.lstat(p(layout, "d/e/l")).st_mtime == 1_300_000_000
    assert os.lstat(p(layout, "d/late")).st_mtime == 1_400_000_000
    root = os.stat(layout.dest)
    assert root.st_mtime == 900_000_000 and stat.S_IMODE(root.st_mode) == 0o711


def test_pax_fractional_mtime(layout, extract):
    data = (
        tc.pax({"mtime": "1234567890.123456789"})
        + tc.entry("f", b"x")
        + tc.pax({"mtime": "-1.25"})
        + tc.entry("g", b"y")
        + tc.end()
    )
    extract(data)
    assert os.stat(p(layout, "f")).st_mtime_ns == 1_234_567_890_123_456_789
    assert os.stat(p(layout, "g")).st_mtime_ns == -1_250_000_000


def test_xattrs(layout, extract):
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service, v2
    # tarfile writes PAX values as UTF-8; a capability is raw bytes: craft the archive.
    data = (
        tc.pax([("SCHILY.xattr.user.dir", b"on-dir")])
        + tc.entry("d/", type=b"5", mode=0o755)
        + tc.pax([("SCHILY.xattr.security.capability", cap), ("SCHILY.xattr.user.k", b"v\0w")])
        + tc.entry("d/ping", b"\x7fELF", mode=0o755, uid=1000)
        + tc.pax([("SCHILY.xattr.trusted.overlay.redirect", b"/etc")])
        + tc.entry("d/overlay")
        + tc.pax([("SCHILY.xattr.trusted.t", b"on-link")])
        + tc.entry("d/lnk", type=b"2", linkname="ping")
        + tc.end()
    )
    st = extract(data)
    assert os.getxattr(p(layout, "d"), "user.dir") == b"on-dir"
    assert os.getxattr(p(layout, "d/ping"), "security.capability") == cap
    assert os.getxattr(p(layout, "d/ping"), "user.k") == b"v\0w"
    assert os.stat(p(layout, "d/ping")).st_uid == 1000
    assert "trusted.overlay.redirect" not in os.listxattr(p(layout, "d/overlay"))
    assert os.getxattr(p(layout, "d/lnk"), "trusted.t", follow_symlinks=False) == b"on-link"
    assert (st.xattrs, st.xattrs_skipped) == (4, 1)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_long_names_and_link_names(layout, extract, fmt):
    mid = "m" * 120
    deep = "/".join(["x" * 200] * 3) + "/file"  # > 255 bytes, components < NAME_MAX
    data = build(
        fmt,
        file(f"{mid}/a", b"1"),
        file(deep, b"2"),
        info("l", tarfile.SYMTYPE, linkname="t" * 300),
        info("h", tarfile.LNKTYPE, linkname=deep),
    )
    extract(data)
    assert Path(p(layout, mid, "a")).read_bytes() == b"1"
    assert Path(p(layout, deep)).read_bytes() == b"2"
    assert os.readlink(p(layout, "l")) == "t" * 300
    assert os.stat(p(layout, "h")).st_ino == os.stat(p(layout, deep)).st_ino


def test_ustar_prefix_and_v7_headers(layout, extract):
    data = (
        tc.entry("name", b"ustar", prefix="pre/fix")
        + tc.header("v7dir/", type=b"\0", magic=b"")
        + tc.entry("v7dir/file", b"v7", type=b"\0", magic=b"")
        + tc.end()
    )
    extract(data)
    assert Path(p(layout, "pre/fix/name")).read_bytes() == b"ustar"
    assert os.path.isdir(p(layout, "v7dir"))
    assert Path(p(layout, "v7dir/file")).read_bytes() == b"v7"


def test_pax_overrides(layout, extract):
    body = b"0123456789" * 100
    data = (
        tc.pax({"path": "real/name", "size": str(len(body)), "uid": "4242", "gid": "2424", "mtime": "1700000000.5"})
        + tc.header("ignored", size=3, uid=1, gid=1, mtime=5)
        + tc.pad(body)
        + tc.pax({"linkpath": "real/name", "path": "hard"})
        + tc.header("ignored2", type=b"1", linkname="nope")
        + tc.pax({"linkpath": "x" * 150})
        + tc.header("sym", type=b"2", linkname="short")
        + tc.pax({"comment": "ignored", "uname": "nobody", "gname": "nogroup", "atime": "1.5"})
        + tc.entry("plain", b"p", uid=7)
        + tc.end()
    )
    extract(data)
    st = os.stat(p(layout, "real/name"))
    assert (st.st_size, st.st_uid, st.st_gid, st.st_mtime_ns) == (1000, 4242, 2424, 1_700_000_000_500_000_000)
    assert Path(p(layout, "real/name")).read_bytes() == body
    assert os.stat(p(layout, "hard")).st_ino == st.st_ino
    assert os.readlink(p(layout, "sym")) == "x" * 150
    assert os.stat(p(layout, "plain")).st_uid == 7  # numeric ids win over uname
    assert not os.path.exists(p(layout, "ignored"))


def test_global_pax_header_is_parsed_and_ignored(layout, extract):
    data = tc.pax({"uid": "99", "path": "global"}, type=b"g") + tc.entry("f", b"x", uid=5) + tc.end()
    extract(data)
    assert os.stat(p(layout, "f")).st_uid == 5
    assert os.listdir(layout.dest) == ["f"]


def test_implied_parents_are_created_0755_root_owned(layout, extract):
    old = os.umask(0o077)  # the daemon's umask must not matter
    try:
        extract(tc.entry("a/b/c/file", b"x", mode=0o600) + tc.end())
    finally:
        os.umask(old)
    for d in ("a", "a/b", "a/b/c"):
        st = os.stat(p(layout, d))
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0, d
    assert stat.S_IMODE(os.stat(p(layout, "a/b/c/file")).st_mode) == 0o600


def test_whiteouts_and_opaque_directories(layout, extract):
    data = (
        tc.entry("d/", type=b"5", mode=0o755)
        + tc.entry("d/gone", b"old")
        + tc.entry("d/tree/sub/f", b"deep")
        + tc.entry("d/.wh.gone")
        + tc.entry("d/.wh.tree")
        + tc.entry("d/.wh.never-existed")
        + tc.entry("opq/.wh..wh..opq")
        + tc.entry("opq/kept", b"k")
        + tc.entry(".wh..wh..opq")
        + tc.entry("d/.wh..wh.aufs", b"skipped")
        + tc.end()
    )
    st = extract(data)
    for name in ("gone", "tree", "never-existed"):
        w = os.lstat(p(layout, "d", name))
        assert stat.S_ISCHR(w.st_mode) and w.st_rdev == 0, name
    assert os.getxattr(p(layout, "opq"), "trusted.overlay.opaque") == b"y"
    assert os.getxattr(layout.dest, "trusted.overlay.opaque") == b"y"
    assert Path(p(layout, "opq/kept")).read_bytes() == b"k"
    assert not os.path.exists(p(layout, "d/.wh..wh.aufs"))
    assert (st.whiteouts, st.opaques) == (3, 2)


def test_later_entries_replace_earlier_ones(layout, extract, resolver):
    data = (
        tc.entry("f", b"first")
        + tc.entry("f", b"second", mode=0o600)
        + tc.entry("s", b"file then symlink")
        + tc.entry("s", type=b"2", linkname="f")
        + tc.entry("d/", type=b"5", mode=0o700, uid=1)
        + tc.entry("d/child", b"kept")
        + tc.entry("d/", type=b"5", mode=0o751, uid=2)
        + tc.entry("t/a/b", b"tree")
        + tc.entry("t", b"file over a tree")
        + tc.entry("u", b"file then dir")
        + tc.entry("u/", type=b"5")
        + tc.entry("l", type=b"2", linkname="d")
        + tc.entry("l/", type=b"5")
        + tc.entry("n", type=b"6")
        + tc.entry("n", type=b"1", linkname="f")
        + tc.entry("h", type=b"1", linkname="f")
        + tc.entry("h", type=b"1", linkname="f")
        + tc.end()
    )
    extract(data, flags=resolver)
    assert Path(p(layout, "f")).read_bytes() == b"second"
    assert stat.S_IMODE(os.stat(p(layout, "f")).st_mode) == 0o600
    assert os.readlink(p(layout, "s")) == "f"
    d = os.stat(p(layout, "d"))
    assert (stat.S_IMODE(d.st_mode), d.st_uid) == (0o751, 2)
    assert Path(p(layout, "d/child")).read_bytes() == b"kept"
    assert Path(p(layout, "t")).read_bytes() == b"file over a tree"
    assert os.path.isdir(p(layout, "u")) and not os.path.islink(p(layout, "l")) and os.path.isdir(p(layout, "l"))
    assert os.listdir(p(layout, "l")) == []
    assert os.stat(p(layout, "n")).st_ino == os.stat(p(layout, "f")).st_ino
    assert os.stat(p(layout, "h")).st_ino == os.stat(p(layout, "f")).st_ino


def test_one_zero_block_then_eof_ends_the_archive(layout, extract):
    extract(tc.entry("f", b"x") + b"\0" * 512)
    assert os.listdir(layout.dest) == ["f"]


def test_root_entries_and_dot_names(layout, extract):
    data = tc.entry("./", type=b"5", mode=0o750) + tc.entry("./a/./b/../c", b"x") + tc.entry("/", type=b"5", mode=0o755)
    extract(data + tc.end())
    assert Path(p(layout, "a/c")).read_bytes() == b"x"
    assert stat.S_IMODE(os.stat(layout.dest).st_mode) == 0o755


def test_sync_flag(layout, extract):
    st = extract(tc.entry("f", b"x") + tc.end(), flags=native.EXTRACT_SYNC)
    assert st.files == 1


def test_invalid_arguments(layout):
    fd = tc.memfd(tc.end())
    try:
        for kwargs, errnum in [
            ({"compression": 9}, 22),
            ({"flags": 1 << 20}, 22),
        ]:
            with pytest.raises(native.NativeError) as e:
                native.extract_layer(fd, layout.dest, **kwargs)
            assert e.value.errno == errnum and e.value.step == "extract"
        with pytest.raises(native.NativeError) as e:
            native.extract_layer(fd, os.path.join(layout.dest, "missing"))
        assert e.value.errno == 2 and e.value.step == "open"
        with pytest.raises(native.NativeError) as e:
            native.extract_layer(-1, layout.dest)
        assert e.value.errno == 22
        with pytest.raises(native.NativeError) as e:
            native.extract_layer(fd, "")
        assert e.value.errno == 22
    finally:
        os.close(fd)
    r, w = os.pipe()
    try:
        with pytest.raises(native.NativeError) as e:
            native.extract_layer(w, layout.dest)  # not readable
        assert e.value.errno == 9 and e.value.step == "read"
    finally:
        os.close(r)
        os.close(w)


def test_replacing_a_directory_forgets_its_cached_fd(layout, extract, resolver):
    # "a" is resolved (and kept open) for a/f1, then replaced by a symlink to b: a/f2 goes to b.
    data = (
        tc.entry("a/", type=b"5")
        + tc.entry("a/f1", b"1")
        + tc.entry("b/", type=b"5")
        + tc.entry("b/f", b"b")
        + tc.entry("a", type=b"2", linkname="b")
        + tc.entry("a/f2", b"2")
        + tc.end()
    )
    extract(data, flags=resolver)
    assert sorted(os.listdir(p(layout, "b"))) == ["f", "f2"]
    assert os.readlink(p(layout, "a")) == "b"
