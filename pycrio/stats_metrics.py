"""cAdvisor-style metrics from detailed stats samples, for ListMetricDescriptors and ListPodSandboxMetrics.

The descriptors are in stats_metrics_defs. Label values: container is the CRI
name ("" for the pod's own cgroup), id the cgroup path (the sandbox or container
id when there is none), name the container id. Values are the CRI's unsigned
integers, so *_seconds_total are whole seconds.

What cAdvisor does and pycrio follows: CFS throttling and container_spec_cpu_quota
only for a cgroup with a CPU quota; the spec_* values are the cgroup's settings
(a container's CRI resources stand in for a setting its cgroup does not show);
block I/O per device named "/dev/<name>", container_blkio_device_usage_total per
operation; threads and their limit from the pids controller; descriptors and
sockets held by the processes in the cgroup itself. Where pycrio differs: the
pod's network is its network namespace's interfaces without lo, as cAdvisor
reads them, but a namespace with no interface other than lo (pycrio sets up no
CNI network) reports lo, its only traffic, rather than nothing.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from pycrio.cri import api_pb2
from pycrio.stats_metrics_defs import DESCRIPTORS, LABEL_KEYS, Descriptor, descriptors

if TYPE_CHECKING:
    from pycrio.stats import ContainerSample, FsInfo, FsUsage, InterfaceCounters, PodSample
    from pycrio.stats_cgroup import CgroupUsage

__all__ = ["DESCRIPTORS", "LABEL_KEYS", "Descriptor", "descriptors", "metric_interfaces", "pod_metrics"]

LOOPBACK = "lo"
_SECOND_NS = 1_000_000_000
_PRESSURE = {
    ("cpu", "full"): "container_pressure_cpu_stalled_seconds_total",
    ("cpu", "some"): "container_pressure_cpu_waiting_seconds_total",
    ("memory", "full"): "container_pressure_memory_stalled_seconds_total",
    ("memory", "some"): "container_pressure_memory_waiting_seconds_total",
    ("io", "full"): "container_pressure_io_stalled_seconds_total",
    ("io", "some"): "container_pressure_io_waiting_seconds_total",
}

_Value = tuple[str, tuple[str, ...], int | None]  # metric name, extra label values, value (None: unknown)


def _seconds(ns: int | None) -> int | None:
    return ns // _SECOND_NS if ns is not None else None


def _cgroup_values(u: CgroupUsage) -> list[_Value]:
    values: list[_Value] = [
        ("container_cpu_usage_seconds_total", ("total",), _seconds(u.cpu_ns)),
        ("container_cpu_user_seconds_total", (), _seconds(u.cpu_user_ns)),
        ("container_cpu_system_seconds_total", (), _seconds(u.cpu_system_ns)),
        ("container_spec_cpu_period", (), u.cpu_period),
        ("container_spec_cpu_shares", (), u.cpu_shares),
        ("container_memory_usage_bytes", (), u.memory_usage),
        ("container_memory_max_usage_bytes", (), u.memory_max_usage),
        ("container_memory_working_set_bytes", (), u.working_set),
        ("container_memory_rss", (), u.rss),
        ("container_memory_cache", (), u.cache),
        ("container_memory_kernel_usage", (), u.kernel_usage),
        ("container_memory_mapped_file", (), u.mapped_file),
        ("container_memory_swap", (), u.swap_usage),
        ("container_memory_failcnt", (), u.memory_failcnt),
        ("container_memory_failures_total", ("pgfault", "container"), u.own_page_faults),
        ("container_memory_failures_total", ("pgmajfault", "container"), u.own_major_page_faults),
        ("container_memory_failures_total", ("pgfault", "hierarchy"), u.page_faults),
        ("container_memory_failures_total", ("pgmajfault", "hierarchy"), u.major_page_faults),
        ("container_oom_events_total", (), u.oom_kills),
        ("container_spec_memory_limit_bytes", (), u.memory_limit),
        ("container_spec_memory_swap_limit_bytes", (), u.spec_swap_limit),
        ("container_spec_memory_reservation_limit_bytes", (), u.memory_reservation),
        ("container_processes", (), u.pids),
        ("container_threads", (), u.threads),
        ("container_threads_max", (), u.threads_max),
        ("container_file_descriptors", (), u.fds),
        ("container_sockets", (), u.sockets),
    ]
    if u.cpu_quota:  # cAdvisor's condition for the CFS metrics
        values += [
            ("container_spec_cpu_quota", (), u.cpu_quota),
            ("container_cpu_cfs_periods_total", (), u.cfs_periods),
            ("container_cpu_cfs_throttled_periods_total", (), u.cfs_throttled_periods),
            ("container_cpu_cfs_throttled_seconds_total", (), _seconds(u.cfs_throttled_ns)),
        ]
    for key, total_us in sorted((u.pressure or {}).items()):
        if key in _PRESSURE:
            values.append((_PRESSURE[key], (), total_us // 1_000_000))
    return values + _io_values(u)


def _io_values(u: CgroupUsage) -> list[_Value]:
    values: list[_Value] = []
    for (major, minor, device), operations in sorted((u.io_bytes or {}).items()):
        values += [
            ("container_blkio_device_usage_total", (device, str(major), str(minor), operation), value)
            for operation, value in sorted(operations.items())
        ]
        values += [
            ("container_fs_reads_bytes_total", (device,), operations.get("Read", 0)),
            ("container_fs_writes_bytes_total", (device,), operations.get("Write", 0)),
        ]
    for (_, _, device), operations in sorted((u.io_ops or {}).items()):
        values += [
            ("container_fs_reads_total", (device,), operations.get("Read", 0)),
            ("container_fs_writes_total", (device,), operations.get("Write", 0)),
        ]
    return values


def metric_interfaces(interfaces: list[InterfaceCounters]) -> list[InterfaceCounters]:
    """The interfaces cAdvisor would report (all but lo), or lo when the namespace has nothing else."""
    others = [i for i in interfaces if i.name != LOOPBACK]
    return others or [i for i in interfaces if i.name == LOOPBACK]


def _network_values(interfaces: list[InterfaceCounters]) -> list[_Value]:
    out: list[_Value] = []
    for i in metric_interfaces(interfaces):
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


def _seen(started_ns: int) -> list[_Value]:
    return [
        ("container_last_seen", (), int(time.time())),
        ("container_start_time_seconds", (), _seconds(started_ns) if started_ns else None),
    ]


def _with_resources(u: CgroupUsage, resources: api_pb2.LinuxContainerResources) -> CgroupUsage:
    """The sample with the settings its cgroup did not show taken from the container's CRI resources."""
    fallback = {
        "cpu_period": resources.cpu_period,
        "cpu_quota": max(resources.cpu_quota, 0),
        "cpu_shares": resources.cpu_shares,
        "spec_swap_limit": max(resources.memory_swap_limit_in_bytes, 0),
    }
    missing = {k: v for k, v in fallback.items() if getattr(u, k) is None and v}
    if not missing:
        return u
    u = dataclasses.replace(u)
    for k, v in missing.items():
        setattr(u, k, v)
    return u


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


def _container_metrics(c: ContainerSample, pod_labels: tuple[str, ...], fs: FsInfo | None) -> api_pb2.ContainerMetrics:
    config, record = c.record.config, c.record
    labels = (config.metadata.name, *pod_labels[1:3], c.cgroup or record.id, config.image.image, record.id)
    usage = _with_resources(c.usage, config.linux.resources)
    values = _cgroup_values(usage) + _fs_values(c.layer, fs) + _seen(record.started_ns or record.created_ns)
    values.append(("container_ulimits_soft", ("max_open_files",), c.open_files_soft))
    return api_pb2.ContainerMetrics(container_id=record.id, metrics=_metrics(values, labels, usage.timestamp_ns))


def pod_metrics(s: PodSample, fs: FsInfo | None) -> api_pb2.PodSandboxMetrics:
    """The pod's own metrics (its cgroup, its network) and those of each sampled container."""
    meta = s.record.config.metadata
    pod_labels = ("", meta.name, meta.namespace, s.cgroup or s.record.id, "", "")
    metrics = _metrics(_cgroup_values(s.usage) + _seen(s.record.created_ns), pod_labels, s.usage.timestamp_ns)
    metrics += _metrics(_network_values(s.network or []), pod_labels, s.network_ns)
    containers = [_container_metrics(c, pod_labels, fs) for c in s.containers]
    return api_pb2.PodSandboxMetrics(pod_sandbox_id=s.record.id, metrics=metrics, container_metrics=containers)
