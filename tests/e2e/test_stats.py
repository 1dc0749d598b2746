"""Stats and metrics RPCs against a real daemon, runc and cgroups (v1 on the test machine)."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from pycrio.cri import api_pb2
from pycrio.stats_metrics import DESCRIPTORS, LABEL_KEYS
from tests.e2e.test_pods import node  # noqa: F401 - the fixture

MiB = 1024 * 1024
SPIN = ["sh", "-c", "while true; do :; done"]
IDLE = ["sh", "-c", "while true; do sleep 1; done"]

# critest's expectedMetricDescriptorNames (cri-tools pkg/validate/pod.go): what the kubelet's cAdvisor serves.
CRITEST_EXPECTED = (  # noqa: SIM905 - one string is shorter to read
    "container_blkio_device_usage_total container_cpu_cfs_periods_total container_cpu_cfs_throttled_periods_total "
    "container_cpu_cfs_throttled_seconds_total container_cpu_system_seconds_total container_cpu_usage_seconds_total "
    "container_cpu_user_seconds_total container_file_descriptors container_fs_inodes_free container_fs_inodes_total "
    "container_fs_limit_bytes container_fs_reads_bytes_total container_fs_reads_total container_fs_usage_bytes "
    "container_fs_writes_bytes_total container_fs_writes_total container_hugetlb_max_usage_bytes "
    "container_hugetlb_usage_bytes container_last_seen container_memory_cache container_memory_failcnt "
    "container_memory_failures_total container_memory_kernel_usage container_memory_mapped_file "
    "container_memory_max_usage_bytes container_memory_rss container_memory_swap container_memory_usage_bytes "
    "container_memory_working_set_bytes container_network_receive_bytes_total container_network_receive_errors_total "
    "container_network_receive_packets_dropped_total container_network_receive_packets_total "
    "container_network_transmit_bytes_total container_network_transmit_errors_total "
    "container_network_transmit_packets_dropped_total container_network_transmit_packets_total "
    "container_oom_events_total container_pressure_cpu_stalled_seconds_total "
    "container_pressure_cpu_waiting_seconds_total container_pressure_io_stalled_seconds_total "
    "container_pressure_io_waiting_seconds_total container_pressure_memory_stalled_seconds_total "
    "container_pressure_memory_waiting_seconds_total container_processes container_sockets container_spec_cpu_period "
    "container_spec_cpu_quota container_spec_cpu_shares container_spec_memory_limit_bytes "
    "container_spec_memory_reservation_limit_bytes container_spec_memory_swap_limit_bytes "
    "container_start_time_seconds container_threads container_threads_max container_ulimits_soft"
).split()
NOT_SERVED = {"container_hugetlb_max_usage_bytes", "container_hugetlb_usage_bytes"}  # no hugetlb accounting
# Values of block I/O the test machine's disk may not account to a cgroup, and pressure, which needs cgroup v2.
MAY_LACK_VALUES = {
    "container_blkio_device_usage_total", "container_fs_reads_bytes_total", "container_fs_reads_total",
    "container_fs_writes_bytes_total", "container_fs_writes_total",
}  # fmt: skip
if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
    MAY_LACK_VALUES |= {name for name in CRITEST_EXPECTED if name.startswith("container_pressure_")}


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
    # The pod's eth0 on the built-in network is its default interface; lo is counted out.
    assert linux.HasField("network") and linux.network.timestamp > 0
    assert [i.name for i in linux.network.interfaces] == ["eth0"]
    assert linux.network.default_interface.name == "eth0"

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


def run_limited(node, pod: str, name: str, command: list[str], **resources) -> str:  # noqa: F811
    """A container with linux.resources, which node.run does not take."""
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=node.image),
        command=command,
        linux=api_pb2.LinuxContainerConfig(resources=api_pb2.LinuxContainerResources(**resources)),
    )
    request = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=node.last_pod_config)
    cid = node.rt.CreateContainer(request, timeout=30).container_id
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=30)
    return cid


def pod_values(node, pod: str) -> tuple[dict[str, list[api_pb2.Metric]], dict[str, dict[str, list[api_pb2.Metric]]]]:  # noqa: F811
    """(the pod's own metrics, each container's by name) from ListPodSandboxMetrics, by metric name."""
    listed = node.rt.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest(), timeout=10).pod_metrics
    (mine,) = [p for p in listed if p.pod_sandbox_id == pod]

    def by_name(metrics) -> dict[str, list[api_pb2.Metric]]:
        out: dict[str, list[api_pb2.Metric]] = {}
        for m in metrics:
            out.setdefault(m.name, []).append(m)
        return out

    return by_name(mine.metrics), {c.container_id: by_name(c.metrics) for c in mine.container_metrics}


def test_metrics_cover_what_critest_expects(node):  # noqa: F811
    """Every metric critest looks for, described and valued as cAdvisor would, with values from the cgroups."""
    descriptors = node.rt.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest(), timeout=10).descriptors
    by_name = {d.name: d for d in descriptors}
    assert set(CRITEST_EXPECTED) - set(by_name) == NOT_SERVED
    for d in descriptors:
        assert d.help and list(d.label_keys[:6]) == list(LABEL_KEYS), d.name

    before = int(time.time())
    pod = node.pod()
    limits = dict(cpu_period=100_000, cpu_quota=20_000, cpu_shares=512, memory_limit_in_bytes=64 * MiB,
                  memory_swap_limit_in_bytes=64 * MiB)  # fmt: skip
    busy = run_limited(node, pod, "busy", SPIN, **limits)
    # a listening socket, and traffic on lo: the pod's only interface without a CNI network
    talker = run_limited(node, pod, "talker", ["sh", "-c", "nc -l -p 8080 & nc -l -p 8081 >/dev/null & sleep 1000"])
    # memory runs out before memory+swap (v1 memory.failcnt counts the former), and with no swap: OOM
    small = run_limited(node, pod, "small", ["sleep", "1000"], memory_limit_in_bytes=32 * MiB,
                        memory_swap_limit_in_bytes=48 * MiB)  # fmt: skip
    # direct I/O is the writer's own (v1 leaves writeback to the root); whether the kernel counts it per cgroup
    # depends (v1 blk-throttle only counts on a queue with rules), so block I/O values are checked when present
    r = node.exec(busy, ["dd", "if=/dev/zero", "of=/data", "bs=64k", "count=64", "oflag=direct"])
    assert r.exit_code == 0, r.stderr
    r = node.exec(small, ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"])  # more than it may have
    assert r.exit_code != 0, "dd was not OOM-killed"
    node.exec(talker, ["sh", "-c", "echo hello | timeout 1 nc 127.0.0.1 8081"])  # TCP over lo
    time.sleep(0.5)  # the spinner runs into its quota

    pod_level, containers = pod_values(node, pod)
    everything: dict[str, list[api_pb2.Metric]] = {}
    for metrics in [pod_level, *containers.values()]:
        for name, ms in metrics.items():
            everything.setdefault(name, []).extend(ms)
            for m in ms:
                assert len(m.label_values) == len(by_name[name].label_keys), name
                assert m.metric_type == DESCRIPTORS[name].type and m.timestamp > 0, name
    missing = set(CRITEST_EXPECTED) - NOT_SERVED - MAY_LACK_VALUES - set(everything)
    assert not missing, missing
    assert set(by_name) - set(everything) <= MAY_LACK_VALUES  # critest asks a value of every descriptor

    def one(metrics: dict[str, list[api_pb2.Metric]], name: str, *extra: str) -> int:
        (m,) = [m for m in metrics[name] if m.label_values[6:] == list(extra)]
        return m.value.value

    b = containers[busy]
    assert one(b, "container_spec_cpu_period") == 100_000 and one(b, "container_spec_cpu_quota") == 20_000
    assert one(b, "container_spec_cpu_shares") == 512
    assert one(b, "container_spec_memory_limit_bytes") == 64 * MiB
    assert one(b, "container_spec_memory_swap_limit_bytes") == 64 * MiB  # v1: memory plus swap, as cAdvisor
    assert one(b, "container_cpu_cfs_periods_total") >= one(b, "container_cpu_cfs_throttled_periods_total") > 0
    assert one(b, "container_memory_max_usage_bytes") >= one(b, "container_memory_usage_bytes") > 0
    assert one(b, "container_memory_kernel_usage") > 0
    assert one(b, "container_threads") >= 1 and one(b, "container_threads_max") == 0  # no pids limit
    assert one(b, "container_file_descriptors") >= 3 and one(b, "container_sockets") == 0
    assert one(b, "container_memory_failcnt") == 0 and one(b, "container_oom_events_total") == 0
    assert before - 1 <= one(b, "container_start_time_seconds") <= one(b, "container_last_seen") <= time.time() + 1
    assert one(b, "container_ulimits_soft", "max_open_files") > 0
    for m in b.get("container_blkio_device_usage_total", []):  # what the disk accounted to the writer
        device, major, minor, operation = m.label_values[6:]
        assert device.startswith("/dev/") and major.isdigit() and minor.isdigit() and operation
    if "container_fs_writes_bytes_total" in b:
        assert sum(m.value.value for m in b["container_fs_writes_bytes_total"]) >= 4 * MiB
    assert "container_cpu_cfs_periods_total" not in containers[talker]  # no quota: no CFS metrics, as cAdvisor

    t = containers[talker]
    assert one(t, "container_sockets") >= 1 and one(t, "container_processes") >= 2  # nc, and sleep (sh exec'd it)
    assert one(t, "container_file_descriptors") > one(t, "container_sockets")
    s = containers[small]
    assert one(s, "container_oom_events_total") >= 1 and one(s, "container_memory_failcnt") > 0
    assert one(s, "container_memory_max_usage_bytes") >= 30 * MiB

    assert "container_spec_cpu_period" in pod_level and "container_start_time_seconds" in pod_level
    assert one(pod_level, "container_file_descriptors") >= 0  # the processes in the pod's cgroup itself: none
    # With the built-in network the pod has eth0, so network metrics are eth0's (lo is left out).
    eth0 = {m.name: m for ms in pod_level.values() for m in ms if m.label_values[6:] == ["eth0"]}
    assert "container_network_receive_packets_total" in eth0 and "container_network_transmit_bytes_total" in eth0
    assert not [m for ms in pod_level.values() for m in ms if m.label_values[6:] == ["lo"]]

    stats = node.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod), timeout=10).stats
    assert [i.name for i in stats.linux.network.interfaces] == ["eth0"]  # lo left out, as the kubelet expects
