"""The cAdvisor metrics pycrio serves: names, help texts, types and label keys.

Word for word as cAdvisor has them (google/cadvisor lib/metrics/prometheus.go),
with the labels the kubelet adds on /metrics/cadvisor in front of each metric's
own: container, pod, namespace, id, image, name. The kubelet passes the
descriptors through unchanged, so dashboards keyed on those labels keep working.

Not served: container_hugetlb_* (pycrio does not account hugetlb) and the
metrics cAdvisor leaves out of the kubelet's default set.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycrio.cri import api_pb2

LABEL_KEYS = ("container", "pod", "namespace", "id", "image", "name")


@dataclass(frozen=True)
class Descriptor:
    name: str
    help: str
    type: api_pb2.MetricType  # COUNTER or GAUGE
    extra_labels: tuple[str, ...] = ()


C, G = api_pb2.COUNTER, api_pb2.GAUGE
_DEVICE, _INTERFACE = ("device",), ("interface",)

DESCRIPTORS: dict[str, Descriptor] = {
    d.name: d
    for d in [
        Descriptor("container_last_seen", "Last time a container was seen by the exporter", G),
        Descriptor("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", G),
        # cpu
        Descriptor("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", C, ("cpu",)),
        Descriptor("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", C),
        Descriptor("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", C),
        Descriptor("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", C),
        Descriptor("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", C),
        Descriptor("container_cpu_cfs_throttled_seconds_total",
                   "Total time duration the container has been throttled.", C),
        Descriptor("container_spec_cpu_period", "CPU period of the container.", G),
        Descriptor("container_spec_cpu_quota", "CPU quota of the container.", G),
        Descriptor("container_spec_cpu_shares", "CPU share of the container.", G),
        # memory
        Descriptor("container_memory_usage_bytes",
                   "Current memory usage in bytes, including all memory regardless of when it was accessed", G),
        Descriptor("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", G),
        Descriptor("container_memory_working_set_bytes", "Current working set in bytes.", G),
        Descriptor("container_memory_rss", "Size of RSS in bytes.", G),
        Descriptor("container_memory_cache", "Number of bytes of page cache memory.", G),
        Descriptor("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", G),
        Descriptor("container_memory_mapped_file", "Size of memory mapped files in bytes.", G),
        Descriptor("container_memory_swap", "Container swap usage in bytes.", G),
        Descriptor("container_memory_failcnt", "Number of memory usage hits limits", C),
        Descriptor("container_memory_failures_total", "Cumulative count of memory allocation failures.", C,
                   ("failure_type", "scope")),
        Descriptor("container_oom_events_total", "Count of out of memory events observed for the container", C),
        Descriptor("container_spec_memory_limit_bytes", "Memory limit for the container.", G),
        Descriptor("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", G),
        Descriptor("container_spec_memory_reservation_limit_bytes",
                   "Memory reservation limit for the container.", G),
        # processes
        Descriptor("container_processes", "Number of processes running inside the container.", G),
        Descriptor("container_threads", "Number of threads running inside the container", G),
        Descriptor("container_threads_max",
                   "Maximum number of threads allowed inside the container, infinity if value is zero", G),
        Descriptor("container_file_descriptors", "Number of open file descriptors for the container.", G),
        Descriptor("container_sockets", "Number of open sockets for the container.", G),
        Descriptor("container_ulimits_soft",
                   "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice",
                   G, ("ulimit",)),
        # pressure (cgroup v2)
        Descriptor("container_pressure_cpu_stalled_seconds_total",
                   "Total time duration no tasks in the container could make progress due to CPU congestion.", C),
        Descriptor("container_pressure_cpu_waiting_seconds_total",
                   "Total time duration tasks in the container have waited due to CPU congestion.", C),
        Descriptor("container_pressure_memory_stalled_seconds_total",
                   "Total time duration no tasks in the container could make progress due to memory congestion.", C),
        Descriptor("container_pressure_memory_waiting_seconds_total",
                   "Total time duration tasks in the container have waited due to memory congestion.", C),
        Descriptor("container_pressure_io_stalled_seconds_total",
                   "Total time duration no tasks in the container could make progress due to IO congestion.", C),
        Descriptor("container_pressure_io_waiting_seconds_total",
                   "Total time duration tasks in the container have waited due to IO congestion.", C),
        # filesystems and block devices
        Descriptor("container_fs_usage_bytes",
                   "Number of bytes that are consumed by the container on this filesystem.", G, _DEVICE),
        Descriptor("container_fs_limit_bytes",
                   "Number of bytes that can be consumed by the container on this filesystem.", G, _DEVICE),
        Descriptor("container_fs_inodes_total", "Number of Inodes", G, _DEVICE),
        Descriptor("container_fs_inodes_free", "Number of available Inodes", G, _DEVICE),
        Descriptor("container_fs_reads_bytes_total", "Cumulative count of bytes read", C, _DEVICE),
        Descriptor("container_fs_reads_total", "Cumulative count of reads completed", C, _DEVICE),
        Descriptor("container_fs_writes_bytes_total", "Cumulative count of bytes written", C, _DEVICE),
        Descriptor("container_fs_writes_total", "Cumulative count of writes completed", C, _DEVICE),
        Descriptor("container_blkio_device_usage_total", "Blkio Device bytes usage", C,
                   ("device", "major", "minor", "operation")),
        # network
        Descriptor("container_network_receive_bytes_total", "Cumulative count of bytes received", C, _INTERFACE),
        Descriptor("container_network_receive_packets_total", "Cumulative count of packets received", C, _INTERFACE),
        Descriptor("container_network_receive_packets_dropped_total",
                   "Cumulative count of packets dropped while receiving", C, _INTERFACE),
        Descriptor("container_network_receive_errors_total",
                   "Cumulative count of errors encountered while receiving", C, _INTERFACE),
        Descriptor("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", C, _INTERFACE),
        Descriptor("container_network_transmit_packets_total", "Cumulative count of packets transmitted", C,
                   _INTERFACE),
        Descriptor("container_network_transmit_packets_dropped_total",
                   "Cumulative count of packets dropped while transmitting", C, _INTERFACE),
        Descriptor("container_network_transmit_errors_total",
                   "Cumulative count of errors encountered while transmitting", C, _INTERFACE),
    ]
}  # fmt: skip


def descriptors() -> list[api_pb2.MetricDescriptor]:
    return [
        api_pb2.MetricDescriptor(name=d.name, help=d.help, label_keys=[*LABEL_KEYS, *d.extra_labels])
        for d in DESCRIPTORS.values()
    ]
