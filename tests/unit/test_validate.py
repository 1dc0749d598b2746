"""pycrio/server/validate.py: required fields, enum values, string limits."""

from __future__ import annotations

import pytest

from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument
from pycrio.server import validate as v


def test_every_required_rpc_exists_and_names_real_fields():
    rpcs = {m.name: m for s in api_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods}
    for rpc, paths in v.REQUIRED.items():
        assert rpc in rpcs, rpc
        request = getattr(api_pb2, rpcs[rpc].input_type.name)()
        for path in paths:
            with pytest.raises(InvalidArgument, match=f"{rpc}: {path} is required"):
                v.validate(rpc, request)
            break  # the first missing path is reported first


@pytest.mark.parametrize(
    "rpc,request_",
    [
        ("PodSandboxStatus", api_pb2.PodSandboxStatusRequest()),
        ("ContainerStatus", api_pb2.ContainerStatusRequest()),
        ("ExecSync", api_pb2.ExecSyncRequest(container_id="abc")),
        ("PullImage", api_pb2.PullImageRequest(image=api_pb2.ImageSpec())),
        (
            "CreateContainer",
            api_pb2.CreateContainerRequest(
                pod_sandbox_id="p", config=api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c"))
            ),
        ),
    ],
)
def test_missing_required_field(rpc, request_):
    with pytest.raises(InvalidArgument, match="is required"):
        v.validate(rpc, request_)


def test_complete_requests_pass():
    v.validate("ExecSync", api_pb2.ExecSyncRequest(container_id="abc", cmd=["true"]))
    v.validate("PullImage", api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    v.validate("ListContainers", api_pb2.ListContainersRequest())


def test_unknown_enum_value_is_refused_with_names():
    request = api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(state=api_pb2.ContainerStateValue(state=42)))
    with pytest.raises(InvalidArgument) as info:
        v.validate("ListContainers", request)
    assert "ListContainersRequest.filter.state.state: 42" in str(info.value)
    assert "CONTAINER_RUNNING" in str(info.value)


def test_unknown_enum_in_repeated_nested_message():
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p"),
        port_mappings=[api_pb2.PortMapping(protocol=api_pb2.UDP), api_pb2.PortMapping(protocol=9)],
    )
    with pytest.raises(InvalidArgument, match=r"port_mappings\[1\]\.protocol: 9"):
        v.validate("RunPodSandbox", api_pb2.RunPodSandboxRequest(config=cfg))


def test_id_length_limit():
    v.validate("StopContainer", api_pb2.StopContainerRequest(container_id="a" * v.MAX_ID_LENGTH))
    with pytest.raises(InvalidArgument, match="container_id: 257 characters"):
        v.validate("StopContainer", api_pb2.StopContainerRequest(container_id="a" * 257))


def test_string_limit_in_map_values():
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p"), annotations={"big": "x" * (v.MAX_STRING_LENGTH + 1)}
    )
    with pytest.raises(InvalidArgument, match=r"annotations\['big'\]"):
        v.validate("RunPodSandbox", api_pb2.RunPodSandboxRequest(config=cfg))


def test_long_map_key_is_refused():
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p"), labels={"k" * (v.MAX_STRING_LENGTH + 1): "v"}
    )
    with pytest.raises(InvalidArgument, match=r"config\.labels: a key longer than"):
        v.validate("RunPodSandbox", api_pb2.RunPodSandboxRequest(config=cfg))


def test_validation_does_not_load_descriptor_pb2():
    """Maps are found by their value's type; descriptor options would load descriptor.proto (~0.5 MiB)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pycrio.cri import api_pb2\n"
        "from pycrio.server import validate\n"
        "cfg = api_pb2.PodSandboxConfig(metadata=api_pb2.PodSandboxMetadata(name='p'), labels={'a': 'b'})\n"
        "validate.validate('RunPodSandbox', api_pb2.RunPodSandboxRequest(config=cfg))\n"
        "print('google.protobuf.descriptor_pb2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
