"""Seccomp profiles against a real daemon, real runc and the busybox test image."""

from __future__ import annotations

import json

from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401  (the fixture)


def start(node, pod_id, name, profile=None, path="", add_caps=(), privileged=False):  # noqa: F811
    sc = api_pb2.LinuxContainerSecurityContext(
        privileged=privileged,
        seccomp_profile_path=path,
        capabilities=api_pb2.Capability(add_capabilities=list(add_caps)),
    )
    if profile is not None:
        sc.seccomp.CopyFrom(profile)
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=node.image),
        command=["sleep", "60"],
        log_path=f"{name}.log",
        linux=api_pb2.LinuxContainerConfig(security_context=sc),
    )
    request = api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=node.last_pod_config)
    cid = node.rt.CreateContainer(request, timeout=30).container_id
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=30)
    return cid


def seccomp_mode(node, cid):  # noqa: F811
    out = node.exec(cid, ["grep", "Seccomp:", "/proc/self/status"])
    assert out.exit_code == 0, out
    return out.stdout.decode().split()[1]


def test_runtime_default_filters_and_unconfined_does_not(node):  # noqa: F811
    pod = node.pod()
    default = start(node, pod, "d", api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.RuntimeDefault))
    assert seccomp_mode(node, default) == "2"
    assert node.exec(default, ["true"]).exit_code == 0
    assert node.exec(default, ["sh", "-c", "echo hi > /tmp/f && cat /tmp/f"]).stdout == b"hi\n"
    unshare = node.exec(default, ["/bin/busybox", "unshare", "-U", "true"])
    assert unshare.exit_code != 0 and b"not permitted" in unshare.stderr, unshare  # EPERM, not a missing applet
    mount = node.exec(default, ["mount", "-t", "tmpfs", "x", "/tmp"])
    assert mount.exit_code != 0 and b"permission denied" in mount.stderr, mount  # busybox's words for EPERM

    legacy = start(node, pod, "l", path="runtime/default")
    assert seccomp_mode(node, legacy) == "2"
    unconfined = start(node, pod, "u", api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined))
    assert seccomp_mode(node, unconfined) == "0"
    unset = start(node, pod, "n")
    assert seccomp_mode(node, unset) == "0"


def test_runtime_default_with_sys_admin_allows_mount(node):  # noqa: F811
    pod = node.pod()
    cid = start(
        node,
        pod,
        "a",
        api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.RuntimeDefault),
        add_caps=["SYS_ADMIN"],
    )
    assert seccomp_mode(node, cid) == "2"
    out = node.exec(cid, ["mount", "-t", "tmpfs", "x", "/tmp"])
    assert out.exit_code == 0, out


def test_localhost_profile_blocks_sethostname_even_with_sys_admin(node, tmp_path):  # noqa: F811
    profile = tmp_path / "block-hostname.json"
    rules = [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}))
    pod = node.pod()
    local = api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref=str(profile))
    cid = start(node, pod, "h", local, add_caps=["SYS_ADMIN"])
    out = node.exec(cid, ["hostname", "x"])
    assert out.exit_code != 0 and b"not permitted" in out.stderr, out
    free = start(node, pod, "f", add_caps=["SYS_ADMIN"])
    assert node.exec(free, ["hostname", "x"]).exit_code == 0


def test_localhost_missing_profile_is_invalid_argument(node):  # noqa: F811
    import grpc
    import pytest

    pod = node.pod()
    missing = api_pb2.SecurityProfile(
        profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref="/nonexistent/p.json"
    )
    with pytest.raises(grpc.RpcError) as e:
        start(node, pod, "m", missing)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/nonexistent/p.json" in e.value.details()


def test_seccomp_profile_roots_confine_localhost_profiles(daemon_factory, registry, busybox_image, tmp_path):
    """With seccomp_profile_roots set, a profile outside them (by path, or by a symlink inside
    pointing out) is refused before anything is made; one inside is applied."""
    import grpc
    import pytest

    from tests.e2e.test_images import registry_daemon
    from tests.e2e.test_pods import busybox_node

    root, outside = tmp_path / "profiles", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    doc = json.dumps(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}
    )
    (root / "ok.json").write_text(doc)
    (outside / "stray.json").write_text(doc)
    (root / "escape.json").symlink_to(outside / "stray.json")
    config = f'[pycrio.runtime]\nseccomp_profile_roots = ["{root}"]\n'
    with busybox_node(registry_daemon(daemon_factory, registry.host, config=config), registry.host) as n:
        pod = n.pod()

        def local(path):
            return api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref=str(path))

        for i, bad in enumerate((outside / "stray.json", root / "escape.json")):
            with pytest.raises(grpc.RpcError) as e:
                start(n, pod, f"bad{i}", local(bad))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "outside the allowed profile directories" in e.value.details(), e.value.details()
        assert not n.rt.ListContainers(api_pb2.ListContainersRequest()).containers
        cid = start(n, pod, "ok", local(root / "ok.json"), add_caps=["SYS_ADMIN"])
        assert seccomp_mode(n, cid) == "2"
        out = n.exec(cid, ["hostname", "x"])
        assert out.exit_code != 0 and b"not permitted" in out.stderr, out
