"""What a cgroup's processes hold, from /proc: open file descriptors and sockets, as cAdvisor counts them.

cAdvisor counts the processes listed in the cgroup's own cgroup.procs (its
children's are theirs): every entry of /proc/<pid>/fd, and among them those whose
link reads "socket:[inode]". A process that exits while we look is skipped. The
soft "Max open files" limit of a container's first process is its
container_ulimits_soft{ulimit="max_open_files"}. Every read blocks.
"""

from __future__ import annotations

import os

PROC = "/proc"


def parse_pids(text: str) -> list[int]:
    """cgroup.procs: one pid a line."""
    out = []
    for line in text.split():
        try:
            out.append(int(line))
        except ValueError:
            continue
    return out


def count_fds(pids: list[int], proc: str = PROC) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of the processes."""
    fds = sockets = 0
    for pid in pids:
        fd_dir = os.path.join(proc, str(pid), "fd")
        try:
            names = os.listdir(fd_dir)
        except OSError:  # exited, or not ours to see
            continue
        fds += len(names)
        for name in names:
            try:
                if os.readlink(os.path.join(fd_dir, name)).startswith("socket:"):
                    sockets += 1
            except OSError:  # closed meanwhile
                continue
    return fds, sockets


def parse_open_files_soft(limits: str) -> int | None:
    """The soft "Max open files" of /proc/<pid>/limits; None when unlimited or absent."""
    for line in limits.splitlines():
        if line.startswith("Max open files"):
            fields = line[len("Max open files") :].split()
            try:
                return int(fields[0])
            except (IndexError, ValueError):  # "unlimited" (-1 to cAdvisor, not an unsigned value)
                return None
    return None


def read_open_files_soft(pid: int, proc: str = PROC) -> int | None:
    try:
        with open(os.path.join(proc, str(pid), "limits"), encoding="ascii", errors="replace") as f:
            return parse_open_files_soft(f.read())
    except OSError:
        return None
