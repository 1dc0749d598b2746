"""Checks that the generated CRI stubs match upstream k8s.io/cri-api v0.36.3.

The stubs (pycrio/cri/api_pb2.py, api_pb2_grpc.py) are generated from
pycrio/cri/api.proto at build time; this test inspects their descriptors.
"""

import pytest
from google.protobuf.descriptor import FieldDescriptor

from pycrio.cri import api_pb2

FD = api_pb2.DESCRIPTOR

# rpc name -> (request, response, client_streaming, server_streaming)
RUNTIME_RPCS = {
    "Version": ("VersionRequest", "VersionResponse", False, False),
    "RunPodSandbox": ("RunPodSandboxRequest", "RunPodSandboxResponse", False, False),
    "StopPodSandbox": ("StopPodSandboxRequest", "StopPodSandboxResponse", False, False),
    "RemovePodSandbox": ("RemovePodSandboxRequest", "RemovePodSandboxResponse", False, False),
    "PodSandboxStatus": ("PodSandboxStatusRequest", "PodSandboxStatusResponse", False, False),
    "ListPodSandbox": ("ListPodSandboxRequest", "ListPodSandboxResponse", False, False),
    "StreamPodSandboxes": ("StreamPodSandboxesRequest", "StreamPodSandboxesResponse", False, True),
    "CreateContainer": ("CreateContainerRequest", "CreateContainerResponse", False, False),
    "StartContainer": ("StartContainerRequest", "StartContainerResponse", False, False),
    "StopContainer": ("StopContainerRequest", "StopContainerResponse", False, False),
    "RemoveContainer": ("RemoveContainerRequest", "RemoveContainerResponse", False, False),
    "ListContainers": ("ListContainersRequest", "ListContainersResponse", False, False),
    "StreamContainers": ("StreamContainersRequest", "StreamContainersResponse", False, True),
    "ContainerStatus": ("ContainerStatusRequest", "ContainerStatusResponse", False, False),
    "UpdateContainerResources": ("UpdateContainerResourcesRequest", "UpdateContainerResourcesResponse", False, False),
    "ReopenContainerLog": ("ReopenContainerLogRequest", "ReopenContainerLogResponse", False, False),
    "ExecSync": ("ExecSyncRequest", "ExecSyncResponse", False, False),
    "Exec": ("ExecRequest", "ExecResponse", False, False),
    "Attach": ("AttachRequest", "AttachResponse", False, False),
    "PortForward": ("PortForwardRequest", "PortForwardResponse", False, False),
    "ContainerStats": ("ContainerStatsRequest", "ContainerStatsResponse", False, False),
    "ListContainerStats": ("ListContainerStatsRequest", "ListContainerStatsResponse", False, False),
    "StreamContainerStats": ("StreamContainerStatsRequest", "StreamContainerStatsResponse", False, True),
    "PodSandboxStats": ("PodSandboxStatsRequest", "PodSandboxStatsResponse", False, False),
    "ListPodSandboxStats": ("ListPodSandboxStatsRequest", "ListPodSandboxStatsResponse", False, False),
    "StreamPodSandboxStats": ("StreamPodSandboxStatsRequest", "StreamPodSandboxStatsResponse", False, True),
    "UpdateRuntimeConfig": ("UpdateRuntimeConfigRequest", "UpdateRuntimeConfigResponse", False, False),
    "Status": ("StatusRequest", "StatusResponse", False, False),
    "CheckpointContainer": ("CheckpointContainerRequest", "CheckpointContainerResponse", False, False),
    "GetContainerEvents": ("GetEventsRequest", "ContainerEventResponse", False, True),
    "ListMetricDescriptors": ("ListMetricDescriptorsRequest", "ListMetricDescriptorsResponse", False, False),
    "ListPodSandboxMetrics": ("ListPodSandboxMetricsRequest", "ListPodSandboxMetricsResponse", False, False),
    "StreamPodSandboxMetrics": ("StreamPodSandboxMetricsRequest", "StreamPodSandboxMetricsResponse", False, True),
    "RuntimeConfig": ("RuntimeConfigRequest", "RuntimeConfigResponse", False, False),
    "UpdatePodSandboxResources": (
        "UpdatePodSandboxResourcesRequest",
        "UpdatePodSandboxResourcesResponse",
        False,
        False,
    ),
}

IMAGE_RPCS = {
    "ListImages": ("ListImagesRequest", "ListImagesResponse", False, False),
    "StreamImages": ("StreamImagesRequest", "StreamImagesResponse", False, True),
    "ImageStatus": ("ImageStatusRequest", "ImageStatusResponse", False, False),
    "PullImage": ("PullImageRequest", "PullImageResponse", False, False),
    "RemoveImage": ("RemoveImageRequest", "RemoveImageResponse", False, False),
    "ImageFsInfo": ("ImageFsInfoRequest", "ImageFsInfoResponse", False, False),
}

# message -> "field=number ...", spot checks against upstream v0.36.3.
FIELD_NUMBERS = {
    "PodSandboxConfig": "metadata=1 hostname=2 log_directory=3 dns_config=4 port_mappings=5 labels=6 "
    "annotations=7 linux=8 windows=9",
    "ContainerConfig": "metadata=1 image=2 command=3 args=4 working_dir=5 envs=6 mounts=7 devices=8 labels=9 "
    "annotations=10 log_path=11 stdin=12 stdin_once=13 tty=14 linux=15 windows=16 CDI_devices=17 stop_signal=18",
    "LinuxContainerResources": "cpu_period=1 cpu_quota=2 cpu_shares=3 memory_limit_in_bytes=4 oom_score_adj=5 "
    "cpuset_cpus=6 cpuset_mems=7 hugepage_limits=8 unified=9 memory_swap_limit_in_bytes=10",
    "ContainerStatus": "id=1 metadata=2 state=3 created_at=4 started_at=5 finished_at=6 exit_code=7 image=8 "
    "image_ref=9 reason=10 message=11 labels=12 annotations=13 mounts=14 log_path=15 resources=16 image_id=17 "
    "user=18 stop_signal=19",
    "ImageSpec": "image=1 annotations=2 user_specified_image=18 runtime_handler=19 image_ref=20",
    "AuthConfig": "username=1 password=2 auth=3 server_address=4 identity_token=5 registry_token=6",
    "LinuxSandboxSecurityContext": "namespace_options=1 selinux_options=2 run_as_user=3 readonly_rootfs=4 "
    "supplemental_groups=5 privileged=6 seccomp_profile_path=7 run_as_group=8 seccomp=9 apparmor=10 "
    "supplemental_groups_policy=11",
}


def _pairs(spec: str) -> dict[str, int]:
    return {name: int(num) for name, num in (item.split("=") for item in spec.split())}


def test_package():
    assert FD.package == "runtime.v1"
    assert FD.GetOptions().go_package == "k8s.io/cri-api/pkg/apis/runtime/v1"


def test_services_exist():
    assert set(FD.services_by_name) == {"RuntimeService", "ImageService"}


@pytest.mark.parametrize(
    "service, table",
    [
        ("RuntimeService", RUNTIME_RPCS),
        ("ImageService", IMAGE_RPCS),
    ],
)
def test_rpc_table(service, table):
    svc = FD.services_by_name[service]
    actual = {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming) for m in svc.methods
    }
    assert actual == table
    for m in svc.methods:
        assert m.input_type.file is FD and m.output_type.file is FD


def test_rpc_count():
    assert len(RUNTIME_RPCS) == 35 and len(IMAGE_RPCS) == 6
    assert sum(len(s.methods) for s in FD.services_by_name.values()) == 41


@pytest.mark.parametrize("message", sorted(FIELD_NUMBERS))
def test_field_numbers(message):
    fields = FD.message_types_by_name[message].fields_by_name
    expected = _pairs(FIELD_NUMBERS[message])
    assert {n: fields[n].number for n in expected} == expected


def test_field_shapes():
    msgs = FD.message_types_by_name
    assert msgs["ContainerConfig"].fields_by_name["envs"].message_type.name == "KeyValue"
    # KeyValue.value is bytes as of v0.36.2; envs is repeated.
    assert msgs["KeyValue"].fields_by_name["value"].type == FieldDescriptor.TYPE_BYTES
    cfg = api_pb2.ContainerConfig(envs=[api_pb2.KeyValue(key="A", value=b"\xff")])
    cfg.envs.add(key="B", value=b"")
    assert [e.key for e in cfg.envs] == ["A", "B"]
    # labels is a map<string, string>.
    assert api_pb2.PodSandboxConfig(labels={"a": "b"}).labels["a"] == "b"
    assert msgs["ContainerStatus"].fields_by_name["state"].enum_type.name == "ContainerState"


def test_enum_values():
    enums = FD.enum_types_by_name
    assert {v.name: v.number for v in enums["NamespaceMode"].values} == _pairs("POD=0 CONTAINER=1 NODE=2 TARGET=3")
    assert {v.name: v.number for v in enums["ContainerState"].values} == _pairs(
        "CONTAINER_CREATED=0 CONTAINER_RUNNING=1 CONTAINER_EXITED=2 CONTAINER_UNKNOWN=3"
    )
    signal = {v.name: v.number for v in enums["Signal"].values}
    assert len(signal) == 66
    assert (signal["RUNTIME_DEFAULT"], signal["SIGKILL"], signal["SIGTERM"], signal["SIGRTMAX"]) == (0, 13, 23, 65)
