"""cAdvisor-style metrics from stats samples, for ListMetricDescriptors and ListPodSandboxMetrics.

Names, help texts and label keys are cAdvisor's (google/cadvisor
lib/metrics/prometheus.go) with the labels the kubelet adds on
/metrics/cadvisor: container, pod, namespace, id, image, name, then the
metric's own (cpu, device, interface, failure_type and scope). The kubelet
passes the descriptors through unchanged, so dashboards keyed on those labels
keep working. Label values: container is the CRI name ("" for the pod's own
cgroup), id the cgroup path (the sandbox or container id when there is none),
name the container id. Values are the CRI's unsigned integers, so
*_seconds_total are whole seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycrio.cri import api_pb2

if TYPE_CHECKING:
    from pycrio.stats import FsInfo, FsUsage, InterfaceCounters, PodSample
    from pycrio.stats_cgroup import CgroupUsage

LABEL_KEYS = ("container", "pod", "namespace", "id", "image", "name")


@dataclass(frozen=True)
class Descriptor:
    name: str
    help: str
    type: api_pb2.MetricType  # COUNTER or GAUGE
    extra_labels: tuple[str, ...] = ()


# Word for word as cAdvisor has them.
DESCRIPTORS: dict[str, Descriptor] = {
    d.name: d
    for d in [
        Descriptor("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.",
                   api_pb2.COUNTER, ("cpu",)),
        Descriptor("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.",
                   api_pb2.COUNTER),
        Descriptor("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.",
                   api_pb2.COUNTER),
        Descriptor("container_memory_usage_bytes",
                   "Current memory usage in bytes, including all memory regardless of when it was accessed",
                   api_pb2.GAUGE),
        Descriptor("container_memory_working_set_bytes", "Current working set in bytes.", api_pb2.GAUGE),
        Descriptor("container_memory_rss", "Size of RSS in bytes.", api_pb2.GAUGE),
        Descriptor("container_memory_cache", "Number of bytes of page cache memory.", api_pb2.GAUGE),
        Descriptor("container_memory_mapped_file", "Size of memory mapped files in bytes.", api_pb2.GAUGE),
        Descriptor("container_memory_swap", "Container swap usage in bytes.", api_pb2.GAUGE),
        Descriptor("container_memory_failures_total", "Cumulative count of memory allocation failures.",
                   api_pb2.COUNTER, ("failure_type", "scope")),
        Descriptor("container_spec_memory_limit_bytes", "Memory limit for the container.", api_pb2.GAUGE),
        Descriptor("container_processes", "Number of processes running inside the container.", api_pb2.GAUGE),
        Descriptor("container_fs_usage_bytes",
                   "Number of bytes that are consumed by the container on this filesystem.",
                   api_pb2.GAUGE, ("device",)),
        Descriptor("container_fs_limit_bytes",
                   "Number of bytes that can be consumed by the container on this filesystem.",
                   api_pb2.GAUGE, ("device",)),
        Descriptor("container_fs_inodes_total", "Number of Inodes", api_pb2.GAUGE, ("device",)),
        Descriptor("container_fs_inodes_free", "Number of available Inodes", api_pb2.GAUGE, ("device",)),
        Descriptor("container_network_receive_bytes_total", "Cumulative count of bytes received",
                   api_pb2.COUNTER, ("interface",)),
        Descriptor("container_network_receive_packets_total", "Cumulative count of packets received",
                   api_pb2.COUNTER, ("interface",)),
        Descriptor("container_network_receive_packets_dropped_total",
                   "Cumulative count of packets dropped while receiving", api_pb2.COUNTER, ("interface",)),
        Descriptor("container_network_receive_errors_total",
                   "Cumulative count of errors encountered while receiving", api_pb2.COUNTER, ("interface",)),
        Descriptor("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted",
                   api_pb2.COUNTER, ("interface",)),
        Descriptor("container_network_transmit_packets_total", "Cumulative count of packets transmitted",
                   api_pb2.COUNTER, ("interface",)),
        Descriptor("container_network_transmit_packets_dropped_total",
                   "Cumulative count of packets dropped while transmitting", api_pb2.COUNTER, ("interface",)),
        Descriptor("container_network_transmit_errors_total",
                   "Cumulative count of errors encountered while transmitting", api_pb2.COUNTER, ("interface",)),
    ]
}  # fmt: skip


def descriptors() -> list[api_pb2.MetricDescriptor]:
    return [
        api_pb2.MetricDescriptor(name=d.name, help=d.help, label_keys=[*LABEL_KEYS, *d.extra_labels])
        for d in DESCRIPTORS.values()
    ]


_Value = tuple[str, tuple[str, ...], int | None]  # metric name, extra label values, value (None: unknown)


def _seconds(ns: int | None) -> int | None:
    return ns // 1_000_000_000 if ns is not None else None


def _cgroup_values(u: CgroupUsage) -> list[_Value]:
    return [
        ("container_cpu_usage_seconds_total", ("total",), _seconds(u.cpu_ns)),
        ("container_cpu_user_seconds_total", (), _seconds(u.cpu_user_ns)),
        ("container_cpu_system_seconds_total", (), _seconds(u.cpu_system_ns)),
        ("container_memory_usage_bytes", (), u.memory_usage),
        ("container_memory_working_set_bytes", (), u.working_set),
        ("container_memory_rss", (), u.rss),
        ("container_memory_cache", (), u.cache),
        ("container_memory_mapped_file", (), u.mapped_file),
        ("container_memory_swap", (), u.swap_usage),
        ("container_memory_failures_total", ("pgfault", "container"), u.own_page_faults),
        ("container_memory_failures_total", ("pgmajfault", "container"), u.own_major_page_faults),
        ("container_memory_failures_total", ("pgfault", "hierarchy"), u.page_faults),
        ("container_memory_failures_total", ("pgmajfault", "hierarchy"), u.major_page_faults),
        ("container_spec_memory_limit_bytes", (), u.memory_limit),
        ("container_processes", (), u.pids),
    ]


def _network_values(interfaces: list[InterfaceCounters]) -> list[_Value]:
    out: list[_Value] = []
    for i in interfaces:
        out += [
            ("container_network_receive_bytes_total", (i.name,), i.rx_bytes),
            ("container_network_receive_packets_total", (i.name,), i.rx_packets),
            ("container_network_receive_packets_dropped_total", (i.name,), i.rx_dropped),
            ("container_network_receive_errors_total", (i.name,), i.rx_errors),
            ("container_network_transmit_bytes_total", (i.name,), i.tx_bytes),
            ("container_network_transmit_packets_total", (i.name,), i.tx_packets),
            ("container_network_transmit_packets_dropped_total", (i.name,), i.tx_dropped),
            ("container_network_transmit_errors_total", (i.name,), i.tx_errors),
        ]
    return out


def _fs_values(layer: FsUsage | None, fs: FsInfo | None) -> list[_Value]:
    if fs is None:
        return []
    device = (fs.device,)
    return [
        ("container_fs_usage_bytes", device, layer.bytes if layer else None),
        ("container_fs_limit_bytes", device, fs.bytes_total),
        ("container_fs_inodes_total", device, fs.inodes_total),
        ("container_fs_inodes_free", device, fs.inodes_free),
    ]


def _metrics(values: list[_Value], labels: tuple[str, ...], timestamp_ns: int) -> list[api_pb2.Metric]:
    return [
        api_pb2.Metric(
            name=name,
            timestamp=timestamp_ns,
            metric_type=DESCRIPTORS[name].type,
            label_values=[*labels, *extra],
            value=api_pb2.UInt64Value(value=max(value, 0)),
        )
        for name, extra, value in values
        if value is not None
    ]


def pod_metrics(s: PodSample, fs: FsInfo | None) -> api_pb2.PodSandboxMetrics:
    """The pod's own metrics (its cgroup, its network) and those of each sampled container."""
    meta = s.record.config.metadata
    pod_labels = ("", meta.name, meta.namespace, s.cgroup or s.record.id, "", "")
    metrics = _metrics(_cgroup_values(s.usage), pod_labels, s.usage.timestamp_ns)
    metrics += _metrics(_network_values(s.network or []), pod_labels, s.network_ns)
    containers = []
    for c in s.containers:
        config = c.record.config
        labels = (config.metadata.name, meta.name, meta.namespace, c.cgroup or c.record.id, config.image.image,
                  c.record.id)  # fmt: skip
        values = _cgroup_values(c.usage) + _fs_values(c.layer, fs)
        containers.append(
            api_pb2.ContainerMetrics(container_id=c.record.id, metrics=_metrics(values, labels, c.usage.timestamp_ns))
        )
    return api_pb2.PodSandboxMetrics(pod_sandbox_id=s.record.id, metrics=metrics, container_metrics=containers)
