"""Usage of containers and pods for the CRI stats and metrics RPCs.

Cgroup counters come from stats_cgroup; a container's writable layer is a walk
of its overlay upper dir, cached FS_CACHE_SECONDS (the kubelet asks every 10 s
for every container); a pod's network counters come from /proc/<pid>/net/dev of
a process in the pod's network namespace. A pod with a cgroup of its own (the
kubelet's per-pod cgroup_parent) is read there, as cAdvisor reads it; otherwise
its containers' and pause's cgroups are summed. Every read blocks, so reads run
in threads, concurrently across containers and pods. stats_metrics turns the
same samples, taken in detail (stats_cgroup), into cAdvisor-style metrics.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import stat
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycrio import pod_cgroup
from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument
from pycrio.runtime_store import ContainerRecord, PodRecord, RuntimeStore
from pycrio.spec_resources import cgroups_path
from pycrio.stats_cgroup import Cgroups, CgroupUsage, resolve, total
from pycrio.stats_metrics import LOOPBACK, pod_metrics
from pycrio.stats_procs import read_open_files_soft

if TYPE_CHECKING:
    from pycrio.lifecycle import Lifecycle

FS_CACHE_SECONDS = 5.0
RATE_MIN_INTERVAL = 0.5  # seconds between the two samples usage_nano_cores is computed from
RATE_FORGET = 600.0  # seconds after which an unused CPU sample is dropped
DEFAULT_INTERFACE = "eth0"


# ---------------------------------------------------------------- network


@dataclass(frozen=True)
class InterfaceCounters:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str, loopback: bool = False) -> list[InterfaceCounters]:
    """/proc/<pid>/net/dev, without lo unless asked for (the kubelet leaves loopback out too)."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16 or (name.strip() == LOOPBACK and not loopback):
            continue
        try:
            n = [int(x) for x in fields[:16]]
        except ValueError:
            continue
        out.append(InterfaceCounters(name.strip(), n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11]))
    return out


def _same_netns(pid: int, want: os.stat_result) -> bool:
    ns = os.stat(f"/proc/{pid}/ns/net")
    return (ns.st_dev, ns.st_ino) == (want.st_dev, want.st_ino)


def read_pod_network(pids: Iterable[int], netns_pin: str, loopback: bool = False) -> list[InterfaceCounters] | None:
    """Interface counters of the pinned network namespace, read through the first pid inside it; None if none is."""
    try:
        want = os.stat(netns_pin)
    except OSError:
        return None
    for pid in pids:
        try:
            if not _same_netns(pid, want):
                continue
            with open(f"/proc/{pid}/net/dev", encoding="ascii", errors="replace") as f:
                text = f.read()
            if _same_netns(pid, want):  # the pid did not exit and get reused while we read
                return parse_net_dev(text, loopback)
        except OSError:
            continue
    return None


# ---------------------------------------------------------------- filesystems


@dataclass(frozen=True)
class FsUsage:
    timestamp_ns: int
    bytes: int
    inodes: int


def dir_usage(path: str) -> FsUsage | None:
    """Allocated bytes and inodes under path (path included, hard links once, one filesystem); None if gone."""
    try:
        top = os.lstat(path)
    except OSError:
        return None
    seen = {top.st_ino}
    used = top.st_blocks * 512
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                entries = list(it)
        except OSError:  # removed while we walk
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != top.st_dev or st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            used += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return FsUsage(time.time_ns(), used, len(seen))


@dataclass(frozen=True)
class FsInfo:
    """The filesystem holding the writable layers: its device (as cAdvisor labels it) and capacity."""

    device: str
    bytes_total: int
    inodes_total: int
    inodes_free: int


def fs_info(path: str, mountinfo: str = "/proc/self/mountinfo") -> FsInfo | None:
    try:
        st = os.stat(path)
        vfs = os.statvfs(path)
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want, device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}", ""
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == want and "-" in fields:
            sep = fields.index("-")
            device = fields[sep + 2] if len(fields) > sep + 2 else ""
    return FsInfo(device, vfs.f_blocks * vfs.f_frsize, vfs.f_files, vfs.f_ffree)


# ---------------------------------------------------------------- samples → CRI messages


def _u64(value: int | None) -> api_pb2.UInt64Value | None:
    return api_pb2.UInt64Value(value=max(value, 0)) if value is not None else None


def _cpu(u: CgroupUsage, nano_cores: int | None) -> api_pb2.CpuUsage | None:
    if u.cpu_ns is None:
        return None
    return api_pb2.CpuUsage(
        timestamp=u.timestamp_ns, usage_core_nano_seconds=_u64(u.cpu_ns), usage_nano_cores=_u64(nano_cores)
    )


def _memory(u: CgroupUsage) -> api_pb2.MemoryUsage | None:
    if u.memory_usage is None:
        return None
    available = max(u.memory_limit - u.working_set, 0) if u.memory_limit and u.working_set is not None else None
    return api_pb2.MemoryUsage(
        timestamp=u.timestamp_ns,
        working_set_bytes=_u64(u.working_set),
        available_bytes=_u64(available),
        usage_bytes=_u64(u.memory_usage),
        rss_bytes=_u64(u.rss),
        page_faults=_u64(u.page_faults),
        major_page_faults=_u64(u.major_page_faults),
    )


def _swap(u: CgroupUsage) -> api_pb2.SwapUsage | None:
    if u.swap_usage is None:
        return None
    available = max(u.swap_limit - u.swap_usage, 0) if u.swap_limit else None
    return api_pb2.SwapUsage(
        timestamp=u.timestamp_ns, swap_available_bytes=_u64(available), swap_usage_bytes=_u64(u.swap_usage)
    )


def _interface(i: InterfaceCounters) -> api_pb2.NetworkInterfaceUsage:
    return api_pb2.NetworkInterfaceUsage(
        name=i.name,
        rx_bytes=_u64(i.rx_bytes),
        rx_errors=_u64(i.rx_errors),
        tx_bytes=_u64(i.tx_bytes),
        tx_errors=_u64(i.tx_errors),
    )


@dataclass
class ContainerSample:
    record: ContainerRecord
    cgroup: str | None
    usage: CgroupUsage
    nano_cores: int | None
    layer: FsUsage | None
    open_files_soft: int | None = None  # of its first process; detailed samples only


@dataclass
class PodSample:
    record: PodRecord
    cgroup: str | None  # the pod's own cgroup; None when its usage is a sum
    usage: CgroupUsage
    nano_cores: int | None
    network: list[InterfaceCounters] | None  # lo included
    network_ns: int
    containers: list[ContainerSample]


@dataclass
class _CpuSample:
    at: float
    cpu_ns: int
    rate: int | None


class Stats:
    """Samples usage for the stats RPCs; remembers CPU samples (for rates) and writable-layer walks."""

    def __init__(
        self,
        store: RuntimeStore,
        cgroups: Cgroups,
        manager: str,
        containers_dir: str,
        *,
        fs_cache_seconds: float = FS_CACHE_SECONDS,
    ):
        self.store = store
        self.cgroups = cgroups
        self.manager = manager
        self.containers_dir = containers_dir  # the container filesystem ImageFsInfo reports
        self.fs_cache_seconds = fs_cache_seconds
        self._layers: dict[str, tuple[float, FsUsage | None]] = {}
        self._walks: dict[str, asyncio.Future[FsUsage | None]] = {}
        self._cpu: dict[str, _CpuSample] = {}
        self._fs: tuple[float, FsInfo | None] = (0.0, None)

    @classmethod
    def for_lifecycle(cls, lifecycle: Lifecycle) -> Stats:
        facts = lifecycle.runtime_facts
        return cls(
            lifecycle.store,
            Cgroups.probe(facts.cgroup_version),
            facts.cgroup_manager,
            os.path.join(lifecycle.cfg.root, "containers"),
        )

    # ------------------------------------------------------------ public

    async def container_stats(self, containers: list[ContainerRecord]) -> list[api_pb2.ContainerStats]:
        samples = await asyncio.gather(*(self._sample_container(c) for c in containers))
        self._forget_rates()
        return [self._container_stats(s) for s in samples]

    async def pod_stats(self, pods: list[PodRecord]) -> list[api_pb2.PodSandboxStats]:
        """Stats of pods with those of their running containers."""
        samples = await self._sample_pods(pods)
        return [self._pod_stats(s) for s in samples]

    async def pod_metrics(self, pods: list[PodRecord]) -> list[api_pb2.PodSandboxMetrics]:
        """cAdvisor-style metrics of pods (network, pod cgroup) and their running containers."""
        samples, fs = await asyncio.gather(self._sample_pods(pods, detail=True), self._fs_info())
        return [pod_metrics(s, fs) for s in samples]

    # ------------------------------------------------------------ sampling

    async def _sample_container(self, c: ContainerRecord, detail: bool = False) -> ContainerSample:
        cgroup = resolve(c.facts.get("cgroups_path", ""), self.manager)
        usage, layer = await asyncio.gather(asyncio.to_thread(self._read, cgroup, detail), self._layer(c))
        sample = ContainerSample(c, cgroup, usage, self._rate(c.id, usage.cpu_ns), layer)
        if detail and c.pid:
            sample.open_files_soft = await asyncio.to_thread(read_open_files_soft, c.pid, self.cgroups.proc)
        return sample

    def _read(self, cgroup: str | None, detail: bool = False) -> CgroupUsage:
        return self.cgroups.read(cgroup, detail) if cgroup else CgroupUsage(timestamp_ns=time.time_ns())

    async def _sample_pods(self, pods: list[PodRecord], detail: bool = False) -> list[PodSample]:
        parents = Counter(self._parent(p) for p in self.store.pods())
        running: defaultdict[str, list[ContainerRecord]] = defaultdict(list)
        for c in self.store.containers():
            if c.state == "running":
                running[c.pod_id].append(c)
        samples = await asyncio.gather(
            *(self._sample_pod(p, running[p.id], parents[self._parent(p)] == 1, detail) for p in pods)
        )
        self._forget_rates()
        return list(samples)

    async def _sample_pod(self, pod: PodRecord, running: list[ContainerRecord], alone: bool, detail: bool) -> PodSample:
        """alone: no other pod shares the pod's parent cgroup, which is then the pod's own."""
        containers, (cgroup, usage), (network_ns, network) = await asyncio.gather(
            asyncio.gather(*(self._sample_container(c, detail) for c in running)),
            asyncio.to_thread(self._read_pod, pod, alone, detail),
            asyncio.to_thread(self._read_network, pod, running),
        )
        if usage is None:  # no cgroup of its own: the sum of its pause's and its containers'
            pause = await asyncio.to_thread(self._read_pause, pod, detail)
            usage = total([c.usage for c in containers] + ([pause] if pause else []), time.time_ns())
        nano_cores = self._rate(pod.id, usage.cpu_ns)
        return PodSample(pod, cgroup, usage, nano_cores, network, network_ns, list(containers))

    def _pause_cgroup(self, pod: PodRecord) -> str | None:
        """The cgroup the pod's pause is (or would be) made in, as spec.pause_spec names it."""
        try:
            parent = pod_cgroup.cgroup_parent(pod.config, pod.facts)  # the pod cgroup pycrio made, if any
            return resolve(cgroups_path(self.manager, parent, pod.id), self.manager)
        except InvalidArgument:
            return None

    def _parent(self, pod: PodRecord) -> str | None:
        """The cgroup holding the pod's pause and containers (the default parent when the kubelet sent none)."""
        cgroup = self._pause_cgroup(pod)
        return posixpath.dirname(cgroup) if cgroup else None

    def _read_pod(self, pod: PodRecord, alone: bool, detail: bool) -> tuple[str | None, CgroupUsage | None]:
        cgroup = self._parent(pod) if alone else None
        if cgroup is None or cgroup == "/" or not self.cgroups.exists(cgroup):
            return None, None
        return cgroup, self.cgroups.read(cgroup, detail)

    def _read_pause(self, pod: PodRecord, detail: bool) -> CgroupUsage | None:
        cgroup = self._pause_cgroup(pod) if pod.facts.get("pause_pid") else None
        return self.cgroups.read(cgroup, detail) if cgroup else None

    def _read_network(
        self, pod: PodRecord, running: list[ContainerRecord]
    ) -> tuple[int, list[InterfaceCounters] | None]:
        netns = pod.facts.get("netns")
        if not netns:  # the host's network: nothing of it is the pod's
            return time.time_ns(), None
        pids = [pod.facts.get("pause_pid")] + [c.pid for c in running]
        return time.time_ns(), read_pod_network((p for p in pids if p), netns, loopback=True)

    def _rate(self, key: str, cpu_ns: int | None) -> int | None:
        """usage_nano_cores: CPU ns per second between this sample and one at least RATE_MIN_INTERVAL older."""
        if cpu_ns is None:
            return None
        now = time.monotonic()
        prev = self._cpu.get(key)
        if prev is None or cpu_ns < prev.cpu_ns:  # first sample, or a new cgroup under the same id
            self._cpu[key] = _CpuSample(now, cpu_ns, None)
            return None
        if now - prev.at < RATE_MIN_INTERVAL:
            return prev.rate
        rate = int((cpu_ns - prev.cpu_ns) / (now - prev.at))
        self._cpu[key] = _CpuSample(now, cpu_ns, rate)
        return rate

    def _forget_rates(self) -> None:
        horizon = time.monotonic() - RATE_FORGET
        for key in [k for k, s in self._cpu.items() if s.at < horizon]:
            del self._cpu[key]

    async def _layer(self, c: ContainerRecord) -> FsUsage | None:
        """The writable layer's usage, walked at most once per fs_cache_seconds and once at a time."""
        top = c.facts.get("top")
        if not top:
            return None
        cached = self._layers.get(c.id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        walk = self._walks.get(c.id)
        if walk is None:
            walk = asyncio.ensure_future(self._walk(c.id, os.path.join(top, "upper")))
            self._walks[c.id] = walk
        return await asyncio.shield(walk)

    async def _walk(self, container_id: str, upper: str) -> FsUsage | None:
        try:
            usage = await asyncio.to_thread(dir_usage, upper)
        finally:
            self._walks.pop(container_id, None)
        now = time.monotonic()
        for key in [k for k, (expires, _) in self._layers.items() if expires <= now]:
            del self._layers[key]
        self._layers[container_id] = (now + self.fs_cache_seconds, usage)
        return usage

    async def _fs_info(self) -> FsInfo | None:
        expires, info = self._fs
        if expires <= time.monotonic():
            info = await asyncio.to_thread(fs_info, self.containers_dir)
            self._fs = (time.monotonic() + self.fs_cache_seconds, info)
        return info

    # ------------------------------------------------------------ CRI messages

    def _container_stats(self, s: ContainerSample) -> api_pb2.ContainerStats:
        c = s.record
        layer = None
        if s.layer is not None:
            layer = api_pb2.FilesystemUsage(
                timestamp=s.layer.timestamp_ns,
                fs_id=api_pb2.FilesystemIdentifier(mountpoint=self.containers_dir),
                used_bytes=_u64(s.layer.bytes),
                inodes_used=_u64(s.layer.inodes),
            )
        return api_pb2.ContainerStats(
            attributes=api_pb2.ContainerAttributes(
                id=c.id, metadata=c.config.metadata, labels=c.config.labels, annotations=c.config.annotations
            ),
            cpu=_cpu(s.usage, s.nano_cores),
            memory=_memory(s.usage),
            writable_layer=layer,
            swap=_swap(s.usage),
        )

    def _pod_stats(self, s: PodSample) -> api_pb2.PodSandboxStats:
        pod, u = s.record, s.usage
        network = None
        if s.network is not None:
            interfaces = [i for i in s.network if i.name != LOOPBACK]
            default = next((i for i in interfaces if i.name == DEFAULT_INTERFACE), None)
            network = api_pb2.NetworkUsage(
                timestamp=s.network_ns,
                default_interface=_interface(default) if default else None,
                interfaces=[_interface(i) for i in interfaces],
            )
        process = None
        if u.pids is not None:
            process = api_pb2.ProcessUsage(timestamp=u.timestamp_ns, process_count=_u64(u.pids))
        return api_pb2.PodSandboxStats(
            attributes=api_pb2.PodSandboxAttributes(
                id=pod.id, metadata=pod.config.metadata, labels=pod.config.labels, annotations=pod.config.annotations
            ),
            linux=api_pb2.LinuxPodSandboxStats(
                cpu=_cpu(u, s.nano_cores),
                memory=_memory(u),
                network=network,
                process=process,
                containers=[self._container_stats(c) for c in s.containers],
            ),
        )
