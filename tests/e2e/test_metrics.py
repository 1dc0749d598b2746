"""[pycrio.metrics]: the Prometheus endpoint of a real daemon counts calls, phases and pulls."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import time

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_images import registry_daemon
from tests.e2e.test_pods import busybox_node
from tests.support.registry import free_port


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def metrics_daemon(daemon_factory, registry):
    """A started daemon trusting the test registry, its metrics on a free port: (daemon, port)."""
    port = free_port()
    config = f"[pycrio.metrics]\nenable_metrics = true\nmetrics_port = {port}\n"
    return registry_daemon(daemon_factory, registry.host, config=config), port


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the series name{labels} in a scrape; KeyError when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(series)


def test_calls_phases_and_pulls_are_counted(daemon_factory, registry, busybox_image):
    d, port = metrics_daemon(daemon_factory, registry)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in d.log()
    with busybox_node(d, registry.host) as node:
        pod = node.pod()
        cid = node.run(pod, ["sleep", "60"])
        text = get(port, "/metrics")[2]
        assert sample(text, "pycrio_pods", state="ready") == 1
        assert sample(text, "pycrio_containers", state="running") == 1
        assert sample(text, "pycrio_containers", state="exited") == 0
        # A call whose deadline passes is counted as cancelled on the daemon's side.
        with pytest.raises(grpc.RpcError) as info:
            node.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["sleep", "5"], timeout=10), timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = get(port, "/metrics")[2]
            if 'operation="ExecSync",code="CANCELLED"' in text:
                break
            time.sleep(0.05)
        assert sample(text, "pycrio_operations_total", operation="ExecSync", code="CANCELLED") == 1
        node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0), timeout=30)
        node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            node.status("0" * 64)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        status, headers, text = get(port, "/metrics")
        assert status == 200
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert sample(text, "pycrio_operations_total", operation="RunPodSandbox", code="OK") == 1
        assert sample(text, "pycrio_operations_total", operation="ContainerStatus", code="NOT_FOUND") == 1
        assert sample(text, "pycrio_operations_latency_seconds_count", operation="CreateContainer") == 1
        assert sample(text, "pycrio_operations_latency_seconds_sum", operation="CreateContainer") > 0
        for operation, phase in (
            ("RunPodSandbox", "namespaces"),
            ("CreateContainer", "rootfs"),
            ("CreateContainer", "runtime create"),
            ("RemoveContainer", "cleanup"),
            ("PullImage", "layers"),
        ):
            assert sample(text, "pycrio_operation_phase_seconds_count", operation=operation, phase=phase) == 1, phase
        assert sample(text, "pycrio_image_pulls_total", result="success") == 1
        assert sample(text, "pycrio_image_pulls_bytes_total") > 100_000
        assert sample(text, "pycrio_image_layers_unpacked_total") >= 1
        assert sample(text, "process_resident_memory_bytes") > 10 * 2**20
        assert sample(text, "process_open_fds") > 3
        # Every line is a comment or `name{labels} value`.
        series = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? [-+0-9.eInf]+$')
        assert all(line.startswith("#") or series.match(line) for line in text.splitlines()), text

        assert get(port, "/healthz")[0:3:2] == (200, "ok\n")
        assert get(port, "/nothing")[0] == 404
        assert get(port, "/metrics", method="POST")[0] == 405
        status, headers, body = get(port, "/metrics", method="HEAD")
        assert status == 200 and body == "" and int(headers["content-length"]) > 1000


def test_a_failed_pull_is_counted(daemon_factory, registry):
    d, port = metrics_daemon(daemon_factory, registry)
    request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=f"{registry.host}/test/absent:1"))
    with pytest.raises(grpc.RpcError):
        d.image.PullImage(request, timeout=30)
    text = get(port, "/metrics")[2]
    assert sample(text, "pycrio_image_pulls_total", result="failure") == 1
    assert sample(text, "pycrio_operations_total", operation="PullImage", code="NOT_FOUND") == 1
    assert d.stop() == 0


def test_off_by_default(daemon):
    assert "metrics on" not in daemon.log()


def test_a_taken_port_stops_the_start_with_its_reason(daemon_factory):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = daemon_factory()
        d.write_config(f"[pycrio.metrics]\nenable_metrics = true\nmetrics_port = {port}\n")
        d.start(wait=False)
        assert d.proc.wait(timeout=30) != 0
    assert f"metrics endpoint 127.0.0.1:{port} (pycrio.metrics): Address already in use" in d.log()
    # Nothing of the half-started daemon is left: the socket is gone and a wipe finds nothing.
    assert not any(name.endswith(".sock") for name in _listing(d.runroot))


def _listing(path: str) -> list[str]:
    out = subprocess.run(["find", path, "-maxdepth", "1"], capture_output=True, text=True, check=False).stdout
    return out.split()


def _memory_controller() -> bool:
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            return "memory" in f.read().split()
    except FileNotFoundError:
        return os.path.isdir("/sys/fs/cgroup/memory")


@pytest.mark.skipif(not _memory_controller(), reason="no memory cgroup controller")
def test_an_oom_kill_is_counted(daemon_factory, registry, busybox_image):
    d, port = metrics_daemon(daemon_factory, registry)
    with busybox_node(d, registry.host) as node:
        pod = node.pod()
        cid = node.container(pod, ["sh", "-c", "x=$(head -c 64m /dev/zero | tr '\\0' a); echo survived"])
        limit = api_pb2.LinuxContainerResources(memory_limit_in_bytes=8 * 1024 * 1024)
        node.rt.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=limit))
        node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        assert node.wait_exit(cid, timeout=30).reason == "OOMKilled"
        text = get(port, "/metrics")[2]
        assert sample(text, "pycrio_containers_oom_total") == 1
        assert sample(text, "pycrio_containers", state="exited") == 1
