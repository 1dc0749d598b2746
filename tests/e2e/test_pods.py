"""Pods and containers against a real daemon, real runc and an image from the test registry."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_images import pull, registry_daemon

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) (.*)$")


class Node:
    """A daemon plus helpers to make pods and containers; removes every pod at the end."""

    def __init__(self, daemon, image: str):
        self.d = daemon
        self.image = image
        self.logs = os.path.join(daemon.base, "logs")
        self.count = 0
        # Under the daemon's own name: concurrent test sessions never share (or remove) a cgroup.
        self.cgroup_base = f"/pycrio-tests/{daemon.bridge}"

    @property
    def rt(self):
        return self.d.runtime  # a restarted daemon gets a new channel

    def pod(self, pid=api_pb2.POD, network=api_pb2.POD, ipc=api_pb2.POD, **extra) -> str:
        self.count += 1
        config = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=f"pod{self.count}", namespace="ns", uid=f"uid{self.count}"),
            log_directory=os.path.join(self.logs, str(self.count)),
            hostname=extra.pop("hostname", ""),
            linux=api_pb2.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.cgroup_base}/pod{self.count}",
                security_context=api_pb2.LinuxSandboxSecurityContext(
                    namespace_options=api_pb2.NamespaceOption(network=network, pid=pid, ipc=ipc)
                ),
            ),
            **extra,
        )
        self.last_pod_config = config
        return self.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=30).pod_sandbox_id

    def container(self, pod_id: str, command: list[str], name: str = "c", pid=api_pb2.CONTAINER, **extra) -> str:
        config = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=self.image),
            command=command,
            log_path=f"{name}.log",
            linux=api_pb2.LinuxContainerConfig(
                security_context=api_pb2.LinuxContainerSecurityContext(
                    namespace_options=api_pb2.NamespaceOption(pid=pid, target_id=extra.pop("target_id", ""))
                )
            ),
            **extra,
        )
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=self.last_pod_config
        )
        return self.rt.CreateContainer(request, timeout=30).container_id

    def run(self, pod_id: str, command: list[str], **kw) -> str:
        cid = self.container(pod_id, command, **kw)
        self.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=30)
        return cid

    def status(self, cid: str) -> api_pb2.ContainerStatus:
        return self.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status

    def wait_exit(self, cid: str, timeout: float = 10) -> api_pb2.ContainerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(cid)
            if status.state == api_pb2.CONTAINER_EXITED:
                return status
            time.sleep(0.02)
        raise AssertionError(f"container {cid} did not exit: {status}")

    def exec(self, cid: str, cmd: list[str], timeout: int = 10) -> api_pb2.ExecSyncResponse:
        return self.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout), timeout=30)

    def cleanup(self) -> None:
        for pod in self.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
            self.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
            self.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)


@contextlib.contextmanager
def busybox_node(d, registry_host: str) -> Iterator[Node]:
    """A Node on the started daemon d with the test busybox pulled; every pod removed and d stopped after."""
    image = f"{registry_host}/test/busybox:latest"
    pull(d, image)
    n = Node(d, image)
    yield n
    if d.proc.poll() is None:
        n.cleanup()
        assert d.stop() == 0, d.log()


@pytest.fixture
def node(daemon_factory, registry, busybox_image):
    with busybox_node(registry_daemon(daemon_factory, registry.host), registry.host) as n:
        yield n


def test_container_runs_logs_and_exits(node):
    pod = node.pod()
    cid = node.run(pod, ["sh", "-c", "echo out; echo err >&2; printf partial; exit 3"])
    status = node.wait_exit(cid)
    assert status.exit_code == 3 and status.reason == "Error"
    assert status.started_at > 0 and status.finished_at >= status.started_at
    assert status.image_id and status.log_path.endswith("c.log")
    with open(status.log_path) as f:
        lines = f.read().splitlines()
    parsed = [LOG_LINE.match(line).groups()[1:] for line in lines]
    assert ("stdout", "F", "out") in parsed and ("stderr", "F", "err") in parsed
    assert ("stdout", "P", "partial") in parsed
    ok = node.run(pod, ["true"], name="ok")
    assert node.wait_exit(ok).reason == "Completed"


def test_stop_kills_a_process_that_ignores_sigterm(node):
    pod = node.pod()
    cid = node.run(pod, ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
    time.sleep(0.2)
    started = time.monotonic()
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=1), timeout=30)
    assert 0.9 < time.monotonic() - started < 10
    status = node.status(cid)
    assert status.state == api_pb2.CONTAINER_EXITED and status.exit_code == 137
    # Stop and remove are idempotent, also for unknown ids.
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=1))
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id="f" * 64))
    node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id="f" * 64))
    node.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id="f" * 64))
    with pytest.raises(grpc.RpcError) as info:
        node.status(cid)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_exec_sync_output_exit_code_and_timeout(node):
    pod = node.pod(hostname="myhost")
    cid = node.run(pod, ["sleep", "100000"])  # a PID 1 that never reaps, like critest's `top`
    r = node.exec(cid, ["sh", "-c", "echo hi; echo oops >&2; hostname; exit 4"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"hi\nmyhost\n", b"oops\n", 4)
    started = time.monotonic()
    r = node.exec(cid, ["sleep", "30"], timeout=1)
    assert r.exit_code == -1 and b"timed out" in r.stderr
    assert time.monotonic() - started < 5
    # The timed-out process is gone from the container (not even a zombie), not just its runc exec.
    names = node.exec(cid, ["sh", "-c", "cat /proc/[0-9]*/stat"]).stdout
    assert b"(sleep) Z" not in names
    procs = node.exec(cid, ["sh", "-c", "for p in /proc/[0-9]*; do cat $p/cmdline; echo; done"]).stdout
    assert b"sleep30" not in procs.replace(b"\0", b"")


def test_pid_namespace_modes(node):
    pod = node.pod(pid=api_pb2.POD)
    shared = node.run(pod, ["sh", "-c", "while true; do sleep 1; done"], name="shared", pid=api_pb2.POD)
    assert node.exec(shared, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"/pause")
    own = node.run(pod, ["sh", "-c", "while true; do sleep 1; done"], name="own", pid=api_pb2.CONTAINER)
    assert node.exec(own, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"sh")
    target = node.run(pod, ["sh", "-c", "while true; do sleep 1; done"], name="t", pid=api_pb2.TARGET, target_id=own)
    assert node.exec(target, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"sh")
    host_pod = node.pod(pid=api_pb2.NODE, network=api_pb2.NODE, ipc=api_pb2.NODE)
    host = node.run(host_pod, ["sh", "-c", "while true; do sleep 1; done"], name="host", pid=api_pb2.NODE)
    assert node.exec(host, ["cat", f"/proc/{os.getpid()}/cmdline"]).exit_code == 0
    with open(f"/proc/{os.getpid()}/ns/net") as _:
        pass
    host_links = sorted(os.listdir("/sys/class/net"))
    seen = node.exec(host, ["ls", "/sys/class/net"]).stdout.decode().split()
    assert sorted(seen) == host_links
    pod_links = node.exec(shared, ["ls", "/sys/class/net"]).stdout.decode().split()
    assert pod_links == ["eth0", "lo"]


def test_dns_and_hostname(node):
    dns = api_pb2.DNSConfig(servers=["10.0.0.10"], searches=["ns.svc.cluster.local"], options=["ndots:5"])
    pod = node.pod(hostname="web-0", dns_config=dns)
    cid = node.run(pod, ["sh", "-c", "while true; do sleep 1; done"])
    resolv = node.exec(cid, ["cat", "/etc/resolv.conf"]).stdout.decode()
    assert "nameserver 10.0.0.10" in resolv and "search ns.svc.cluster.local" in resolv and "ndots:5" in resolv
    assert node.exec(cid, ["hostname"]).stdout == b"web-0\n"
    assert node.exec(cid, ["cat", "/etc/hostname"]).stdout == b"web-0\n"


def test_bad_requests(node):
    pod = node.pod()
    with pytest.raises(grpc.RpcError) as info:
        node.container("0" * 64, ["true"])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    node.container(pod, ["true"], name="dup")
    with pytest.raises(grpc.RpcError) as info:
        node.container(pod, ["true"], name="dup")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    node.image = node.image.replace("busybox:latest", "missing:1")
    with pytest.raises(grpc.RpcError) as info:
        node.container(pod, ["true"], name="noimage")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "missing:1" in info.value.details()
    node.image = node.image.replace("missing:1", "busybox:latest")
    with pytest.raises(grpc.RpcError) as info:
        node.container(
            pod, ["true"], name="badmount", mounts=[api_pb2.Mount(host_path="/no/such/path", container_path="/x")]
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "/no/such/path" in info.value.details()
    node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    with pytest.raises(grpc.RpcError) as info:
        node.container(pod, ["true"], name="late")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    names = [c.metadata.name for c in node.rt.ListContainers(api_pb2.ListContainersRequest()).containers]
    assert sorted(names) == ["dup"]  # nothing half-made from the failures


def test_list_filters(node):
    pod_a = node.pod(labels={"app": "a"})
    pod_b = node.pod(labels={"app": "b"})
    node.run(pod_a, ["sh", "-c", "while true; do sleep 1; done"], labels={"tier": "x"})
    node.container(pod_b, ["true"])
    sel = api_pb2.PodSandboxFilter(label_selector={"app": "b"})
    assert [p.id for p in node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(filter=sel)).items] == [pod_b]
    running = api_pb2.ContainerFilter(state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_RUNNING))
    found = node.rt.ListContainers(api_pb2.ListContainersRequest(filter=running)).containers
    assert [c.pod_sandbox_id for c in found] == [pod_a]
    by_pod = api_pb2.ContainerFilter(pod_sandbox_id=pod_b[:12])
    assert len(node.rt.ListContainers(api_pb2.ListContainersRequest(filter=by_pod)).containers) == 1
    node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_a))
    notready = api_pb2.PodSandboxFilter(state=api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_NOTREADY))
    assert [p.id for p in node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(filter=notready)).items] == [pod_a]


def test_reopen_log(node):
    pod = node.pod()
    cid = node.run(pod, ["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
    path = node.status(cid).log_path
    time.sleep(0.3)
    os.rename(path, path + ".1")
    node.rt.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid))
    time.sleep(0.3)
    with open(path) as f:
        assert "tick" in f.read()


def test_containers_survive_a_daemon_crash(node):
    pod = node.pod()
    running = node.run(pod, ["sh", "-c", "while true; do sleep 1; done"], name="running")
    finishing = node.run(pod, ["sh", "-c", "sleep 1; exit 7"], name="finishing")
    node.d.stop(signal.SIGKILL)
    time.sleep(1.5)  # "finishing" exits while no daemon runs
    node.d.start()
    assert node.status(running).state == api_pb2.CONTAINER_RUNNING
    assert node.exec(running, ["echo", "alive"]).stdout == b"alive\n"
    status = node.wait_exit(finishing)
    assert status.exit_code == 7


def test_an_image_in_use_is_not_removed(node):
    pod = node.pod()
    cid = node.container(pod, ["true"])
    spec = api_pb2.ImageSpec(image=node.image)
    with pytest.raises(grpc.RpcError) as info:
        node.d.image.RemoveImage(api_pb2.RemoveImageRequest(image=spec))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "used by a container" in info.value.details()
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    node.d.image.RemoveImage(api_pb2.RemoveImageRequest(image=spec))
    assert not node.d.image.ImageStatus(api_pb2.ImageStatusRequest(image=spec)).HasField("image")
