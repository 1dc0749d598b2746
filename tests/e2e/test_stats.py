"""Stats and metrics RPCs against a real daemon, runc and cgroups (v1 on the test machine)."""

from __future__ import annotations

import time

import grpc
import pytest

from pycrio.cri import api_pb2
from pycrio.stats_metrics import LABEL_KEYS
from tests.e2e.test_pods import node  # noqa: F401 - the fixture

MiB = 1024 * 1024
SPIN = ["sh", "-c", "while true; do :; done"]
IDLE = ["sh", "-c", "while true; do sleep 1; done"]


def container_stats(node, cid: str) -> api_pb2.ContainerStats:  # noqa: F811
    return node.rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid), timeout=10).stats


def list_stats(node, **filter_fields) -> list[api_pb2.ContainerStats]:  # noqa: F811
    f = api_pb2.ContainerStatsFilter(**filter_fields)
    return list(node.rt.ListContainerStats(api_pb2.ListContainerStatsRequest(filter=f), timeout=10).stats)


def test_container_stats(node):  # noqa: F811
    pod = node.pod()
    busy = node.run(pod, SPIN, name="busy", labels={"role": "busy"})
    idle = node.run(pod, IDLE, name="idle")
    done = node.run(pod, ["true"], name="done")
    node.container(pod, IDLE, name="created")
    node.wait_exit(done)
    r = node.exec(idle, ["dd", "if=/dev/zero", "of=/big", "bs=1k", "count=1024"])
    assert r.exit_code == 0, r.stderr

    first = container_stats(node, busy)
    time.sleep(0.6)
    second = container_stats(node, busy)
    assert second.attributes.id == busy and second.attributes.metadata.name == "busy"
    assert second.attributes.labels == {"role": "busy"}
    grown = second.cpu.usage_core_nano_seconds.value - first.cpu.usage_core_nano_seconds.value
    assert grown > 200_000_000, (first.cpu, second.cpu)  # a spinning shell gets most of a core
    assert second.cpu.timestamp > first.cpu.timestamp
    assert second.cpu.usage_nano_cores.value > 200_000_000  # from the two samples
    assert second.memory.working_set_bytes.value > 0 and second.memory.usage_bytes.value > 0
    assert second.memory.rss_bytes.value > 0
    assert not second.memory.HasField("available_bytes")  # no memory limit

    layer = container_stats(node, idle).writable_layer
    assert layer.used_bytes.value >= MiB and layer.inodes_used.value >= 2
    assert layer.fs_id.mountpoint.endswith("/containers") and layer.timestamp > 0

    exited = container_stats(node, done)  # its cgroup stays, with its final counts, until removal
    assert exited.attributes.id == done and exited.HasField("writable_layer")

    assert sorted(s.attributes.id for s in list_stats(node)) == sorted([busy, idle])  # running ones only
    assert [s.attributes.id for s in list_stats(node, id=busy[:12])] == [busy]
    assert [s.attributes.id for s in list_stats(node, label_selector={"role": "busy"})] == [busy]
    assert len(list_stats(node, pod_sandbox_id=pod[:12])) == 2
    assert list_stats(node, pod_sandbox_id="0" * 64) == []
    streamed = node.rt.StreamContainerStats(api_pb2.StreamContainerStatsRequest(), timeout=10)
    assert sorted(s.attributes.id for batch in streamed for s in batch.container_stats) == sorted([busy, idle])

    for call, request in (
        (node.rt.ContainerStats, api_pb2.ContainerStatsRequest(container_id="f" * 64)),
        (node.rt.PodSandboxStats, api_pb2.PodSandboxStatsRequest(pod_sandbox_id="f" * 64)),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_pod_stats(node):  # noqa: F811
    pod = node.pod(labels={"app": "a"})
    busy = node.run(pod, SPIN, name="busy")
    idle = node.run(pod, IDLE, name="idle")
    host = node.pod(network=api_pb2.NODE, labels={"app": "host"})
    stopped = node.pod()
    node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=stopped), timeout=30)

    stats = node.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod), timeout=10).stats
    assert stats.attributes.id == pod and stats.attributes.labels == {"app": "a"}
    linux = stats.linux
    assert linux.cpu.usage_core_nano_seconds.value > 0 and linux.memory.working_set_bytes.value > 0
    assert linux.process.process_count.value >= 3  # pause, two shells (and idle's sleep)
    assert sorted(c.attributes.id for c in linux.containers) == sorted([busy, idle])
    # The pod's own network namespace has only lo: counted out, so no interfaces and no default one.
    assert linux.HasField("network") and linux.network.timestamp > 0
    assert list(linux.network.interfaces) == [] and not linux.network.HasField("default_interface")

    host_stats = node.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=host), timeout=10).stats
    assert not host_stats.linux.HasField("network")  # the node's traffic is not the pod's

    listed = node.rt.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest(), timeout=10).stats
    assert sorted(s.attributes.id for s in listed) == sorted([pod, host])  # ready pods only
    selected = api_pb2.PodSandboxStatsFilter(label_selector={"app": "host"})
    listed = node.rt.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest(filter=selected), timeout=10).stats
    assert [s.attributes.id for s in listed] == [host]
    by_id = api_pb2.PodSandboxStatsFilter(id=pod[:12])
    streamed = node.rt.StreamPodSandboxStats(api_pb2.StreamPodSandboxStatsRequest(filter=by_id), timeout=10)
    assert [s.attributes.id for batch in streamed for s in batch.pod_sandbox_stats] == [pod]


def test_metrics(node):  # noqa: F811
    pod = node.pod()
    busy = node.run(pod, SPIN, name="busy")
    node.exec(busy, ["dd", "if=/dev/zero", "of=/big", "bs=1k", "count=1024"])
    descriptors = node.rt.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest(), timeout=10).descriptors
    by_name = {d.name: d for d in descriptors}
    assert len(by_name) == len(descriptors)
    for name in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                 "container_memory_usage_bytes", "container_memory_rss", "container_spec_memory_limit_bytes",
                 "container_processes", "container_fs_usage_bytes", "container_fs_inodes_total",
                 "container_network_receive_bytes_total"):  # fmt: skip
        assert by_name[name].help and list(by_name[name].label_keys[:6]) == list(LABEL_KEYS), name

    pods = node.rt.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest(), timeout=10).pod_metrics
    assert [p.pod_sandbox_id for p in pods] == [pod]
    assert [c.container_id for c in pods[0].container_metrics] == [busy]
    every = list(pods[0].metrics) + list(pods[0].container_metrics[0].metrics)
    for m in every:
        assert m.name in by_name, m.name
        assert len(m.label_values) == len(by_name[m.name].label_keys), m.name
        assert m.timestamp > 0
    values = {m.name: m for m in pods[0].container_metrics[0].metrics}
    labels = dict(zip(LABEL_KEYS, values["container_memory_working_set_bytes"].label_values, strict=False))
    assert labels["container"] == "busy" and labels["pod"] == "pod1" and labels["namespace"] == "ns"
    assert labels["name"] == busy and labels["id"].endswith(f"pycrio-{busy}")
    assert values["container_memory_working_set_bytes"].metric_type == api_pb2.GAUGE
    assert values["container_cpu_usage_seconds_total"].metric_type == api_pb2.COUNTER
    assert values["container_processes"].value.value >= 1
    assert values["container_fs_usage_bytes"].value.value >= MiB
    pod_level = {m.name: m for m in pods[0].metrics}
    assert pod_level["container_memory_working_set_bytes"].label_values[:3] == ["", "pod1", "ns"]

    streamed = node.rt.StreamPodSandboxMetrics(api_pb2.StreamPodSandboxMetricsRequest(), timeout=10)
    assert [p.pod_sandbox_id for batch in streamed for p in batch.pod_sandbox_metrics] == [pod]
