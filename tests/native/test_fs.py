"""csrc/fs.c and the C error contract (csrc/err.c) through cffi."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from pycrio import native


def test_fs_type_of_proc():
    assert native.fs_type("/proc") == native.PROC_SUPER_MAGIC


def test_fs_type_of_a_tmpfs_mount(tmpdir_short):
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", tmpdir_short], check=True)
    try:
        assert native.fs_type(tmpdir_short) == native.TMPFS_MAGIC
        assert native.fs_type(os.path.join(tmpdir_short, ".")) == native.TMPFS_MAGIC
    finally:
        subprocess.run(["umount", tmpdir_short], check=True)
    assert native.fs_type(tmpdir_short) != native.TMPFS_MAGIC


def test_missing_path_raises_native_error_with_step_and_path(tmpdir_short):
    missing = os.path.join(tmpdir_short, "no", "such")
    with pytest.raises(native.NativeError) as info:
        native.fs_type(missing)
    e = info.value
    assert isinstance(e, OSError)
    assert e.errno == errno.ENOENT
    assert e.step == "statfs"
    assert e.filename == missing
    assert missing in e.strerror and "No such file" in e.strerror


def test_not_a_directory_component(tmpdir_short):
    f = os.path.join(tmpdir_short, "file")
    open(f, "w").close()
    with pytest.raises(native.NativeError) as info:
        native.fs_type(os.path.join(f, "x"))
    assert info.value.errno == errno.ENOTDIR


def test_empty_path_is_einval():
    with pytest.raises(native.NativeError) as info:
        native.fs_type("")
    assert info.value.errno == errno.EINVAL
    assert info.value.step == "statfs"


def test_error_struct_untouched_on_success():
    err = native.new_err()
    rc = native.lib.pycrio_fs_type(b"/", err)
    assert rc >= 0
    assert err.errnum == 0 and native.ffi.string(err.msg) == b""


def test_long_path_is_truncated_not_overflowed():
    # A path longer than the error struct's path buffer: ENAMETOOLONG, buffers stay terminated.
    long_path = "/" + "a" * 5000
    with pytest.raises(native.NativeError) as info:
        native.fs_type(long_path)
    assert info.value.errno == errno.ENAMETOOLONG
    assert info.value.filename == long_path[: 4096 - 1]


@pytest.mark.skipif(os.environ.get("PYCRIO_SANITIZE") == "1", reason="ASan quarantine grows RSS by design")
def test_many_calls_do_not_leak():
    # Each call allocates its own error struct; memory must not grow with calls.
    import psutil

    proc = psutil.Process()
    for _ in range(2000):
        with pytest.raises(OSError):
            native.fs_type("/nonexistent/x")
    before = proc.memory_info().rss
    for _ in range(20000):
        with pytest.raises(OSError):
            native.fs_type("/nonexistent/x")
    assert proc.memory_info().rss - before < 4 * 1024 * 1024


def test_module_under_test_is_the_built_one():
    # make test-asan runs these tests against a sanitized copy; make sure it is the one loaded.
    if os.environ.get("PYCRIO_SANITIZE") == "1":
        assert "build/asan" in native.__file__, native.__file__


def test_native_errors_are_the_matching_builtin_subclass(tmpdir_short):
    with pytest.raises(FileNotFoundError) as info:
        native.fs_type(os.path.join(tmpdir_short, "missing"))
    assert isinstance(info.value, native.NativeError) and info.value.step == "statfs"
    f = os.path.join(tmpdir_short, "file")
    open(f, "w").close()
    with pytest.raises(NotADirectoryError):
        native.fs_type(os.path.join(f, "x"))
