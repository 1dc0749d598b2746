"""csrc/inotify.c: inotify descriptors and watches through native.py."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

import pytest

from pycrio import native

EVENT = struct.Struct("iIII")


def read_events(fd: int) -> list[tuple[int, int, str]]:
    """(wd, mask, name) of every queued event; [] when none."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return []
    out, offset = [], 0
    while offset < len(data):
        wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
        name = data[offset + EVENT.size : offset + EVENT.size + length].rstrip(b"\0").decode()
        out.append((wd, mask, name))
        offset += EVENT.size + length
    return out


@pytest.fixture
def ifd():
    fd = native.inotify_init()
    yield fd
    os.close(fd)


def test_constants_match_the_kernel_abi():
    assert native.IN_CLOSE_WRITE == 0x8
    assert native.IN_MOVED_TO == 0x80
    assert native.IN_Q_OVERFLOW == 0x4000
    assert native.IN_ONLYDIR == 0x1000000


def test_descriptor_is_nonblocking_and_cloexec(ifd):
    assert os.get_blocking(ifd) is False
    assert fcntl.fcntl(ifd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert read_events(ifd) == []


def test_rename_and_close_write_events(ifd, tmp_path):
    wd = native.inotify_add_watch(ifd, tmp_path, native.IN_MOVED_TO | native.IN_CLOSE_WRITE)
    assert wd >= 1
    (tmp_path / ".a.tmp").write_text("x")
    os.rename(tmp_path / ".a.tmp", tmp_path / "a")
    events = read_events(ifd)
    assert (wd, native.IN_CLOSE_WRITE, ".a.tmp") in events
    assert (wd, native.IN_MOVED_TO, "a") in events


def test_add_watch_missing_path_names_it(ifd, tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(native.NativeError) as info:
        native.inotify_add_watch(ifd, missing, native.IN_MOVED_TO)
    assert info.value.errno == errno.ENOENT
    assert info.value.step == "inotify_add_watch"
    assert info.value.filename == str(missing)


def test_onlydir_refuses_a_file(ifd, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(native.NativeError) as info:
        native.inotify_add_watch(ifd, f, native.IN_MOVED_TO | native.IN_ONLYDIR)
    assert info.value.errno == errno.ENOTDIR


def test_empty_path_is_einval(ifd):
    with pytest.raises(native.NativeError) as info:
        native.inotify_add_watch(ifd, "", native.IN_MOVED_TO)
    assert info.value.errno == errno.EINVAL


def test_rm_watch(ifd, tmp_path):
    wd = native.inotify_add_watch(ifd, tmp_path, native.IN_CLOSE_WRITE)
    native.inotify_rm_watch(ifd, wd)
    assert any(mask & native.IN_IGNORED for _, mask, _ in read_events(ifd))
    with pytest.raises(native.NativeError) as info:
        native.inotify_rm_watch(ifd, wd)
    assert info.value.errno == errno.EINVAL


def test_bad_descriptor(tmp_path):
    with pytest.raises(native.NativeError) as info:
        native.inotify_add_watch(-1, tmp_path, native.IN_CLOSE_WRITE)
    assert info.value.errno == errno.EBADF


def test_no_descriptor_leak():
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(500):
        os.close(native.inotify_init())
    assert len(os.listdir("/proc/self/fd")) == before
