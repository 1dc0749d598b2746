"""The only module that imports the cffi extension: typed wrappers raising NativeError."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping, Sequence
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


# errno -> the builtin OSError subclass Python itself would pick, so `except FileNotFoundError`
# also catches a NativeError with ENOENT (OSError only does that mapping for itself).
_BUILTIN_BY_ERRNO: dict[int, type[OSError]] = {
    errno.ENOENT: FileNotFoundError,
    errno.EEXIST: FileExistsError,
    errno.EACCES: PermissionError,
    errno.EPERM: PermissionError,
    errno.ENOTDIR: NotADirectoryError,
    errno.EISDIR: IsADirectoryError,
    errno.EINTR: InterruptedError,
    errno.ETIMEDOUT: TimeoutError,
    errno.ESRCH: ProcessLookupError,
    errno.ECHILD: ChildProcessError,
}
_NATIVE_BY_ERRNO: dict[int, type[NativeError]] = {
    number: type(f"Native{builtin.__name__}", (NativeError, builtin), {})
    for number, builtin in _BUILTIN_BY_ERRNO.items()
}


def new_err() -> Any:
    """A caller-owned struct pycrio_err for one C call."""
    return ffi.new("struct pycrio_err *")


def check(rc: int, err: Any) -> int:
    """Return rc when it is >= 0; raise NativeError from the filled err otherwise."""
    if rc >= 0:
        return rc
    errnum = err.errnum or -rc
    raise _NATIVE_BY_ERRNO.get(errnum, NativeError)(
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
EXTRACT_SERIAL: int = lib.PYCRIO_EXTRACT_SERIAL
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


def decompress_discard(in_fd: int, *, compression: int = COMPRESSION_AUTO, flags: int = 0) -> tuple[int, int, int]:
    """Decode the stream read from in_fd to EOF and throw the output away (no tar, no digests,
    nothing written): (compressed bytes, decoded bytes, compression used). The extractor's own
    decoder, for measuring it and for checking that a stream decodes. Runs without the GIL."""
    err = new_err()
    st = ffi.new("struct pycrio_extract_stats *")
    check(lib.pycrio_decompress_discard(in_fd, compression, flags, st, err), err)
    return int(st.compressed_bytes), int(st.uncompressed_bytes), int(st.compression)


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


# Namespace pinning (csrc/ns.c).
NS_NET: int = lib.PYCRIO_NS_NET
NS_IPC: int = lib.PYCRIO_NS_IPC
NS_UTS: int = lib.PYCRIO_NS_UTS
NS_NAMES: dict[int, str] = {NS_NET: "net", NS_IPC: "ipc", NS_UTS: "uts"}


def _cstrings(items: Iterable[str | os.PathLike[str]]) -> tuple[Any, list[Any]]:
    """A NULL-terminated char *[] for C, and the buffers that must outlive the call."""
    keep = [ffi.new("char[]", os.fsencode(item)) for item in items]
    return ffi.new("char *[]", [*keep, ffi.NULL]), keep


def ns_pin(
    dir: str | os.PathLike[str],
    kinds: int,
    hostname: str | None = None,
    sysctls: Iterable[str] | Mapping[str, str] = (),
) -> dict[str, str]:
    """Create new namespaces of `kinds` (NS_* mask) and pin each to dir/<name>; {name: path}.

    hostname is set in a new UTS namespace; sysctls ("key=value" strings, or a mapping) are
    written inside the new namespaces; lo is brought up in a new NET namespace. On NativeError
    nothing is left pinned. Undo with ns_unpin() on each returned path. Runs without the GIL.
    """
    if isinstance(sysctls, Mapping):
        sysctls = [f"{key}={value}" for key, value in sysctls.items()]
    array, keep = _cstrings(sysctls)
    host = ffi.NULL if hostname is None else hostname.encode()
    err = new_err()
    check(lib.pycrio_ns_pin(_path(dir), kinds, host, array, err), err)
    del keep
    return {name: os.path.join(os.fsdecode(dir), name) for kind, name in NS_NAMES.items() if kinds & kind}


def ns_unpin(path: str | os.PathLike[str]) -> bool:
    """Detach the pin at path and remove the file; False when there was nothing to remove."""
    err = new_err()
    return check(lib.pycrio_ns_unpin(_path(path), err), err) == 1


# Mounts (csrc/mount.c).
MOUNT_RDONLY: int = lib.PYCRIO_MOUNT_RDONLY
MOUNT_REC: int = lib.PYCRIO_MOUNT_REC
MOUNT_NO_NEW_API: int = lib.PYCRIO_MOUNT_NO_NEW_API
MOUNT_PRIVATE: int = lib.PYCRIO_MOUNT_PRIVATE
UNMOUNT_DETACH: int = lib.PYCRIO_UNMOUNT_DETACH


def mount_overlay(
    target: str | os.PathLike[str],
    lowers: Sequence[str | os.PathLike[str]],
    upper: str | os.PathLike[str] | None = None,
    work: str | os.PathLike[str] | None = None,
    flags: int = 0,
) -> None:
    """Mount an overlay at target; lowers[0] is the topmost layer. No upper/work: read-only."""
    array, keep = _cstrings(lowers)
    err = new_err()
    up = ffi.NULL if upper is None else _path(upper)
    wk = ffi.NULL if work is None else _path(work)
    check(lib.pycrio_mount_overlay(_path(target), array, len(lowers), up, wk, flags, err), err)
    del keep


def mount_bind(source: str | os.PathLike[str], target: str | os.PathLike[str], flags: int = 0) -> None:
    """Bind source (file or directory) onto target; MOUNT_REC for submounts, MOUNT_RDONLY, MOUNT_PRIVATE."""
    err = new_err()
    check(lib.pycrio_mount_bind(_path(source), _path(target), flags, err), err)


def mount_tmpfs(target: str | os.PathLike[str], options: str | None = None, flags: int = 0) -> None:
    """Mount a nosuid,nodev,noexec tmpfs at target; options like "mode=1777,size=65536k"."""
    err = new_err()
    opts = ffi.NULL if options is None else options.encode()
    check(lib.pycrio_mount_tmpfs(_path(target), opts, flags, err), err)


def unmount(target: str | os.PathLike[str], flags: int = 0) -> bool:
    """Unmount target (UNMOUNT_DETACH: lazily); False when it was missing or not a mount point."""
    err = new_err()
    return check(lib.pycrio_unmount(_path(target), flags, err), err) == 1


# inotify (csrc/inotify.c), for the exit watcher (pycrio/exits.py).
IN_CLOSE_WRITE: int = lib.PYCRIO_IN_CLOSE_WRITE
IN_MOVED_FROM: int = lib.PYCRIO_IN_MOVED_FROM
IN_MOVED_TO: int = lib.PYCRIO_IN_MOVED_TO
IN_CREATE: int = lib.PYCRIO_IN_CREATE
IN_DELETE: int = lib.PYCRIO_IN_DELETE
IN_DELETE_SELF: int = lib.PYCRIO_IN_DELETE_SELF
IN_Q_OVERFLOW: int = lib.PYCRIO_IN_Q_OVERFLOW
IN_IGNORED: int = lib.PYCRIO_IN_IGNORED
IN_ONLYDIR: int = lib.PYCRIO_IN_ONLYDIR
IN_ISDIR: int = lib.PYCRIO_IN_ISDIR


def inotify_init() -> int:
    """A new non-blocking, close-on-exec inotify descriptor; the caller closes it."""
    err = new_err()
    return check(lib.pycrio_inotify_init(err), err)


def inotify_add_watch(fd: int, path: str | os.PathLike[str], mask: int) -> int:
    """Watch path for the IN_* bits in mask; the watch descriptor."""
    err = new_err()
    return check(lib.pycrio_inotify_add_watch(fd, _path(path), mask, err), err)


def inotify_rm_watch(fd: int, wd: int) -> None:
    """Stop watch wd on inotify descriptor fd."""
    err = new_err()
    check(lib.pycrio_inotify_rm_watch(fd, wd, err), err)


# The pause of a shared PID namespace, without runc (csrc/pause_spawn.c).

PAUSE_ID = 65535  # the pause's uid and gid when the pod names none: the Kubernetes pause image's user
MAX_ID = 2**32 - 2  # (uid_t)-1 is "no change" to setresuid(2), never an id


def pause_spawn(
    pause_path: str | os.PathLike[str],
    netns: str | os.PathLike[str] | None = None,
    ipcns: str | os.PathLike[str] | None = None,
    utsns: str | os.PathLike[str] | None = None,
    oom_score_adj: int = 0,
    cgroup_files: Sequence[str | os.PathLike[str]] = (),
    uid: int = PAUSE_ID,
    gid: int = PAUSE_ID,
    groups: Sequence[int] = (),
) -> int:
    """Start pause_path as PID 1 of a new PID namespace joined to the pinned ns files given; its host pid.

    It runs as uid:gid with exactly the supplementary groups given (default 65535:65535 and
    none, the Kubernetes pause image's user), without capabilities, with no_new_privs, in an
    empty root of its own, and is not this process's child (the caller does not reap it). It
    joins the cgroups itself by writing "0" to each of cgroup_files (v1 "<dir>/tasks", v2
    "<dir>/cgroup.procs"; the directories must exist). An id outside 0..MAX_ID is a ValueError.
    Runs without the GIL.
    """

    def opt(path: str | os.PathLike[str] | None) -> Any:
        return ffi.NULL if path is None else _path(path)

    for what, value in (("uid", uid), ("gid", gid), *(("supplementary group", g) for g in groups)):
        if not 0 <= value <= MAX_ID:
            raise ValueError(f"pause {what} {value} is out of range (0 to {MAX_ID})")
    files, keep = _cstrings(cgroup_files)
    group_array = ffi.new("unsigned int[]", list(groups)) if groups else ffi.NULL
    err = new_err()
    paths = (_path(pause_path), opt(netns), opt(ipcns), opt(utsns))
    rc = lib.pycrio_pause_spawn(*paths, oom_score_adj, files, uid, gid, group_array, len(groups), err)
    del keep, group_array
    return check(rc, err)


# Sockets inside a pod's network namespace, for port-forward (csrc/netns_socket.c).


def netns_socket(netns_path: str | os.PathLike[str], family: int, kind: int) -> int:
    """A new close-on-exec socket(family, kind) that lives in the network namespace pinned at netns_path.

    The caller owns the descriptor. No thread of this process changes namespace: a child sharing
    its memory and descriptor table makes the socket. Runs without the GIL.
    """
    err = new_err()
    return check(lib.pycrio_netns_socket(_path(netns_path), family, kind, err), err)


# The daemon's heap (csrc/memory.c).
def heap_trim() -> bool:
    """Return the free memory of every malloc arena to the kernel; True when some was released."""
    return bool(lib.pycrio_heap_trim())
