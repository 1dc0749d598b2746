"""SIGKILL every process of a container by its cgroup, without a trip through the OCI runtime.

A container that shares its pod's PID namespace is not PID 1 of a namespace of its own, so
killing its init leaves its other processes (reparented to the pod's pause) alive: all of them
must be signalled. `runc kill --all` does this (freeze, list, kill, thaw) for about 6 ms, most
of it the Go runtime starting. Here: cgroup v2's cgroup.kill when the kernel has it (one write,
atomic against forks); otherwise rounds of "list cgroup.procs, pidfd_open each, check it is
still listed, signal through the pidfd" until the cgroup is empty. A process forked during a
round is found by the next one; a pid reused by another process between the listing and the
pidfd_open is not in the cgroup when listed again, so it is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

DEADLINE = 2.0  # seconds for the cgroup to empty; a process in D state may take longer
PAUSE = 0.0005  # between rounds: a killed process stays listed until it has exited


def cgroup_dir(cgroups_path: str, version: int) -> str:
    """The directory of a container's cgroup (an absolute cgroupfs path) to list and kill from:
    the unified tree on v2, the memory hierarchy on v1 (every v1 hierarchy holds every process)."""
    return ("/sys/fs/cgroup" if version == 2 else "/sys/fs/cgroup/memory") + cgroups_path


def kill_all(directory: str, deadline: float = DEADLINE) -> tuple[bool, int]:
    """SIGKILL every process in the cgroup at directory and wait (up to deadline seconds) until
    it is empty: (whether it held any process, how many are still listed at the end).
    FileNotFoundError when the cgroup does not exist."""
    if os.path.exists(os.path.join(directory, "cgroup.kill")):
        held = bool(_listed(directory))
        with open(os.path.join(directory, "cgroup.kill"), "w") as f:
            f.write("1")
        return held, _wait_empty(directory, deadline)
    held = False
    end = time.monotonic() + deadline
    while True:
        pids = _listed(directory)
        if not pids or time.monotonic() > end:
            return held, len(pids)
        held = True
        fds = {}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                fds[pid] = os.pidfd_open(pid)
        try:
            still = _listed(directory)
            for pid, fd in fds.items():
                if pid in still:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
        finally:
            for fd in fds.values():
                os.close(fd)
        time.sleep(PAUSE)


def _wait_empty(directory: str, deadline: float) -> int:
    end = time.monotonic() + deadline
    while (left := len(_listed(directory))) and time.monotonic() < end:
        time.sleep(PAUSE)
    return left


def _listed(directory: str) -> set[int]:
    with open(os.path.join(directory, "cgroup.procs")) as f:
        return {int(line) for line in f if line.strip()}
