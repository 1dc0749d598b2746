"""The only module that imports the cffi extension: typed wrappers raising NativeError."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


# Layer extraction (csrc/extract*.c).
COMPRESSION_AUTO: int = lib.PYCRIO_COMPRESSION_AUTO
COMPRESSION_NONE: int = lib.PYCRIO_COMPRESSION_NONE
COMPRESSION_GZIP: int = lib.PYCRIO_COMPRESSION_GZIP
COMPRESSION_ZSTD: int = lib.PYCRIO_COMPRESSION_ZSTD
EXTRACT_NO_OPENAT2: int = lib.PYCRIO_EXTRACT_NO_OPENAT2
EXTRACT_SYNC: int = lib.PYCRIO_EXTRACT_SYNC
EXTRACT_NO_ISAL: int = lib.PYCRIO_EXTRACT_NO_ISAL
FEATURE_ISAL: int = lib.PYCRIO_FEATURE_ISAL
FEATURE_ZSTD: int = lib.PYCRIO_FEATURE_ZSTD
FEATURE_OPENAT2: int = lib.PYCRIO_FEATURE_OPENAT2


@dataclass(frozen=True)
class ExtractStats:
    """What pycrio_extract_layer read and created (struct pycrio_extract_stats)."""

    compressed_bytes: int
    uncompressed_bytes: int
    compressed_digest: str  # "sha256:<hex>" of the blob as read from in_fd
    diff_digest: str  # "sha256:<hex>" of the uncompressed tar stream (the OCI diff ID)
    files: int
    dirs: int
    symlinks: int
    hardlinks: int
    devices: int
    fifos: int
    whiteouts: int
    opaques: int
    xattrs: int
    xattrs_skipped: int
    compression: int  # COMPRESSION_NONE/GZIP/ZSTD: what was used


def extract_features() -> int:
    """A mask of FEATURE_* (ISA-L gzip, zstd, openat2) of this build on this kernel."""
    return int(lib.pycrio_extract_features())


def extract_layer(
    in_fd: int,
    dest: str | os.PathLike[str],
    *,
    tee_fd: int = -1,
    compression: int = COMPRESSION_AUTO,
    flags: int = 0,
) -> ExtractStats:
    """Extract the (compressed) tar layer read from in_fd to EOF into the empty directory dest.

    Every byte read is also written to tee_fd when it is >= 0. On NativeError dest is left
    partially filled: the caller removes it. Runs without the GIL.
    """
    err = new_err()
    st = ffi.new("struct pycrio_extract_stats *")
    check(lib.pycrio_extract_layer(in_fd, tee_fd, _path(dest), compression, flags, st, err), err)
    return ExtractStats(
        compressed_bytes=st.compressed_bytes,
        uncompressed_bytes=st.uncompressed_bytes,
        compressed_digest=ffi.string(st.compressed_digest).decode(),
        diff_digest=ffi.string(st.diff_digest).decode(),
        files=st.files,
        dirs=st.dirs,
        symlinks=st.symlinks,
        hardlinks=st.hardlinks,
        devices=st.devices,
        fifos=st.fifos,
        whiteouts=st.whiteouts,
        opaques=st.opaques,
        xattrs=st.xattrs,
        xattrs_skipped=st.xattrs_skipped,
        compression=st.compression,
    )
