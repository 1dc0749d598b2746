"""ContainerConfig.devices and mounts against a real daemon and runc: device cgroup permissions, mount
propagation across host and container, read-only, symlinked host paths, selinux_relabel, refusals."""

from __future__ import annotations

import os
import subprocess

import grpc
import pytest

from pycrio import native
from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401 - the fixture
from tests.e2e.test_resources import SLEEP, assert_nothing_left, inside, make, refused

LOOP = "/dev/loop-control"  # c 10:237: not among the devices every container may use, and harmless to open


def privileged_pod(node) -> str:  # noqa: F811
    """A pod like node.pod()'s whose security context is privileged (for a privileged container)."""
    node.count += 1
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"pod{node.count}", namespace="ns", uid=f"uid{node.count}"),
        log_directory=os.path.join(node.logs, str(node.count)),
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent=f"{node.cgroup_base}/pod{node.count}",
            security_context=api_pb2.LinuxSandboxSecurityContext(privileged=True),
        ),
    )
    node.last_pod_config = config
    return node.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=30).pod_sandbox_id


def sh(node, cid: str, script: str) -> api_pb2.ExecSyncResponse:  # noqa: F811
    return node.exec(cid, ["sh", "-c", script])


def mountpoints() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


# ---------------------------------------------------------------- devices


def test_device_permissions_are_enforced_by_the_device_cgroup(node):  # noqa: F811
    if not os.path.exists(LOOP):
        pytest.skip(f"{LOOP} is missing on this host")
    pod = node.pod()
    devices = [
        api_pb2.Device(host_path="/dev/null", container_path="/dev/mynull", permissions="rw"),
        api_pb2.Device(host_path=LOOP, container_path="/dev/lc-rw", permissions="rw"),
    ]
    cid = make(node, pod, "dev", devices=devices)
    assert inside(node, cid, "stat", "-c", "%F %t:%T", "/dev/mynull") == "character special file 1:3"
    assert sh(node, cid, "echo hello > /dev/mynull").exit_code == 0
    # Opening, not writing: the devices cgroup decides at open(2).
    assert sh(node, cid, ": < /dev/lc-rw && : > /dev/lc-rw").exit_code == 0
    assert "c 10:237 rw" in inside(node, cid, "cat", "/sys/fs/cgroup/devices/devices.list").splitlines()
    # Read-only: in a container of its own, as the device cgroup allows per device number, not per path.
    ro = make(node, pod, "ro", devices=[api_pb2.Device(host_path=LOOP, container_path="/dev/lc-r", permissions="r")])
    assert inside(node, ro, "stat", "-c", "%t:%T", "/dev/lc-r") == "a:ed"  # hex
    assert sh(node, ro, ": < /dev/lc-r").exit_code == 0
    r = sh(node, ro, ": > /dev/lc-r")
    assert r.exit_code != 0 and b"Operation not permitted" in r.stderr, r
    assert "c 10:237 r" in inside(node, ro, "cat", "/sys/fs/cgroup/devices/devices.list").splitlines()
    # A resource update (runc update rewrites the cgroup) keeps the device rules.
    node.rt.UpdateContainerResources(
        api_pb2.UpdateContainerResourcesRequest(
            container_id=ro, linux=api_pb2.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=64 << 20)
        ),
        timeout=30,
    )
    assert sh(node, ro, ": > /dev/lc-r").exit_code != 0 and sh(node, ro, ": < /dev/lc-r").exit_code == 0
    rules = inside(node, ro, "cat", "/sys/fs/cgroup/devices/devices.list").splitlines()
    assert "c 10:237 r" in rules and "a *:* rwm" not in rules, rules

    # A device that was not asked for is not there, and a node made for it cannot be opened.
    other = make(node, pod, "nodev", security_context=api_pb2.LinuxContainerSecurityContext(
        capabilities=api_pb2.Capability(add_capabilities=["MKNOD"]),
        namespace_options=api_pb2.NamespaceOption(pid=api_pb2.CONTAINER),
    ))  # fmt: skip
    assert sh(node, other, "test -e /dev/loop-control").exit_code != 0
    assert sh(node, other, "mknod /tmp/k c 10 237").exit_code == 0  # "m" is allowed for every device
    r = sh(node, other, ": < /tmp/k")
    assert r.exit_code != 0 and b"Operation not permitted" in r.stderr, r


def test_a_device_directory_brings_every_device_under_it(node, tmpdir_short):  # noqa: F811
    host = os.path.join(tmpdir_short, "devs")
    os.makedirs(os.path.join(host, "sub"))
    os.mknod(os.path.join(host, "a"), 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(os.path.join(host, "sub", "b"), 0o666 | 0o020000, os.makedev(1, 5))
    with open(os.path.join(host, "not-a-device"), "w"):
        pass
    pod = node.pod()
    cid = make(node, pod, "d", devices=[api_pb2.Device(host_path=host, container_path="/dev/mine", permissions="r")])
    out = inside(node, cid, "stat", "-c", "%n %t:%T", "/dev/mine/a", "/dev/mine/sub/b")
    assert out.splitlines() == ["/dev/mine/a 1:3", "/dev/mine/sub/b 1:5"]
    assert sh(node, cid, "test -e /dev/mine/not-a-device").exit_code != 0


def test_device_refusals_leave_nothing(node):  # noqa: F811
    pod = node.pod()
    cases = [
        (api_pb2.Device(host_path="/dev/no-such-device", container_path="/dev/x"), "/dev/no-such-device"),
        (api_pb2.Device(host_path="/etc/hostname", container_path="/dev/x"), "not a character or block device"),
        (api_pb2.Device(host_path="/dev/null", container_path="/dev/x", permissions="rwx"), "permissions 'rwx'"),
        (api_pb2.Device(host_path="/dev/null", container_path="/dev/x", permissions="rr"), "permissions 'rr'"),
        (api_pb2.Device(host_path="/dev/null", container_path="dev/x"), "paths must be absolute"),
    ]
    for i, (device, words) in enumerate(cases):
        e = refused(lambda d=device, i=i: make(node, pod, f"d{i}", devices=[d]))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.details(), (words, e.details())
    assert_nothing_left(node, pod)


# ---------------------------------------------------------------- mounts


@pytest.fixture
def shared_dir(tmpdir_short):
    """A directory in a tmpfs made rshared on the host (propagation needs a shared source); unmounted after."""
    top = os.path.join(tmpdir_short, "shared")
    os.makedirs(top)
    native.mount_tmpfs(top, "size=4m")
    subprocess.run(["mount", "--make-rshared", top], check=True)
    vol = os.path.join(top, "vol")
    os.makedirs(vol)
    yield vol
    for point in sorted((p for p in mountpoints() if p.startswith(top + "/")), key=len, reverse=True):
        native.unmount(point, native.UNMOUNT_DETACH)
    native.unmount(top, native.UNMOUNT_DETACH)


def test_mount_propagation_between_host_and_container(node, shared_dir):  # noqa: F811
    for name in ("from-host", "from-container"):
        os.mkdir(os.path.join(shared_dir, name))
    pod = privileged_pod(node)
    mounts = [
        api_pb2.Mount(host_path=shared_dir, container_path="/private", propagation=api_pb2.PROPAGATION_PRIVATE),
        api_pb2.Mount(host_path=shared_dir, container_path="/slave", propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER),
        api_pb2.Mount(host_path=shared_dir, container_path="/shared", propagation=api_pb2.PROPAGATION_BIDIRECTIONAL),
    ]
    privileged = api_pb2.LinuxContainerSecurityContext(
        privileged=True, namespace_options=api_pb2.NamespaceOption(pid=api_pb2.CONTAINER)
    )
    cid = make(node, pod, "prop", mounts=mounts, security_context=privileged)

    # A tmpfs the host mounts after the start reaches rslave and rshared, not rprivate.
    from_host = os.path.join(shared_dir, "from-host")
    native.mount_tmpfs(from_host, "size=1m")
    with open(os.path.join(from_host, "marker"), "w") as f:
        f.write("host\n")
    assert inside(node, cid, "cat", "/slave/from-host/marker") == "host"
    assert inside(node, cid, "cat", "/shared/from-host/marker") == "host"
    assert sh(node, cid, "test -e /private/from-host/marker").exit_code != 0

    # A tmpfs the container mounts under the bidirectional mount reaches the host (and the rslave copy).
    from_container = os.path.join(shared_dir, "from-container")
    assert sh(node, cid, "mount -t tmpfs -o size=1m x /shared/from-container").exit_code == 0
    assert sh(node, cid, "echo container > /shared/from-container/marker").exit_code == 0
    assert from_container in mountpoints()
    with open(os.path.join(from_container, "marker")) as f:
        assert f.read() == "container\n"
    assert inside(node, cid, "cat", "/slave/from-container/marker") == "container"
    assert sh(node, cid, "test -e /private/from-container/marker").exit_code != 0
    # ... and a mount made under the rslave copy stays in the container.
    assert sh(node, cid, "mount -t tmpfs -o size=1m y /slave/from-host").exit_code == 0
    assert sorted(p for p in mountpoints() if p.startswith(shared_dir + "/")) == [from_container, from_host]

    # The host unmounts both; the bidirectional and slave copies go too.
    native.unmount(from_container)
    native.unmount(from_host)
    assert sh(node, cid, "grep -q ' /shared/from-container ' /proc/self/mountinfo").exit_code != 0
    assert sh(node, cid, "grep -q ' /shared/from-host ' /proc/self/mountinfo").exit_code != 0


def test_propagation_needs_a_propagating_host_mount(node, tmpdir_short, shared_dir):  # noqa: F811
    private = os.path.join(tmpdir_short, "private")
    os.makedirs(private)
    native.mount_tmpfs(private, "size=1m")
    subprocess.run(["mount", "--make-private", private], check=True)
    slave = os.path.join(tmpdir_short, "slave")
    os.makedirs(slave)
    subprocess.run(["mount", "--rbind", shared_dir, slave], check=True)
    subprocess.run(["mount", "--make-rslave", slave], check=True)
    try:
        pod = node.pod()
        cases = [
            (private, api_pb2.PROPAGATION_HOST_TO_CONTAINER, "to be shared or slave, and it is private"),
            (private, api_pb2.PROPAGATION_BIDIRECTIONAL, "to be shared, and it is private"),
            (slave, api_pb2.PROPAGATION_BIDIRECTIONAL, "to be shared, and it is slave"),
        ]
        for i, (path, propagation, words) in enumerate(cases):
            m = api_pb2.Mount(host_path=path, container_path="/m", propagation=propagation)
            e = refused(lambda m=m, i=i: make(node, pod, f"p{i}", mounts=[m]))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
            assert path in e.details() and words in e.details(), e.details()
        # A slave host mount is enough for host-to-container.
        m = api_pb2.Mount(host_path=slave, container_path="/m", propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER)
        cid = make(node, pod, "ok", mounts=[m])
        node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=30)
        assert_nothing_left(node, pod)
    finally:
        native.unmount(slave, native.UNMOUNT_DETACH)
        native.unmount(private, native.UNMOUNT_DETACH)


def test_readonly_symlink_and_selinux_relabel(node, tmpdir_short):  # noqa: F811
    target = os.path.join(tmpdir_short, "target")
    os.makedirs(target)
    with open(os.path.join(target, "file"), "w") as f:
        f.write("from the target\n")
    link = os.path.join(tmpdir_short, "link")
    os.symlink(target, link)
    relabel = not os.path.exists("/sys/fs/selinux")  # without SELinux, relabelling is a no-op
    mounts = [
        api_pb2.Mount(host_path=target, container_path="/ro", readonly=True),
        api_pb2.Mount(host_path=link, container_path="/via-link", selinux_relabel=relabel),
    ]
    pod = node.pod()
    cid = make(node, pod, "m", mounts=mounts)
    assert inside(node, cid, "cat", "/ro/file") == "from the target"
    r = sh(node, cid, "touch /ro/new")
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r
    assert not os.path.exists(os.path.join(target, "new"))
    # The symlink's target is mounted (not the link itself), read-write.
    assert inside(node, cid, "cat", "/via-link/file") == "from the target"
    assert sh(node, cid, "test -d /via-link && test ! -L /via-link").exit_code == 0
    assert sh(node, cid, "echo written > /via-link/new").exit_code == 0
    with open(os.path.join(target, "new")) as f:
        assert f.read() == "written\n"
    reported = {m.container_path: m for m in node.status(cid).mounts}
    assert reported["/ro"].readonly and not reported["/via-link"].readonly
    assert reported["/via-link"].selinux_relabel == relabel


def test_mount_refusals_leave_nothing(node, tmpdir_short):  # noqa: F811
    pod = node.pod()
    cases = [
        (api_pb2.Mount(host_path="/no/such/pycrio-dir", container_path="/x"), "/no/such/pycrio-dir"),
        (api_pb2.Mount(host_path=os.path.join(tmpdir_short, "dangling"), container_path="/x"), "dangling"),
        (api_pb2.Mount(host_path="relative/dir", container_path="/x"), "must be an absolute path"),
        (api_pb2.Mount(host_path=tmpdir_short, container_path="x"), "must be an absolute path"),
    ]
    os.symlink("/no/such/target", os.path.join(tmpdir_short, "dangling"))
    for i, (m, words) in enumerate(cases):
        e = refused(lambda m=m, i=i: make(node, pod, f"m{i}", command=SLEEP, mounts=[m]))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.details(), (words, e.details())
    assert_nothing_left(node, pod)
