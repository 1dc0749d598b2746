"""Exit watcher: inotify on the exits directory, one callback per exit file a monitor writes there."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Callable

from pycrio import native
from pycrio.monitor import ExitFileError, ExitStatus, read_exit_file

log = logging.getLogger("pycrio.exits")

ExitCallback = Callable[[str, ExitStatus], None]

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
_MASK = (
    native.IN_MOVED_TO  # a monitor's rename of .<id>.tmp to <id>
    | native.IN_CLOSE_WRITE  # a file written in place (not how monitors do it, but seen all the same)
    | native.IN_DELETE
    | native.IN_MOVED_FROM
    | native.IN_ONLYDIR
)


def is_exit_file_name(name: str) -> bool:
    """Exit files are named after the container id; monitors write `.<id>.tmp` first."""
    return bool(name) and not name.startswith(".") and not name.endswith(".tmp")


class ExitWatcher:
    """Calls callback(container_id, ExitStatus) once for each exit file that appears in directory.

    The file name is the container id (the daemon passes `--exit-file <directory>/<id>`). Use from
    the event loop's thread: start() watches (loop.add_reader on the inotify fd, no polling), then
    scan() reports the files already there (exits while the daemon was down); an exit seen by both
    is reported once. A file that is removed and written again is reported again. The callback runs
    on the loop and must not block; its exceptions are logged.
    """

    def __init__(self, directory: str, callback: ExitCallback):
        self.directory = directory
        self.callback = callback
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen: dict[str, tuple[int, int]] = {}  # name -> (inode, mtime_ns) already reported

    def start(self) -> None:
        """Watch the directory (which must exist); call from the running loop."""
        if self._fd >= 0:
            return
        self._loop = asyncio.get_running_loop()
        fd = native.inotify_init()
        try:
            native.inotify_add_watch(fd, self.directory, _MASK)
            self._loop.add_reader(fd, self._on_readable)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> ExitWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scan(self) -> list[str]:
        """Report every exit file present and not reported yet; return their container ids."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            log.error("exits directory %s is missing", self.directory)
            return []
        return [name for name in names if self._deliver(name)]

    def forget(self, container_id: str) -> None:
        """Drop what the watcher remembers of a container (its exit file was removed)."""
        self._seen.pop(container_id, None)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = os.fsdecode(raw.rstrip(b"\0"))
            if mask & native.IN_Q_OVERFLOW:
                log.warning("inotify queue overflow on %s: rescanning", self.directory)
                self.scan()
            elif mask & native.IN_IGNORED:
                log.error("exits directory %s went away: exit files are no longer watched", self.directory)
            elif mask & (native.IN_DELETE | native.IN_MOVED_FROM):
                self.forget(name)
            elif mask & (native.IN_MOVED_TO | native.IN_CLOSE_WRITE) and not mask & native.IN_ISDIR:
                self._deliver(name)

    def _deliver(self, name: str) -> bool:
        if not is_exit_file_name(name):
            return False
        path = os.path.join(self.directory, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        key = (st.st_ino, st.st_mtime_ns)
        if self._seen.get(name) == key:
            return False
        self._seen[name] = key
        try:
            status = read_exit_file(path)
        except ExitFileError as e:
            log.error("%s", e)
            return False
        if status is None:
            return False
        try:
            self.callback(name, status)
        except Exception:
            log.exception("exit callback for container %s failed", name)
        return True
