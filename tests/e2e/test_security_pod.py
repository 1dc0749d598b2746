"""The CRI pod security context against a real daemon and runc: the host's PID, IPC and network
namespaces and the pod's sysctls, proven from inside a container; sysctls a pod may not set are
refused with no pod left. Container-level fields are in test_security_context.py."""

from __future__ import annotations

import contextlib
import os

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401  (the fixture)
from tests.e2e.test_security_context import refused, run_pod, sh, start

NODE = api_pb2.NODE


def host_ns(node, kind: str) -> str:  # noqa: F811
    """The namespace the daemon (so the host, here) is in, as readlink shows it: 'ipc:[4026531839]'."""
    return os.readlink(f"/proc/{node.d.proc.pid}/ns/{kind}")


def read(path: str, mode: str = "r"):
    with open(path, mode) as f:
        return f.read()


def test_host_namespaces(node):  # noqa: F811
    own = start(node, run_pod(node), "own")  # also makes the daemon's bridge
    host = start(node, run_pod(node, network=NODE, pid=NODE, ipc=NODE), "host")
    for kind in ("pid", "ipc", "net", "uts"):
        assert sh(node, host, f"readlink /proc/self/ns/{kind}") == host_ns(node, kind) + "\n", kind
        assert sh(node, own, f"readlink /proc/self/ns/{kind}") != host_ns(node, kind) + "\n", kind
    # PID: the host's PID 1 and the daemon are there.
    assert node.exec(host, ["cat", "/proc/1/cmdline"]).stdout == read("/proc/1/cmdline", "rb")
    daemon_cmdline = node.exec(host, ["cat", f"/proc/{node.d.proc.pid}/cmdline"]).stdout
    assert daemon_cmdline == read(f"/proc/{node.d.proc.pid}/cmdline", "rb") and b"pycrio" in daemon_cmdline
    assert node.exec(own, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"/pause")
    # IPC: /dev/shm is the host's.
    name = f"/dev/shm/pycrio-test-{node.d.bridge}"
    try:
        sh(node, host, f"echo from-the-pod > {name}")
        assert read(name) == "from-the-pod\n"
        assert node.exec(own, ["cat", name]).exit_code != 0
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    # Network: the test daemon's bridge, a host link, is seen; the node's hostname too.
    assert node.d.bridge in sh(node, host, "ls /sys/class/net").split()
    assert sh(node, own, "ls /sys/class/net").split() == ["eth0", "lo"]
    assert sh(node, host, "hostname") == os.uname().nodename + "\n"


SYSCTLS = {
    "kernel.shm_rmid_forced": "1",  # safe, ipc
    "kernel.msgmax": "12345",  # ipc
    "net.ipv4.ip_unprivileged_port_start": "80",  # unsafe, net
    "net.core.somaxconn": "1234",  # unsafe, net
}


def test_sysctls_are_set_in_the_pods_namespaces(node):  # noqa: F811
    paths = {key: "/proc/sys/" + key.replace(".", "/") for key in SYSCTLS}
    host_before = {key: read(path) for key, path in paths.items()}
    assert all(host_before[key] != value + "\n" for key, value in SYSCTLS.items())  # else nothing is proven
    pod = run_pod(node, sysctls=SYSCTLS)
    cid = start(node, pod, "c")
    assert sh(node, cid, "cat " + " ".join(paths.values())).split() == list(SYSCTLS.values())
    # The effect of ip_unprivileged_port_start: a non-root user may bind port 80.
    user = api_pb2.LinuxContainerSecurityContext(run_as_user=api_pb2.Int64Value(value=1000))
    bind = start(node, pod, "bind", user)
    listen = "nc -l -p 80 -w 1 >/dev/null 2>&1 & sleep 0.3; cat /proc/net/tcp* | grep -c ':0050 '"
    script = f"id -u; nc -l -p 79 -w 1 2>&1; {listen}"
    out = sh(node, bind, script).splitlines()
    assert out == ["1000", "nc: bind: Permission denied", "1"]  # port 79 stays privileged
    assert {key: read(path) for key, path in paths.items()} == host_before


def test_sysctls_in_slash_form(node):  # noqa: F811
    """A sysctl name may use '/' as the separator (then '.' is part of a name, as in an interface name)."""
    cid = start(node, run_pod(node, sysctls={"net/core/somaxconn": "1235", "kernel/shm_rmid_forced": "1"}), "c")
    assert sh(node, cid, "cat /proc/sys/net/core/somaxconn /proc/sys/kernel/shm_rmid_forced") == "1235\n1\n"


@pytest.mark.parametrize(
    "namespaces,key",
    [
        ({"network": NODE}, "net.core.somaxconn"),
        ({"ipc": NODE}, "kernel.shm_rmid_forced"),
        ({}, "vm.swappiness"),
        ({}, "kernel.panic"),
        ({}, "net.core.no_such_sysctl"),  # the kernel has none such
        ({}, "net.core.somaxconn=abc"),  # a value the kernel refuses
    ],
    ids=["net-on-host-network", "ipc-on-host-ipc", "vm", "kernel-global", "unknown", "bad-value"],
)
def test_sysctls_a_pod_may_not_set(node, namespaces, key):  # noqa: F811
    pods_dir = os.path.join(node.d.runroot, "pods")
    key, _, value = key.partition("=")
    with pytest.raises(grpc.RpcError) as info:
        run_pod(node, sysctls={key: value or "1"}, **namespaces)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert key in info.value.details()
    assert not node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    assert not os.path.isdir(pods_dir) or os.listdir(pods_dir) == []


def test_user_namespaces_are_refused_not_ignored(node):  # noqa: F811
    """pycrio makes no user namespace: a pod or container asking for one is refused (it would run in the
    host's), and the host's (mode NODE, what the kubelet sends for hostUsers: true) works."""
    with pytest.raises(grpc.RpcError) as info:
        run_pod(node, userns=api_pb2.POD)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED and "user namespace" in info.value.details()
    assert not node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    pod = run_pod(node, userns=NODE)
    cid = start(node, pod, "c")
    assert sh(node, cid, "cat /proc/self/uid_map").split() == ["0", "0", "4294967295"]
    sc = api_pb2.LinuxContainerSecurityContext()
    sc.namespace_options.userns_options.mode = api_pb2.POD
    refused(node, run_pod(node), sc, "user namespace", code=grpc.StatusCode.UNIMPLEMENTED)
