"""Stats and metrics RPCs: ContainerStats, ListContainerStats, StreamContainerStats, PodSandboxStats,
ListPodSandboxStats, StreamPodSandboxStats, ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics.

Lists cover what the kubelet expects them to: running containers and ready pods.
"""

from __future__ import annotations

from pycrio.cri import api_pb2
from pycrio.lifecycle import Lifecycle
from pycrio.runtime_store import ContainerRecord, PodRecord
from pycrio.stats import Stats
from pycrio.stats_metrics import descriptors

STREAM_BATCH = 100


def _matches_labels(labels, selector) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class StatsServicer:
    def __init__(self, lifecycle: Lifecycle):
        self.lifecycle = lifecycle
        self.stats = Stats.for_lifecycle(lifecycle)

    def _containers(self, request) -> list[ContainerRecord]:
        f = request.filter if request.HasField("filter") else None
        out = []
        for c in self.lifecycle.store.containers():
            if c.state != "running":
                continue
            if f is not None:
                if f.id and not c.id.startswith(f.id):
                    continue
                if f.pod_sandbox_id and not c.pod_id.startswith(f.pod_sandbox_id):
                    continue
                if not _matches_labels(c.config.labels, f.label_selector):
                    continue
            out.append(c)
        return out

    def _pods(self, request) -> list[PodRecord]:
        f = request.filter if request.HasField("filter") else None
        out = []
        for pod in self.lifecycle.store.pods():
            if pod.state != "ready":
                continue
            if f is not None:
                if f.id and not pod.id.startswith(f.id):
                    continue
                if not _matches_labels(pod.config.labels, f.label_selector):
                    continue
            out.append(pod)
        return out

    async def ContainerStats(self, request, context):
        c = self.lifecycle.find_container(request.container_id)
        (stats,) = await self.stats.container_stats([c])
        return api_pb2.ContainerStatsResponse(stats=stats)

    async def ListContainerStats(self, request, context):
        return api_pb2.ListContainerStatsResponse(stats=await self.stats.container_stats(self._containers(request)))

    async def StreamContainerStats(self, request, context):
        items = self._containers(request)
        for start in range(0, len(items), STREAM_BATCH):
            batch = await self.stats.container_stats(items[start : start + STREAM_BATCH])
            yield api_pb2.StreamContainerStatsResponse(container_stats=batch)

    async def PodSandboxStats(self, request, context):
        pod = self.lifecycle.find_pod(request.pod_sandbox_id)
        (stats,) = await self.stats.pod_stats([pod])
        return api_pb2.PodSandboxStatsResponse(stats=stats)

    async def ListPodSandboxStats(self, request, context):
        return api_pb2.ListPodSandboxStatsResponse(stats=await self.stats.pod_stats(self._pods(request)))

    async def StreamPodSandboxStats(self, request, context):
        items = self._pods(request)
        for start in range(0, len(items), STREAM_BATCH):
            batch = await self.stats.pod_stats(items[start : start + STREAM_BATCH])
            yield api_pb2.StreamPodSandboxStatsResponse(pod_sandbox_stats=batch)

    async def ListMetricDescriptors(self, request, context):
        return api_pb2.ListMetricDescriptorsResponse(descriptors=descriptors())

    async def ListPodSandboxMetrics(self, request, context):
        pods = [p for p in self.lifecycle.store.pods() if p.state == "ready"]
        return api_pb2.ListPodSandboxMetricsResponse(pod_metrics=await self.stats.pod_metrics(pods))

    async def StreamPodSandboxMetrics(self, request, context):
        pods = [p for p in self.lifecycle.store.pods() if p.state == "ready"]
        for start in range(0, len(pods), STREAM_BATCH):
            batch = await self.stats.pod_metrics(pods[start : start + STREAM_BATCH])
            yield api_pb2.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=batch)
