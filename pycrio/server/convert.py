"""CRI messages from pod and container records (shared by the servicers and the event stream)."""

from __future__ import annotations

from pycrio.cri import api_pb2
from pycrio.runtime_store import ContainerRecord, PodRecord

POD_STATES = {
    "ready": api_pb2.SANDBOX_READY,
    "creating": api_pb2.SANDBOX_NOTREADY,
    "notready": api_pb2.SANDBOX_NOTREADY,
}
CONTAINER_STATES = {
    "creating": api_pb2.CONTAINER_UNKNOWN,
    "created": api_pb2.CONTAINER_CREATED,
    "running": api_pb2.CONTAINER_RUNNING,
    "exited": api_pb2.CONTAINER_EXITED,
}


def pod_status(pod: PodRecord) -> api_pb2.PodSandboxStatus:
    return api_pb2.PodSandboxStatus(
        id=pod.id,
        metadata=pod.config.metadata,
        state=POD_STATES[pod.state],
        created_at=pod.created_ns,
        network=api_pb2.PodSandboxNetworkStatus(
            ip=pod.facts.get("ip", ""),
            additional_ips=[api_pb2.PodIP(ip=ip) for ip in pod.facts.get("additional_ips", [])],
        ),
        linux=api_pb2.LinuxPodSandboxStatus(
            namespaces=api_pb2.Namespace(options=pod.config.linux.security_context.namespace_options)
        ),
        labels=pod.config.labels,
        annotations=pod.config.annotations,
        runtime_handler=pod.runtime_handler,
    )


def container_status(c: ContainerRecord) -> api_pb2.ContainerStatus:
    status = api_pb2.ContainerStatus(
        id=c.id,
        metadata=c.config.metadata,
        state=CONTAINER_STATES[c.state],
        created_at=c.created_ns,
        started_at=c.started_ns,
        finished_at=c.finished_ns,
        exit_code=c.exit_code,
        image=api_pb2.ImageSpec(image=c.config.image.image, annotations=c.config.image.annotations),
        image_ref=c.image_ref,
        image_id=c.image_id,
        reason=c.reason,
        message=c.message,
        labels=c.config.labels,
        annotations=c.config.annotations,
        mounts=c.config.mounts,
        log_path=c.facts.get("log_path", ""),
    )
    if c.config.linux.HasField("resources"):
        status.resources.linux.CopyFrom(c.config.linux.resources)
    # The value in force (the request clamped to the daemon's own: spec_resources.oom_score_adj), recorded at
    # create and kept by UpdateContainerResources; absent in older records, which report the request.
    adj = c.facts.get("oom_score_adj")
    if adj is not None and adj != status.resources.linux.oom_score_adj:
        status.resources.linux.oom_score_adj = adj
    user = c.facts.get("user")  # computed with the spec (spec.effective_user); absent in older records
    if user:
        status.user.linux.CopyFrom(
            api_pb2.LinuxContainerUser(
                uid=user["uid"], gid=user["gid"], supplemental_groups=user["supplemental_groups"]
            )
        )
    return status
