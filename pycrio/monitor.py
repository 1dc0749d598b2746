"""Python side of the pycrio-monitor protocol (docs/monitor.md): spawn, exit files, control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycrio.errors import DeadlineExceeded, FailedPrecondition, PycrioError
from pycrio.paths import helper_binary

log = logging.getLogger("pycrio.monitor")

MONITOR_NAME = "pycrio-monitor"
SYNC_TIMEOUT = 60.0  # runtime create is ~40 ms; a slow disk or a big rootfs can take seconds
CONTROL_TIMEOUT = 5.0
STOP_GRACE = 2.0  # SIGTERM, then SIGKILL, for a monitor that must not stay


@dataclass(frozen=True)
class ExitStatus:
    """How a container ended, as its monitor wrote it in the exit file."""

    exit_code: int  # 128 + signal for a death by signal
    signal: int  # 0 when the process exited by itself
    finished_ns: int  # unix time in nanoseconds, taken when the monitor reaped the process
    oom_killed: bool  # an OOM kill happened in the container's memory cgroup


class ExitFileError(ValueError):
    """An exit file that exists but is not what pycrio-monitor writes."""


class MonitorError(PycrioError, RuntimeError):
    """pycrio-monitor itself failed (flags, setup, crash): a pycrio bug or a broken host; INTERNAL."""


class RuntimeCreateFailed(FailedPrecondition):
    """`<runtime> create` refused the container.

    FAILED_PRECONDITION rather than INVALID_ARGUMENT: what the runtime rejects is a spec that the
    daemon already built and validated, checked against the host and the image (a command missing
    from the image, a mount source that is gone, a cgroup limit or oom_score_adj the host refuses).
    The request may be fine and the state around it wrong; the kubelet retries either way.
    """

    def __init__(self, container_id: str, message: str, exit_code: int, output: str):
        super().__init__(f"container {container_id}: runtime create failed (exit {exit_code}): {message}")
        self.container_id = container_id
        self.runtime_message = message
        self.exit_code = exit_code
        self.output = output  # the runtime's whole stderr, trimmed


_LOGRUS_MSG = re.compile(r'level=(?:error|fatal)\s+msg="((?:[^"\\]|\\.)*)"')


def runtime_message(output: str) -> str:
    """The error in the runtime's stderr: runc/crun logrus `msg="..."` unquoted, or the text itself."""
    found = _LOGRUS_MSG.findall(output)
    if found:
        try:
            return json.loads(f'"{found[-1]}"')
        except json.JSONDecodeError:
            return found[-1]
    return output.strip() or "(no output)"


def command(
    container_id: str,
    *,
    runtime: str,
    runtime_root: str,
    bundle: str,
    pid_file: str,
    exit_file: str,
    ctl_socket: str,
    sync_fd: int,
    log_path: str | None = None,
    terminal: bool = False,
    stdin: bool = False,
    stdin_once: bool = False,
    cgroup_oom_dir: str | None = None,
    log_max_size: int | None = None,
    runtime_args: Sequence[str] = (),
    binary: str | None = None,
) -> list[str]:
    """The pycrio-monitor command line (docs/monitor.md, "Flags")."""
    argv = [binary or helper_binary(MONITOR_NAME), "--id", container_id, "--runtime", runtime]
    argv += ["--runtime-root", runtime_root]
    for arg in runtime_args:
        argv += ["--runtime-arg", arg]
    argv += ["--bundle", bundle, "--pid-file", pid_file, "--exit-file", exit_file]
    argv += ["--ctl-socket", ctl_socket, "--sync-fd", str(sync_fd)]
    if log_path:
        argv += ["--log-path", log_path]
    if log_max_size:
        argv += ["--log-max-size", str(log_max_size)]
    if cgroup_oom_dir:
        argv += ["--cgroup-oom-dir", cgroup_oom_dir]
    if terminal:
        argv.append("--terminal")
    if stdin:
        argv.append("--stdin")
        if stdin_once:
            argv.append("--stdin-once")  # without stdin there is nothing to close
    return argv


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _SyncReader:
    """JSON lines from the read end of the sync pipe, read on the event loop."""

    def __init__(self, fd: int):
        os.set_blocking(fd, False)
        self.fd = fd
        self.buf = b""
        self.eof = False

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.fd, _wake, fut)
        try:
            await fut
        finally:
            loop.remove_reader(self.fd)

    async def message(self) -> dict[str, Any] | None:
        """The next message, or None at EOF."""
        while b"\n" not in self.buf and not self.eof:
            await self._readable()
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            self.eof = not chunk
            self.buf += chunk
        if b"\n" not in self.buf:
            if self.buf.strip():
                raise MonitorError(f"truncated message from {MONITOR_NAME}: {self.buf[:200]!r}")
            return None
        line, _, self.buf = self.buf.partition(b"\n")
        try:
            msg = json.loads(line.decode(errors="replace"))
        except json.JSONDecodeError as e:
            raise MonitorError(f"malformed message from {MONITOR_NAME}: {line[:200]!r}") from e
        if not isinstance(msg, dict):
            raise MonitorError(f"malformed message from {MONITOR_NAME}: {line[:200]!r}")
        return msg

    def monitor_pid_nowait(self) -> dict[str, Any] | None:
        """The {"monitor_pid": N} message if it is in the pipe, without waiting (failure paths)."""
        with contextlib.suppress(BlockingIOError, OSError):
            self.buf += os.read(self.fd, 65536)
        for line in self.buf.split(b"\n"):
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and "monitor_pid" in msg:
                    return msg
        return None


async def _wait_pidfd(pidfd: int, timeout: float) -> bool:
    """Whether the process behind pidfd exited within timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, _wake, fut)
    try:
        await asyncio.wait_for(fut, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)


async def _make_gone(pid: int, pidfd: int | None, grace: float) -> None:
    """Wait up to grace for the monitor to exit; SIGTERM it (it stops runtime create), then SIGKILL it."""
    if pidfd is None:
        return
    if grace > 0 and await _wait_pidfd(pidfd, grace):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, sig)
        if await _wait_pidfd(pidfd, STOP_GRACE):
            return
    log.error("%s pid %d did not exit after SIGKILL", MONITOR_NAME, pid)


async def spawn(
    container_id: str,
    *,
    runtime: str,
    runtime_root: str,
    bundle: str,
    pid_file: str,
    exit_file: str,
    ctl_socket: str,
    log_path: str | None = None,
    terminal: bool = False,
    stdin: bool = False,
    stdin_once: bool = False,
    cgroup_oom_dir: str | None = None,
    log_max_size: int | None = None,
    runtime_args: Sequence[str] = (),
    monitor_log: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = SYNC_TIMEOUT,
    binary: str | None = None,
) -> int:
    """Start a monitor that runs `<runtime> create` for the bundle; return the container's pid.

    The container is created, not started: the caller runs `<runtime> start` next. The monitor
    outlives this daemon. Raises RuntimeCreateFailed (the runtime's message), MonitorError, or
    DeadlineExceeded after `timeout` seconds; in every failure no monitor is left running, but the
    runtime may keep state for the id: the caller runs `<runtime> delete --force` when unwinding.
    monitor_log receives the monitor's own stderr (warnings, log write errors); /dev/null if None.
    The monitor serves attach on `<ctl_socket>.attach` (pycrio.attach); with stdin_once (and stdin),
    the first attach session with input that ends closes the container's stdin.
    """
    read_fd, write_fd = os.pipe()
    argv = command(
        container_id,
        runtime=runtime,
        runtime_root=runtime_root,
        bundle=bundle,
        pid_file=pid_file,
        exit_file=exit_file,
        ctl_socket=ctl_socket,
        sync_fd=write_fd,
        log_path=log_path,
        terminal=terminal,
        stdin=stdin,
        stdin_once=stdin_once,
        cgroup_oom_dir=cgroup_oom_dir,
        log_max_size=log_max_size,
        runtime_args=runtime_args,
        binary=binary,
    )
    reader = _SyncReader(read_fd)
    proc: subprocess.Popen[bytes] | None = None
    mon: tuple[int, int | None] = (0, None)  # (pid, pidfd) once reported
    done = False
    grace = 0.0  # how long the monitor may take to exit by itself (after it reported an error)
    try:
        try:
            # fork+exec inline, as asyncio.create_subprocess_exec does: no thread to outlive a cancel.
            proc = _start_first(argv, write_fd, monitor_log, env)
        finally:
            os.close(write_fd)
        try:
            async with asyncio.timeout(timeout):
                final = await reader.message()
                if final is not None and "monitor_pid" in final:
                    mon = _open_monitor(final)
                    final = await reader.message()
        except TimeoutError:
            raise DeadlineExceeded(
                f"container {container_id}: {MONITOR_NAME} reported nothing in {timeout:g} s (runtime create hung?)"
            ) from None
        grace = STOP_GRACE  # it reported (or closed the pipe): it exits on its own
        pid = _outcome(container_id, final, proc)
        done = True
        return pid
    finally:
        if not done and proc is not None and proc.poll() is None:
            proc.kill()  # the first process: once dead, everything it wrote is in the pipe
            await asyncio.to_thread(proc.wait)
        if not done and mon[0] == 0:
            mon = _open_monitor(reader.monitor_pid_nowait())
        if not done:
            await _make_gone(mon[0], mon[1], grace)
        if mon[1] is not None:
            os.close(mon[1])
        os.close(read_fd)
        if proc is not None:
            await asyncio.to_thread(proc.wait)


def _open_monitor(msg: dict[str, Any] | None) -> tuple[int, int | None]:
    """(pid, pidfd) from a {"monitor_pid": N} message; pidfd None when it is already gone."""
    pid = msg.get("monitor_pid") if msg else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return 0, None
    try:
        return pid, os.pidfd_open(pid)
    except ProcessLookupError:
        return pid, None


def _start_first(
    argv: list[str], sync_fd: int, monitor_log: str | None, env: Mapping[str, str] | None
) -> subprocess.Popen[bytes]:
    """fork+exec the monitor's first process with the sync pipe's write end as its only extra fd."""
    out = open(monitor_log, "ab") if monitor_log else open(os.devnull, "wb")  # noqa: SIM115
    with out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(sync_fd,), env=env, close_fds=True
        )


def _outcome(container_id: str, final: dict[str, Any] | None, proc: subprocess.Popen[bytes]) -> int:
    """The container pid from the last sync message, or the error it carries."""
    if final is None:
        first_exit = proc.poll()
        raise MonitorError(
            f"container {container_id}: {MONITOR_NAME} exited without a result (first process: {first_exit})"
        )
    if isinstance(final.get("pid"), int) and final["pid"] > 0:
        return int(final["pid"])
    if "error" in final:
        text = str(final["error"])
        code = final.get("exit_code", -1)
        if final.get("stage") == "runtime":
            raise RuntimeCreateFailed(container_id, runtime_message(text), int(code), text)
        raise MonitorError(f"container {container_id}: {MONITOR_NAME}: {text}")
    raise MonitorError(f"container {container_id}: unexpected message from {MONITOR_NAME}: {final!r}")


_EXIT_FIELDS: dict[str, type] = {"exit_code": int, "signal": int, "finished_ns": int, "oom_killed": bool}


def read_exit_file(path: str | os.PathLike[str]) -> ExitStatus | None:
    """The exit status a monitor wrote at path; None when there is no such file (yet).

    Raises ExitFileError when the file is not a JSON object with the four fields of the right types.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExitFileError(f"exit file {os.fspath(path)}: not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ExitFileError(f"exit file {os.fspath(path)}: not a JSON object: {data[:100]!r}")
    for name, kind in _EXIT_FIELDS.items():
        value = obj.get(name)
        # bool is an int subclass: an int field must not be a bool, and the bool field must be one.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ExitFileError(
                f"exit file {os.fspath(path)}: field {name!r} missing or not {kind.__name__}: {value!r}"
            )
    return ExitStatus(obj["exit_code"], obj["signal"], obj["finished_ns"], obj["oom_killed"])


async def control(ctl_socket: str, cmd: str, timeout: float = CONTROL_TIMEOUT) -> None:
    """Send one command to a monitor's control socket; raise FailedPrecondition when it says error."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            try:
                await loop.sock_connect(sock, ctl_socket)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise FailedPrecondition(f"{ctl_socket}: the container's monitor is not running") from e
            await loop.sock_sendall(sock, cmd.encode())
            reply = (await loop.sock_recv(sock, 4096)).decode(errors="replace")
    except TimeoutError:
        raise DeadlineExceeded(f"{ctl_socket}: no answer to {cmd!r} in {timeout:g} s") from None
    finally:
        sock.close()
    if reply == "ok":
        return
    if not reply:
        raise FailedPrecondition(f"{ctl_socket}: the monitor closed the connection on {cmd!r}")
    raise FailedPrecondition(f"monitor {cmd.split()[0]}: {reply.removeprefix('error ')}")


async def reopen_log(ctl_socket: str, timeout: float = CONTROL_TIMEOUT) -> None:
    """Make the monitor reopen its log path (ReopenContainerLog, after the kubelet renamed the file)."""
    await control(ctl_socket, "reopen", timeout)


async def resize(ctl_socket: str, rows: int, cols: int, timeout: float = CONTROL_TIMEOUT) -> None:
    """Set the container's terminal size (containers created with terminal=True)."""
    await control(ctl_socket, f"resize {int(rows)} {int(cols)}", timeout)
