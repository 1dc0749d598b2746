"""stats, stats_cgroup, stats_io, stats_procs, stats_metrics: cgroup v1 and v2 parsing from fixture files,
missing files, cgroup paths, block I/O, /proc/net/dev, descriptors and limits from /proc, writable-layer walks
and their cache, CRI messages and metrics."""

from __future__ import annotations

import asyncio
import os
import resource
import time

import pytest

from pycrio import stats as stats_mod
from pycrio import stats_cgroup
from pycrio.cri import api_pb2
from pycrio.runtime_store import ContainerRecord, PodRecord
from pycrio.stats import FsInfo, InterfaceCounters, Stats, dir_usage, parse_net_dev, read_pod_network
from pycrio.stats_cgroup import (
    Cgroups,
    CgroupUsage,
    expand_slice,
    parse_keyed,
    parse_limit,
    resolve,
    total,
)
from pycrio.stats_metrics import DESCRIPTORS, LABEL_KEYS, descriptors, metric_interfaces, pod_metrics

MiB = 1024 * 1024


def psi(some_us: int, full_us: int) -> str:
    avg = "avg10=0.00 avg60=0.00 avg300=0.00"
    return f"some {avg} total={some_us}\nfull {avg} total={full_us}\n"


V1_UNLIMITED = "9223372036854771712\n"
V1_FILES = {
    "cpuacct/cpuacct.usage": "5000000000\n",
    "cpuacct/cpuacct.usage_user": "3000000000\n",
    "cpuacct/cpuacct.usage_sys": "2000000000\n",
    "memory/memory.usage_in_bytes": f"{10 * MiB}\n",
    "memory/memory.stat": (
        f"cache 100\nrss 200\npgfault 100\npgmajfault 2\ntotal_cache {6 * MiB}\ntotal_rss {4 * MiB}\n"
        f"total_mapped_file {MiB}\ntotal_pgfault 150\ntotal_pgmajfault 3\ntotal_inactive_file {2 * MiB}\n"
    ),
    "memory/memory.limit_in_bytes": V1_UNLIMITED,
    "memory/memory.memsw.usage_in_bytes": f"{11 * MiB}\n",
    "memory/memory.memsw.limit_in_bytes": V1_UNLIMITED,
    "pids/pids.current": "3\n",
    # read only for the metrics (a detailed sample)
    "cpu/cpu.stat": "nr_periods 40\nnr_throttled 7\nthrottled_time 2500000000\nnr_bursts 0\nburst_time 0\n",
    "cpu/cpu.cfs_period_us": "100000\n",
    "cpu/cpu.cfs_quota_us": "20000\n",
    "cpu/cpu.shares": "512\n",
    "cpu/cgroup.procs": f"{os.getpid()}\n",
    "memory/memory.failcnt": "4\n",
    "memory/memory.max_usage_in_bytes": f"{12 * MiB}\n",
    "memory/memory.kmem.usage_in_bytes": f"{MiB}\n",
    "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    "memory/memory.soft_limit_in_bytes": V1_UNLIMITED,
    "pids/pids.max": "max\n",
    "blkio/blkio.throttle.io_service_bytes_recursive": (
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 12288\n"
        "253:1 Read 0\n253:1 Write 512\nTotal 12800\n"
    ),
    "blkio/blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
}
V2_FILES = {
    "cpu.stat": (
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\n"
        "throttled_usec 1500000\n"
    ),
    "memory.current": f"{8 * MiB}\n",
    "memory.stat": (
        f"anon {4 * MiB}\nfile {3 * MiB}\nfile_mapped {MiB // 2}\ninactive_file {MiB}\npgfault 42\npgmajfault 1\n"
        f"kernel {MiB}\n"
    ),
    "memory.max": f"{16 * MiB}\n",
    "memory.swap.current": f"{MiB}\n",
    "memory.swap.max": "max\n",
    "pids.current": "2\n",
    # read only for the metrics (a detailed sample)
    "cpu.max": "50000 100000\n",
    "cpu.weight": "100\n",
    "memory.events": "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n",
    "memory.peak": f"{9 * MiB}\n",
    "memory.min": f"{2 * MiB}\n",
    "pids.max": "1024\n",
    "io.stat": "8:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n",
    "cpu.pressure": psi(3_500_000, 1_200_000),
    "memory.pressure": psi(10, 5),
    "cgroup.procs": "",
}

NET_DEV = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier"
    " compressed\n"
    "    lo:     500       5    0    0    0     0          0         0      500       5    0    0    0     0   0   0\n"
    "  eth0:1234567890   10    1    2    0     0          0         0     2000      20    3    4    0     0   0   0\n"
    "  net1: 7 1 0 0 0 0 0 0 8 1 0 0 0 0 0 0\n"
    "garbage line\n"
)


def write_tree(base: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def v1_cgroups(root: str) -> Cgroups:
    cgroups = Cgroups(1, {c: (os.path.join(root, c), "/") for c in ("cpu", "cpuacct", "memory", "pids", "blkio")})
    cgroups.sys_dev_block = sys_dev_block(root)
    return cgroups


def v2_cgroups(root: str) -> Cgroups:
    cgroups = Cgroups(2, {"": (root, "/")})
    cgroups.sys_dev_block = sys_dev_block(root)
    return cgroups


def sys_dev_block(root: str) -> str:
    """A /sys/dev/block with sda (8:0) and dm-1 (253:1), as the kernel links them."""
    path = os.path.join(root, "sys-dev-block")
    if not os.path.isdir(path):
        os.makedirs(path)
        os.symlink("../../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda", f"{path}/8:0")
        os.symlink("../../devices/virtual/block/dm-1", f"{path}/253:1")
    return path


def v1_tree(root: str, cgroup: str, files: dict[str, str] = V1_FILES) -> None:
    write_tree(root, {f"{rel.split('/')[0]}{cgroup}/{rel.split('/')[1]}": text for rel, text in files.items()})


def v2_tree(root: str, cgroup: str, files: dict[str, str] = V2_FILES) -> None:
    write_tree(root, {f"{cgroup.lstrip('/')}/{name}": text for name, text in files.items()})


# ---------------------------------------------------------------- parsers


def test_parse_keyed_and_limits():
    assert parse_keyed("a 1\nb x\nc 3 4\n\nd 5") == {"a": 1, "d": 5}
    assert parse_limit("max\n") == 0
    assert parse_limit(V1_UNLIMITED) == 0
    assert parse_limit("1048576\n") == MiB
    with pytest.raises(ValueError):
        parse_limit("lots")


def test_v1_cgroup_is_read_from_each_controller(tmp_path):
    v1_tree(str(tmp_path), "/kubepods/pod1/pycrio-c1")
    u = v1_cgroups(str(tmp_path)).read("/kubepods/pod1/pycrio-c1")
    assert (u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns) == (5_000_000_000, 3_000_000_000, 2_000_000_000)
    assert u.memory_usage == 10 * MiB and u.working_set == 8 * MiB  # usage minus total_inactive_file
    assert (u.rss, u.cache, u.mapped_file) == (4 * MiB, 6 * MiB, MiB)
    assert (u.page_faults, u.major_page_faults, u.own_page_faults, u.own_major_page_faults) == (150, 3, 100, 2)
    assert u.memory_limit == 0  # unlimited
    assert (u.swap_usage, u.swap_limit) == (MiB, 0)  # memsw minus memory
    assert u.pids == 3
    assert u.timestamp_ns > 0


def test_v1_limits_and_the_ticks_fallback(tmp_path):
    files = dict(V1_FILES)
    del files["cpuacct/cpuacct.usage_user"], files["cpuacct/cpuacct.usage_sys"]
    hz = os.sysconf("SC_CLK_TCK")
    files["cpuacct/cpuacct.stat"] = f"user {3 * hz}\nsystem {hz}\n"
    files["memory/memory.limit_in_bytes"] = f"{64 * MiB}\n"
    files["memory/memory.memsw.limit_in_bytes"] = f"{96 * MiB}\n"
    v1_tree(str(tmp_path), "/c", files)
    u = v1_cgroups(str(tmp_path)).read("/c")
    assert (u.cpu_user_ns, u.cpu_system_ns) == (3_000_000_000, 1_000_000_000)
    assert u.memory_limit == 64 * MiB and u.swap_limit == 32 * MiB


def test_v1_inactive_file_above_usage_gives_usage(tmp_path):
    files = dict(V1_FILES, **{"memory/memory.stat": f"total_inactive_file {20 * MiB}\n"})
    v1_tree(str(tmp_path), "/c", files)
    assert v1_cgroups(str(tmp_path)).read("/c").working_set == 10 * MiB


def test_v2_cgroup_is_read_from_one_directory(tmp_path):
    v2_tree(str(tmp_path), "/kubepods.slice/pycrio-c1.scope")
    u = Cgroups(2, {"": (str(tmp_path), "/")}).read("/kubepods.slice/pycrio-c1.scope")
    assert (u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns) == (2_500_000_000, 2_000_000_000, 500_000_000)
    assert u.memory_usage == 8 * MiB and u.working_set == 7 * MiB
    assert (u.rss, u.cache, u.mapped_file) == (4 * MiB, 3 * MiB, MiB // 2)
    assert (u.page_faults, u.major_page_faults, u.own_page_faults) == (42, 1, 42)
    assert u.memory_limit == 16 * MiB
    assert (u.swap_usage, u.swap_limit) == (MiB, 0)
    assert u.pids == 2


@pytest.mark.parametrize("detail", [False, True])
@pytest.mark.parametrize("version", [1, 2])
def test_a_missing_cgroup_leaves_every_value_unknown(tmp_path, version, detail):
    cgroups = v1_cgroups(str(tmp_path)) if version == 1 else v2_cgroups(str(tmp_path))
    u = cgroups.read("/gone", detail)
    assert u.timestamp_ns > 0
    assert all(getattr(u, k) is None for k in vars(u) if k != "timestamp_ns")
    assert not cgroups.exists("/gone")


def test_missing_and_garbled_files_leave_only_their_values_unknown(tmp_path):
    files = dict(V1_FILES)
    del files["memory/memory.memsw.usage_in_bytes"], files["pids/pids.current"]
    files["cpuacct/cpuacct.usage"] = "not a number\n"
    v1_tree(str(tmp_path), "/c", files)
    u = v1_cgroups(str(tmp_path)).read("/c")
    assert u.cpu_ns is None and u.swap_usage is None and u.swap_limit is None and u.pids is None
    assert u.memory_usage == 10 * MiB and u.cpu_user_ns == 3_000_000_000
    files = dict(V2_FILES)
    del files["memory.swap.current"], files["memory.stat"]
    files["memory.max"] = "?\n"
    v2_tree(str(tmp_path / "v2"), "/c", files)
    u = Cgroups(2, {"": (str(tmp_path / "v2"), "/")}).read("/c")
    assert u.swap_usage is None and u.rss is None and u.memory_limit is None
    assert u.working_set == u.memory_usage == 8 * MiB


def test_total_sums_what_is_known():
    a = CgroupUsage(1, cpu_ns=10, memory_usage=100, pids=1, memory_limit=5)
    b = CgroupUsage(2, cpu_ns=5, pids=None)
    t = total([a, b], 3)
    assert (t.timestamp_ns, t.cpu_ns, t.memory_usage, t.pids, t.memory_limit, t.rss) == (3, 15, 100, 1, None, None)
    sda, sdb = (8, 0, "/dev/sda"), (8, 16, "/dev/sdb")
    a = CgroupUsage(1, fds=3, sockets=1, oom_kills=1, cfs_periods=10, cpu_period=100_000, memory_max_usage=5,
                    io_bytes={sda: {"Read": 1}}, pressure={("cpu", "some"): 1})  # fmt: skip
    b = CgroupUsage(2, fds=4, sockets=0, threads=2, io_bytes={sda: {"Read": 2}, sdb: {"Write": 3}})
    t = total([a, b], 3)
    assert (t.fds, t.sockets, t.oom_kills, t.cfs_periods, t.threads) == (7, 1, 1, 10, 2)
    assert t.io_bytes == {sda: {"Read": 3}, sdb: {"Write": 3}} and t.io_ops is None
    assert t.cpu_period is None and t.memory_max_usage is None and t.pressure is None  # do not add up


# ---------------------------------------------------------------- paths


def test_expand_slice():
    assert expand_slice("system.slice") == "/system.slice"
    assert expand_slice("kubepods-burstable-pod12.slice") == (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice"
    )
    assert expand_slice("-.slice") == "/"
    for bad in ("a/b.slice", "foo", "a--b.slice", "-a.slice", ".slice"):
        with pytest.raises(ValueError):
            expand_slice(bad)


def test_resolve():
    assert resolve("/kubepods/pod1//pycrio-ab/", "cgroupfs") == "/kubepods/pod1/pycrio-ab"
    assert resolve("relative/path", "cgroupfs") is None
    assert resolve("", "cgroupfs") is None
    assert resolve("kubepods-pod1.slice:pycrio:ab", "systemd") == "/kubepods.slice/kubepods-pod1.slice/pycrio-ab.scope"
    assert resolve(":pycrio:ab", "systemd") == "/system.slice/pycrio-ab.scope"
    assert resolve("/not/systemd", "systemd") is None


def test_probe_reads_mountinfo(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 /ns-root /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    v1 = Cgroups.probe(1, str(mountinfo))
    assert v1.dir("/a/b", "cpuacct") == "/sys/fs/cgroup/cpu,cpuacct/a/b"
    assert v1.dir("/a/b", "cpu") == "/sys/fs/cgroup/cpu,cpuacct/a/b"
    assert v1.dir("/ns-root/a", "memory") == "/sys/fs/cgroup/memory/a"  # a cgroup namespace's root
    assert v1.dir("/a", "pids") == "/sys/fs/cgroup/pids/a"  # not in mountinfo: the usual place
    assert Cgroups.probe(2, str(mountinfo)).dir("/a", "memory") == "/sys/fs/cgroup/a"
    assert Cgroups.probe(2, str(tmp_path / "none")).dir("/", "cpu") == "/sys/fs/cgroup"


# ---------------------------------------------------------------- network and filesystems


def test_parse_net_dev_leaves_out_lo():
    ifaces = {i.name: i for i in parse_net_dev(NET_DEV)}
    assert set(ifaces) == {"eth0", "net1"}
    eth0 = ifaces["eth0"]
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == (1234567890, 10, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (2000, 20, 3, 4)
    assert parse_net_dev("") == []
    assert [i.name for i in parse_net_dev(NET_DEV, loopback=True)] == ["lo", "eth0", "net1"]


def test_read_pod_network_checks_the_namespace():
    own = read_pod_network([os.getpid()], f"/proc/{os.getpid()}/ns/net")
    assert own is not None and "lo" not in {i.name for i in own}
    assert read_pod_network([os.getpid()], f"/proc/{os.getpid()}/ns/uts") is None  # a different namespace
    assert read_pod_network([2**22 + 1], f"/proc/{os.getpid()}/ns/net") is None  # no such process
    assert read_pod_network([os.getpid()], "/nonexistent") is None


def test_dir_usage_counts_blocks_and_inodes_once(tmp_path):
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d" / "big").write_bytes(b"x" * MiB)
    os.link(upper / "d" / "big", upper / "hardlink")
    os.symlink("/etc/passwd", upper / "link")
    u = dir_usage(str(upper))
    assert u is not None
    assert u.inodes == 4  # upper, d, big (once), link
    assert MiB <= u.bytes < 2 * MiB
    assert dir_usage(str(tmp_path / "missing")) is None


def test_fs_info_names_the_device(tmp_path):
    info = stats_mod.fs_info(str(tmp_path))
    assert info is not None and info.bytes_total > 0 and info.inodes_total >= info.inodes_free


# ---------------------------------------------------------------- Stats: CRI messages and metrics


class FakeStore:
    def __init__(self, pods, containers):
        self._pods, self._containers = pods, containers

    def pods(self):
        return list(self._pods)

    def containers(self, pod_id=None):
        return [c for c in self._containers if pod_id is None or c.pod_id == pod_id]


def pod_record(pod_id: str, parent: str, **facts) -> PodRecord:
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"name-{pod_id}", namespace="ns", uid="u"),
        labels={"app": "a"},
        linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent=parent),
    )
    return PodRecord(id=pod_id, name=pod_id, state="ready", config=config, runtime_handler="", created_ns=1,
                     facts=facts)  # fmt: skip


def container_record(cid: str, pod: PodRecord, top: str, state: str = "running") -> ContainerRecord:
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=f"ctr-{cid}"), image=api_pb2.ImageSpec(image="busybox:1")
    )
    cgroups_path = f"{pod.config.linux.cgroup_parent}/pycrio-{cid}"
    return ContainerRecord(id=cid, pod_id=pod.id, name=cid, state=state, config=config, image_id="sha256:i",
                           image_ref="busybox@sha256:x", created_ns=1,
                           facts={"cgroups_path": cgroups_path, "top": top})  # fmt: skip


@pytest.fixture
def node(tmp_path):
    """Two pods in fixture v1 cgroups: p1 with a cgroup of its own, p2 and p3 sharing one parent."""
    root = str(tmp_path / "cgroup")
    p1, p2, p3 = pod_record("p1", "/k/p1"), pod_record("p2", "/k/shared"), pod_record("p3", "/k/shared")
    c1 = container_record("c1", p1, str(tmp_path / "c1"))
    c2 = container_record("c2", p2, str(tmp_path / "c2"))
    c3 = container_record("c3", p2, str(tmp_path / "c3"))
    for cgroup in ("/k/p1", "/k/p1/pycrio-c1", "/k/shared", "/k/shared/pycrio-c2", "/k/shared/pycrio-c3"):
        v1_tree(root, cgroup)
    for c in (c1, c2, c3):
        os.makedirs(os.path.join(c.facts["top"], "upper"))
    store = FakeStore([p1, p2, p3], [c1, c2, c3])
    stats = Stats(store, v1_cgroups(root), "cgroupfs", str(tmp_path))  # type: ignore[arg-type]
    return stats, store, (p1, p2, p3), (c1, c2, c3)


def test_container_stats(node):
    stats, _, _, (c1, _, _) = node
    with open(os.path.join(c1.facts["top"], "upper", "file"), "wb") as f:
        f.write(b"y" * MiB)
    (s,) = asyncio.run(stats.container_stats([c1]))
    assert s.attributes.id == "c1" and s.attributes.metadata.name == "ctr-c1"
    assert s.cpu.usage_core_nano_seconds.value == 5_000_000_000
    assert not s.cpu.HasField("usage_nano_cores")  # one sample: no rate yet
    assert s.memory.working_set_bytes.value == 8 * MiB and s.memory.usage_bytes.value == 10 * MiB
    assert s.memory.rss_bytes.value == 4 * MiB and s.memory.page_faults.value == 150
    assert not s.memory.HasField("available_bytes")  # no limit
    assert s.swap.swap_usage_bytes.value == MiB and not s.swap.HasField("swap_available_bytes")
    assert s.writable_layer.used_bytes.value >= MiB and s.writable_layer.inodes_used.value == 2
    assert s.writable_layer.fs_id.mountpoint == stats.containers_dir
    assert s.cpu.timestamp > 0 and s.memory.timestamp > 0 and s.writable_layer.timestamp > 0


def test_exited_container_keeps_its_layer_without_cgroup_values(node):
    stats, _, (p1, _, _), _ = node
    gone = container_record("gone", p1, node[3][0].facts["top"], state="exited")
    (s,) = asyncio.run(stats.container_stats([gone]))
    assert not s.HasField("cpu") and not s.HasField("memory") and not s.HasField("swap")
    assert s.HasField("writable_layer")
    no_facts = ContainerRecord(**{**vars(gone), "id": "nofacts", "facts": {}})
    (s,) = asyncio.run(stats.container_stats([no_facts]))
    assert s.attributes.id == "nofacts" and not s.HasField("writable_layer") and not s.HasField("cpu")


def test_usage_nano_cores_from_two_samples(node, monkeypatch):
    stats, _, _, (c1, _, _) = node
    clock = [1000.0]
    monkeypatch.setattr(stats_mod.time, "monotonic", lambda: clock[0])
    asyncio.run(stats.container_stats([c1]))
    path = os.path.join(stats.cgroups.dir("/k/p1/pycrio-c1", "cpuacct"), "cpuacct.usage")
    with open(path, "w") as f:
        f.write("6000000000\n")  # one more CPU second...
    clock[0] += 2.0  # ...in two seconds: half a core
    (s,) = asyncio.run(stats.container_stats([c1]))
    assert s.cpu.usage_nano_cores.value == 500_000_000
    clock[0] += 0.1  # too soon for a new rate: the last one stands
    (s,) = asyncio.run(stats.container_stats([c1]))
    assert s.cpu.usage_nano_cores.value == 500_000_000


def test_writable_layer_is_cached(node, monkeypatch):
    stats, _, _, (c1, _, _) = node
    clock = [1000.0]
    monkeypatch.setattr(stats_mod.time, "monotonic", lambda: clock[0])
    walks = []
    real = stats_mod.dir_usage
    monkeypatch.setattr(stats_mod, "dir_usage", lambda p: walks.append(p) or real(p))

    async def twice_at_once():
        return await asyncio.gather(stats.container_stats([c1]), stats.container_stats([c1]))

    asyncio.run(twice_at_once())
    assert len(walks) == 1  # concurrent callers share one walk
    with open(os.path.join(c1.facts["top"], "upper", "new"), "wb") as f:
        f.write(b"z" * MiB)
    (s,) = asyncio.run(stats.container_stats([c1]))
    assert len(walks) == 1 and s.writable_layer.used_bytes.value < MiB
    clock[0] += stats.fs_cache_seconds + 1
    (s,) = asyncio.run(stats.container_stats([c1]))
    assert len(walks) == 2 and s.writable_layer.used_bytes.value >= MiB


def test_pod_stats_own_cgroup_or_sum(node, monkeypatch):
    stats, _, (p1, p2, _), (c1, c2, c3) = node
    path = os.path.join(stats.cgroups.dir("/k/p1", "memory"), "memory.usage_in_bytes")
    with open(path, "w") as f:
        f.write(f"{30 * MiB}\n")
    s1, s2 = asyncio.run(stats.pod_stats([p1, p2]))
    assert s1.attributes.id == "p1" and s1.attributes.labels == {"app": "a"}
    assert s1.linux.memory.usage_bytes.value == 30 * MiB  # the pod's own cgroup
    assert s1.linux.process.process_count.value == 3
    assert [c.attributes.id for c in s1.linux.containers] == ["c1"]
    # p2 shares its parent with p3: its usage is its containers' sum
    assert [c.attributes.id for c in s2.linux.containers] == ["c2", "c3"]
    assert s2.linux.cpu.usage_core_nano_seconds.value == 10_000_000_000
    assert s2.linux.memory.working_set_bytes.value == 16 * MiB and s2.linux.process.process_count.value == 6
    assert not s1.linux.HasField("network")  # no network namespace recorded: the host's


def test_pod_network_from_a_process_in_its_namespace(node):
    stats, _, (p1, _, _), _ = node
    p1.facts.update(netns=f"/proc/{os.getpid()}/ns/net", pause_pid=os.getpid())
    (s,) = asyncio.run(stats.pod_stats([p1]))
    names = [i.name for i in s.linux.network.interfaces]
    assert "lo" not in names and s.linux.network.timestamp > 0
    if "eth0" in names:
        assert s.linux.network.default_interface.name == "eth0"
    else:
        assert not s.linux.network.HasField("default_interface")


def test_metrics_match_their_descriptors(node):
    stats, _, (p1, p2, _), _ = node
    p1.facts.update(netns=f"/proc/{os.getpid()}/ns/net", pause_pid=os.getpid())
    by_name = {d.name: d for d in descriptors()}
    assert len(by_name) == len(descriptors()) == len(DESCRIPTORS)
    for d in by_name.values():
        assert d.help and list(d.label_keys[: len(LABEL_KEYS)]) == list(LABEL_KEYS)
    result = asyncio.run(stats.pod_metrics([p1, p2]))
    assert [m.pod_sandbox_id for m in result] == ["p1", "p2"]
    seen = set()
    for pm in result:
        every = list(pm.metrics) + [m for cm in pm.container_metrics for m in cm.metrics]
        for m in every:
            d = by_name[m.name]
            assert len(m.label_values) == len(d.label_keys), m.name
            assert m.metric_type == DESCRIPTORS[m.name].type and m.timestamp > 0
            seen.add(m.name)
    assert {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_fs_usage_bytes",
            "container_processes", "container_spec_memory_limit_bytes"} <= seen  # fmt: skip
    c1 = {m.name: m for m in result[0].container_metrics[0].metrics}
    labels = dict(zip(by_name["container_memory_working_set_bytes"].label_keys,
                      c1["container_memory_working_set_bytes"].label_values, strict=True))  # fmt: skip
    assert labels == {"container": "ctr-c1", "pod": "name-p1", "namespace": "ns", "id": "/k/p1/pycrio-c1",
                      "image": "busybox:1", "name": "c1"}  # fmt: skip
    assert c1["container_cpu_usage_seconds_total"].value.value == 5  # whole seconds
    assert c1["container_cpu_usage_seconds_total"].metric_type == api_pb2.COUNTER
    assert c1["container_memory_working_set_bytes"].metric_type == api_pb2.GAUGE
    pod_level = {m.name: m for m in result[0].metrics}
    assert pod_level["container_memory_usage_bytes"].label_values[:4] == ["", "name-p1", "ns", "/k/p1"]


def test_metrics_without_filesystem_info(node):
    stats, _, (p1, _, _), _ = node
    sample = asyncio.run(stats._sample_pods([p1]))[0]
    names = {m.name for m in pod_metrics(sample, None).container_metrics[0].metrics}
    assert not any(n.startswith("container_fs_") for n in names)
    with_fs = pod_metrics(sample, FsInfo("/dev/x", 100, 10, 5)).container_metrics[0].metrics
    fs = {m.name: m for m in with_fs if m.name.startswith("container_fs_")}
    assert fs["container_fs_inodes_free"].value.value == 5
    assert fs["container_fs_limit_bytes"].label_values[-1] == "/dev/x"


def test_detailed_samples_are_for_the_metrics_alone(node, monkeypatch):
    stats, _, (p1, _, _), (c1, _, _) = node
    counted = []
    real = stats_cgroup.count_fds
    monkeypatch.setattr(stats_cgroup, "count_fds", lambda pids, proc: counted.append(pids) or real(pids, proc))
    asyncio.run(stats.container_stats([c1]))
    asyncio.run(stats.pod_stats([p1]))
    assert counted == []  # the stats RPCs the kubelet polls do not walk /proc
    asyncio.run(stats.pod_metrics([p1]))
    assert counted == [[os.getpid()]] * 2  # the pod's cgroup and c1's (the fixture lists this process)


def test_detailed_metrics(node, monkeypatch):
    stats, _, (p1, p2, _), (c1, c2, _) = node
    c1.started_ns, c1.pid = 1_700_000_000 * 10**9 + 5, os.getpid()
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.5)
    result = {m.pod_sandbox_id: m for m in asyncio.run(stats.pod_metrics([p1, p2]))}

    def values(metrics) -> dict[tuple[str, ...], int]:
        return {(m.name, *m.label_values[6:]): m.value.value for m in metrics}

    c = values(result["p1"].container_metrics[0].metrics)
    assert c["container_start_time_seconds",] == 1_700_000_000 and c["container_last_seen",] == 1_800_000_000
    assert c["container_spec_cpu_period",] == 100_000 and c["container_spec_cpu_shares",] == 512
    assert c["container_spec_cpu_quota",] == 20_000
    assert (c["container_cpu_cfs_periods_total",], c["container_cpu_cfs_throttled_periods_total",]) == (40, 7)
    assert c["container_cpu_cfs_throttled_seconds_total",] == 2  # whole seconds
    assert c["container_memory_failcnt",] == 4 and c["container_memory_max_usage_bytes",] == 12 * MiB
    assert c["container_memory_kernel_usage",] == MiB and c["container_oom_events_total",] == 2
    assert c["container_spec_memory_swap_limit_bytes",] == 0
    assert c["container_spec_memory_reservation_limit_bytes",] == 0
    assert c["container_threads",] == 3 and c["container_threads_max",] == 0
    assert c["container_file_descriptors",] > 0 and ("container_sockets",) in c
    assert c["container_ulimits_soft", "max_open_files"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    sda = ("/dev/sda", "8", "0")
    assert c[("container_blkio_device_usage_total", *sda, "Read")] == 4096
    assert c[("container_blkio_device_usage_total", *sda, "Total")] == 12288
    assert c["container_blkio_device_usage_total", "/dev/dm-1", "253", "1", "Write"] == 512
    assert c["container_fs_reads_bytes_total", "/dev/sda"] == 4096
    assert c["container_fs_writes_bytes_total", "/dev/sda"] == 8192
    assert (c["container_fs_reads_total", "/dev/sda"], c["container_fs_writes_total", "/dev/sda"]) == (1, 2)
    assert c["container_fs_writes_bytes_total", "/dev/dm-1"] == 512
    assert ("container_fs_reads_total", "/dev/dm-1") not in c  # no operations counted there
    assert not any(k[0].startswith("container_pressure_") for k in c)  # v1
    # c2 has no first process, and p2 (no cgroup of its own) sums its containers: no settings, no CFS
    c2_values = values(result["p2"].container_metrics[0].metrics)
    assert ("container_ulimits_soft", "max_open_files") not in c2_values
    assert c2_values["container_start_time_seconds",] == 0  # created 1 ns after the epoch, never started
    p2_values = values(result["p2"].metrics)
    assert p2_values["container_file_descriptors",] > c["container_file_descriptors",]  # c2 and c3 list us both
    assert p2_values["container_blkio_device_usage_total", *sda, "Read"] == 2 * 4096
    assert "container_spec_cpu_period" not in {k[0] for k in p2_values}
    assert "container_cpu_cfs_periods_total" not in {k[0] for k in p2_values}


def test_cfs_metrics_need_a_quota_and_settings_fall_back_to_resources(tmp_path):
    root = str(tmp_path / "cgroup")
    files = dict(V1_FILES, **{"cpu/cpu.cfs_quota_us": "-1\n"})
    del files["cpu/cpu.shares"], files["memory/memory.memsw.limit_in_bytes"]
    v1_tree(root, "/k/p/pycrio-a", files)
    v1_tree(root, "/k/p/pycrio-b", files)
    pod = pod_record("p", "/k/p")
    a, b = container_record("a", pod, str(tmp_path / "a")), container_record("b", pod, str(tmp_path / "b"))
    b.config.linux.resources.CopyFrom(
        api_pb2.LinuxContainerResources(cpu_quota=30_000, cpu_shares=256, memory_swap_limit_in_bytes=64 * MiB)
    )
    stats = Stats(FakeStore([pod], [a, b]), v1_cgroups(root), "cgroupfs", str(tmp_path))  # type: ignore[arg-type]
    (result,) = asyncio.run(stats.pod_metrics([pod]))
    by_id = {cm.container_id: {m.name: m.value.value for m in cm.metrics} for cm in result.container_metrics}
    assert "container_cpu_cfs_periods_total" not in by_id["a"] and "container_spec_cpu_quota" not in by_id["a"]
    assert "container_spec_cpu_shares" not in by_id["a"]  # neither the cgroup nor the CRI says
    assert by_id["a"]["container_spec_cpu_period"] == 100_000
    # what the cgroup does not show comes from the CRI resources (its quota, -1, says "none": that stands)
    assert by_id["b"]["container_spec_cpu_shares"] == 256
    assert by_id["b"]["container_spec_memory_swap_limit_bytes"] == 64 * MiB
    assert "container_spec_cpu_quota" not in by_id["b"]


def test_v2_pressure_metrics(tmp_path):
    v2_tree(str(tmp_path), "/k/p/pycrio-a")
    pod = pod_record("p", "/k/p")
    a = container_record("a", pod, str(tmp_path / "a"))
    stats = Stats(FakeStore([pod], [a]), v2_cgroups(str(tmp_path)), "cgroupfs", str(tmp_path))  # type: ignore[arg-type]
    (result,) = asyncio.run(stats.pod_metrics([pod]))
    values = {m.name: m.value.value for m in result.container_metrics[0].metrics}
    assert values["container_pressure_cpu_waiting_seconds_total"] == 3  # some, whole seconds
    assert values["container_pressure_cpu_stalled_seconds_total"] == 1  # full
    assert values["container_pressure_memory_waiting_seconds_total"] == 0
    assert "container_pressure_io_waiting_seconds_total" not in values  # no io.pressure
    assert values["container_spec_cpu_quota"] == 50_000 and values["container_cpu_cfs_throttled_seconds_total"] == 1


def iface(name: str, rx_bytes: int = 1) -> InterfaceCounters:
    return InterfaceCounters(name, rx_bytes, 1, 0, 0, 2, 2, 0, 0)


def test_metric_interfaces_fall_back_to_lo():
    lo, eth0, net1 = iface("lo"), iface("eth0"), iface("net1")
    assert metric_interfaces([lo, eth0, net1]) == [eth0, net1]  # as cAdvisor: lo left out
    assert metric_interfaces([lo]) == [lo]  # a pod without a CNI network has lo alone: its only traffic
    assert metric_interfaces([]) == []


def test_pod_network_metrics_and_stats_treat_lo_apart(node, monkeypatch):
    stats, _, (p1, _, _), _ = node
    p1.facts.update(netns="/x", pause_pid=1)
    monkeypatch.setattr(stats_mod, "read_pod_network", lambda pids, pin, loopback=False: [iface("lo", 99)])
    (s,) = asyncio.run(stats.pod_stats([p1]))
    assert s.linux.HasField("network") and list(s.linux.network.interfaces) == []  # the kubelet's way: no lo
    (m,) = asyncio.run(stats.pod_metrics([p1]))
    lo = [x for x in m.metrics if x.name == "container_network_receive_bytes_total"]
    assert [(x.label_values[-1], x.value.value) for x in lo] == [("lo", 99)]
