"""allowed_devices and the io.pycrio.devices annotation against a real daemon and runc: an allowed device
in the container and usable as permitted (device cgroup proven at open(2)), the pod's annotation for every
container, the container's winning, ContainerConfig.devices winning at the same path; refusals (not allowed,
the default empty list, malformed, missing on the host) before anything is made."""

from __future__ import annotations

import os

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_images import registry_daemon
from tests.e2e.test_pods import busybox_node, node  # noqa: F401 - the fixture
from tests.e2e.test_resources import assert_nothing_left, inside, make, refused

KEY = "io.pycrio.devices"
# The device operators allow (FUSE filesystems in pods). Where the host has none, /dev/loop-control
# (c 10:237) stands in: like /dev/fuse it is outside the device cgroup's default set (unlike /dev/net/tun,
# which every container may open), so its opening proves the rule pycrio added, and opening it does nothing.
DEVICE = "/dev/fuse" if os.path.exists("/dev/fuse") else "/dev/loop-control"
OTHER = "/dev/loop-control" if DEVICE == "/dev/fuse" else "/dev/full"  # a device that is not allowed
MISSING = "/dev/pycrio-no-such-device"


def numbers(path: str) -> tuple[int, int]:
    rdev = os.stat(path).st_rdev
    return os.major(rdev), os.minor(rdev)


@pytest.fixture
def allowed_node(daemon_factory, registry, busybox_image, tmpdir_short):
    """A node whose daemon allows DEVICE (named through a symlink: both sides are resolved) and MISSING."""
    if not os.path.exists(DEVICE):
        pytest.skip(f"neither /dev/fuse nor {DEVICE} on this host")
    link = os.path.join(tmpdir_short, "allowed-link")
    os.symlink(DEVICE, link)
    config = f'[pycrio.runtime]\nallowed_devices = ["{link}", "{MISSING}"]\n'
    with busybox_node(registry_daemon(daemon_factory, registry.host, config=config), registry.host) as n:
        yield n


def annotated(value: str) -> dict[str, str]:
    return {KEY: value}


def sh(node, cid: str, script: str) -> api_pb2.ExecSyncResponse:  # noqa: F811
    return node.exec(cid, ["sh", "-c", script])


def device_rules(node, cid: str) -> list[str]:  # noqa: F811
    path = "/sys/fs/cgroup/devices/devices.list"  # cgroup v1; v2 enforces with a BPF program
    return inside(node, cid, "cat", path).splitlines() if sh(node, cid, f"test -e {path}").exit_code == 0 else []


def test_an_allowed_device_is_in_the_container_and_opens_as_permitted(allowed_node):
    node = allowed_node  # noqa: F811
    major, minor = numbers(DEVICE)
    pod = node.pod()
    rw = make(node, pod, "rw", annotations=annotated(f"{DEVICE}:/dev/mine:rw"))
    assert inside(node, rw, "stat", "-c", "%F %t:%T", "/dev/mine") == f"character special file {major:x}:{minor:x}"
    # Opening, not reading or writing: the devices cgroup decides at open(2).
    r = sh(node, rw, ": < /dev/mine && : > /dev/mine")
    assert r.exit_code == 0, r
    rules = device_rules(node, rw)
    assert not rules or f"c {major}:{minor} rw" in rules, rules
    # Read only, and the default container path (the host's).
    ro = make(node, pod, "ro", annotations=annotated(f"{DEVICE}:r"))
    assert sh(node, ro, f": < {DEVICE}").exit_code == 0
    r = sh(node, ro, f": > {DEVICE}")
    assert r.exit_code != 0 and b"Operation not permitted" in r.stderr, r
    # A container without the annotation has no such device.
    plain = make(node, pod, "plain")
    assert sh(node, plain, f"test -e {DEVICE} || test -e /dev/mine").exit_code != 0


def test_the_pods_annotation_reaches_every_container_and_the_containers_wins(allowed_node):
    node = allowed_node  # noqa: F811
    major, minor = numbers(DEVICE)
    pod = node.pod(annotations=annotated(f"{DEVICE}:/dev/from-pod"))
    first, second = make(node, pod, "a"), make(node, pod, "b")
    for cid in (first, second):
        assert inside(node, cid, "stat", "-c", "%t:%T", "/dev/from-pod") == f"{major:x}:{minor:x}"
        assert sh(node, cid, ": < /dev/from-pod && : > /dev/from-pod").exit_code == 0
    own = make(node, pod, "own", annotations=annotated(f"{DEVICE}:/dev/from-container:r"))
    assert sh(node, own, "test -e /dev/from-pod").exit_code != 0
    assert sh(node, own, ": < /dev/from-container").exit_code == 0
    assert sh(node, own, ": > /dev/from-container").exit_code != 0
    none = make(node, pod, "none", annotations=annotated(""))  # set and empty: no device
    assert sh(node, none, "test -e /dev/from-pod").exit_code != 0


def test_container_config_devices_win_at_the_same_path(allowed_node):
    node = allowed_node  # noqa: F811
    pod = node.pod()
    devices = [api_pb2.Device(host_path="/dev/null", container_path="/dev/mine", permissions="rw")]
    cid = make(node, pod, "both", devices=devices, annotations=annotated(f"{DEVICE}:/dev/mine"))
    assert inside(node, cid, "stat", "-c", "%t:%T", "/dev/mine") == "1:3"
    major, minor = numbers(DEVICE)
    assert not any(rule.startswith(f"c {major}:{minor} ") for rule in device_rules(node, cid))


def test_refusals_leave_nothing(allowed_node):
    node = allowed_node  # noqa: F811
    pod = node.pod()
    cases = [
        (OTHER, grpc.StatusCode.PERMISSION_DENIED, [f"device {OTHER} is not allowed", "allowed_devices"]),
        (f"{DEVICE},{OTHER}:/dev/x", grpc.StatusCode.PERMISSION_DENIED, [f"device {OTHER} is not allowed"]),
        (MISSING, grpc.StatusCode.FAILED_PRECONDITION, [f"{MISSING} is allowed but does not exist"]),
        (f"{DEVICE}:/dev/x:rwx", grpc.StatusCode.INVALID_ARGUMENT, [f"entry '{DEVICE}:/dev/x:rwx'", "permissions"]),
        ("dev/fuse", grpc.StatusCode.INVALID_ARGUMENT, ["entry 'dev/fuse'", "must be absolute"]),
        (f"{DEVICE}:/a:r:x", grpc.StatusCode.INVALID_ARGUMENT, [f"entry '{DEVICE}:/a:r:x'", "expected host_path"]),
    ]
    for i, (value, code, words) in enumerate(cases):
        e = refused(lambda v=value, i=i: make(node, pod, f"d{i}", annotations=annotated(v)))
        assert e.code() == code and all(w in e.details() for w in words), (value, e.code(), e.details())
    assert_nothing_left(node, pod)
    # A pod whose annotation would be refused for each of its containers is refused itself.
    before = len(node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items)
    for value, code in ((OTHER, grpc.StatusCode.PERMISSION_DENIED), ("x:y", grpc.StatusCode.INVALID_ARGUMENT)):
        e = refused(lambda v=value: node.pod(annotations=annotated(v)))
        assert e.code() == code and KEY in e.details(), (e.code(), e.details())
    assert len(node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items) == before


def test_by_default_no_device_is_allowed(node):  # noqa: F811
    pod = node.pod()
    e = refused(lambda: make(node, pod, "d", annotations=annotated(DEVICE)))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED, (e.code(), e.details())
    assert f"device {DEVICE} is not allowed" in e.details() and "allowed_devices" in e.details(), e.details()
    assert_nothing_left(node, pod)
