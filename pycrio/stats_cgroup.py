"""A cgroup's usage read from its files: v1 per-controller directories or the v2 unified one.

Every read is blocking and forgiving: a file that is missing or unreadable (the
cgroup went away with its container) leaves its value None, never raises.
"""

from __future__ import annotations

import os
import posixpath
import time
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
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

    def read(self, cgroup: str) -> CgroupUsage:
        """A sample of the cgroup; values of a missing cgroup or file stay None."""
        usage = CgroupUsage(timestamp_ns=time.time_ns())
        if self.version == 2:
            self._read_v2(cgroup, usage)
        else:
            self._read_v1(cgroup, usage)
        return usage

    def _file(self, cgroup: str, controller: str, name: str) -> str:
        base = self.dir(cgroup, controller)
        return os.path.join(base, name) if base else "/nonexistent"

    def _read_v1(self, cgroup: str, u: CgroupUsage) -> None:
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
        if memsw is not None and u.memory_usage is not None:
            u.swap_usage = max(memsw - u.memory_usage, 0)
            memsw_limit = _read_limit(f("memory", "memory.memsw.limit_in_bytes"))
            if memsw_limit is not None and u.memory_limit is not None:
                # memsw limits memory plus swap: swap alone is limited only when both are
                u.swap_limit = max(memsw_limit - u.memory_limit, 0) if memsw_limit and u.memory_limit else 0
        u.pids = _read_int(f("pids", "pids.current"))

    def _read_v2(self, cgroup: str, u: CgroupUsage) -> None:
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


def total(samples: list[CgroupUsage], timestamp_ns: int) -> CgroupUsage:
    """The sum of several cgroups' samples; a value is known when any sample knows it. Limits stay unknown."""
    out = CgroupUsage(timestamp_ns=timestamp_ns)
    for name in (
        "cpu_ns", "cpu_user_ns", "cpu_system_ns", "memory_usage", "working_set", "rss", "cache", "mapped_file",
        "page_faults", "major_page_faults", "own_page_faults", "own_major_page_faults", "swap_usage", "pids",
    ):  # fmt: skip
        values = [v for s in samples if (v := getattr(s, name)) is not None]
        if values:
            setattr(out, name, sum(values))
    return out
