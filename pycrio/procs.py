"""Signalling a container's init directly: a pidfd, checked against the start time recorded at creation.

`runc kill` costs a runc start-up (about 6 ms here) for what one pidfd_send_signal does. The
pid alone is not enough (pids are reused once the monitor reaps the process), so the start
time read from /proc/<pid>/stat when the container was created must still match.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), None when pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after its end.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def alive(pid: int | None, ticks: int | None) -> bool:
    """pid is still the process that started at ticks, and not a zombie waiting for its reaper."""
    if not pid or ticks is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0] not in (b"Z", b"X") and int(fields[19]) == ticks


@contextlib.contextmanager
def _pidfd_if_same(pid: int | None, ticks: int | None) -> Iterator[int | None]:
    """A pidfd of pid while it is the process that started at ticks, else None; closed after."""
    if not pid or ticks is None:
        yield None
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        yield None
        return
    try:
        # Checked after the pidfd is open: from here on the pid cannot be reused under us.
        yield fd if start_ticks(pid) == ticks else None
    finally:
        os.close(fd)


def _send(fd: int | None, sig: int) -> bool:
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False
    return True


def signal_if_same(pid: int | None, ticks: int | None, sig: int) -> bool:
    """Send sig to pid when it is still the process that started at ticks; False when it is gone."""
    with _pidfd_if_same(pid, ticks) as fd:
        return _send(fd, sig)


async def kill_and_wait(pid: int | None, ticks: int | None, timeout: float) -> bool:
    """SIGKILL pid when it is still the process that started at ticks, and wait until it has
    exited (a zombie counts: the system's reaper may never collect it). False when it was gone
    already; TimeoutError when it outlives timeout.

    The pidfd turns readable when the process exits, reaped or not: no polling of /proc.
    """
    with _pidfd_if_same(pid, ticks) as fd:
        if fd is None or not _send(fd, signal.SIGKILL):
            return False
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(exited, timeout)
        except TimeoutError:
            raise TimeoutError(f"process {pid} still there {timeout:.0f} s after SIGKILL") from None
        finally:
            loop.remove_reader(fd)
        return True
