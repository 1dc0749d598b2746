"""The pod-level cgroup with pod overhead, against a real daemon and runc: made with resources + overhead as
its limits when the kubelet did not make it, enforced on the pod's containers, removed with the pod (also
after a crash, a failed RunPodSandbox and wipe); one the test made is left as it was."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import grpc
import pytest

from pycrio.cri import api_pb2
from pycrio.pod_cgroup import hierarchies
from pycrio.spec_resources import cgroup_version
from tests.e2e.test_pods import node  # noqa: F401 - the fixture

MiB = 1024 * 1024
VERSION = cgroup_version()
IDLE = ["sleep", "100000"]
RESOURCES = api_pb2.LinuxContainerResources(
    memory_limit_in_bytes=32 * MiB, cpu_quota=50000, cpu_period=100000, cpu_shares=512
)
# 0.1 CPU at another period: 10000µs at the resources' 100 ms
OVERHEAD = api_pb2.LinuxContainerResources(
    memory_limit_in_bytes=16 * MiB, cpu_quota=5000, cpu_period=50000, cpu_shares=100
)


def cgroup_file(cgroup: str, controller: str, v1: str, v2: str) -> str:
    if VERSION == 2:
        return f"/sys/fs/cgroup{cgroup}/{v2}"
    return f"/sys/fs/cgroup/{controller}{cgroup}/{v1}"


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def memory_limit(cgroup: str) -> int:
    text = read(cgroup_file(cgroup, "memory", "memory.limit_in_bytes", "memory.max"))
    return -1 if text == "max" else int(text)


def present(cgroup: str) -> list[str]:
    """The hierarchies (v1) or tree (v2) where cgroup is a directory."""
    return [top + cgroup for top in hierarchies(VERSION) if os.path.isdir(top + cgroup)]


def run_pod(n, parent: str, resources=None, overhead=None, **extra) -> str:
    n.count += 1
    linux = api_pb2.LinuxPodSandboxConfig(cgroup_parent=parent, sysctls=extra.pop("sysctls", {}))
    if resources is not None:
        linux.resources.CopyFrom(resources)
    if overhead is not None:
        linux.overhead.CopyFrom(overhead)
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"pod{n.count}", namespace="ns", uid=f"uid{n.count}"),
        log_directory=os.path.join(n.logs, str(n.count)),
        linux=linux,
        **extra,
    )
    n.last_pod_config = config
    return n.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=30).pod_sandbox_id


def remove_pod(n, pod: str) -> None:
    n.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    n.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)


def container_cgroup(n, cid: str) -> str:
    status = n.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True))
    return json.loads(status.info["info"])["facts"]["cgroups_path"]


def pod_info(n, pod: str) -> dict:
    status = n.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
    return json.loads(status.info["info"])


@contextlib.contextmanager
def made_by_the_test(cgroup: str, memory: int):
    """cgroup in the memory hierarchy (v1) or the v2 tree, with a memory limit; rmdir'd after."""
    top = "/sys/fs/cgroup" if VERSION == 2 else "/sys/fs/cgroup/memory"
    made = []
    path = top
    for part in cgroup.strip("/").split("/"):
        if VERSION == 2:
            control = os.path.join(path, "cgroup.subtree_control")
            if "memory" not in read(control).split():
                with open(control, "w") as f:
                    f.write("+memory")
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            os.mkdir(path)
            made.append(path)
    with open(cgroup_file(cgroup, "memory", "memory.limit_in_bytes", "memory.max"), "w") as f:
        f.write(str(memory))
    try:
        yield
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):  # a child runc made: the suite's cgroup cleanup takes both
                os.rmdir(path)


def test_pod_cgroup_gets_resources_plus_overhead_and_enforces_them(node):  # noqa: F811
    parent = f"{node.cgroup_base}/overhead/pod1"
    assert not present(parent)
    pod = run_pod(node, parent, RESOURCES, OVERHEAD)
    assert present(parent)
    assert memory_limit(parent) == 48 * MiB
    if VERSION == 2:
        assert read(f"/sys/fs/cgroup{parent}/cpu.max") == "60000 100000"
    else:
        assert int(read(f"/sys/fs/cgroup/cpu{parent}/cpu.cfs_quota_us")) == 60000
        assert int(read(f"/sys/fs/cgroup/cpu{parent}/cpu.cfs_period_us")) == 100000
        assert int(read(f"/sys/fs/cgroup/cpu{parent}/cpu.shares")) == 612
    assert present(f"{parent}/pycrio-{pod}")  # the pause, under it

    idle = node.run(pod, IDLE, name="idle")
    cgroup = container_cgroup(node, idle)
    assert cgroup == f"{parent}/pycrio-{idle}" and present(cgroup)
    assert memory_limit(cgroup) > 48 * MiB  # the container itself has no limit

    info = pod_info(node, pod)["podResources"]
    assert info["cgroupParent"] == parent
    assert info["resources"]["memory_limit_in_bytes"] == str(32 * MiB)
    assert info["overhead"]["memory_limit_in_bytes"] == str(16 * MiB)
    assert info["podCgroup"]["path"] == parent and info["podCgroup"]["createdByPycrio"]
    assert info["podCgroup"]["limits"]["memory"] == 48 * MiB and info["podCgroup"]["limits"]["cpu_quota"] == 60000

    stats = node.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod), timeout=10).stats
    assert [c.attributes.id for c in stats.linux.containers] == [idle]
    assert stats.linux.containers[0].memory.working_set_bytes.value > 0
    assert stats.linux.memory.working_set_bytes.value > 0  # read from the pod cgroup

    # 100 MiB in one buffer: more than the pod may have, though the container has no limit.
    hog = node.run(pod, ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"], name="hog")
    status = node.wait_exit(hog, timeout=30)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")

    node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    assert present(parent)  # until the pod is removed
    node.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    assert not present(parent)
    assert not present(f"{node.cgroup_base}/overhead")  # a level pycrio made for it, empty now


def test_an_existing_cgroup_parent_is_left_as_it_was(node):  # noqa: F811
    parent = f"{node.cgroup_base}/kubelets/pod1"
    with made_by_the_test(parent, 100 * MiB):
        pod = run_pod(node, parent, RESOURCES, OVERHEAD)
        assert memory_limit(parent) == 100 * MiB
        cid = node.run(pod, IDLE)
        assert container_cgroup(node, cid) == f"{parent}/pycrio-{cid}"
        assert pod_info(node, pod)["podResources"]["podCgroup"] is None
        remove_pod(node, pod)
        assert memory_limit(parent) == 100 * MiB  # still there, still the test's limit


def test_an_empty_cgroup_parent_gets_a_pod_cgroup_under_the_default_parent(node):  # noqa: F811
    pod = run_pod(node, "", overhead=api_pb2.LinuxContainerResources(cpu_shares=100), resources=RESOURCES)
    parent = f"/pycrio/pycrio-pod-{pod}"
    try:
        assert memory_limit(parent) == 32 * MiB  # no memory overhead
        cid = node.run(pod, IDLE)
        assert container_cgroup(node, cid) == f"{parent}/pycrio-{cid}"
        assert present(f"{parent}/pycrio-{pod}")  # the pause
        stats = node.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod), timeout=10).stats
        assert [c.attributes.id for c in stats.linux.containers] == [cid]
        assert stats.linux.process.process_count.value >= 2  # pause and sleep, in the pod's own cgroup
    finally:
        remove_pod(node, pod)
    assert not present(parent)


def test_absurd_overhead_is_invalid_and_leaves_nothing(node):  # noqa: F811
    parent = f"{node.cgroup_base}/absurd/pod1"
    for overhead in (
        api_pb2.LinuxContainerResources(memory_limit_in_bytes=-1),
        api_pb2.LinuxContainerResources(cpu_shares=1 << 40),
        api_pb2.LinuxContainerResources(cpu_quota=1 << 50, cpu_period=1000),
    ):
        with pytest.raises(grpc.RpcError) as info:
            run_pod(node, parent, RESOURCES, overhead)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "overhead" in info.value.details(), info.value.details()
    assert not present(f"{node.cgroup_base}/absurd")
    assert not node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    pods = os.path.join(node.d.runroot, "pods")
    assert not os.path.isdir(pods) or not os.listdir(pods)


def test_a_failed_run_pod_sandbox_removes_the_pod_cgroup_it_made(node):  # noqa: F811
    parent = f"{node.cgroup_base}/failed/pod1"
    with pytest.raises(grpc.RpcError) as info:  # refused after the pod cgroup is made
        run_pod(node, parent, RESOURCES, OVERHEAD, sysctls={"kernel.panic": "1"})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "kernel.panic" in info.value.details()
    assert f"pod cgroup {parent} made: " in node.d.log()
    assert not present(f"{node.cgroup_base}/failed")


def test_the_pod_cgroup_is_removed_after_a_daemon_crash_and_restart(node):  # noqa: F811
    parent = f"{node.cgroup_base}/crash/pod1"
    pod = run_pod(node, parent, RESOURCES, OVERHEAD)
    node.run(pod, IDLE)
    node.d.stop(signal.SIGKILL)
    node.d.start()
    assert memory_limit(parent) == 48 * MiB
    remove_pod(node, pod)
    assert not present(parent)


def test_wipe_removes_the_pod_cgroup(node):  # noqa: F811
    d = node.d
    parent = f"{node.cgroup_base}/wiped/pod1"
    pod = run_pod(node, parent, RESOURCES, OVERHEAD)
    node.run(pod, IDLE)
    d.stop(signal.SIGKILL)
    out = subprocess.run([sys.executable, "-m", "pycrio.cli", "wipe", *d.args()], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"removed pod cgroup {parent}" in out.stdout
    assert not present(parent)


def test_update_pod_sandbox_resources(node, tmpdir_short):  # noqa: F811
    """UpdatePodSandboxResources rewrites the limits of a pod cgroup pycrio made (a lifted limit is
    lifted), only records them for one the kubelet made, and refuses absurd values and unknown
    pods without changing anything."""
    made_parent = f"{node.cgroup_base}/update-made"
    pod = run_pod(node, made_parent, RESOURCES, OVERHEAD)
    assert memory_limit(made_parent) == 48 * MiB
    bigger = api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB, cpu_quota=80000, cpu_period=100000)
    node.rt.UpdatePodSandboxResources(api_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod, resources=bigger))
    assert memory_limit(made_parent) == 80 * MiB  # 64 + the overhead's 16
    if VERSION == 1:
        assert read(cgroup_file(made_parent, "cpu", "cpu.cfs_quota_us", "cpu.max")) == "90000"  # 80000 + 10000
    info = json.loads(
        node.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info["info"]
    )
    assert info["podResources"]["resources"]["memory_limit_in_bytes"] == str(64 * MiB)
    assert info["podResources"]["podCgroup"]["limits"]["memory"] == 80 * MiB
    # No memory limit any more: lifted, not left at the old value.
    cpu_only = api_pb2.LinuxContainerResources(cpu_quota=80000, cpu_period=100000)
    node.rt.UpdatePodSandboxResources(api_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod, resources=cpu_only))
    assert memory_limit(made_parent) > 1 << 40
    with pytest.raises(grpc.RpcError) as e:
        absurd = api_pb2.LinuxContainerResources(memory_limit_in_bytes=-5)
        node.rt.UpdatePodSandboxResources(
            api_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod, resources=absurd)
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "memory_limit_in_bytes" in e.value.details()
    assert memory_limit(made_parent) > 1 << 40
    with pytest.raises(grpc.RpcError) as e:
        node.rt.UpdatePodSandboxResources(api_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id="nope" * 4))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    remove_pod(node, pod)
    assert present(made_parent) == []

    # A parent the kubelet made: its limit is the kubelet's; the call only records the values.
    theirs = f"{node.cgroup_base}/update-theirs"
    with made_by_the_test(theirs, 100 * MiB):
        pod = run_pod(node, theirs, RESOURCES, OVERHEAD)
        node.rt.UpdatePodSandboxResources(
            api_pb2.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod, resources=bigger)
        )
        assert memory_limit(theirs) == 100 * MiB
        info = json.loads(
            node.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info["info"]
        )
        assert info["podResources"]["resources"]["memory_limit_in_bytes"] == str(64 * MiB)
        assert info["podResources"]["podCgroup"] is None
        remove_pod(node, pod)
