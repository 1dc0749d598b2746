"""Container events, resource updates and OOM kills against a real daemon and runc."""

from __future__ import annotations

import os
import threading
import time

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401 - the fixture

V1_MEMORY = "/sys/fs/cgroup/memory"


def test_events_stream_created_started_stopped_deleted(node):  # noqa: F811
    events: list[api_pb2.ContainerEventResponse] = []
    call = node.rt.GetContainerEvents(api_pb2.GetEventsRequest())
    ready = threading.Event()

    def read():
        ready.set()
        try:
            for event in call:
                events.append(event)
        except grpc.RpcError:
            pass  # cancelled below

    reader = threading.Thread(target=read)
    reader.start()
    ready.wait()
    pod = node.pod()
    # The stream is live once a probe container's event comes through.
    probe = node.container(pod, ["true"], name="probe")
    deadline = time.monotonic() + 10
    while not any(e.container_id == probe for e in events) and time.monotonic() < deadline:
        time.sleep(0.02)
    cid = node.run(pod, ["sh", "-c", "exit 2"])
    node.wait_exit(cid)
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    deadline = time.monotonic() + 5
    while len([e for e in events if e.container_id == cid]) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    call.cancel()
    reader.join(5)
    kinds = [e.container_event_type for e in events if e.container_id == cid]
    assert kinds == [
        api_pb2.CONTAINER_CREATED_EVENT,
        api_pb2.CONTAINER_STARTED_EVENT,
        api_pb2.CONTAINER_STOPPED_EVENT,
        api_pb2.CONTAINER_DELETED_EVENT,
    ]
    stopped = [e for e in events if e.container_id == cid][2]
    assert stopped.containers_statuses[0].exit_code == 2
    assert stopped.pod_sandbox_status.id == pod and stopped.created_at > 0


@pytest.mark.skipif(not os.path.isdir(V1_MEMORY), reason="needs the cgroup v1 memory controller")
def test_update_container_resources(node):  # noqa: F811
    pod = node.pod()
    cid = node.run(pod, ["sh", "-c", "while true; do sleep 1; done"])
    limit = 64 * 1024 * 1024
    resources = api_pb2.LinuxContainerResources(memory_limit_in_bytes=limit, cpu_shares=512)
    node.rt.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=resources))
    cgroup = node.status(cid)  # the status reports what was applied
    assert cgroup.resources.linux.memory_limit_in_bytes == limit
    path = f"{V1_MEMORY}{node.cgroup_base}/pod{node.count}/pycrio-{cid}/memory.limit_in_bytes"
    with open(path) as f:
        assert int(f.read()) == limit
    bad = api_pb2.LinuxContainerResources(memory_limit_in_bytes=1024)
    with pytest.raises(grpc.RpcError) as info:
        node.rt.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        node.rt.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(container_id="0" * 64, linux=bad))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.skipif(not os.path.isdir(V1_MEMORY), reason="needs the cgroup v1 memory controller")
def test_oom_kill_is_reported(node):  # noqa: F811
    pod = node.pod()
    resources = api_pb2.LinuxContainerResources(memory_limit_in_bytes=8 * 1024 * 1024)
    cid = node.container(pod, ["sh", "-c", "x=$(head -c 64m /dev/zero | tr '\\0' a); echo survived"])
    node.rt.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=resources))
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    status = node.wait_exit(cid, timeout=30)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")
