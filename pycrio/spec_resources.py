"""Cgroups for the OCI spec: the cgroup path, CRI resources → linux.resources, oom_score_adj, probes."""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from typing import Any

from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument

DEFAULT_CGROUPFS_PARENT = "/pycrio"
DEFAULT_SYSTEMD_SLICE = "system.slice"
CGROUP_PREFIX = "pycrio"  # cgroupfs: <parent>/pycrio-<id>; systemd: <slice>:pycrio:<id> (unit pycrio-<id>.scope)

MIN_MEMORY_LIMIT = 6 * 1024 * 1024  # below this a container cannot even start its runtime's init
CPU_SHARES_MIN, CPU_SHARES_MAX = 2, 262144  # what cgroup v1 cpu.shares keeps; runc fails on a clamped value
CPU_PERIOD_MIN, CPU_PERIOD_MAX = 1000, 1000000  # µs, the CFS bandwidth limits
CPU_QUOTA_MIN = 1000  # µs
OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX = -1000, 1000

_CPUSET = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
_PAGE_SIZE = re.compile(r"[1-9][0-9]*[KMGTP]B")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# ---------------------------------------------------------------- probes


def cgroup_version(mountinfo: str = "/proc/self/mountinfo") -> int:
    """2 when /sys/fs/cgroup is a cgroup2 mount (unified), else 1 (legacy or hybrid)."""
    fstype = None
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4] == "/sys/fs/cgroup" and "-" in fields:
                fstype = fields[fields.index("-") + 1]  # the last mount on the path is the visible one
    return 2 if fstype == "cgroup2" else 1


def daemon_oom_score_adj(path: str = "/proc/self/oom_score_adj") -> int:
    """This process's oom_score_adj: the lowest a container can get without CAP_SYS_RESOURCE."""
    with open(path, encoding="ascii") as f:
        return int(f.read().strip())


def hugepage_sizes(
    version: int, cgroup_root: str = "/sys/fs/cgroup", mm: str = "/sys/kernel/mm/hugepages"
) -> frozenset[str]:
    """The page sizes ("2MB", "1GB": runc's names) whose use this host's hugetlb cgroup controller can limit;
    empty without the controller."""
    if version == 2:
        try:
            with open(os.path.join(cgroup_root, "cgroup.controllers"), encoding="ascii") as f:
                present = "hugetlb" in f.read().split()
        except OSError:
            present = False
    else:
        present = os.path.isdir(os.path.join(cgroup_root, "hugetlb"))
    sizes: set[str] = set()
    with contextlib.suppress(OSError):
        for name in os.listdir(mm) if present else []:
            if name.startswith("hugepages-") and name.endswith("kB") and name[10:-2].isdigit():
                size, unit = int(name[10:-2]), 0
                while size >= 1024 and size % 1024 == 0 and unit < 3:
                    size, unit = size // 1024, unit + 1
                sizes.add(f"{size}{'KMGT'[unit]}B")
    return frozenset(sizes)


# ---------------------------------------------------------------- cgroup path


def cgroups_path(manager: str, parent: str, container_id: str) -> str:
    """linux.cgroupsPath for container_id under the kubelet's cgroup parent.

    cgroupfs: "<parent>/pycrio-<id>" (parent defaults to /pycrio);
    systemd: "<slice>:pycrio:<id>", which runc turns into the unit
    pycrio-<id>.scope in that slice (default system.slice).
    """
    if not _NAME.fullmatch(container_id):
        raise InvalidArgument(f"container id {container_id!r}: not usable in a cgroup path")
    if manager == "systemd":
        slice_ = parent or DEFAULT_SYSTEMD_SLICE
        if "/" in slice_ or not slice_.endswith(".slice") or not _NAME.fullmatch(slice_):
            raise InvalidArgument(
                f"cgroup_parent {parent!r}: the systemd cgroup manager wants a slice name such as "
                '"kubepods-burstable-pod<uid>.slice" (is the kubelet\'s cgroupDriver cgroupfs?)'
            )
        return f"{slice_}:{CGROUP_PREFIX}:{container_id}"
    if manager != "cgroupfs":
        raise InvalidArgument(f"cgroup manager {manager!r}: expected cgroupfs or systemd")
    parent = parent or DEFAULT_CGROUPFS_PARENT
    if parent.endswith(".slice"):
        raise InvalidArgument(
            f"cgroup_parent {parent!r} is a systemd slice but pycrio's cgroup_manager is cgroupfs "
            '(set runtime.cgroup_manager = "systemd" to match the kubelet\'s cgroupDriver)'
        )
    if not parent.startswith("/") or ".." in parent.split("/"):
        raise InvalidArgument(f"cgroup_parent {parent!r}: expected an absolute cgroup path without '..'")
    return posixpath.join(posixpath.normpath(parent), f"{CGROUP_PREFIX}-{container_id}")


# ---------------------------------------------------------------- oom_score_adj


def oom_score_adj(requested: int, daemon_adj: int) -> int:
    """requested, raised to the daemon's own value when lower (lowering needs CAP_SYS_RESOURCE)."""
    if not OOM_SCORE_ADJ_MIN <= requested <= OOM_SCORE_ADJ_MAX:
        raise InvalidArgument(f"oom_score_adj {requested} is out of range ({OOM_SCORE_ADJ_MIN} to {OOM_SCORE_ADJ_MAX})")
    return min(max(requested, daemon_adj), OOM_SCORE_ADJ_MAX)


# ---------------------------------------------------------------- resources


def _cpuset(value: str, what: str) -> str:
    if not _CPUSET.fullmatch(value):
        raise InvalidArgument(f"{what} {value!r}: expected a list such as 0-3,6")
    for item in value.split(","):
        low, _, high = item.partition("-")
        if high and int(high) < int(low):
            raise InvalidArgument(f"{what} {value!r}: range {item} runs backwards")
    return value


def _cpu(r: api_pb2.LinuxContainerResources) -> dict[str, Any]:
    cpu: dict[str, Any] = {}
    if r.cpu_shares < 0 or r.cpu_shares > CPU_SHARES_MAX or 0 < r.cpu_shares < CPU_SHARES_MIN:
        raise InvalidArgument(
            f"cpu_shares {r.cpu_shares} is out of range ({CPU_SHARES_MIN} to {CPU_SHARES_MAX}; 0 leaves it unset)"
        )
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpu_period:
        if not CPU_PERIOD_MIN <= r.cpu_period <= CPU_PERIOD_MAX:
            raise InvalidArgument(
                f"cpu_period {r.cpu_period}µs is out of range ({CPU_PERIOD_MIN} to {CPU_PERIOD_MAX}; 0 leaves it unset)"
            )
        cpu["period"] = r.cpu_period
    if r.cpu_quota < -1 or 0 < r.cpu_quota < CPU_QUOTA_MIN:
        raise InvalidArgument(
            f"cpu_quota {r.cpu_quota}µs: expected at least {CPU_QUOTA_MIN}µs (0 or -1 leaves the CPU unlimited)"
        )
    if r.cpu_quota > 0:
        cpu["quota"] = r.cpu_quota
    if r.cpuset_cpus:
        cpu["cpus"] = _cpuset(r.cpuset_cpus, "cpuset_cpus")
    if r.cpuset_mems:
        cpu["mems"] = _cpuset(r.cpuset_mems, "cpuset_mems")
    return cpu


def _memory(r: api_pb2.LinuxContainerResources) -> dict[str, Any]:
    memory: dict[str, Any] = {}
    limit, swap = r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes
    if limit < 0:
        raise InvalidArgument(f"memory_limit_in_bytes {limit} is negative (0 leaves memory unlimited)")
    if 0 < limit < MIN_MEMORY_LIMIT:
        raise InvalidArgument(
            f"memory_limit_in_bytes {limit} is below the minimum memory limit of 6 MiB ({MIN_MEMORY_LIMIT} bytes)"
        )
    if limit:
        memory["limit"] = limit
    if swap < -1:
        raise InvalidArgument(f"memory_swap_limit_in_bytes {swap}: expected -1 (unlimited), 0 (unset) or a size")
    if swap > 0:
        if not limit:
            raise InvalidArgument("memory_swap_limit_in_bytes is set without memory_limit_in_bytes")
        if swap < limit:
            raise InvalidArgument(
                f"memory_swap_limit_in_bytes {swap} is below memory_limit_in_bytes {limit} "
                "(it limits memory plus swap, so it must be at least the memory limit)"
            )
    if swap:
        memory["swap"] = swap
    return memory


def _hugepages(r: api_pb2.LinuxContainerResources, sizes: frozenset | None) -> list[dict[str, Any]]:
    """hugepageLimits; with sizes (hugepage_sizes()) checked against the host. A limit of 0 (what the kubelet
    sends for each of the node's page sizes that the pod does not request) is dropped when the host cannot
    limit that size: nothing is lost that the host could enforce, and runc would fail on it."""
    out, seen = [], set()
    for h in r.hugepage_limits:
        if not _PAGE_SIZE.fullmatch(h.page_size):
            raise InvalidArgument(f"hugepage_limits: page size {h.page_size!r}: expected a size such as 2MB or 1GB")
        if h.page_size in seen:
            raise InvalidArgument(f"hugepage_limits: page size {h.page_size} is given twice")
        seen.add(h.page_size)
        if sizes is not None and h.page_size not in sizes:
            if h.limit == 0:
                continue
            if not sizes:
                raise FailedPrecondition(
                    f"hugepage_limits: a limit on {h.page_size} pages needs the hugetlb cgroup controller, "
                    "which this host does not have"
                )
            raise InvalidArgument(
                f"hugepage_limits: page size {h.page_size} is not one of this host's ({', '.join(sorted(sizes))})"
            )
        out.append({"pageSize": h.page_size, "limit": h.limit})
    return out


def _unified(r: api_pb2.LinuxContainerResources, version: int) -> dict[str, str]:
    if not r.unified:
        return {}
    if version != 2:
        raise InvalidArgument(
            f"unified cgroup settings ({', '.join(sorted(r.unified))}) need cgroup v2; this host runs cgroup v1"
        )
    for key in r.unified:
        if "/" in key or key.startswith(".") or not key:
            raise InvalidArgument(f"unified: {key!r} is not a cgroup v2 interface file name")
    return {key: r.unified[key] for key in sorted(r.unified)}


def linux_resources(
    r: api_pb2.LinuxContainerResources, version: int, page_sizes: frozenset | None = None
) -> dict[str, Any]:
    """linux.resources (cpu, memory, hugepageLimits, unified) for the CRI's resources; device rules are added
    by the caller. This CRI version has no pids limit: the kubelet sets it on the pod's cgroup.
    page_sizes: what hugepage_sizes() found on this host (None: not checked).
    """
    out: dict[str, Any] = {}
    cpu, memory, unified = _cpu(r), _memory(r), _unified(r, version)
    hugepages = _hugepages(r, page_sizes)
    if memory:
        out["memory"] = memory
    if cpu:
        out["cpu"] = cpu
    if hugepages:
        out["hugepageLimits"] = hugepages
    if unified:
        out["unified"] = unified
    return out


_REPLACED_WHEN_SET = (
    "cpu_period",
    "cpu_quota",
    "cpu_shares",
    "cpuset_cpus",
    "cpuset_mems",
    "memory_limit_in_bytes",
    "memory_swap_limit_in_bytes",
)


def update_resources(
    current: api_pb2.LinuxContainerResources,
    update: api_pb2.LinuxContainerResources,
    version: int,
    page_sizes: frozenset | None = None,
) -> tuple[api_pb2.LinuxContainerResources, dict[str, Any]]:
    """(the container's resources after UpdateContainerResources(update), the linux.resources for runc update).

    What update sets replaces what current has and what it leaves unset (0, "", absent) stays, as `runc
    update` leaves the cgroup, so that ContainerStatus reports what the cgroup holds; the whole result is
    checked (a new memory limit above the swap limit in force is refused here, not half-applied by runc).
    cpu_quota -1 lifts the quota. oom_score_adj keeps its value from the container's start, which runc
    cannot change later; a requested one is only range-checked.
    """
    linux_resources(update, version, page_sizes)  # each field of the request, named in the error
    oom_score_adj(update.oom_score_adj, OOM_SCORE_ADJ_MIN)
    merged = api_pb2.LinuxContainerResources()
    merged.CopyFrom(current)
    for name in _REPLACED_WHEN_SET:
        if getattr(update, name):
            setattr(merged, name, getattr(update, name))
    if update.hugepage_limits:
        limits = {h.page_size: h.limit for h in merged.hugepage_limits}
        limits.update((h.page_size, h.limit) for h in update.hugepage_limits)
        del merged.hugepage_limits[:]
        merged.hugepage_limits.extend(api_pb2.HugepageLimit(page_size=k, limit=v) for k, v in limits.items())
    merged.unified.update(update.unified)
    document = linux_resources(merged, version, page_sizes)
    if merged.cpu_quota == -1:
        document.setdefault("cpu", {})["quota"] = -1  # runc update writes it: no quota (at create: not set)
    return merged, document
