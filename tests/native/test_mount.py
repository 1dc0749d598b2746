"""csrc/mount.c: overlay, bind and tmpfs mounts (new mount API and the mount(2) fallback), unmount."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Callable, Iterator

import pytest

from pycrio import native


@pytest.fixture(params=[0, native.MOUNT_NO_NEW_API], ids=["new-api", "mount2"])
def api(request: pytest.FixtureRequest) -> int:
    """The flag choosing the new mount API or the forced mount(2) fallback."""
    return request.param


@pytest.fixture
def unmount_later() -> Iterator[Callable[[str], str]]:
    """unmount_later(target) -> target: lazily unmounted (everything stacked there) after the test."""
    targets: list[str] = []
    yield lambda target: targets.append(target) or target
    for target in reversed(targets):
        while native.unmount(target, native.UNMOUNT_DETACH):
            pass


def _mountinfo(path: str) -> list[tuple[list[str], list[str]]]:
    """(per-mount options, super options) of each mount at path, bottom first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                sep = fields.index("-")
                out.append((fields[5].split(","), fields[sep + 3].split(",")))
    return out


def _mkdirs(*paths: str) -> None:
    for p in paths:
        os.makedirs(p, exist_ok=True)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


class Overlay:
    """Layers, upper, work and merged directories under one base directory."""

    def __init__(self, base: str, nlayers: int, name: Callable[[int], str] = lambda i: f"l{i}"):
        self.base = base
        self.lowers = [os.path.join(base, name(i)) for i in range(nlayers)]
        self.upper = os.path.join(base, "upper")
        self.work = os.path.join(base, "work")
        self.merged = os.path.join(base, "merged")
        _mkdirs(*self.lowers, self.upper, self.work, self.merged)

    def mount(self, flags: int = 0, writable: bool = True) -> str:
        if writable:
            native.mount_overlay(self.merged, self.lowers, self.upper, self.work, flags)
        else:
            native.mount_overlay(self.merged, self.lowers, flags=flags)
        return self.merged


@pytest.fixture
def overlay(tmpdir_short, unmount_later) -> Callable[..., Overlay]:
    """overlay(nlayers, name=...) -> an Overlay whose merged dir is unmounted after the test."""

    def make(nlayers: int, **kwargs) -> Overlay:
        ov = Overlay(tmpdir_short, nlayers, **kwargs)
        unmount_later(ov.merged)
        return ov

    return make


# ---- overlay ---------------------------------------------------------------------------------


def test_overlay_of_one_lower_writes_land_in_upper(overlay, api):
    ov = overlay(1)
    _write(os.path.join(ov.lowers[0], "etc", "conf"), "lower\n")
    merged = ov.mount(api)
    assert native.fs_type(merged) == native.OVERLAYFS_MAGIC
    assert _read(os.path.join(merged, "etc", "conf")) == "lower\n"
    _write(os.path.join(merged, "etc", "conf"), "changed\n")
    _write(os.path.join(merged, "new"), "new\n")
    assert _read(os.path.join(ov.upper, "etc", "conf")) == "changed\n"
    assert _read(os.path.join(ov.upper, "new")) == "new\n"
    assert _read(os.path.join(ov.lowers[0], "etc", "conf")) == "lower\n"
    os.unlink(os.path.join(merged, "etc", "conf"))
    st = os.lstat(os.path.join(ov.upper, "etc", "conf"))  # the deletion is a whiteout in upper
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.path.exists(os.path.join(ov.lowers[0], "etc", "conf"))


def test_overlay_of_three_lowers_the_top_layer_wins(overlay, api):
    ov = overlay(3)
    for i, lower in enumerate(ov.lowers):
        _write(os.path.join(lower, "who"), f"layer {i}")
        _write(os.path.join(lower, f"only{i}"), str(i))
    _write(os.path.join(ov.lowers[1], "mid"), "1")
    _write(os.path.join(ov.lowers[2], "mid"), "2")
    merged = ov.mount(api)
    assert _read(os.path.join(merged, "who")) == "layer 0"
    assert _read(os.path.join(merged, "mid")) == "1"
    assert sorted(os.listdir(merged)) == ["mid", "only0", "only1", "only2", "who"]


def test_whiteout_hides_a_lower_file(overlay, api):
    ov = overlay(2)
    _write(os.path.join(ov.lowers[1], "gone"), "bottom")
    _write(os.path.join(ov.lowers[1], "kept"), "bottom")
    os.mknod(os.path.join(ov.lowers[0], "gone"), stat.S_IFCHR, os.makedev(0, 0))
    merged = ov.mount(api)
    assert sorted(os.listdir(merged)) == ["kept"]
    assert not os.path.lexists(os.path.join(merged, "gone"))


def test_opaque_dir_hides_the_lower_dir_contents(overlay, api):
    ov = overlay(2)
    _write(os.path.join(ov.lowers[1], "d", "below"), "bottom")
    _write(os.path.join(ov.lowers[1], "e", "below"), "bottom")
    _write(os.path.join(ov.lowers[0], "d", "above"), "top")
    _write(os.path.join(ov.lowers[0], "e", "above"), "top")
    os.setxattr(os.path.join(ov.lowers[0], "d"), "trusted.overlay.opaque", b"y")
    merged = ov.mount(api)
    assert os.listdir(os.path.join(merged, "d")) == ["above"]
    assert sorted(os.listdir(os.path.join(merged, "e"))) == ["above", "below"]  # not opaque: merged


def test_overlay_of_thirty_lowers(overlay, api):
    ov = overlay(30)
    for i, lower in enumerate(ov.lowers):
        _write(os.path.join(lower, "who"), str(i))
        _write(os.path.join(lower, f"f{i:02d}"), str(i))
    merged = ov.mount(api)
    assert _read(os.path.join(merged, "who")) == "0"
    assert sorted(os.listdir(merged)) == sorted(["who"] + [f"f{i:02d}" for i in range(30)])
    assert _read(os.path.join(merged, "f29")) == "29"


def test_read_only_overlay_refuses_writes(overlay, api):
    ov = overlay(2)
    _write(os.path.join(ov.lowers[1], "f"), "x")
    merged = ov.mount(api, writable=False)
    assert _read(os.path.join(merged, "f")) == "x"
    with pytest.raises(OSError) as info:
        _write(os.path.join(merged, "new"), "y")
    assert info.value.errno == errno.EROFS


def test_rdonly_flag_on_a_writable_overlay_refuses_writes(overlay, api):
    ov = overlay(1)
    merged = ov.mount(api | native.MOUNT_RDONLY)
    assert "ro" in _mountinfo(merged)[0][0]
    with pytest.raises(OSError) as info:
        _write(os.path.join(merged, "new"), "y")
    assert info.value.errno == errno.EROFS


def test_long_paths_many_layers_new_api_works_fallback_is_e2big(overlay):
    # 30 layers of ~190 bytes: ~5.7 KiB of options, more than the page mount(2) takes.
    ov = overlay(30, name=lambda i: f"{i:02d}" + "x" * 160)
    for i, lower in enumerate(ov.lowers):
        _write(os.path.join(lower, f"f{i}"), str(i))
    with pytest.raises(native.NativeError) as info:
        ov.mount(native.MOUNT_NO_NEW_API)
    e = info.value
    assert e.errno == errno.E2BIG
    assert e.step == "mount" and e.filename == ov.merged
    assert "30 layers" in e.strerror and "page" in e.strerror
    assert _mountinfo(ov.merged) == []
    merged = ov.mount()
    assert len(os.listdir(merged)) == 30


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()))


def test_a_layer_path_over_255_bytes(overlay, api):
    # fsconfig takes strings of at most 255 bytes: the new API passes such a layer as an fd.
    if api == 0 and _kernel() < (6, 13):
        pytest.skip("overlay layers given as file descriptors need Linux 6.13")
    ov = overlay(2, name=lambda i: os.path.join("d" * 200, f"{i}" * 100))
    _write(os.path.join(ov.lowers[0], "deep"), "ok")
    merged = ov.mount(api)
    assert _read(os.path.join(merged, "deep")) == "ok"


def test_colons_commas_and_backslashes_in_paths(overlay, api):
    ov = overlay(2, name=lambda i: f"a:b,c\\d{i}")
    ov.upper = os.path.join(ov.base, "up:per,x")
    ov.work = os.path.join(ov.base, "wo\\rk")
    _mkdirs(ov.upper, ov.work)
    _write(os.path.join(ov.lowers[1], "f"), "bottom")
    merged = ov.mount(api)
    assert _read(os.path.join(merged, "f")) == "bottom"
    _write(os.path.join(merged, "g"), "up")
    assert _read(os.path.join(ov.upper, "g")) == "up"


def test_missing_lower_is_enoent_naming_it(overlay, api):
    ov = overlay(3)
    missing = os.path.join(ov.base, "no-such-layer")
    ov.lowers[1] = missing
    with pytest.raises(native.NativeError) as info:
        ov.mount(api)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == missing
    assert missing in info.value.strerror and ov.merged in info.value.strerror
    assert _mountinfo(ov.merged) == []


def test_missing_target_is_enoent_naming_it(overlay, api):
    ov = overlay(1)
    os.rmdir(ov.merged)
    with pytest.raises(native.NativeError) as info:
        ov.mount(api)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == ov.merged
    assert info.value.step in ("move_mount", "mount")


def test_no_lowers_is_einval(tmpdir_short, api):
    err = native.new_err()
    lowers = native.ffi.new("char *[]", [native.ffi.NULL])
    rc = native.lib.pycrio_mount_overlay(tmpdir_short.encode(), lowers, 0, native.ffi.NULL, native.ffi.NULL, api, err)
    assert rc == -errno.EINVAL and err.errnum == errno.EINVAL
    with pytest.raises(native.NativeError) as info:
        native.mount_overlay(tmpdir_short, [], flags=api)
    assert info.value.errno == errno.EINVAL
    assert "0 lower layers" in info.value.strerror


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"upper": "/tmp"}, "go together"),
        ({"work": "/tmp"}, "go together"),
        ({}, "at least 2 lower layers"),  # a read-only overlay of one layer
        ({"upper": "/tmp", "work": "/tmp", "flags": native.MOUNT_REC}, "invalid flags"),
    ],
)
def test_invalid_overlay_arguments_are_einval(tmpdir_short, kwargs, words):
    with pytest.raises(native.NativeError) as info:
        native.mount_overlay(tmpdir_short, ["/"], **kwargs)
    assert info.value.errno == errno.EINVAL
    assert words in info.value.strerror


def test_overlay_shows_the_overlay_source(overlay, api):
    ov = overlay(1)
    merged = ov.mount(api)
    with open("/proc/self/mountinfo") as f:
        (line,) = [line for line in f if line.split()[4] == merged]
    fields = line.split()
    sep = fields.index("-")
    assert fields[sep + 1 : sep + 3] == ["overlay", "overlay"]
    # Which API made it shows in the options: one lowerdir+ per layer, or one lowerdir string.
    key = "lowerdir=" if api == native.MOUNT_NO_NEW_API else "lowerdir+="
    assert fields[sep + 3].split(",")[1].startswith(key)


# ---- bind ------------------------------------------------------------------------------------


def test_bind_a_directory(tmpdir_short, unmount_later, api):
    src, dst = os.path.join(tmpdir_short, "src"), unmount_later(os.path.join(tmpdir_short, "dst"))
    _mkdirs(src, dst)
    _write(os.path.join(src, "f"), "hello")
    native.mount_bind(src, dst, api)
    assert _read(os.path.join(dst, "f")) == "hello"
    _write(os.path.join(dst, "g"), "back")
    assert _read(os.path.join(src, "g")) == "back"


def test_bind_a_file(tmpdir_short, unmount_later, api):
    src, dst = os.path.join(tmpdir_short, "resolv.conf"), unmount_later(os.path.join(tmpdir_short, "target"))
    _write(src, "nameserver 10.0.0.1\n")
    open(dst, "w").close()
    native.mount_bind(src, dst, api)
    assert _read(dst) == "nameserver 10.0.0.1\n"
    assert len(_mountinfo(dst)) == 1


def test_read_only_bind(tmpdir_short, unmount_later, api):
    src, dst = os.path.join(tmpdir_short, "src"), unmount_later(os.path.join(tmpdir_short, "dst"))
    _mkdirs(src, dst)
    native.mount_bind(src, dst, api | native.MOUNT_RDONLY)
    assert "ro" in _mountinfo(dst)[0][0]
    with pytest.raises(OSError) as info:
        _write(os.path.join(dst, "f"), "x")
    assert info.value.errno == errno.EROFS
    _write(os.path.join(src, "f"), "x")  # the source stays writable
    assert _read(os.path.join(dst, "f")) == "x"


def test_read_only_bind_keeps_nosuid_nodev_noexec(tmpdir_short, unmount_later, api):
    src, dst = unmount_later(os.path.join(tmpdir_short, "src")), unmount_later(os.path.join(tmpdir_short, "dst"))
    _mkdirs(src, dst)
    native.mount_tmpfs(src, "size=1m")
    native.mount_bind(src, dst, api | native.MOUNT_RDONLY)
    opts = _mountinfo(dst)[0][0]
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts)


def test_rbind_takes_submounts_and_plain_bind_does_not(tmpdir_short, unmount_later, api):
    src = unmount_later(os.path.join(tmpdir_short, "src"))
    sub = unmount_later(os.path.join(src, "sub"))
    plain, rec = unmount_later(os.path.join(tmpdir_short, "plain")), unmount_later(os.path.join(tmpdir_short, "rec"))
    _mkdirs(sub, plain, rec)
    native.mount_tmpfs(sub, "size=1m")
    _write(os.path.join(sub, "inner"), "submount")
    native.mount_bind(src, plain, api)
    native.mount_bind(src, rec, api | native.MOUNT_REC)
    assert os.listdir(os.path.join(plain, "sub")) == []
    assert _read(os.path.join(rec, "sub", "inner")) == "submount"
    unmount_later(os.path.join(rec, "sub"))


def test_recursive_read_only_bind(tmpdir_short, unmount_later):
    src = os.path.join(tmpdir_short, "src")
    sub = unmount_later(os.path.join(src, "sub"))
    dst = unmount_later(os.path.join(tmpdir_short, "dst"))
    _mkdirs(sub, dst)
    native.mount_tmpfs(sub, "size=1m")
    native.mount_bind(src, dst, native.MOUNT_REC | native.MOUNT_RDONLY)
    with pytest.raises(OSError) as info:
        _write(os.path.join(dst, "sub", "f"), "x")
    assert info.value.errno == errno.EROFS  # the submount is read-only too
    _write(os.path.join(sub, "f"), "x")


def test_a_bind_clone_of_a_recursive_read_only_tree_keeps_it_read_only(tmpdir_short, unmount_later, api):
    # What pycrio.volumes relies on: runc 1.1 has no "rro", it rbinds the staged tree (then makes its
    # top read-only); every cloned submount keeps the read-only flag of the mount it was cloned from.
    src = os.path.join(tmpdir_short, "src")
    sub = unmount_later(os.path.join(src, "sub"))
    staged = unmount_later(os.path.join(tmpdir_short, "staged"))
    clone = unmount_later(os.path.join(tmpdir_short, "clone"))
    _mkdirs(sub, staged, clone)
    native.mount_tmpfs(sub, "size=1m")
    native.mount_bind(src, staged, native.MOUNT_REC | native.MOUNT_RDONLY)
    native.mount_bind(staged, clone, api | native.MOUNT_REC)  # a writable rbind of it, as runc starts
    unmount_later(os.path.join(staged, "sub"))
    unmount_later(os.path.join(clone, "sub"))
    assert "ro" in _mountinfo(os.path.join(clone, "sub"))[0][0]
    with pytest.raises(OSError) as info:
        _write(os.path.join(clone, "sub", "f"), "x")
    assert info.value.errno == errno.EROFS


def _peer_groups(path: str) -> set[str]:
    """The "shared:N" tags of the mount at path (empty: not shared)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                return {o for o in fields[6 : fields.index("-")] if o.startswith("shared:")}
    raise AssertionError(f"{path} is not a mount point")


def test_private_bind_is_no_peer_of_a_shared_source(tmpdir_short, unmount_later, api):
    src = unmount_later(os.path.join(tmpdir_short, "src"))
    sub = os.path.join(src, "sub")
    peer, private = unmount_later(os.path.join(tmpdir_short, "peer")), unmount_later(os.path.join(tmpdir_short, "priv"))
    _mkdirs(src, peer, private)
    native.mount_tmpfs(src, "size=1m")
    subprocess.run(["mount", "--make-shared", src], check=True)
    group = _peer_groups(src)
    assert group
    native.mount_bind(src, peer, api)
    native.mount_bind(src, private, api | native.MOUNT_PRIVATE | native.MOUNT_REC)
    assert _peer_groups(peer) == group and not group & _peer_groups(private)
    os.mkdir(sub)
    native.mount_tmpfs(sub, "size=1m")  # propagates to the peer, not into the private copy
    unmount_later(os.path.join(peer, "sub"))
    unmount_later(sub)
    assert _mountinfo(os.path.join(peer, "sub")) and not _mountinfo(os.path.join(private, "sub"))


def test_private_recursive_read_only_bind(tmpdir_short, unmount_later):
    src = os.path.join(tmpdir_short, "src")
    sub = unmount_later(os.path.join(src, "sub"))
    dst = unmount_later(os.path.join(tmpdir_short, "dst"))
    _mkdirs(sub, dst)
    native.mount_tmpfs(sub, "size=1m")
    native.mount_bind(src, dst, native.MOUNT_REC | native.MOUNT_RDONLY | native.MOUNT_PRIVATE)
    unmount_later(os.path.join(dst, "sub"))
    assert "ro" in _mountinfo(os.path.join(dst, "sub"))[0][0]


def test_recursive_read_only_bind_fallback_is_eopnotsupp(tmpdir_short):
    with pytest.raises(native.NativeError) as info:
        native.mount_bind(tmpdir_short, tmpdir_short, native.MOUNT_REC | native.MOUNT_RDONLY | native.MOUNT_NO_NEW_API)
    assert info.value.errno == errno.EOPNOTSUPP
    assert "mount_setattr" in info.value.strerror
    assert _mountinfo(tmpdir_short) == []


def test_bind_missing_source_names_the_source(tmpdir_short, api):
    missing = os.path.join(tmpdir_short, "missing")
    with pytest.raises(native.NativeError) as info:
        native.mount_bind(missing, tmpdir_short, api)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == missing


def test_bind_missing_target_names_the_target(tmpdir_short, api):
    missing = os.path.join(tmpdir_short, "missing")
    with pytest.raises(native.NativeError) as info:
        native.mount_bind(tmpdir_short, missing, api)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == missing


# ---- tmpfs -----------------------------------------------------------------------------------


def test_tmpfs_with_size_and_mode(tmpdir_short, unmount_later, api):
    target = unmount_later(os.path.join(tmpdir_short, "shm"))
    os.mkdir(target)
    native.mount_tmpfs(target, "mode=1777,size=1m", api)
    assert native.fs_type(target) == native.TMPFS_MAGIC
    st = os.statvfs(target)
    assert st.f_blocks * st.f_frsize == 1024 * 1024
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o1777
    (opts, super_opts) = _mountinfo(target)[0]
    assert {"rw", "nosuid", "nodev", "noexec"} <= set(opts)
    assert "size=1024k" in super_opts


def test_tmpfs_read_only_and_without_options(tmpdir_short, unmount_later, api):
    target = unmount_later(os.path.join(tmpdir_short, "t"))
    os.mkdir(target)
    native.mount_tmpfs(target, None, api | native.MOUNT_RDONLY)
    assert "ro" in _mountinfo(target)[0][0]


def test_tmpfs_bad_option_names_it(tmpdir_short, api):
    with pytest.raises(native.NativeError) as info:
        native.mount_tmpfs(tmpdir_short, "mode=1777,size=lots", api)
    e = info.value
    assert e.errno == errno.EINVAL
    assert e.filename == tmpdir_short
    if api == native.MOUNT_NO_NEW_API:
        assert e.step == "mount" and "size=lots" in e.strerror  # mount(2) cannot say which option
    else:
        assert e.step == "fsconfig size"
        assert "option size=lots" in e.strerror and "Bad value for 'size'" in e.strerror  # the fs log
    assert _mountinfo(tmpdir_short) == []


# ---- unmount ---------------------------------------------------------------------------------


def test_unmount_is_idempotent(tmpdir_short):
    native.mount_tmpfs(tmpdir_short, "size=1m")
    assert native.unmount(tmpdir_short) is True
    assert _mountinfo(tmpdir_short) == []
    assert native.unmount(tmpdir_short) is False  # not a mount point (EINVAL)
    assert native.unmount(os.path.join(tmpdir_short, "missing")) is False  # ENOENT


def test_unmount_busy_needs_detach(tmpdir_short):
    native.mount_tmpfs(tmpdir_short, "size=1m")
    fd = os.open(os.path.join(tmpdir_short, "busy"), os.O_CREAT | os.O_WRONLY)
    try:
        with pytest.raises(native.NativeError) as info:
            native.unmount(tmpdir_short)
        assert info.value.errno == errno.EBUSY
        assert info.value.step == "umount2" and info.value.filename == tmpdir_short
        assert native.unmount(tmpdir_short, native.UNMOUNT_DETACH) is True
        assert _mountinfo(tmpdir_short) == []
    finally:
        os.close(fd)


def test_unmount_does_not_follow_symlinks(tmpdir_short, unmount_later):
    target = unmount_later(os.path.join(tmpdir_short, "real"))
    link = os.path.join(tmpdir_short, "link")
    os.mkdir(target)
    os.symlink(target, link)
    native.mount_tmpfs(target, "size=1m")
    assert native.unmount(link) is False
    assert len(_mountinfo(target)) == 1
