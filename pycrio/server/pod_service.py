"""Pod sandbox RPCs: Run, Stop, Remove, PodSandboxStatus, ListPodSandbox, StreamPodSandboxes."""

from __future__ import annotations

import json
import time

from pycrio.cri import api_pb2
from pycrio.lifecycle import Lifecycle
from pycrio.pod_cgroup import describe
from pycrio.runtime_store import PodRecord
from pycrio.server.convert import POD_STATES, pod_status

STREAM_BATCH = 100


def _matches_labels(labels, selector) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class PodServicer:
    def __init__(self, lifecycle: Lifecycle):
        self.lifecycle = lifecycle

    async def RunPodSandbox(self, request, context):
        pod_id = await self.lifecycle.run_pod(request.config, request.runtime_handler)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=pod_id)

    async def StopPodSandbox(self, request, context):
        await self.lifecycle.stop_pod(request.pod_sandbox_id)
        return api_pb2.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request, context):
        await self.lifecycle.remove_pod(request.pod_sandbox_id)
        return api_pb2.RemovePodSandboxResponse()

    async def UpdatePodSandboxResources(self, request, context):
        await self.lifecycle.update_pod_resources(
            request.pod_sandbox_id,
            request.overhead if request.HasField("overhead") else None,
            request.resources if request.HasField("resources") else None,
        )
        return api_pb2.UpdatePodSandboxResourcesResponse()

    async def PodSandboxStatus(self, request, context):
        pod = self.lifecycle.find_pod(request.pod_sandbox_id)
        status = pod_status(pod)
        info = {}
        if request.verbose:
            info["info"] = json.dumps(
                {"facts": pod.facts, "name": pod.name, "podResources": describe(pod.config, pod.facts)}
            )
        return api_pb2.PodSandboxStatusResponse(status=status, info=info, timestamp=time.time_ns())

    def _pod(self, pod: PodRecord) -> api_pb2.PodSandbox:
        return api_pb2.PodSandbox(
            id=pod.id,
            metadata=pod.config.metadata,
            state=POD_STATES[pod.state],
            created_at=pod.created_ns,
            labels=pod.config.labels,
            annotations=pod.config.annotations,
            runtime_handler=pod.runtime_handler,
        )

    def _matching(self, request) -> list[api_pb2.PodSandbox]:
        f = request.filter if request.HasField("filter") else None
        out = []
        for pod in self.lifecycle.store.pods():
            if pod.state == "creating":
                continue
            if f is not None:
                if f.id and not pod.id.startswith(f.id):
                    continue
                if f.HasField("state") and POD_STATES[pod.state] != f.state.state:
                    continue
                if not _matches_labels(pod.config.labels, f.label_selector):
                    continue
            out.append(self._pod(pod))
        return out

    async def ListPodSandbox(self, request, context):
        return api_pb2.ListPodSandboxResponse(items=self._matching(request))

    async def StreamPodSandboxes(self, request, context):
        items = self._matching(request)
        for start in range(0, len(items), STREAM_BATCH):
            yield api_pb2.StreamPodSandboxesResponse(pod_sandboxes=items[start : start + STREAM_BATCH])
