"""The pod-level cgroup pycrio makes when the kubelet did not: its limits are the pod's resources + overhead.

The kubelet normally makes the pod's cgroup (cgroup_parent) itself and sets its limits (it
adds the RuntimeClass overhead to the containers' sum); pycrio then leaves it alone. When
LinuxPodSandboxConfig carries `resources` or `overhead` and that cgroup is not there — the
parent names a cgroup that does not exist, or is empty (the pod then gets
<default parent>/pycrio-pod-<pod id>, its pause and containers under it) — pycrio makes it
in every hierarchy (v1) or the unified tree (v2) and writes the pod-level limits:

  memory    resources + overhead; unlimited when resources has no limit
  cpu quota resources + overhead at the resources' period (the overhead's converted);
            none when resources has no quota
  cpu shares resources + overhead (v2: cpu.weight, converted as runc 1.1 converts)
  cpuset    the resources' cpus and mems
  hugetlb   resources + overhead per page size

The directories it made are recorded (in the pod's facts and in <pod dir>/pod-cgroup.json,
for a crash before the facts are stored) and removed once the pod's containers are gone;
a cgroup pycrio did not make is never removed. With the systemd cgroup manager the pod's
slice is systemd's to make: nothing is done there. Nothing here runs for a pod without
resources or overhead.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import posixpath
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from google.protobuf import json_format

from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.spec_resources import DEFAULT_CGROUPFS_PARENT, cgroups_path, linux_resources

logger = logging.getLogger("pycrio.pod_cgroup")

CGROUP_ROOT = "/sys/fs/cgroup"
RECORD = "pod-cgroup.json"  # in the pod dir: the cgroup and the directories made for it
POD_CGROUP_PREFIX = "pycrio-pod"  # <default parent>/pycrio-pod-<pod id> when the kubelet sent no parent
DEFAULT_CPU_PERIOD = 100000  # µs, what runc and the kernel use when none is given
CPU_SHARES_MIN, CPU_SHARES_MAX = 2, 262144
CPU_QUOTA_MAX = (1 << 44) - 1  # µs: the kernel's max_cfs_runtime (MAX_BW)
INT64_MAX = (1 << 63) - 1
RMDIR_TIMEOUT = 2.0
_NOT_CONTROLLERS = {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "none", "favordynmods"}


# ---------------------------------------------------------------- the arithmetic


@dataclass(frozen=True)
class PodLimits:
    """The pod cgroup's limits; None (or empty) leaves the setting as the kernel makes it."""

    memory: int | None = None  # bytes
    cpu_quota: int | None = None  # µs per cpu_period
    cpu_period: int | None = None  # µs
    cpu_shares: int | None = None
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepages: dict[str, int] = field(default_factory=dict)  # page size ("2MB") -> bytes


def _limit_fields(r: api_pb2.LinuxContainerResources) -> bool:
    # The kubelet sends a 0 hugepage limit for each of the node's page sizes: no reason alone.
    return bool(
        r.cpu_period
        or r.cpu_quota > 0
        or r.cpu_shares
        or r.memory_limit_in_bytes
        or r.cpuset_cpus
        or r.cpuset_mems
        or any(h.limit for h in r.hugepage_limits)
    )


def requested(linux: api_pb2.LinuxPodSandboxConfig) -> bool:
    """Whether the pod carries resources or overhead that would set a limit (cheap: no syscall)."""
    return (linux.HasField("resources") and _limit_fields(linux.resources)) or (
        linux.HasField("overhead") and _limit_fields(linux.overhead)
    )


def _validated(r: api_pb2.LinuxContainerResources, what: str, version: int) -> dict[str, Any]:
    """The resources checked as a container's are (spec_resources), errors naming the pod's field."""
    try:
        return linux_resources(r, version)
    except InvalidArgument as e:
        raise InvalidArgument(f"linux.{what}: {e}") from e


def pod_limits(
    resources: api_pb2.LinuxContainerResources, overhead: api_pb2.LinuxContainerResources, version: int
) -> PodLimits:
    """resources + overhead, as the kubelet computes a pod cgroup's limits; InvalidArgument names the field."""
    res, over = _validated(resources, "resources", version), _validated(overhead, "overhead", version)
    rcpu, ocpu = res.get("cpu", {}), over.get("cpu", {})
    memory = None
    if "limit" in res.get("memory", {}):
        memory = res["memory"]["limit"] + over.get("memory", {}).get("limit", 0)
        if memory > INT64_MAX:
            raise InvalidArgument(
                f"linux.resources.memory_limit_in_bytes + linux.overhead.memory_limit_in_bytes = {memory}: "
                f"above {INT64_MAX}"
            )
    quota = period = None
    if "quota" in rcpu:
        period = rcpu.get("period", DEFAULT_CPU_PERIOD)
        quota = rcpu["quota"]
        if "quota" in ocpu:  # the overhead's share of a CPU, at the resources' period (rounded up)
            quota += math.ceil(ocpu["quota"] * period / ocpu.get("period", DEFAULT_CPU_PERIOD))
        if quota > CPU_QUOTA_MAX:
            raise InvalidArgument(
                f"linux.resources.cpu_quota + linux.overhead.cpu_quota = {quota}µs: above the kernel's "
                f"limit of {CPU_QUOTA_MAX}µs"
            )
    shares = None
    if rcpu.get("shares") or ocpu.get("shares"):
        shares = min(max(rcpu.get("shares", 0) + ocpu.get("shares", 0), CPU_SHARES_MIN), CPU_SHARES_MAX)
    hugepages: dict[str, int] = {}
    for h in [*res.get("hugepageLimits", []), *over.get("hugepageLimits", [])]:
        hugepages[h["pageSize"]] = hugepages.get(h["pageSize"], 0) + h["limit"]
        if hugepages[h["pageSize"]] > INT64_MAX:
            raise InvalidArgument(f"hugepage_limits {h['pageSize']}: resources + overhead above {INT64_MAX}")
    return PodLimits(memory, quota, period, shares, rcpu.get("cpus", ""), rcpu.get("mems", ""), hugepages)


def cpu_weight(shares: int) -> int:
    """cgroup v2 cpu.weight for cpu shares, as runc 1.1 converts (2..262144 onto 1..10000)."""
    return 1 + ((shares - 2) * 9999) // 262142


# One setting: (controller, interface file, value, the CRI fields it comes from).
Setting = tuple[str, str, str, str]


def settings(limits: PodLimits, version: int) -> list[Setting]:
    """The files to write in the pod cgroup, in order, for cgroup v1 or v2."""
    out: list[Setting] = []
    if limits.cpuset_cpus:
        out.append(("cpuset", "cpuset.cpus", limits.cpuset_cpus, "linux.resources.cpuset_cpus"))
    if limits.cpuset_mems:
        out.append(("cpuset", "cpuset.mems", limits.cpuset_mems, "linux.resources.cpuset_mems"))
    memory_fields = "linux.resources.memory_limit_in_bytes + linux.overhead.memory_limit_in_bytes"
    quota_fields = "linux.resources.cpu_quota/cpu_period + linux.overhead.cpu_quota/cpu_period"
    shares_fields = "linux.resources.cpu_shares + linux.overhead.cpu_shares"
    if version == 2:
        if limits.memory is not None:
            out.append(("memory", "memory.max", str(limits.memory), memory_fields))
        if limits.cpu_quota is not None:
            out.append(("cpu", "cpu.max", f"{limits.cpu_quota} {limits.cpu_period}", quota_fields))
        if limits.cpu_shares is not None:
            out.append(("cpu", "cpu.weight", str(cpu_weight(limits.cpu_shares)), shares_fields))
        for size, limit in sorted(limits.hugepages.items()):
            out.append(("hugetlb", f"hugetlb.{size}.max", str(limit), f"hugepage_limits {size}"))
        return out
    if limits.memory is not None:
        out.append(("memory", "memory.limit_in_bytes", str(limits.memory), memory_fields))
    if limits.cpu_quota is not None:
        out.append(("cpu", "cpu.cfs_period_us", str(limits.cpu_period), quota_fields))
        out.append(("cpu", "cpu.cfs_quota_us", str(limits.cpu_quota), quota_fields))
    if limits.cpu_shares is not None:
        out.append(("cpu", "cpu.shares", str(limits.cpu_shares), shares_fields))
    for size, limit in sorted(limits.hugepages.items()):
        out.append(("hugetlb", f"hugetlb.{size}.limit_in_bytes", str(limit), f"hugepage_limits {size}"))
    return out


# ---------------------------------------------------------------- the hierarchies


def hierarchies(version: int, mountinfo: str = "/proc/self/mountinfo") -> dict[str, set[str]]:
    """Mount point -> controllers of each hierarchy a pod cgroup is made in: every v1 hierarchy (named
    ones and, in hybrid mode, the controller-less unified one too, as runc makes them), or the v2 root."""
    if version == 2:
        try:
            with open(os.path.join(CGROUP_ROOT, "cgroup.controllers")) as f:
                return {CGROUP_ROOT: set(f.read().split())}
        except FileNotFoundError:
            return {CGROUP_ROOT: set()}
    found: dict[str, set[str]] = {}
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if "-" not in fields or not fields[4].startswith(CGROUP_ROOT + "/"):
                continue
            sep = fields.index("-")
            fstype = fields[sep + 1]
            if fstype == "cgroup":
                options = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
                found.setdefault(fields[4], {o for o in options if o not in _NOT_CONTROLLERS and "=" not in o})
            elif fstype == "cgroup2":
                found.setdefault(fields[4], set())
    return found


def _controller_dir(tops: dict[str, set[str]], controller: str, version: int) -> str | None:
    if version == 2:
        return CGROUP_ROOT if controller in tops.get(CGROUP_ROOT, set()) else None
    return next((top for top, controllers in tops.items() if controller in controllers), None)


def _exists(cgroup: str, tops: dict[str, set[str]], version: int) -> bool:
    """Whether cgroup is there: in the memory hierarchy (v1; the first one without it) or the v2 tree."""
    top = _controller_dir(tops, "memory", version) or next(iter(tops), None)
    return top is not None and os.path.isdir(top + cgroup)


# ---------------------------------------------------------------- making and removing


@dataclass(frozen=True)
class Plan:
    """The pod cgroup to make: where, the limits, and the directories missing now (made in order)."""

    cgroup: str  # the pod's pause and containers go under it
    version: int
    limits: PodLimits
    writes: list[Setting]
    dirs: list[str]  # every missing level in every hierarchy, parents first
    pod_dirs: list[str]  # the pod cgroup's own directories among them
    owned: list[str]  # the ones removed with the pod (not the default parent, which all pods share)
    subtree: list[tuple[str, list[str]]]  # v2: (cgroup dir, controllers its children need)

    def record(self) -> dict[str, Any]:
        return {
            "path": self.cgroup,
            "dirs": self.owned,
            "pod_dirs": self.pod_dirs,
            "limits": {k: v for k, v in asdict(self.limits).items() if v not in (None, "", {})},
            "files": {name: value for _, name, value, _ in self.writes},
        }


def _missing_levels(top: str, cgroup: str) -> list[str]:
    missing, path = [], top + cgroup
    while path != top and not os.path.isdir(path):
        missing.append(path)
        path = posixpath.dirname(path)
    return list(reversed(missing))


def plan(manager: str, version: int, linux: api_pb2.LinuxPodSandboxConfig, pod_id: str) -> Plan | None:
    """The pod cgroup pycrio must make for this pod, or None (no resources/overhead, the cgroup exists,
    or systemd's to make). Raises InvalidArgument or FailedPrecondition before anything is made."""
    if not requested(linux):
        return None
    if manager != "cgroupfs":
        logger.info("pod %s: resources/overhead with cgroup_manager %s: the pod's slice is systemd's", pod_id[:12],
                    manager)  # fmt: skip
        return None
    parent = linux.cgroup_parent
    if parent:
        cgroup = posixpath.dirname(cgroups_path(manager, parent, pod_id))  # validated, normalized
    else:
        cgroup = posixpath.join(DEFAULT_CGROUPFS_PARENT, f"{POD_CGROUP_PREFIX}-{pod_id}")
        cgroups_path(manager, cgroup, pod_id)  # the id is usable in a path
    tops = hierarchies(version)
    if parent and _exists(cgroup, tops, version):
        logger.debug("pod %s: cgroup %s exists (the kubelet's): its limits are left as they are", pod_id[:12], cgroup)
        return None
    limits = pod_limits(linux.resources, linux.overhead, version)
    writes = settings(limits, version)
    if _controller_dir(tops, "hugetlb", version) is None:  # 0 limits (the kubelet's default) need no controller
        writes = [w for w in writes if w[0] != "hugetlb" or w[2] != "0"]
    needed = sorted({controller for controller, *_ in writes})
    for controller in needed:
        if _controller_dir(tops, controller, version) is None:
            raise FailedPrecondition(
                f"pod cgroup {cgroup}: the {controller} controller is not available on this host "
                f"(needed for {next(w[3] for w in writes if w[0] == controller)})"
            )
    if not tops:
        raise FailedPrecondition("pod cgroup: no cgroup hierarchy is mounted under /sys/fs/cgroup")
    dirs = [d for top in tops for d in _missing_levels(top, cgroup)]
    pod_dirs = [top + cgroup for top in tops if top + cgroup in dirs]
    owned = dirs if parent else pod_dirs
    subtree = []
    if version == 2:  # each level above the pod cgroup hands the controllers down
        level = CGROUP_ROOT
        for part in [p for p in posixpath.dirname(cgroup).split("/") if p] + [None]:
            subtree.append((level, needed))
            if part is None:
                break
            level = posixpath.join(level, part)
    return Plan(cgroup, version, limits, writes, dirs, pod_dirs, owned, subtree)


def write_record(pod_dir: str, record: dict[str, Any]) -> None:
    with open(os.path.join(pod_dir, RECORD), "w") as f:
        json.dump(record, f)


def _read_record(pod_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(pod_dir, RECORD)) as f:
            record = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write(path: str, value: str, fields: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError as e:
        if os.path.basename(path).startswith("hugetlb.") and value == "0":
            return  # a page size this host does not have: none can be used anyway
        raise InvalidArgument(f"{fields}: {path} is not there (not on this host?)") from e
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW):
            raise InvalidArgument(f"{fields}: {path} refused {value!r} ({os.strerror(e.errno)})") from e
        if e.errno == errno.EBUSY:  # e.g. a memory limit below what the pod uses now
            raise FailedPrecondition(f"{fields}: {path} refused {value!r} now ({os.strerror(e.errno)})") from e
        raise


def inherit_cpuset(directory: str) -> None:
    """A new v1 cpuset level starts with no cpus and mems (no task could join it): it gets its
    parent's. Nothing to do elsewhere (no cpuset.cpus) or where they are set."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            return
        with open(path) as f:
            if f.read().strip():
                continue
        with open(os.path.join(os.path.dirname(directory), name)) as f:
            value = f.read().strip()
        with open(path, "w") as f:
            f.write(value)


def _enable(directory: str, controllers: list[str]) -> None:
    path = os.path.join(directory, "cgroup.subtree_control")
    with open(path) as f:
        enabled = set(f.read().split())
    for controller in controllers:
        if controller not in enabled:
            with open(path, "w") as f:
                f.write(f"+{controller}")


def make(p: Plan) -> None:
    """mkdir the pod cgroup's missing levels and write its limits; undoes its directories on failure."""
    tops = hierarchies(p.version)
    made: list[str] = []
    try:
        for directory in p.dirs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory)
                made.append(directory)
            inherit_cpuset(directory)
        for directory, controllers in p.subtree:
            _enable(directory, controllers)
        for controller, name, value, fields in p.writes:
            top = _controller_dir(tops, controller, p.version)
            assert top is not None  # checked by plan()
            _write(os.path.join(top + p.cgroup, name), value, fields)
    except BaseException:
        for directory in reversed([d for d in made if d in p.owned]):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
    logger.info("pod cgroup %s made: %s", p.cgroup, ", ".join(f"{n}={v}" for _, n, v, _ in p.writes) or "no limits")


def update(record: dict[str, Any], limits: PodLimits, version: int) -> dict[str, Any]:
    """UpdatePodSandboxResources: the pod's new limits (pod_limits: resources + overhead) written to
    the pod cgroup pycrio made (record: facts["pod_cgroup"]); a memory limit or CPU quota no longer
    asked for is lifted. The record, updated."""
    writes = settings(limits, version)
    if limits.memory is None:
        writes.insert(0, ("memory", "memory.max" if version == 2 else "memory.limit_in_bytes",
                          "max" if version == 2 else "-1", "linux.resources.memory_limit_in_bytes"))  # fmt: skip
    if limits.cpu_quota is None:
        unlimited = ("cpu", "cpu.max", "max", "") if version == 2 else ("cpu", "cpu.cfs_quota_us", "-1", "")
        writes.insert(0, (*unlimited[:3], "linux.resources.cpu_quota"))
    tops = hierarchies(version)
    for controller, name, value, fields in writes:
        top = _controller_dir(tops, controller, version)
        if top is None:
            if value in ("0", "-1", "max"):  # no limit needs no controller
                continue
            raise FailedPrecondition(f"pod cgroup {record['path']}: no {controller} controller (for {fields})")
        _write(os.path.join(top + record["path"], name), value, fields)
    logger.info("pod cgroup %s updated: %s", record["path"], ", ".join(f"{n}={v}" for _, n, v, _ in writes))
    limits_record = {k: v for k, v in asdict(limits).items() if v not in (None, "", {})}
    return dict(record, limits=limits_record, files={name: value for _, name, value, _ in writes})


def _rmdir(directory: str, deadline: float) -> bool:
    """rmdir a cgroup; EBUSY is retried briefly (a killed task leaves it a moment later). False when it
    has a child cgroup (another pod was put under it): then it stays."""
    while True:
        try:
            os.rmdir(directory)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
            with os.scandir(directory) as entries:
                if any(entry.is_dir(follow_symlinks=False) for entry in entries):
                    return False
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def remove(record: dict[str, Any]) -> None:
    """rmdir what a record says pycrio made: the pod cgroup in every hierarchy, then the levels above
    it that it made too when nothing else is in them."""
    dirs = [d for d in record.get("dirs") or [] if isinstance(d, str)]
    pod_dirs = set(record.get("pod_dirs") or [])
    deadline = time.monotonic() + RMDIR_TIMEOUT
    for directory in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
        if directory in pod_dirs:
            if not _rmdir(directory, deadline):
                logger.warning("pod cgroup %s: left in place, another cgroup was made under it", directory)
        else:
            with contextlib.suppress(OSError):  # an ancestor shared with another pod
                os.rmdir(directory)


def release(facts: dict[str, Any]) -> None:
    """Remove the pod cgroup pycrio made for a pod (from its facts, else its record after a crash in
    RunPodSandbox); nothing when it made none. Safe to repeat."""
    record = facts.get("pod_cgroup") or (_read_record(facts["dir"]) if facts.get("dir") else None)
    if not record:
        return
    remove(record)
    facts["pod_cgroup"] = None
    if facts.get("dir"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(facts["dir"], RECORD))


def remove_recorded(runroot: str) -> list[str]:
    """`pycrio wipe`: remove every pod cgroup recorded under <runroot>/pods (after the containers and
    pauses are gone); the cgroups removed."""
    removed = []
    pods = os.path.join(runroot, "pods")
    for entry in os.scandir(pods) if os.path.isdir(pods) else []:
        record = _read_record(entry.path)
        if record:
            with contextlib.suppress(OSError):
                remove(record)
                removed.append(record.get("path", ""))
    return removed


# ---------------------------------------------------------------- what the rest of pycrio asks


def cgroup_parent(config: api_pb2.PodSandboxConfig, facts: dict[str, Any]) -> str:
    """The parent of the pod's pause and containers: the kubelet's, or the pod cgroup pycrio made."""
    return facts.get("cgroup_parent") or config.linux.cgroup_parent


def describe(config: api_pb2.PodSandboxConfig, facts: dict[str, Any]) -> dict[str, Any]:
    """For PodSandboxStatus verbose info: the pod's resources and overhead and what pycrio applied."""
    linux = config.linux
    out: dict[str, Any] = {"cgroupParent": cgroup_parent(config, facts)}
    for name in ("resources", "overhead"):
        if linux.HasField(name):
            out[name] = json_format.MessageToDict(getattr(linux, name), preserving_proto_field_name=True)
    record = facts.get("pod_cgroup")
    out["podCgroup"] = (
        {
            "path": record["path"],
            "createdByPycrio": True,
            "limits": record.get("limits", {}),
            "files": record.get("files", {}),
        }  # fmt: skip
        if record
        else None
    )
    return out
