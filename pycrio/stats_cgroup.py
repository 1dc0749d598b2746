"""A cgroup's usage read from its files: v1 per-controller directories or the v2 unified one.

Every read is blocking and forgiving: a file that is missing or unreadable (the
cgroup went away with its container) leaves its value None, never raises. The
stats RPCs need only the basic sample; a detailed one (detail=True, for the
cAdvisor-style metrics) adds CFS throttling, the cgroup's settings (cAdvisor's
"spec": CPU period, quota and shares, swap and reservation limits), memory
failures, peaks, kernel memory and OOM kills, threads, block I/O, pressure (v2)
and the descriptors its processes hold.
"""

from __future__ import annotations

import os
import posixpath
import time
from dataclasses import dataclass

from pycrio.stats_io import (
    SYS_DEV_BLOCK,
    IoCounters,
    RawIo,
    merge_io,
    name_devices,
    parse_blkio_v1,
    parse_io_stat,
)
from pycrio.stats_procs import PROC, count_fds, parse_pids

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
PRESSURE = ("cpu", "memory", "io")
UNLIMITED = 1 << 62  # v1 shows "no limit" as 9223372036854771712 (PAGE_COUNTER_MAX pages)
_SECOND_NS = 1_000_000_000


@dataclass
class CgroupUsage:
    """One sample of a cgroup. None: not known. Limits: 0 means unlimited (as cAdvisor reports it)."""

    timestamp_ns: int
    cpu_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    memory_usage: int | None = None
    working_set: int | None = None
    rss: int | None = None
    cache: int | None = None
    mapped_file: int | None = None
    page_faults: int | None = None  # hierarchical (the cgroup and its children)
    major_page_faults: int | None = None
    own_page_faults: int | None = None  # the cgroup alone on v1; v2 counts only hierarchically: the same
    own_major_page_faults: int | None = None
    memory_limit: int | None = None
    swap_usage: int | None = None
    swap_limit: int | None = None
    pids: int | None = None
    # detailed samples only
    cfs_periods: int | None = None
    cfs_throttled_periods: int | None = None
    cfs_throttled_ns: int | None = None
    cpu_period: int | None = None  # microseconds
    cpu_quota: int | None = None  # microseconds a period; 0: none
    cpu_shares: int | None = None  # v2: cpu.weight as shares, as cAdvisor converts it
    spec_swap_limit: int | None = None  # cAdvisor's swap limit: v1 memory+swap (memsw), v2 memory.swap.max
    memory_reservation: int | None = None  # v1 soft limit, v2 memory.min
    memory_failcnt: int | None = None  # v1 memory.failcnt; v2 times memory.max was hit
    memory_max_usage: int | None = None
    kernel_usage: int | None = None
    oom_kills: int | None = None
    threads: int | None = None  # tasks in the cgroup and below (pids.current)
    threads_max: int | None = None  # pids.max; 0: none
    fds: int | None = None  # held by the processes in the cgroup itself
    sockets: int | None = None
    io_bytes: IoCounters | None = None  # device -> "Read", "Write", … -> bytes
    io_ops: IoCounters | None = None  # device -> "Read", "Write", … -> operations
    pressure: dict[tuple[str, str], int] | None = None  # ("cpu"|"memory"|"io", "some"|"full") -> µs stalled


# ---------------------------------------------------------------- parsers


def parse_keyed(text: str) -> dict[str, int]:
    """ "key value" lines (memory.stat, cpu.stat, cpuacct.stat); lines that do not parse are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_limit(text: str) -> int:
    """A limit file's value: bytes, or 0 for none ("max" on v2, a huge number on v1)."""
    value = text.strip()
    if value == "max":
        return 0
    number = int(value)
    return 0 if number >= UNLIMITED or number < 0 else number


def parse_pressure(text: str) -> dict[str, int]:
    """A PSI file's total stall times in µs: {"some": …, "full": …} (a v2 cpu.pressure may lack "full")."""
    out = {}
    for line in text.splitlines():
        kind, *fields = line.split() or [""]
        for field in fields:
            key, _, value = field.partition("=")
            if key == "total" and value.isdigit():
                out[kind] = int(value)
    return out


def parse_cpu_max(text: str) -> tuple[int, int] | None:
    """v2 cpu.max "quota period" as (quota, period) in µs, quota 0 for "max"; None if it does not parse."""
    fields = text.split()
    if len(fields) != 2 or not fields[1].isdigit() or not (fields[0] == "max" or fields[0].isdigit()):
        return None
    return (0 if fields[0] == "max" else int(fields[0])), int(fields[1])


def weight_to_shares(weight: int) -> int | None:
    """A v2 cpu.weight as v1 cpu.shares, cAdvisor's way ([1, 10000] onto [2, 262144])."""
    return 2 + (weight - 1) * 262142 // 9999 if 1 <= weight <= 10000 else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:  # ENOENT, and ENODEV from a cgroup removed while open
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _read_limit(path: str) -> int | None:
    text = _read(path)
    try:
        return parse_limit(text) if text is not None else None
    except ValueError:
        return None


def _read_keyed(path: str) -> dict[str, int]:
    text = _read(path)
    return parse_keyed(text) if text is not None else {}


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    """usage minus the page cache the kernel can reclaim first, as cAdvisor and the kubelet count it."""
    if usage is None:
        return None
    return usage - inactive_file if inactive_file is not None and inactive_file < usage else usage


# ---------------------------------------------------------------- cgroup paths


def expand_slice(name: str) -> str:
    """A systemd slice unit as a cgroup path: "a-b.slice" -> "/a.slice/a-b.slice"; "-.slice" -> "/"."""
    if not name.endswith(".slice") or "/" in name:
        raise ValueError(f"{name!r} is not a systemd slice name")
    stem = name[: -len(".slice")]
    if stem == "-":
        return "/"
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise ValueError(f"{name!r} is not a valid systemd slice name")
    parts = stem.split("-")
    return "/" + "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def resolve(cgroups_path: str, manager: str) -> str | None:
    """The cgroup (a path under a hierarchy's root) that an OCI linux.cgroupsPath names, or None."""
    if not cgroups_path:
        return None
    if manager != "systemd":
        return posixpath.normpath(cgroups_path) if cgroups_path.startswith("/") else None
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        return None
    slice_, prefix, name = parts
    try:
        parent = expand_slice(slice_ or "system.slice")
    except ValueError:
        return None
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
    return posixpath.join(parent, unit)


# ---------------------------------------------------------------- the hierarchy


@dataclass(frozen=True)
class _Mount:
    mountpoint: str
    root: str  # the cgroup this mount shows at its mountpoint ("/" unless in a cgroup namespace)

    def dir(self, cgroup: str) -> str:
        if self.root != "/" and (cgroup == self.root or cgroup.startswith(self.root + "/")):
            cgroup = cgroup[len(self.root) :]
        return self.mountpoint + posixpath.normpath("/" + cgroup.lstrip("/")).rstrip("/")


class Cgroups:
    """Where a cgroup's files are: one directory per controller on v1, one directory on v2."""

    def __init__(self, version: int, mounts: dict[str, tuple[str, str]]):
        """mounts: controller (v1) or "" (v2) -> (mountpoint, root)."""
        self.version = version
        self._mounts = {k: _Mount(*v) for k, v in mounts.items()}
        self.proc = PROC
        self.sys_dev_block = SYS_DEV_BLOCK

    @classmethod
    def probe(cls, version: int, mountinfo: str = "/proc/self/mountinfo") -> Cgroups:
        """The hierarchies mounted in this mount namespace; the usual paths where mountinfo says nothing."""
        mounts: dict[str, tuple[str, str]] = {}
        try:
            with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            if len(fields) < sep + 4 or sep < 5:
                continue
            fstype, options = fields[sep + 1], fields[sep + 3].split(",")
            root, mountpoint = fields[3], fields[4].replace("\\040", " ")
            if version == 2 and fstype == "cgroup2" and mountpoint == CGROUP_ROOT:
                mounts[""] = (mountpoint, root)
            elif version == 1 and fstype == "cgroup":
                for controller in V1_CONTROLLERS:
                    if controller in options:
                        mounts.setdefault(controller, (mountpoint, root))
        if version == 2:
            mounts.setdefault("", (CGROUP_ROOT, "/"))
        else:
            for controller in V1_CONTROLLERS:
                mounts.setdefault(controller, (os.path.join(CGROUP_ROOT, controller), "/"))
        return cls(version, mounts)

    def dir(self, cgroup: str, controller: str) -> str | None:
        mount = self._mounts.get("" if self.version == 2 else controller)
        return mount.dir(cgroup) if mount else None

    def exists(self, cgroup: str) -> bool:
        path = self.dir(cgroup, "memory")
        return path is not None and os.path.isdir(path)

    def read(self, cgroup: str, detail: bool = False) -> CgroupUsage:
        """A sample of the cgroup; values of a missing cgroup or file stay None."""
        usage = CgroupUsage(timestamp_ns=time.time_ns())
        if self.version == 2:
            self._read_v2(cgroup, usage, detail)
        else:
            self._read_v1(cgroup, usage, detail)
        if detail:
            self._read_processes(cgroup, usage)
        return usage

    def _file(self, cgroup: str, controller: str, name: str) -> str:
        base = self.dir(cgroup, controller)
        return os.path.join(base, name) if base else "/nonexistent"

    def _read_v1(self, cgroup: str, u: CgroupUsage, detail: bool) -> None:
        def f(controller: str, name: str) -> str:
            return self._file(cgroup, controller, name)

        u.cpu_ns = _read_int(f("cpuacct", "cpuacct.usage"))
        u.cpu_user_ns = _read_int(f("cpuacct", "cpuacct.usage_user"))
        u.cpu_system_ns = _read_int(f("cpuacct", "cpuacct.usage_sys"))
        if u.cpu_user_ns is None or u.cpu_system_ns is None:  # kernels before 4.16 have only ticks
            ticks = _read_keyed(f("cpuacct", "cpuacct.stat"))
            hz = os.sysconf("SC_CLK_TCK")
            if "user" in ticks and "system" in ticks:
                u.cpu_user_ns = ticks["user"] * _SECOND_NS // hz
                u.cpu_system_ns = ticks["system"] * _SECOND_NS // hz
        u.memory_usage = _read_int(f("memory", "memory.usage_in_bytes"))
        stat = _read_keyed(f("memory", "memory.stat"))
        u.working_set = _working_set(u.memory_usage, stat.get("total_inactive_file"))
        u.rss = stat.get("total_rss")
        u.cache = stat.get("total_cache")
        u.mapped_file = stat.get("total_mapped_file")
        u.page_faults = stat.get("total_pgfault")
        u.major_page_faults = stat.get("total_pgmajfault")
        u.own_page_faults = stat.get("pgfault")
        u.own_major_page_faults = stat.get("pgmajfault")
        u.memory_limit = _read_limit(f("memory", "memory.limit_in_bytes"))
        memsw = _read_int(f("memory", "memory.memsw.usage_in_bytes"))
        memsw_limit = None
        if memsw is not None and u.memory_usage is not None:
            u.swap_usage = max(memsw - u.memory_usage, 0)
            memsw_limit = _read_limit(f("memory", "memory.memsw.limit_in_bytes"))
            if memsw_limit is not None and u.memory_limit is not None:
                # memsw limits memory plus swap: swap alone is limited only when both are
                u.swap_limit = max(memsw_limit - u.memory_limit, 0) if memsw_limit and u.memory_limit else 0
        u.pids = _read_int(f("pids", "pids.current"))
        if not detail:
            return
        cpu = _read_keyed(f("cpu", "cpu.stat"))
        u.cfs_periods, u.cfs_throttled_periods = cpu.get("nr_periods"), cpu.get("nr_throttled")
        u.cfs_throttled_ns = cpu.get("throttled_time")
        u.cpu_period = _read_int(f("cpu", "cpu.cfs_period_us"))
        quota = _read_int(f("cpu", "cpu.cfs_quota_us"))
        u.cpu_quota = max(quota, 0) if quota is not None else None  # -1: none
        u.cpu_shares = _read_int(f("cpu", "cpu.shares"))
        u.spec_swap_limit = (
            memsw_limit if memsw_limit is not None else _read_limit(f("memory", "memory.memsw.limit_in_bytes"))
        )
        u.memory_reservation = _read_limit(f("memory", "memory.soft_limit_in_bytes"))
        u.memory_failcnt = _read_int(f("memory", "memory.failcnt"))
        u.memory_max_usage = _read_int(f("memory", "memory.max_usage_in_bytes"))
        u.kernel_usage = _read_int(f("memory", "memory.kmem.usage_in_bytes"))
        u.oom_kills = _read_keyed(f("memory", "memory.oom_control")).get("oom_kill")  # since 4.13
        u.threads = u.pids
        u.threads_max = _read_limit(f("pids", "pids.max"))
        raw = []
        for name in ("io_service_bytes", "io_serviced"):
            text = _read(f("blkio", f"blkio.throttle.{name}_recursive"))
            if text is None:
                text = _read(f("blkio", f"blkio.throttle.{name}"))
            raw.append(parse_blkio_v1(text) if text is not None else None)
        self._name_io(u, raw[0], raw[1])

    def _read_v2(self, cgroup: str, u: CgroupUsage, detail: bool) -> None:
        def f(name: str) -> str:
            return self._file(cgroup, "", name)

        cpu = _read_keyed(f("cpu.stat"))
        if "usage_usec" in cpu:
            u.cpu_ns = cpu["usage_usec"] * 1000
        if "user_usec" in cpu and "system_usec" in cpu:
            u.cpu_user_ns, u.cpu_system_ns = cpu["user_usec"] * 1000, cpu["system_usec"] * 1000
        u.memory_usage = _read_int(f("memory.current"))
        stat = _read_keyed(f("memory.stat"))
        u.working_set = _working_set(u.memory_usage, stat.get("inactive_file"))
        u.rss = stat.get("anon")
        u.cache = stat.get("file")
        u.mapped_file = stat.get("file_mapped")
        u.page_faults = u.own_page_faults = stat.get("pgfault")
        u.major_page_faults = u.own_major_page_faults = stat.get("pgmajfault")
        u.memory_limit = _read_limit(f("memory.max"))
        u.swap_usage = _read_int(f("memory.swap.current"))
        if u.swap_usage is not None:
            u.swap_limit = _read_limit(f("memory.swap.max"))
        u.pids = _read_int(f("pids.current"))
        if not detail:
            return
        u.cfs_periods, u.cfs_throttled_periods = cpu.get("nr_periods"), cpu.get("nr_throttled")
        if "throttled_usec" in cpu:
            u.cfs_throttled_ns = cpu["throttled_usec"] * 1000
        text = _read(f("cpu.max"))
        if text is not None and (quota_period := parse_cpu_max(text)) is not None:
            u.cpu_quota, u.cpu_period = quota_period
        weight = _read_int(f("cpu.weight"))
        u.cpu_shares = weight_to_shares(weight) if weight is not None else None
        u.spec_swap_limit = _read_limit(f("memory.swap.max"))
        u.memory_reservation = _read_limit(f("memory.min"))
        events = _read_keyed(f("memory.events"))
        u.memory_failcnt, u.oom_kills = events.get("max"), events.get("oom_kill")
        u.memory_max_usage = _read_int(f("memory.peak"))  # since 5.19
        u.kernel_usage = stat.get("kernel")  # since 5.18
        if u.kernel_usage is None and "slab" in stat:  # its parts, before
            u.kernel_usage = sum(stat.get(k, 0) for k in ("slab", "kernel_stack", "pagetables", "percpu", "sock"))
        u.threads = u.pids
        u.threads_max = _read_limit(f("pids.max"))
        text = _read(f("io.stat"))
        self._name_io(u, *(parse_io_stat(text) if text is not None else (None, None)))
        pressure = {}
        for resource in PRESSURE:
            text = _read(f(f"{resource}.pressure"))
            for kind, total_us in parse_pressure(text or "").items():
                pressure[resource, kind] = total_us
        u.pressure = pressure or None

    def _name_io(self, u: CgroupUsage, io_bytes: RawIo | None, io_ops: RawIo | None) -> None:
        named = name_devices(io_bytes or {}, io_ops or {}, sys_dev_block=self.sys_dev_block)
        u.io_bytes = named[0] if io_bytes is not None else None
        u.io_ops = named[1] if io_ops is not None else None

    def _read_processes(self, cgroup: str, u: CgroupUsage) -> None:
        """Descriptors held by the processes in the cgroup itself (cgroup.procs of v1's cpu hierarchy)."""
        text = _read(self._file(cgroup, "cpu", "cgroup.procs"))
        if text is not None:
            u.fds, u.sockets = count_fds(parse_pids(text), self.proc)


_SUMMED = (
    "cpu_ns", "cpu_user_ns", "cpu_system_ns", "memory_usage", "working_set", "rss", "cache", "mapped_file",
    "page_faults", "major_page_faults", "own_page_faults", "own_major_page_faults", "swap_usage", "pids",
    "cfs_periods", "cfs_throttled_periods", "cfs_throttled_ns", "memory_failcnt", "kernel_usage", "oom_kills",
    "threads", "fds", "sockets",
)  # fmt: skip


def total(samples: list[CgroupUsage], timestamp_ns: int) -> CgroupUsage:
    """The sum of several cgroups' samples; a value is known when any sample knows it.

    Settings, limits, peaks and pressure do not add up: they stay unknown.
    """
    out = CgroupUsage(timestamp_ns=timestamp_ns)
    for name in _SUMMED:
        values = [v for s in samples if (v := getattr(s, name)) is not None]
        if values:
            setattr(out, name, sum(values))
    for name in ("io_bytes", "io_ops"):
        tables = [t for s in samples if (t := getattr(s, name)) is not None]
        if tables:
            setattr(out, name, merge_io(tables))
    return out
