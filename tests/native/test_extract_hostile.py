"""Hostile layers: names, symlinks and hard links that try to escape, and malformed headers.

Every test runs with both path resolvers (openat2 and the forced fallback) and the `layout`
fixture fails it when anything outside dest (a sibling tree, /etc/passwd) changed or appeared.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from pycrio import native
from tests.support import tarcraft as tc


def refused(extract, data: bytes, errnum: int, resolver: int, words: str = "", entry: str | None = None):
    with pytest.raises(native.NativeError) as e:
        extract(data, flags=resolver)
    err = e.value
    assert err.errno == errnum, err
    assert words in err.strerror, err
    if entry is not None:
        assert err.filename == entry and err.strerror.startswith(entry + ": "), err
    return err


def tree(root: str) -> list[str]:
    """Every path under root, relative, sorted (symlinks not followed)."""
    out = []
    for base, dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(base, n), root) for n in dirs + files]
    return sorted(out)


# ---- names ----


def test_dotdot_names_are_clamped_at_the_root(layout, extract, resolver):
    extract(tc.entry("../../x", b"1") + tc.entry("a/../../../y", b"2") + tc.end(), flags=resolver)
    assert tree(layout.dest) == ["x", "y"]


def test_absolute_names_land_inside(layout, extract, resolver):
    target = os.path.join(layout.outside, "abs")
    extract(tc.entry(target, b"1") + tc.entry("/etc/passwd", b"root::0:0::/:/bin/sh\n") + tc.end(), flags=resolver)
    assert os.path.isfile(layout.dest + target)
    assert Path(os.path.join(layout.dest, "etc/passwd")).read_bytes().startswith(b"root::")
    assert not os.path.exists(target)


# ---- symlinks ----


def test_absolute_symlink_parent_is_resolved_inside(layout, extract, resolver):
    # a -> <real outside dir>; the same path exists inside dest, so a/x lands there.
    inside = layout.dest + layout.outside
    data = tc.entry(layout.outside + "/", type=b"5") + tc.entry("a", type=b"2", linkname=layout.outside)
    extract(data + tc.entry("a/x", b"pwned?") + tc.end(), flags=resolver)
    assert Path(os.path.join(inside, "x")).read_bytes() == b"pwned?"
    assert os.readlink(os.path.join(layout.dest, "a")) == layout.outside


def test_absolute_symlink_to_a_missing_dir_is_refused(layout, extract, resolver):
    data = tc.entry("a", type=b"2", linkname=layout.outside) + tc.entry("a/x", b"pwned?") + tc.end()
    refused(extract, data, errno.ENOENT, resolver, "resolving its directory", entry="a/x")


def test_relative_symlink_escape_is_clamped(layout, extract, resolver):
    data = (
        tc.entry("outside/", type=b"5")
        + tc.entry("up", type=b"2", linkname="../../../..")
        + tc.entry("up/outside/sentinel", b"overwritten?")
        + tc.entry("up/outside/new", b"new")
        + tc.end()
    )
    extract(data, flags=resolver)
    assert sorted(os.listdir(os.path.join(layout.dest, "outside"))) == ["new", "sentinel"]


def test_symlink_chain_escape_is_clamped(layout, extract, resolver):
    data = (
        tc.entry("outside/sub/", type=b"5")
        + tc.entry("deep/l1", type=b"2", linkname="../../..")
        + tc.entry("l2", type=b"2", linkname="deep/l1/../outside")
        + tc.entry("l3", type=b"2", linkname="/l2/sub")
        + tc.entry("l3/x", b"chained")
        + tc.end()
    )
    extract(data, flags=resolver)
    assert Path(os.path.join(layout.dest, "outside/sub/x")).read_bytes() == b"chained"


def test_symlink_loop_is_eloop(layout, extract, resolver):
    data = tc.entry("a", type=b"2", linkname="b") + tc.entry("b", type=b"2", linkname="a") + tc.entry("a/x", b"1")
    refused(extract, data + tc.end(), errno.ELOOP, resolver, entry="a/x")


def test_too_many_symlinks_is_eloop(layout, extract, resolver):
    data = tc.entry("d/", type=b"5") + tc.entry("l0", type=b"2", linkname="d")
    for i in range(1, 45):
        data += tc.entry(f"l{i}", type=b"2", linkname=f"l{i - 1}")
    extract(data + tc.entry("l39/ok", b"40 links") + tc.end(), flags=resolver)
    assert os.path.exists(os.path.join(layout.dest, "d/ok"))
    refused(extract, data + tc.entry("l44/x", b"1") + tc.end(), errno.ELOOP, resolver)


def test_symlink_to_a_file_as_a_parent_is_enotdir(layout, extract, resolver):
    data = tc.entry("f", b"x") + tc.entry("l", type=b"2", linkname="f") + tc.entry("l/x", b"1") + tc.end()
    refused(extract, data, errno.ENOTDIR, resolver, entry="l/x")


def test_magic_link_targets_stay_inside(layout, extract, resolver):
    data = tc.entry("p", type=b"2", linkname="/proc/self/root") + tc.entry("p/tmp/x", b"1") + tc.end()
    refused(extract, data, errno.ENOENT, resolver, entry="p/tmp/x")


def test_final_symlink_is_never_followed(layout, extract, resolver):
    sentinel = os.path.join(layout.outside, "sentinel")
    data = (
        tc.entry("f", type=b"2", linkname=sentinel)
        + tc.entry("f", b"replaces the link")
        + tc.entry("d", type=b"2", linkname=layout.outside)
        + tc.entry("d/", type=b"5", mode=0o777)
        + tc.entry("w", type=b"2", linkname=sentinel)
        + tc.entry(".wh.w")
        + tc.entry("n", type=b"2", linkname=sentinel)
        + tc.entry("n", type=b"6")
        + tc.entry("s", type=b"2", linkname=sentinel)
        + tc.entry("s", type=b"2", linkname="elsewhere")
        + tc.end()
    )
    extract(data, flags=resolver)
    dest = layout.dest
    assert Path(os.path.join(dest, "f")).read_bytes() == b"replaces the link"
    assert os.path.isdir(os.path.join(dest, "d")) and not os.path.islink(os.path.join(dest, "d"))
    assert stat.S_ISCHR(os.lstat(os.path.join(dest, "w")).st_mode)
    assert stat.S_ISFIFO(os.lstat(os.path.join(dest, "n")).st_mode)
    assert os.readlink(os.path.join(dest, "s")) == "elsewhere"


def test_opaque_marker_through_an_escaping_symlink(layout, extract, resolver):
    data = tc.entry("o", type=b"2", linkname="../outside") + tc.entry("o/.wh..wh..opq") + tc.end()
    refused(extract, data, errno.ENOENT, resolver, entry="o/.wh..wh..opq")


def test_whiteout_through_an_escaping_symlink(layout, extract, resolver):
    data = tc.entry("outside/", type=b"5") + tc.entry("o", type=b"2", linkname="../../outside")
    extract(data + tc.entry("o/.wh.sentinel") + tc.end(), flags=resolver)
    assert stat.S_ISCHR(os.lstat(os.path.join(layout.dest, "outside/sentinel")).st_mode)


# ---- hard links ----


def test_hardlink_to_host_passwd_is_refused(layout, extract, resolver):
    data = tc.entry("pw", type=b"1", linkname="/etc/passwd") + tc.end()
    refused(extract, data, errno.ENOENT, resolver, "hard link target '/etc/passwd'", entry="pw")


def test_hardlink_to_passwd_means_the_layers_own(layout, extract, resolver):
    data = tc.entry("etc/passwd", b"layer's") + tc.entry("pw", type=b"1", linkname="/etc/passwd") + tc.end()
    extract(data, flags=resolver)
    assert os.stat(os.path.join(layout.dest, "pw")).st_ino == os.stat(os.path.join(layout.dest, "etc/passwd")).st_ino


def test_hardlink_outside_by_dotdot_is_refused(layout, extract, resolver):
    data = tc.entry("h", type=b"1", linkname="../outside/sentinel") + tc.end()
    refused(extract, data, errno.ENOENT, resolver, entry="h")


def test_hardlink_through_an_escaping_symlink_is_refused(layout, extract, resolver):
    data = tc.entry("o", type=b"2", linkname=layout.outside) + tc.entry("h", type=b"1", linkname="o/sentinel")
    refused(extract, data + tc.end(), errno.ENOENT, resolver, entry="h")


def test_hardlink_to_a_directory_is_refused(layout, extract, resolver):
    data = tc.entry("d/", type=b"5") + tc.entry("h", type=b"1", linkname="d") + tc.end()
    refused(extract, data, errno.EPERM, resolver, "is a directory", entry="h")
    refused(extract, tc.entry("h2", type=b"1", linkname="/") + tc.end(), errno.EPERM, resolver)


def test_hardlink_to_a_symlink_links_the_symlink(layout, extract, resolver):
    sentinel = os.path.join(layout.outside, "sentinel")
    data = tc.entry("s", type=b"2", linkname=sentinel) + tc.entry("h", type=b"1", linkname="s") + tc.end()
    extract(data, flags=resolver)
    h = os.lstat(os.path.join(layout.dest, "h"))
    assert stat.S_ISLNK(h.st_mode) and h.st_ino == os.lstat(os.path.join(layout.dest, "s")).st_ino


# ---- malformed headers and streams ----


def test_bad_checksum(layout, extract, resolver):
    hdr = bytearray(tc.header("f", size=1))
    hdr[148:156] = b"0000001\0"
    err = refused(extract, bytes(hdr) + tc.pad(b"x") + tc.end(), errno.EINVAL, resolver, "checksum")
    assert err.step == "tar header"


def test_garbage_is_not_a_tar(layout, extract, resolver):
    refused(extract, b"this is not a tar archive" * 100, errno.EINVAL, resolver, "checksum")


@pytest.mark.parametrize(
    "size,errnum,words",
    [
        (b"77777777777\0", errno.EIO, "truncated"),  # 8 GiB promised, 1 byte given
        (tc.base256(1 << 62, 12), errno.EFBIG, "size"),
        (tc.base256(-1, 12), errno.EINVAL, "size"),
        (b"\xff" * 12, errno.EINVAL, "size"),
        (b"\x80" + b"\xff" * 11, errno.ERANGE, "size"),  # 2^88 - 1
        (b"12x\0", errno.EINVAL, "size"),
    ],
    ids=["octal-8GiB", "base256-huge", "base256-negative", "all-ff", "base256-overflow", "not-octal"],
)
def test_bad_size_fields(layout, extract, resolver, size, errnum, words):
    refused(extract, tc.header("f", size=size) + tc.pad(b"x") + tc.end(), errnum, resolver, words)


def test_out_of_range_ids(layout, extract, resolver):
    refused(extract, tc.header("f", uid=tc.base256(1 << 32, 8)) + tc.end(), errno.EFBIG, resolver, "uid")
    refused(extract, tc.pax({"gid": "4294967296"}) + tc.entry("f") + tc.end(), errno.ERANGE, resolver, "gid")


@pytest.mark.parametrize(
    "raw,words",
    [
        (b"11 path=a\n", "length"),  # longer than the data
        (b"9 path=ab\n", "newline"),  # the record ends at "a", not at a newline
        (b"010 path=a\n", "length"),  # leading zero
        (b"x path=a\n", "length"),
        (b"10 path=a!", "newline"),
        (b"9 =value\n", "key"),
        (b"10 path a\n", "key"),
        (b"99999999999999999999999 k=v\n", "length"),
        (b"6 a=b\n\n", "length"),
    ],
)
def test_malformed_pax_records(layout, extract, resolver, raw, words):
    refused(extract, tc.pax({}, raw=raw) + tc.entry("f") + tc.end(), errno.EINVAL, resolver, words)


def test_malformed_pax_values(layout, extract, resolver):
    for records in ({"size": "12a"}, {"uid": "-1"}, {"mtime": "1.2.3"}, {"mtime": "x"}, {"path": "a\0b"}):
        refused(extract, tc.pax(records) + tc.entry("f") + tc.end(), errno.EINVAL, resolver, "PAX")


def test_oversized_meta_records(layout, extract, resolver):
    big = tc.header("PaxHeaders/x", type=b"x", size=(1 << 20) + 1) + tc.end()
    refused(extract, big, errno.EFBIG, resolver, "PAX header")
    refused(extract, tc.gnu_long("n" * 5000) + tc.entry("x") + tc.end(), errno.ENAMETOOLONG, resolver, "long name")
    refused(extract, tc.pax({"path": "p" * 5000}) + tc.entry("x") + tc.end(), errno.ENAMETOOLONG, resolver)


def test_name_component_over_name_max(layout, extract, resolver):
    refused(extract, tc.pax({"path": "n" * 256 + "/x"}) + tc.entry("x") + tc.end(), errno.ENAMETOOLONG, resolver)


def test_truncated_tar(layout, extract, resolver):
    tar = tc.entry("d/f", b"x" * 3000) + tc.entry("g", b"y") + tc.end()
    for cut, words in [(100, "header"), (512 + 10, "file data"), (512 + 3072, "no end-of-archive")]:
        refused(extract, tar[:cut], errno.EIO, resolver, words)


def test_zero_block_then_data(layout, extract, resolver):
    refused(extract, b"\0" * 512 + tc.entry("f", b"x") + tc.end(), errno.EINVAL, resolver, "zero block")


def test_sparse_entries_are_refused(layout, extract, resolver):
    refused(extract, tc.entry("s", b"x", type=b"S") + tc.end(), errno.EOPNOTSUPP, resolver, "sparse", entry="s")
    pax = tc.pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"})
    refused(extract, pax + tc.entry("s", b"x") + tc.end(), errno.EOPNOTSUPP, resolver, "sparse")


def test_unknown_entry_type(layout, extract, resolver):
    refused(extract, tc.entry("v", type=b"V") + tc.end(), errno.EINVAL, resolver, "type", entry="v")


def test_bad_whiteout_names(layout, extract, resolver):
    for name in (".wh.", ".wh..", ".wh..."):
        refused(extract, tc.entry("d/" + name) + tc.end(), errno.EINVAL, resolver, "whiteout")


def test_non_directory_named_root(layout, extract, resolver):
    refused(extract, tc.entry("./", b"x") + tc.end(), errno.EINVAL, resolver, "root")
    refused(extract, tc.entry("a/..", type=b"2", linkname="x") + tc.end(), errno.EINVAL, resolver, "root")


def test_meta_header_without_an_entry(layout, extract, resolver):
    refused(extract, tc.pax({"path": "x"}) + tc.end(), errno.EINVAL, resolver, "end of the archive")
    refused(extract, tc.gnu_long("x" * 200) + tc.end(), errno.EINVAL, resolver, "end of the archive")


# ---- openat2 missing for real ----

ENOSYS_CHILD = r"""
import ctypes, json, os, sys
from pycrio import native
from tests.support import tarcraft as tc

# seccomp: openat2 (437) fails with ENOSYS, as on kernels before 5.6 or under old profiles.
prog = [(0x20, 0, 0, 4), (0x15, 0, 3, 0xC000003E), (0x20, 0, 0, 0), (0x15, 0, 1, 437),
        (0x06, 0, 0, 0x00050000 | 38), (0x06, 0, 0, 0x7FFF0000)]
filt = (ctypes.c_uint64 * len(prog))(*[c | jt << 16 | jf << 24 | k << 32 for c, jt, jf, k in prog])
fprog = (ctypes.c_ushort * 8)()
ctypes.memmove(ctypes.addressof(fprog), ctypes.byref(ctypes.c_ushort(len(prog))), 2)
ctypes.memmove(ctypes.addressof(fprog) + 8, ctypes.byref(ctypes.c_void_p(ctypes.addressof(filt))), 8)
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
data = (tc.entry("outside/", type=b"5") + tc.entry("up", type=b"2", linkname="../../..")
        + tc.entry("up/outside/x", b"1") + tc.end())
fd = tc.memfd(data)
st = native.extract_layer(fd, sys.argv[1])
print(json.dumps({"features": native.extract_features(), "files": st.files,
                  "tree": sorted(os.listdir(os.path.join(sys.argv[1], "outside")))}))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is written for x86_64")
def test_openat2_enosys_falls_back(layout):
    import json
    import subprocess
    import sys

    top = os.path.dirname(os.path.dirname(native.__file__))
    out = subprocess.run(
        [sys.executable, "-c", ENOSYS_CHILD, layout.dest], cwd=top, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert not res["features"] & native.FEATURE_OPENAT2
    assert res["files"] == 1 and res["tree"] == ["x"]


def test_pax_size_over_the_cap(layout, extract, resolver):
    data = tc.pax({"size": str(1 << 50)}) + tc.entry("f") + tc.end()
    refused(extract, data, errno.ERANGE, resolver, "PAX size")
