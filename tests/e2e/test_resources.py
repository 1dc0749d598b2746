"""LinuxContainerResources against a real daemon, runc and cgroup v1: each field seen in the container's cgroup
(from inside and from the host), or refused with INVALID_ARGUMENT naming it and nothing left behind."""

from __future__ import annotations

import os

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401 - the fixture

MiB = 1024 * 1024
SLEEP = ["sh", "-c", "while true; do sleep 1; done"]
V1 = "/sys/fs/cgroup"
needs_v1 = pytest.mark.skipif(
    not os.path.isdir(f"{V1}/memory") or os.path.exists(f"{V1}/cgroup.controllers"),
    reason="these tests read cgroup v1 files (cpu.shares, memory.limit_in_bytes, ...)",
)
pytestmark = needs_v1


def make(node, pod: str, name: str, command=SLEEP, start=True, resources=None, **extra) -> str:  # noqa: F811
    """Create (and start) a container with linux.resources (and security context, devices, mounts) set."""
    # Its own pid namespace, so that its init is /proc/1 inside (in the pod's, that is the pause process).
    own_pid = api_pb2.NamespaceOption(pid=api_pb2.CONTAINER)
    sc = extra.pop("security_context", api_pb2.LinuxContainerSecurityContext(namespace_options=own_pid))
    linux = api_pb2.LinuxContainerConfig(security_context=sc)
    if resources is not None:
        linux.resources.CopyFrom(resources)
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=node.image),
        command=command,
        log_path=f"{name}.log",
        linux=linux,
        **extra,
    )
    request = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=node.last_pod_config)
    cid = node.rt.CreateContainer(request, timeout=30).container_id
    if start:
        node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=30)
    return cid


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def pod_parent(node) -> str:  # noqa: F811
    return node.last_pod_config.linux.cgroup_parent


def host_cgroup(node, cid: str, controller: str, name: str) -> str:  # noqa: F811
    """The content of a cgroup file of the container, read on the host at <controller><parent>/pycrio-<id>."""
    with open(f"{V1}/{controller}{pod_parent(node)}/pycrio-{cid}/{name}") as f:
        return f.read().strip()


def inside(node, cid: str, *cmd: str) -> str:  # noqa: F811
    r = node.exec(cid, list(cmd))
    assert r.exit_code == 0, (cmd, r)
    return r.stdout.decode().strip()


def assert_nothing_left(node, pod: str) -> None:  # noqa: F811
    """No container record, no container cgroup under the pod's parent, no bundle or rootfs dir."""
    found = node.rt.ListContainers(api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(pod_sandbox_id=pod)))
    assert list(found.containers) == []
    for controller in ("memory", "cpu", "cpuset", "devices", "pids"):
        parent = f"{V1}/{controller}{pod_parent(node)}"
        if os.path.isdir(parent):
            left = [d for d in os.listdir(parent) if d.startswith("pycrio-") and d != f"pycrio-{pod}"]
            assert left == [], controller  # pycrio-<pod id> is the pause process's
    for top in (node.d.root, node.d.runroot):
        dirs = os.path.join(top, "containers")
        if os.path.isdir(dirs):
            assert [d for d in os.listdir(dirs) if not d.startswith(".trash-")] == [], dirs


def daemon_oom_score_adj(node) -> int:  # noqa: F811
    with open(f"/proc/{node.d.proc.pid}/oom_score_adj") as f:
        return int(f.read())


# ---------------------------------------------------------------- create


def test_cpu_memory_and_oom_score_adj_take_effect(node):  # noqa: F811
    pod = node.pod()
    swap = os.path.exists(f"{V1}/memory/memory.memsw.limit_in_bytes")
    resources = api_pb2.LinuxContainerResources(
        cpu_shares=512,
        cpu_quota=20_000,
        cpu_period=100_000,
        cpuset_cpus="1",
        cpuset_mems="0",
        memory_limit_in_bytes=64 * MiB,
        memory_swap_limit_in_bytes=96 * MiB if swap else 0,
        oom_score_adj=500,
    )
    cid = make(node, pod, "limits", resources=resources)
    # From the host, at the container's cgroup path ...
    assert host_cgroup(node, cid, "cpu", "cpu.shares") == "512"
    assert host_cgroup(node, cid, "cpu", "cpu.cfs_quota_us") == "20000"
    assert host_cgroup(node, cid, "cpu", "cpu.cfs_period_us") == "100000"
    assert host_cgroup(node, cid, "cpuset", "cpuset.cpus") == "1"
    assert host_cgroup(node, cid, "cpuset", "cpuset.mems") == "0"
    assert host_cgroup(node, cid, "memory", "memory.limit_in_bytes") == str(64 * MiB)
    # ... and from inside, where the container's own cgroups are mounted at /sys/fs/cgroup/<controller>.
    assert inside(node, cid, "cat", "/sys/fs/cgroup/cpu/cpu.shares") == "512"
    assert inside(node, cid, "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us") == "20000"
    assert inside(node, cid, "cat", "/sys/fs/cgroup/cpu/cpu.cfs_period_us") == "100000"
    assert inside(node, cid, "cat", "/sys/fs/cgroup/cpuset/cpuset.cpus") == "1"
    assert inside(node, cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(64 * MiB)
    assert inside(node, cid, "grep", "Cpus_allowed_list", "/proc/1/status").split() == ["Cpus_allowed_list:", "1"]
    assert inside(node, cid, "grep", "Cpus_allowed_list", "/proc/self/status").split()[1] == "1"
    # oom_score_adj of the container's init (its own pid namespace: pid 1).
    assert inside(node, cid, "cat", "/proc/1/oom_score_adj") == "500"
    if swap:
        assert host_cgroup(node, cid, "memory", "memory.memsw.limit_in_bytes") == str(96 * MiB)
        assert inside(node, cid, "cat", "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") == str(96 * MiB)
    # The quota bites: a spinning loop gets throttled within a few periods.
    inside(node, cid, "sh", "-c", "timeout 0.5 sh -c 'while :; do :; done'; true")
    throttled = dict(line.split() for line in host_cgroup(node, cid, "cpu", "cpu.stat").splitlines())
    assert int(throttled["nr_throttled"]) > 0, throttled
    status = node.status(cid).resources.linux
    assert (status.cpu_shares, status.cpu_quota, status.cpu_period) == (512, 20_000, 100_000)
    assert (status.memory_limit_in_bytes, status.cpuset_cpus, status.oom_score_adj) == (64 * MiB, "1", 500)


def test_memory_swap_limit(node):  # noqa: F811
    if not os.path.exists(f"{V1}/memory/memory.memsw.limit_in_bytes"):
        pytest.skip("the kernel has no swap accounting (memory.memsw.limit_in_bytes; swapaccount=1)")
    pod = node.pod()
    unlimited = make(node, pod, "u", resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 * MiB))
    with open(f"{V1}/memory/memory.memsw.limit_in_bytes") as f:
        host_default = f.read().strip()
    assert host_cgroup(node, unlimited, "memory", "memory.memsw.limit_in_bytes") == host_default
    resources = api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 * MiB, memory_swap_limit_in_bytes=-1)
    minus_one = make(node, pod, "m", resources=resources)
    assert host_cgroup(node, minus_one, "memory", "memory.memsw.limit_in_bytes") == host_default


def test_oom_score_adj_is_clamped_to_the_daemons_own(node):  # noqa: F811
    pod = node.pod()
    floor = daemon_oom_score_adj(node)
    low = make(node, pod, "low", resources=api_pb2.LinuxContainerResources(oom_score_adj=-999))
    in_force = max(-999, floor)
    assert int(inside(node, low, "cat", "/proc/1/oom_score_adj")) == in_force
    high = make(node, pod, "high", resources=api_pb2.LinuxContainerResources(oom_score_adj=1000))
    assert inside(node, high, "cat", "/proc/1/oom_score_adj") == "1000"
    # ContainerStatus reports the value in force, not the request: at create, after an update (which
    # cannot change it) and after a daemon restart.
    assert node.status(low).resources.linux.oom_score_adj == in_force
    assert node.status(high).resources.linux.oom_score_adj == 1000
    for update in (R(cpu_shares=256), R(oom_score_adj=-999)):
        request = api_pb2.UpdateContainerResourcesRequest(container_id=low, linux=update)
        node.rt.UpdateContainerResources(request, timeout=30)
        assert node.status(low).resources.linux.oom_score_adj == in_force
    assert node.d.stop() == 0, node.d.log()
    node.d.start()
    assert node.status(low).resources.linux.oom_score_adj == in_force
    assert node.status(low).resources.linux.cpu_shares == 256
    assert int(inside(node, low, "cat", "/proc/1/oom_score_adj")) == in_force


def test_quota_without_period_uses_the_kernels_period(node):  # noqa: F811
    pod = node.pod()
    cid = make(node, pod, "q", resources=api_pb2.LinuxContainerResources(cpu_quota=50_000))
    assert host_cgroup(node, cid, "cpu", "cpu.cfs_quota_us") == "50000"
    assert host_cgroup(node, cid, "cpu", "cpu.cfs_period_us") == "100000"
    cid = make(node, pod, "p", resources=api_pb2.LinuxContainerResources(cpu_period=50_000))
    assert host_cgroup(node, cid, "cpu", "cpu.cfs_quota_us") == "-1"
    assert host_cgroup(node, cid, "cpu", "cpu.cfs_period_us") == "50000"


def test_hugepage_limits(node):  # noqa: F811
    pod = node.pod()
    # What the kubelet sends for a pod without huge pages: a limit of 0 for each of the node's page sizes.
    zero = [api_pb2.HugepageLimit(page_size="2MB", limit=0), api_pb2.HugepageLimit(page_size="1GB", limit=0)]
    four = [api_pb2.HugepageLimit(page_size="2MB", limit=4 * MiB)]
    if not os.path.isdir(f"{V1}/hugetlb"):
        cid = make(node, pod, "zero", resources=api_pb2.LinuxContainerResources(hugepage_limits=zero))
        assert node.status(cid).state == api_pb2.CONTAINER_RUNNING
        node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=30)
        e = refused(lambda: make(node, pod, "h", resources=api_pb2.LinuxContainerResources(hugepage_limits=four)))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, (e.code(), e.details())
        assert "hugepage_limits" in e.details() and "hugetlb cgroup controller" in e.details(), e.details()
        assert_nothing_left(node, pod)
        pytest.skip("no hugetlb cgroup controller on this host: only the refusal of a limit is tested")
    cid = make(node, pod, "h", resources=api_pb2.LinuxContainerResources(hugepage_limits=four))
    assert host_cgroup(node, cid, "hugetlb", "hugetlb.2MB.limit_in_bytes") == str(4 * MiB)
    assert inside(node, cid, "cat", "/sys/fs/cgroup/hugetlb/hugetlb.2MB.limit_in_bytes") == str(4 * MiB)


R = api_pb2.LinuxContainerResources
ABSURD = [
    (R(memory_limit_in_bytes=1 * MiB), "memory_limit_in_bytes"),
    (R(memory_limit_in_bytes=-5), "memory_limit_in_bytes"),
    (R(memory_swap_limit_in_bytes=64 * MiB), "memory_swap_limit_in_bytes"),
    (R(memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=32 * MiB), "memory_swap_limit_in_bytes"),
    (R(memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=-2), "memory_swap_limit_in_bytes"),
    (R(cpu_shares=-1), "cpu_shares"),
    (R(cpu_shares=1), "cpu_shares"),
    (R(cpu_shares=1 << 20), "cpu_shares"),
    (R(cpu_quota=500, cpu_period=100_000), "cpu_quota"),
    (R(cpu_quota=-7), "cpu_quota"),
    (R(cpu_quota=50_000, cpu_period=100), "cpu_period"),
    (R(cpu_period=5_000_000), "cpu_period"),
    (R(cpuset_cpus="a-b"), "cpuset_cpus"),
    (R(cpuset_cpus="1-0"), "cpuset_cpus"),
    (R(cpuset_mems="0,,1"), "cpuset_mems"),
    (R(oom_score_adj=1001), "oom_score_adj"),
    (R(oom_score_adj=-1001), "oom_score_adj"),
    (R(hugepage_limits=[api_pb2.HugepageLimit(page_size="2mb", limit=MiB)]), "hugepage_limits"),
    (R(unified={"memory.max": "64M"}), "unified"),
]


def test_absurd_values_are_refused_naming_the_field(node):  # noqa: F811
    pod = node.pod()
    for i, (resources, field) in enumerate(ABSURD):
        e = refused(lambda r=resources, i=i: make(node, pod, f"a{i}", resources=r))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, e.code(), e.details())
        assert field in e.details(), (field, e.details())
    # CPUs and memory nodes this host lacks: well-formed, so the kernel refuses them (runc create fails).
    for i, (resources, file) in enumerate(
        [(R(cpuset_cpus=f"{os.cpu_count() + 8}"), "cpuset.cpus"), (R(cpuset_mems="63"), "cpuset.mems")]
    ):
        e = refused(lambda r=resources, i=i: make(node, pod, f"k{i}", resources=r))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and file in e.details(), (file, e.details())
    assert_nothing_left(node, pod)


def test_unified_is_refused_on_cgroup_v1(node):  # noqa: F811
    pod = node.pod()
    resources = R(memory_limit_in_bytes=64 * MiB, unified={"memory.high": "32M", "pids.max": "10"})
    e = refused(lambda: make(node, pod, "u", resources=resources))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "memory.high, pids.max" in e.details() and "cgroup v2" in e.details(), e.details()
    assert_nothing_left(node, pod)


# ---------------------------------------------------------------- update


def update(node, cid: str, resources: api_pb2.LinuxContainerResources) -> None:  # noqa: F811
    node.rt.UpdateContainerResources(
        api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=resources), timeout=30
    )


def limits(node, cid: str) -> tuple[str, ...]:  # noqa: F811
    return (
        host_cgroup(node, cid, "memory", "memory.limit_in_bytes"),
        host_cgroup(node, cid, "cpu", "cpu.cfs_quota_us"),
        host_cgroup(node, cid, "cpu", "cpu.cfs_period_us"),
        host_cgroup(node, cid, "cpu", "cpu.shares"),
        host_cgroup(node, cid, "cpuset", "cpuset.cpus"),
    )


def test_update_running_container(node):  # noqa: F811
    pod = node.pod()
    first = R(memory_limit_in_bytes=64 * MiB, cpu_quota=50_000, cpu_period=100_000, cpu_shares=512, cpuset_cpus="0")
    cid = make(node, pod, "u", resources=first)
    assert limits(node, cid) == (str(64 * MiB), "50000", "100000", "512", "0")
    second = R(memory_limit_in_bytes=96 * MiB, cpu_quota=30_000, cpu_period=60_000, cpu_shares=256, cpuset_cpus="1")
    update(node, cid, second)
    applied = (str(96 * MiB), "30000", "60000", "256", "1")
    assert limits(node, cid) == applied
    assert inside(node, cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(96 * MiB)
    assert inside(node, cid, "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us") == "30000"
    assert inside(node, cid, "grep", "Cpus_allowed_list", "/proc/1/status").split()[1] == "1"
    reported = node.status(cid).resources.linux
    assert reported == second, reported

    # Refused updates change nothing, neither in the cgroup nor in the status.
    for bad, field in [
        (R(memory_limit_in_bytes=4096), "memory_limit_in_bytes"),
        (R(memory_limit_in_bytes=96 * MiB, cpu_shares=-3), "cpu_shares"),
        (R(cpu_quota=10, cpu_period=60_000), "cpu_quota"),
        (R(unified={"cpu.max": "1000 100000"}), "unified"),
        (R(cpuset_cpus="0-a"), "cpuset_cpus"),
        (R(oom_score_adj=2000), "oom_score_adj"),
    ]:
        e = refused(lambda bad=bad: update(node, cid, bad))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and field in e.details(), (field, e.details())
        assert limits(node, cid) == applied, field
        assert node.status(cid).resources.linux == second, field

    # A partial update changes what it names; the status reports what the cgroup holds.
    update(node, cid, R(cpu_quota=40_000))
    assert limits(node, cid) == (str(96 * MiB), "40000", "60000", "256", "1")
    reported = node.status(cid).resources.linux
    assert (reported.memory_limit_in_bytes, reported.cpu_quota, reported.cpu_period) == (96 * MiB, 40_000, 60_000)
    assert (reported.cpu_shares, reported.cpuset_cpus) == (256, "1")
    # -1 lifts the quota (0 would leave it).
    update(node, cid, R(cpu_quota=-1))
    assert limits(node, cid) == (str(96 * MiB), "-1", "60000", "256", "1")
    assert node.status(cid).resources.linux.cpu_quota == -1


def test_update_checks_memory_against_the_swap_limit_in_force(node):  # noqa: F811
    if not os.path.exists(f"{V1}/memory/memory.memsw.limit_in_bytes"):
        pytest.skip("the kernel has no swap accounting (memory.memsw.limit_in_bytes; swapaccount=1)")
    pod = node.pod()
    cid = make(node, pod, "s", resources=R(memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=64 * MiB))
    e = refused(lambda: update(node, cid, R(memory_limit_in_bytes=128 * MiB)))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "memory_swap_limit_in_bytes" in e.details(), e.details()
    assert host_cgroup(node, cid, "memory", "memory.limit_in_bytes") == str(64 * MiB)
    update(node, cid, R(memory_limit_in_bytes=128 * MiB, memory_swap_limit_in_bytes=192 * MiB))
    assert host_cgroup(node, cid, "memory", "memory.limit_in_bytes") == str(128 * MiB)
    assert host_cgroup(node, cid, "memory", "memory.memsw.limit_in_bytes") == str(192 * MiB)
    reported = node.status(cid).resources.linux
    assert (reported.memory_limit_in_bytes, reported.memory_swap_limit_in_bytes) == (128 * MiB, 192 * MiB)


def test_update_keeps_oom_score_adj_from_the_start(node):  # noqa: F811
    # runc sets oom_score_adj when the container starts and cannot change it later: the status keeps
    # reporting the value in force rather than the one asked.
    pod = node.pod()
    cid = make(node, pod, "o", resources=R(oom_score_adj=300))
    update(node, cid, R(oom_score_adj=700, cpu_shares=300))
    assert inside(node, cid, "cat", "/proc/1/oom_score_adj") == "300"
    reported = node.status(cid).resources.linux
    assert (reported.oom_score_adj, reported.cpu_shares) == (300, 300)
    assert host_cgroup(node, cid, "cpu", "cpu.shares") == "300"


def test_update_of_a_created_and_of_an_exited_container(node):  # noqa: F811
    pod = node.pod()
    done = make(node, pod, "done", command=["true"])
    node.wait_exit(done)
    e = refused(lambda: update(node, done, R(memory_limit_in_bytes=64 * MiB)))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "exited" in e.details(), e.details()
    created = make(node, pod, "created", start=False)
    update(node, created, R(memory_limit_in_bytes=48 * MiB))
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=created), timeout=30)
    assert host_cgroup(node, created, "memory", "memory.limit_in_bytes") == str(48 * MiB)
