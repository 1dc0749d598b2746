"""The pod's run_as_user, run_as_group and supplemental_groups applied to pycrio-pause (PID 1 of a
shared-PID pod), proven from a container of the pod through /proc/1/status; the default user
65535:65535; ids out of range refused with nothing left behind; such pods stop and go cleanly."""

from __future__ import annotations

import json
import os
import time

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401  (the fixture)
from tests.e2e.test_security_context import run_pod, sh, start


def run_pod_as(node, uid=None, gid=None, groups=()) -> str:  # noqa: F811
    """A pod sharing one PID namespace (as run_pod makes it) whose security context names the user."""
    node.count += 1
    n = node.count
    sc = api_pb2.LinuxSandboxSecurityContext(supplemental_groups=list(groups))
    if uid is not None:
        sc.run_as_user.value = uid
    if gid is not None:
        sc.run_as_group.value = gid
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"pod{n}", namespace="ns", uid=f"uid{n}"),
        log_directory=os.path.join(node.logs, str(n)),
        linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent=f"{node.cgroup_base}/pod{n}", security_context=sc),
    )
    pod = node.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=30).pod_sandbox_id
    if not hasattr(node, "pod_configs"):
        node.pod_configs = {}
    node.pod_configs[pod] = config
    return pod


def pause_ids(node, cid) -> tuple[list[str], list[str], list[str]]:  # noqa: F811
    """Uid, Gid and Groups of /proc/1/status seen from inside the container."""
    lines = dict(line.split(":", 1) for line in sh(node, cid, "cat /proc/1/status").splitlines() if ":" in line)
    return lines["Uid"].split(), lines["Gid"].split(), lines["Groups"].split()


def pause_pid(node, pod) -> int:  # noqa: F811
    with open(os.path.join(node.d.runroot, "pods", pod, "pause.json")) as f:
        return json.load(f)["pause_pid"]


def gone(pid: int) -> bool:
    """pid is gone or a zombie (PID 1 here may never reap a killed pause)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return True
    return data[data.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")


def stop_and_remove(node, pod) -> None:  # noqa: F811
    pid = pause_pid(node, pod)
    node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    deadline = time.monotonic() + 5
    while not gone(pid):
        assert time.monotonic() < deadline, f"pause {pid} outlived StopPodSandbox"
        time.sleep(0.01)
    node.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    assert pod not in [p.id for p in node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items]
    assert not os.path.exists(os.path.join(node.d.runroot, "pods", pod))


def test_the_pause_runs_as_the_pods_user(node):  # noqa: F811
    pod = run_pod_as(node, uid=1234, gid=5678, groups=[42])
    cid = start(node, pod, "c")
    assert sh(node, cid, "cat /proc/1/cmdline").startswith("/pause")
    assert pause_ids(node, cid) == (["1234"] * 4, ["5678"] * 4, ["42"])
    with open(f"/proc/{pause_pid(node, pod)}/status") as f:  # still without any capability
        caps = [int(line.split()[1], 16) for line in f if line.startswith("Cap")]
    assert len(caps) == 5 and not any(caps)
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0), timeout=30)
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=30)
    stop_and_remove(node, pod)


def test_without_a_user_the_pause_is_65535(node):  # noqa: F811
    pod = run_pod(node)
    cid = start(node, pod, "c")
    assert pause_ids(node, cid) == (["65535"] * 4, ["65535"] * 4, [])
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0), timeout=30)
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=30)
    stop_and_remove(node, pod)


@pytest.mark.parametrize(
    "ids,expected",
    [
        # runAsGroup without runAsUser is legal in a pod: the sandbox keeps its image's uid.
        ({"gid": 5678, "groups": [7, 3, 7]}, ("65535", "5678", ["3", "7"])),
        # runAsUser alone: the pause image has no /etc/passwd to give a primary group (containerd: gid 0).
        ({"uid": 4321}, ("4321", "0", [])),
    ],
    ids=["group-alone", "user-alone"],
)
def test_partial_user(node, ids, expected):  # noqa: F811
    pod = run_pod_as(node, **ids)
    cid = start(node, pod, "c")
    uid, gid, groups = expected
    assert pause_ids(node, cid) == ([uid] * 4, [gid] * 4, groups)
    stop_and_remove(node, pod)


@pytest.mark.parametrize(
    "ids,named",
    [
        ({"uid": -1}, "run_as_user -1"),
        ({"uid": 2**32 - 1}, "run_as_user 4294967295"),
        ({"uid": 0, "gid": 2**32}, "run_as_group 4294967296"),
        ({"groups": [42, -7]}, "supplemental_groups entry -7"),
    ],
    ids=["uid-negative", "uid-minus-one", "gid-too-big", "group-negative"],
)
def test_ids_out_of_range_are_refused_with_nothing_made(node, ids, named):  # noqa: F811
    pods_dir = os.path.join(node.d.runroot, "pods")
    with pytest.raises(grpc.RpcError) as info:
        run_pod_as(node, **ids)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert named in info.value.details()
    assert not node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    assert not os.path.isdir(pods_dir) or os.listdir(pods_dir) == []
