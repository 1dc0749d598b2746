"""The daemon's own metrics, rendered in the Prometheus text exposition format (version 0.0.4).

CRI calls by RPC and status code, their latency, the phases of pod and container start and
removal and of pulls, pulled bytes, heap trims, and the process's CPU, memory and descriptors.
Recording is always on: a dict update per call. metrics_server.py serves the text when
[pycrio.metrics] enable_metrics is set.

Written here, not with prometheus_client: importing that package costs the daemon ~5 MiB
(http.server, wsgiref, urllib.request come with it), a tenth of its RSS. The format is a few
lines of text per series.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable

# Seconds: from a sub-millisecond phase up to a slow pull.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help_text, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_number(value)}")
        return lines


class Histogram:
    def __init__(
        self, name: str, help_text: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = LATENCY_BUCKETS
    ):
        self.name, self.help, self.label_names, self.buckets = name, help_text, labels, buckets
        # labels -> [per-bucket counts (the last one is +Inf), sum]
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1][0] += value

    def count(self, labels: tuple[str, ...]) -> int:
        series = self.series.get(labels)
        return sum(series[0]) if series else 0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, (counts, total) in sorted(self.series.items()):
            cumulative = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += n
                le = 'le="' + ("+Inf" if math.isinf(bound) else repr(bound)) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total[0])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}")
        return lines


def gauge_lines(name: str, help_text: str, label: str, values: dict[str, int]) -> list[str]:
    """A gauge family with one label, e.g. pods by state."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f'{name}{{{label}="{_escape(key)}"}} {value}' for key, value in sorted(values.items())]
    return lines


def _process_lines() -> list[str]:
    """The standard process_* series of Prometheus client libraries, from /proc/self."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15 of stat)
    boot = 0.0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                boot = float(line.split()[1])
    start = boot + int(fields[19]) / ticks  # starttime (field 22)
    values = [
        ("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", cpu),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", int(fields[21]) * page),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", int(fields[20])),
        ("process_open_fds", "gauge", "Number of open file descriptors.", len(os.listdir("/proc/self/fd"))),
        ("process_start_time_seconds", "gauge", "Start time of the process since the epoch, in seconds.", start),
    ]
    lines = []
    for name, kind, help_text, value in values:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
    return lines


class Metrics:
    def __init__(self) -> None:
        self.operations = Counter(
            "pycrio_operations_total", "CRI calls answered, by RPC and gRPC status code.", ("operation", "code")
        )
        self.operation_seconds = Histogram(
            "pycrio_operations_latency_seconds", "Time to answer a unary CRI call, by RPC.", ("operation",)
        )
        self.phase_seconds = Histogram(
            "pycrio_operation_phase_seconds",
            "Time of each phase of pod and container start and removal and of image pulls.",
            ("operation", "phase"),
        )
        self.pulls = Counter("pycrio_image_pulls_total", "Image pulls, by result (success, failure).", ("result",))
        self.pull_bytes = Counter(
            "pycrio_image_pulls_bytes_total", "Compressed layer bytes fetched from registries by pulls."
        )
        self.pull_layers = Counter("pycrio_image_layers_unpacked_total", "Layers fetched and unpacked by pulls.")
        self.heap_trims = Counter(
            "pycrio_heap_trims_total", "malloc_trim calls, by whether memory was released.", ("released",)
        )
        self.containers_oom = Counter("pycrio_containers_oom_total", "Containers ended by the OOM killer.")

    def rpc(self, operation: str, code: str, seconds: float | None) -> None:
        """A CRI call ended with code (a grpc.StatusCode name); seconds for unary calls."""
        self.operations.inc((operation, code))
        if seconds is not None:
            self.operation_seconds.observe((operation,), seconds)

    def phases(self, operation: str, timings: dict[str, float]) -> None:
        for phase, seconds in timings.items():
            self.phase_seconds.observe((operation, phase), seconds)

    def pulled(self, compressed_bytes: int, layers: int, timings: dict[str, float]) -> None:
        self.pulls.inc(("success",))
        self.pull_bytes.inc((), compressed_bytes)
        self.pull_layers.inc((), layers)
        self.phases("PullImage", timings)

    def render(self, collect: Callable[[], list[str]] | None = None) -> str:
        """The text of every series; collect adds lines read at scrape time (pods by state)."""
        lines: list[str] = []
        for metric in (
            self.operations,
            self.operation_seconds,
            self.phase_seconds,
            self.pulls,
            self.pull_bytes,
            self.pull_layers,
            self.heap_trims,
            self.containers_oom,
        ):
            lines += metric.render()
        if collect is not None:
            lines += collect()
        lines += _process_lines()
        return "\n".join(lines) + "\n"


# The daemon's one set of metrics; tests make their own Metrics.
METRICS = Metrics()
