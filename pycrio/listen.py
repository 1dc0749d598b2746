"""The daemon's unix socket: one daemon per socket (a lock beside it), stale sockets replaced."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat

from pycrio.errors import FailedPrecondition

SOCKET_MODE = 0o660


def socket_path(listen: str) -> str:
    return listen.removeprefix("unix://")


class SocketLock:
    """An flock on `<socket>.lock`, held for the daemon's life; it records the holder's pid."""

    def __init__(self, path: str):
        self.socket = path
        self.path = path + ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o711, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FailedPrecondition(
                f"another pycrio daemon (pid {holder}) is serving {self.socket}; stop it or choose another --listen"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        # The lock file stays: unlinking it would let two daemons lock two inodes.
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def is_served(path: str) -> bool:
    """True when some process accepts connections on the unix socket at path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.ENOTSOCK):
                return False
            raise
        return True


def is_locked(path: str) -> bool:
    """True when a daemon holds the lock for the socket at path."""
    try:
        fd = os.open(path + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def clear_stale(path: str) -> None:
    """Remove a socket file left by a dead daemon; refuse one another process serves."""
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; refusing to replace it")
    if is_served(path):
        raise FailedPrecondition(f"{path} is in use by another process; choose another --listen")
    os.unlink(path)
