"""AppArmor and SELinux requests through the daemon on this host (no AppArmor, no SELinux)."""
# ruff: noqa: F811  (tests take the imported node fixture by name)

from __future__ import annotations

import os

import grpc
import pytest

from pycrio import lsm
from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(
    lsm.apparmor_enabled() or lsm.selinux_enabled(), reason="for hosts without AppArmor and SELinux"
)
P = api_pb2.SecurityProfile


def _container_dirs(node) -> list[str]:
    path = os.path.join(node.d.runroot, "containers")
    return os.listdir(path) if os.path.isdir(path) else []


def test_confinement_this_host_cannot_give_is_refused_and_nothing_is_made(node):
    pod = node.pod()

    def create(name: str, sc: api_pb2.LinuxContainerSecurityContext) -> str:
        config = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=node.image),
            command=["true"],
            linux=api_pb2.LinuxContainerConfig(security_context=sc),
        )
        request = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=node.last_pod_config)
        return node.rt.CreateContainer(request, timeout=30).container_id

    for name, sc in [
        ("aa", api_pb2.LinuxContainerSecurityContext(apparmor=P(profile_type=P.Localhost, localhost_ref="deny-w"))),
        ("aa-legacy", api_pb2.LinuxContainerSecurityContext(apparmor_profile="localhost/deny-w")),
        ("se", api_pb2.LinuxContainerSecurityContext(selinux_options=api_pb2.SELinuxOption(type="container_t"))),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            create(name, sc)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
        assert "is not enabled on this host" in e.value.details(), e.value.details()
    assert node.rt.ListContainers(api_pb2.ListContainersRequest()).containers == []
    assert _container_dirs(node) == []
    # What the kubelet sends by default is fine.
    ok = api_pb2.LinuxContainerSecurityContext(apparmor=P(profile_type=P.RuntimeDefault))
    cid = create("default", ok)
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=30)
    assert node.wait_exit(cid).exit_code == 0


def test_a_pod_asking_for_selinux_labels_is_refused(node):
    selinux = api_pb2.SELinuxOption(user="system_u", type="spc_t")
    sc = api_pb2.LinuxSandboxSecurityContext(selinux_options=selinux)
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="labelled", namespace="ns", uid="u-labelled"),
        linux=api_pb2.LinuxPodSandboxConfig(security_context=sc),
    )
    with pytest.raises(grpc.RpcError) as e:
        node.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "pod: SELinux options (user=system_u, type=spc_t) requested" in e.value.details()
    assert node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []
