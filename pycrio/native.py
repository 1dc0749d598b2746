"""The only module that imports the cffi extension: typed wrappers raising NativeError."""

from __future__ import annotations

import os
from typing import Any

from pycrio import _native  # type: ignore[attr-defined]

ffi = _native.ffi
lib = _native.lib


class NativeError(OSError):
    """A failed C call: errno, the failing step (syscall) and the path it failed on."""

    def __init__(self, errnum: int, step: str, path: str, message: str):
        super().__init__(errnum, message or os.strerror(errnum), path or None)
        self.step = step

    def __str__(self) -> str:
        return f"{self.strerror} (errno {self.errno})"


def new_err() -> Any:
    """A caller-owned struct pycrio_err for one C call."""
    return ffi.new("struct pycrio_err *")


def check(rc: int, err: Any) -> int:
    """Return rc when it is >= 0; raise NativeError from the filled err otherwise."""
    if rc >= 0:
        return rc
    errnum = err.errnum or -rc
    raise NativeError(
        errnum,
        ffi.string(err.step).decode(errors="replace"),
        ffi.string(err.path).decode(errors="surrogateescape"),
        ffi.string(err.msg).decode(errors="replace"),
    )


def _path(path: str | os.PathLike[str]) -> bytes:
    return os.fsencode(path)


def fs_type(path: str | os.PathLike[str]) -> int:
    """The statfs(2) f_type magic of the filesystem holding path."""
    err = new_err()
    return check(lib.pycrio_fs_type(_path(path), err), err)


# f_type magics the daemon cares about (linux/magic.h).
OVERLAYFS_MAGIC = 0x794C7630
TMPFS_MAGIC = 0x01021994
PROC_SUPER_MAGIC = 0x9FA0
