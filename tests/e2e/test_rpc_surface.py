"""Every CRI RPC answers: implemented ones work, the others say UNIMPLEMENTED with their name."""

from __future__ import annotations

import grpc
import pytest

from pycrio.cri import api_pb2

IMPLEMENTED = {
    "Version",
    "Status",
    "RuntimeConfig",
    "UpdateRuntimeConfig",
    "PullImage",
    "ImageStatus",
    "ListImages",
    "StreamImages",
    "RemoveImage",
    "ImageFsInfo",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "StreamPodSandboxes",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ContainerStatus",
    "ListContainers",
    "StreamContainers",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ReopenContainerLog",
    "UpdateContainerResources",
    "UpdatePodSandboxResources",
    "GetContainerEvents",
    "ContainerStats",
    "ListContainerStats",
    "StreamContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "StreamPodSandboxStats",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "StreamPodSandboxMetrics",
}


def _methods():
    for service in api_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            yield service, method


@pytest.fixture
def channel(daemon):
    return grpc.insecure_channel(f"unix:{daemon.socket}")


def _call(channel, service, method, request):
    path = f"/{service.full_name}/{method.name}"
    response_type = getattr(api_pb2, method.output_type.name)
    if method.server_streaming:
        call = channel.unary_stream(
            path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_type.FromString
        )
        return list(call(request, timeout=5))
    call = channel.unary_unary(
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_type.FromString
    )
    return call(request, timeout=5)


def test_every_unimplemented_rpc_says_so_by_name(daemon, channel):
    seen = 0
    for service, method in _methods():
        if method.name in IMPLEMENTED:
            continue
        request = getattr(api_pb2, method.input_type.name)()
        with pytest.raises(grpc.RpcError) as info:
            _call(channel, service, method, request)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, method.name
        assert f"{service.name}.{method.name}" in info.value.details()
        seen += 1
    assert seen == 41 - len(IMPLEMENTED)
    # The daemon is still healthy afterwards.
    assert daemon.runtime.Version(api_pb2.VersionRequest()).runtime_name == "pycrio"


def test_unknown_method_is_unimplemented(channel):
    call = channel.unary_unary("/runtime.v1.RuntimeService/NoSuchThing")
    with pytest.raises(grpc.RpcError) as info:
        call(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_malformed_request_bytes_are_refused(daemon, channel):
    call = channel.unary_unary("/runtime.v1.RuntimeService/Version")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff\xff\x0f garbage", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed VersionRequest" in info.value.details()
    assert daemon.runtime.Version(api_pb2.VersionRequest()).runtime_name == "pycrio"


def test_oversized_message_is_resource_exhausted(daemon, channel):
    call = channel.unary_unary("/runtime.v1.RuntimeService/Version", request_serializer=lambda m: m.SerializeToString())
    huge = api_pb2.VersionRequest(version="x" * (17 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as info:
        call(huge, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_oversized_string_is_invalid_argument(daemon):
    with pytest.raises(grpc.RpcError) as info:
        daemon.runtime.Version(api_pb2.VersionRequest(version="v" * (2 << 20)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "VersionRequest.version" in info.value.details()
