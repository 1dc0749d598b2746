"""Driving an OCI runtime binary (runc or crun: the same command line) for one runtime handler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass

from pycrio.config import Config
from pycrio.errors import FailedPrecondition, InvalidArgument, NotFound

logger = logging.getLogger("pycrio.oci")

EXEC_OUTPUT_LIMIT = 16 << 20  # ExecSync keeps at most this much of stdout and of stderr
EXEC_REAP_TIMEOUT = 2.0  # seconds `runc exec` gets to reap a killed process before it is killed too


def runtime_binary(cfg: Config, handler: str) -> str | None:
    """The resolved path of handler's OCI runtime binary, or None when it is missing."""
    spec = cfg.runtime.runtimes[handler]
    path = spec.runtime_path or shutil.which(handler)
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return None


DELETE_ATTEMPTS = 3


class OCIRuntimeFailed(FailedPrecondition):
    """The OCI runtime refused or failed a command; the message carries its stderr."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


class OCIRuntime:
    """One runtime handler: its binary and its --root state directory."""

    def __init__(self, cfg: Config, handler: str):
        if handler not in cfg.runtime.runtimes:
            known = ", ".join(sorted(cfg.runtime.runtimes))
            raise InvalidArgument(f"unknown runtime handler {handler!r} (configured: {known})")
        self.handler = handler
        binary = runtime_binary(cfg, handler)
        if binary is None:
            raise FailedPrecondition(f"runtime handler {handler!r}: its binary is missing")
        self.binary = binary
        self.root = cfg.runtime.runtimes[handler].runtime_root
        os.makedirs(self.root, mode=0o700, exist_ok=True)

    def base_args(self) -> list[str]:
        return [self.binary, "--root", self.root]

    async def _run(self, *args: str, timeout: float = 60.0, check: bool = True) -> tuple[int, bytes, bytes]:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *self.base_args(),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        logger.debug("%s %s: exit %d in %.1f ms", self.handler, args[0], proc.returncode,
                     (time.monotonic() - started) * 1000)  # fmt: skip
        if check and proc.returncode != 0:
            raise OCIRuntimeFailed(f"{self.handler} {args[0]} failed: {_message(err) or f'exit {proc.returncode}'}")
        return proc.returncode or 0, out, err

    async def start(self, container_id: str) -> None:
        await self._run("start", container_id)

    async def kill(self, container_id: str, sig: int = signal.SIGTERM, all_processes: bool = False) -> bool:
        """Signal the container's init (or every process); False when it is not running any more."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(int(sig))]
        code, _, err = await self._run(*args, check=False)
        if code == 0:
            return True
        text = _message(err)
        if "not running" in text or "does not exist" in text or "container not found" in text:
            return False
        # runc reads the container's cgroups to kill --all; a container that ended meanwhile (and whose
        # eager delete is removing them) fails that way: ask the runtime what it is now.
        with contextlib.suppress(OCIRuntimeFailed):
            state = await self.state(container_id)
            if state is None or state.get("status") == "stopped":
                return False
        raise OCIRuntimeFailed(f"{self.handler} kill {container_id}: {text}")

    async def delete(self, container_id: str, force: bool = True) -> None:
        """Remove the runtime's state of the container; one that does not exist is fine."""
        for attempt in range(DELETE_ATTEMPTS):
            code, _, err = await self._run("delete", *(["--force"] if force else []), container_id, check=False)
            text = _message(err)
            if code == 0 or "does not exist" in text or "not found" in text:
                return
            # runc 1.1 on cgroup v1 freezes a created container to kill it; when its init dies
            # meanwhile the freeze fails ("invalid state transition from stopped to paused"), and a
            # second delete finds it stopped.
            if "invalid state transition" not in text or attempt == DELETE_ATTEMPTS - 1:
                raise OCIRuntimeFailed(f"{self.handler} delete {container_id}: {text}")
            await asyncio.sleep(0.02 * (attempt + 1))

    async def state(self, container_id: str) -> dict | None:
        """`runtime state` as a dict; None when the runtime does not know the container."""
        code, out, err = await self._run("state", container_id, check=False)
        if code != 0:
            if "does not exist" in _message(err) or "not found" in _message(err):
                return None
            raise OCIRuntimeFailed(f"{self.handler} state {container_id}: {_message(err)}")
        return json.loads(out)

    async def update(self, container_id: str, resources: dict) -> None:
        """Apply an OCI linux.resources object to a running container (`runtime update -r -`)."""
        proc = await asyncio.create_subprocess_exec(
            *self.base_args(),
            "update",
            "--resources",
            "-",
            container_id,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(json.dumps(resources).encode()), 60)
        if proc.returncode != 0:
            if "does not exist" in _message(err):
                raise NotFound(f"container {container_id} is not known to {self.handler}")
            raise OCIRuntimeFailed(f"{self.handler} update {container_id}: {_message(err)}")

    async def exec_sync(self, container_id: str, process: dict, timeout: float | None, pid_file: str) -> ExecResult:
        """Run process (an OCI process object) in the container, capture capped output, enforce timeout.

        On timeout the exec'd process itself is killed (its pid from runc's --pid-file): it runs
        in the container's namespaces and outlives a killed `runc exec`.
        """
        proc = await asyncio.create_subprocess_exec(
            *self.base_args(),
            "exec",
            "--process",
            "/dev/stdin",
            "--pid-file",
            pid_file,
            container_id,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(json.dumps(process).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        out_task = asyncio.ensure_future(_read_capped(proc.stdout, EXEC_OUTPUT_LIMIT))
        err_task = asyncio.ensure_future(_read_capped(proc.stderr, EXEC_OUTPUT_LIMIT))
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), timeout if timeout and timeout > 0 else None)
        except TimeoutError:
            timed_out = True
            await _kill_exec(proc, pid_file)
        except BaseException:
            await _kill_exec(proc, pid_file)
            out_task.cancel()
            err_task.cancel()
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pid_file)
        out, err = await out_task, await err_task
        if timed_out:
            return ExecResult(-1, out, err + f"command timed out after {timeout:g} s".encode(), True)
        return ExecResult(proc.returncode if proc.returncode is not None else -1, out, err)


async def _kill_exec(proc: asyncio.subprocess.Process, pid_file: str) -> None:
    """SIGKILL the exec'd process (pid from runc's pid file); `runc exec` then reaps it and exits.

    runc is killed only when that does not happen: a process it leaves behind is re-parented to
    the container's PID 1, which may never reap it (a zombie that `ps` still shows).
    """
    killed = False
    with contextlib.suppress(OSError, ValueError), open(pid_file) as f:
        os.kill(int(f.read().strip()), signal.SIGKILL)
        killed = True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), EXEC_REAP_TIMEOUT if killed else 0)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read a stream to EOF keeping at most limit bytes (the rest is drained and dropped)."""
    kept = bytearray()
    while True:
        chunk = await stream.read(1 << 16)
        if not chunk:
            return bytes(kept)
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]


def _message(stderr: bytes) -> str:
    """The useful part of a runtime's stderr (runc logs JSON or logfmt lines; keep the messages)."""
    lines = []
    for raw in stderr.decode(errors="replace").strip().splitlines():
        line = raw.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                line = json.loads(line).get("msg", line)
        elif 'msg="' in line:
            line = line.split('msg="', 1)[1].rsplit('"', 1)[0]
        if line:
            lines.append(line)
    return "; ".join(lines)[:4000]
