"""Container RPCs: Create, Start, Stop, Remove, ContainerStatus, ListContainers, StreamContainers, ExecSync,
ReopenContainerLog."""

from __future__ import annotations

import json

from pycrio.cri import api_pb2
from pycrio.lifecycle import Lifecycle
from pycrio.runtime_store import ContainerRecord
from pycrio.server.convert import CONTAINER_STATES, container_status, pod_status

STREAM_BATCH = 100


class ContainerServicer:
    def __init__(self, lifecycle: Lifecycle):
        self.lifecycle = lifecycle

    async def CreateContainer(self, request, context):
        sandbox_config = request.sandbox_config if request.HasField("sandbox_config") else None
        container_id = await self.lifecycle.create_container(request.pod_sandbox_id, request.config, sandbox_config)
        return api_pb2.CreateContainerResponse(container_id=container_id)

    async def StartContainer(self, request, context):
        await self.lifecycle.start_container(request.container_id)
        return api_pb2.StartContainerResponse()

    async def StopContainer(self, request, context):
        await self.lifecycle.stop_container(request.container_id, request.timeout)
        return api_pb2.StopContainerResponse()

    async def RemoveContainer(self, request, context):
        await self.lifecycle.remove_container(request.container_id)
        return api_pb2.RemoveContainerResponse()

    async def ContainerStatus(self, request, context):
        c = self.lifecycle.find_container(request.container_id)
        status = container_status(c)
        info = {}
        if request.verbose:
            info["info"] = json.dumps({"pid": c.pid, "facts": c.facts, "sandboxID": c.pod_id})
        return api_pb2.ContainerStatusResponse(status=status, info=info)

    def _container(self, c: ContainerRecord) -> api_pb2.Container:
        return api_pb2.Container(
            id=c.id,
            pod_sandbox_id=c.pod_id,
            metadata=c.config.metadata,
            image=api_pb2.ImageSpec(image=c.config.image.image),
            image_ref=c.image_ref,
            image_id=c.image_id,
            state=CONTAINER_STATES[c.state],
            created_at=c.created_ns,
            labels=c.config.labels,
            annotations=c.config.annotations,
        )

    def _matching(self, request) -> list[api_pb2.Container]:
        f = request.filter if request.HasField("filter") else None
        out = []
        for c in self.lifecycle.store.containers():
            if c.state == "creating":
                continue
            if f is not None:
                if f.id and not c.id.startswith(f.id):
                    continue
                if f.pod_sandbox_id and not c.pod_id.startswith(f.pod_sandbox_id):
                    continue
                if f.HasField("state") and CONTAINER_STATES[c.state] != f.state.state:
                    continue
                if any(c.config.labels.get(k) != v for k, v in f.label_selector.items()):
                    continue
            out.append(self._container(c))
        return out

    async def ListContainers(self, request, context):
        return api_pb2.ListContainersResponse(containers=self._matching(request))

    async def StreamContainers(self, request, context):
        items = self._matching(request)
        for start in range(0, len(items), STREAM_BATCH):
            yield api_pb2.StreamContainersResponse(containers=items[start : start + STREAM_BATCH])

    async def ExecSync(self, request, context):
        result = await self.lifecycle.exec_sync(request.container_id, list(request.cmd), request.timeout)
        return api_pb2.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    async def UpdateContainerResources(self, request, context):
        await self.lifecycle.update_resources(request.container_id, request.linux)
        return api_pb2.UpdateContainerResourcesResponse()

    async def GetContainerEvents(self, request, context):
        queue = self.lifecycle.subscribe()
        try:
            while True:
                event = await queue.get()
                response = api_pb2.ContainerEventResponse(
                    container_id=event.container.id,
                    container_event_type=event.kind,
                    created_at=event.at_ns,
                    containers_statuses=[container_status(event.container)],
                )
                if event.pod is not None:
                    response.pod_sandbox_status.CopyFrom(pod_status(event.pod))
                yield response
        finally:
            self.lifecycle.unsubscribe(queue)

    async def ReopenContainerLog(self, request, context):
        await self.lifecycle.reopen_log(request.container_id)
        return api_pb2.ReopenContainerLogResponse()
