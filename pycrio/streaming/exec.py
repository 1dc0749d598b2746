"""`runc exec` for a streaming session: pipes, or a terminal, as a child process off the blocking path.

Without a terminal the process gets pipes (runc hands its own stdio to the process). With a
terminal, runc runs in the foreground on a pty the daemon allocates: runc makes the container's
own pty, copies between the two, and on SIGWINCH copies our pty's size to it. `--console-socket`
is not used because runc only takes it with `--detach`, and a detached exec's exit status would
go to whatever reaps the orphan, not to the daemon (docs/streaming.md, "Exec").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import struct
import termios
from typing import Any

from pycrio.oci import OCIRuntime

logger = logging.getLogger("pycrio.streaming.exec")

REAP_TIMEOUT = 2.0  # seconds runc gets to exit after the exec'd process was killed
READ_SIZE = 64 * 1024


def _wake(ready: asyncio.Future) -> None:
    if not ready.done():
        ready.set_result(None)


class FdReader:
    """Non-blocking reads of a pipe or pty master on the loop; b"" at EOF (EIO of a pty counts)."""

    def __init__(self, fd: int):
        self.fd = fd
        os.set_blocking(fd, False)

    async def read(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno == errno.EIO:
                    return b""
                raise
            ready = loop.create_future()
            loop.add_reader(self.fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(self.fd)


class FdWriter:
    def __init__(self, fd: int):
        self.fd = fd
        os.set_blocking(fd, False)

    async def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
                continue
            except BlockingIOError:
                pass
            ready = loop.create_future()
            loop.add_writer(self.fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_writer(self.fd)


class ExecProcess:
    """One `runc exec` and the descriptors the daemon holds for it; close() releases everything."""

    def __init__(self, proc: asyncio.subprocess.Process, pid_file: str, process_file: str, tty: bool):
        self.proc = proc
        self.pid_file = pid_file
        self.process_file = process_file
        self.tty = tty
        self.stdout: FdReader | None = None
        self.stderr: FdReader | None = None
        self.stdin: FdWriter | None = None
        self._fds: list[int] = []

    @classmethod
    async def start(
        cls,
        runtime: OCIRuntime,
        container_id: str,
        bundle: str,
        process: dict[str, Any],
        *,
        tty: bool,
        stdin: bool,
        size: tuple[int, int] | None = None,
    ) -> ExecProcess:
        name = f"exec-{secrets.token_hex(6)}"
        pid_file = os.path.join(bundle, name + ".pid")
        process_file = os.path.join(bundle, name + ".json")
        process = {**process, "terminal": tty}
        with open(process_file, "w") as f:
            json.dump(process, f)
        args = [*runtime.base_args(), "exec", "--process", process_file, "--pid-file", pid_file]
        args += ["--tty"] if tty else []
        args.append(container_id)
        fds: list[int] = []
        try:
            if tty:
                master, slave = os.openpty()
                fds.append(master)
                try:
                    cols, rows = size or (80, 24)
                    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                    proc = await asyncio.create_subprocess_exec(
                        *args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
                    )
                finally:
                    os.close(slave)
                self = cls(proc, pid_file, process_file, tty)
                self.stdout = FdReader(master)
                self.stdin = FdWriter(os.dup(master)) if stdin else None
                if self.stdin is not None:
                    fds.append(self.stdin.fd)
            else:
                in_r, in_w = os.pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), -1)
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                fds += [fd for fd in (in_w, out_r, err_r) if fd >= 0]
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *args, stdin=in_r, stdout=out_w, stderr=err_w, start_new_session=True
                    )
                finally:
                    for fd in (in_r, out_w, err_w):
                        os.close(fd)
                self = cls(proc, pid_file, process_file, tty)
                self.stdout, self.stderr = FdReader(out_r), FdReader(err_r)
                self.stdin = FdWriter(in_w) if in_w >= 0 else None
        except BaseException:
            for fd in fds:
                os.close(fd)
            _unlink(process_file)
            raise
        self._fds = fds
        return self

    async def close_stdin(self) -> None:
        if self.stdin is not None and not self.tty:
            self._close_fd(self.stdin.fd)
            self.stdin = None

    def resize(self, width: int, height: int) -> None:
        if not self.tty or self.stdout is None:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.stdout.fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGWINCH)  # runc copies the size to the container's pty

    async def wait(self) -> int:
        code = await self.proc.wait()
        return code if code >= 0 else 128 - code

    async def kill(self) -> None:
        """SIGKILL the exec'd process (runc then exits); runc itself only if it does not."""
        if self.proc.returncode is not None:
            return
        killed = False
        with contextlib.suppress(OSError, ValueError), open(self.pid_file) as f:
            os.kill(int(f.read().strip()), signal.SIGKILL)
            killed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), REAP_TIMEOUT if killed else 0.05)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()

    def _close_fd(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            os.close(fd)

    def close(self) -> None:
        for fd in list(self._fds):
            self._close_fd(fd)
        _unlink(self.pid_file)
        _unlink(self.process_file)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
