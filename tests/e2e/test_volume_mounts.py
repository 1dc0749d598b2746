"""Recursive read-only mounts and image volumes against a real daemon and runc 1.1 (which knows neither)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import pytest

from pycrio import native
from pycrio.cri import api_pb2
from tests.e2e.test_images import pull
from tests.e2e.test_pods import node  # noqa: F401 - the fixture
from tests.support.images import LayerBuilder, build_image
from tests.support.push import push_image

SLEEP = ["sh", "-c", "while true; do sleep 1; done"]


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(path.rstrip("/") + "/")]


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.fixture
def host_dir_with_tmpfs(tmpdir_short):
    """A host directory holding a tmpfs submount at tmpfs/ (what critest's RRO specs use)."""
    host = os.path.join(tmpdir_short, "host")
    sub = os.path.join(host, "tmpfs")
    os.makedirs(sub)
    native.mount_tmpfs(sub, "size=1m")
    yield host
    native.unmount(sub, native.UNMOUNT_DETACH)


def test_status_advertises_recursive_read_only_for_every_handler(node):  # noqa: F811
    handlers = node.rt.Status(api_pb2.StatusRequest()).runtime_handlers
    assert handlers and handlers[0].name == ""
    assert all(h.features.recursive_read_only_mounts for h in handlers), handlers


def test_recursive_read_only_reaches_submounts_and_plain_read_only_does_not(node, host_dir_with_tmpfs):  # noqa: F811
    host = host_dir_with_tmpfs
    mounts = [
        api_pb2.Mount(host_path=host, container_path="/rro", readonly=True, recursive_read_only=True),
        api_pb2.Mount(host_path=host, container_path="/ro", readonly=True),
    ]
    pod = node.pod()
    cid = node.run(pod, SLEEP, mounts=mounts)
    r = node.exec(cid, ["touch", "/rro/tmpfs/file"])
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r
    r = node.exec(cid, ["touch", "/rro/top"])
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r
    assert node.exec(cid, ["touch", "/ro/tmpfs/file"]).exit_code == 0  # only the top is read-only
    assert os.path.exists(os.path.join(host, "tmpfs", "file"))
    assert node.exec(cid, ["touch", "/ro/top"]).exit_code != 0
    assert node.exec(cid, ["ls", "/rro/tmpfs/file"]).exit_code == 0  # the host's later write is seen
    # The container has its own copies: nothing stays staged on the host, and the host may take its
    # submount away and remove the directory while the container runs (what critest's RRO spec does).
    staged = os.path.join(node.d.runroot, "containers", cid, "volumes")
    assert _mounts_under(staged) == []
    native.unmount(os.path.join(host, "tmpfs"), native.UNMOUNT_DETACH)
    os.rmdir(os.path.join(host, "tmpfs"))
    os.mkdir(os.path.join(host, "tmpfs"))
    r = node.exec(cid, ["touch", "/rro/tmpfs/other"])
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r
    status_mounts = node.status(cid).mounts
    assert [(m.container_path, m.recursive_read_only) for m in status_mounts] == [("/rro", True), ("/ro", False)]
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0), timeout=30)
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=30)
    assert not any("/volumes/" in p for p in _mounts_under(node.d.base))
    assert not os.path.exists(staged)


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"readonly": True, "propagation": api_pb2.PROPAGATION_HOST_TO_CONTAINER}, "PROPAGATION_PRIVATE"),
        ({"readonly": True, "propagation": api_pb2.PROPAGATION_BIDIRECTIONAL}, "PROPAGATION_PRIVATE"),
        ({"readonly": False}, "needs readonly"),
    ],
)
def test_recursive_read_only_refusals(node, host_dir_with_tmpfs, kw, words):  # noqa: F811
    pod = node.pod()
    m = api_pb2.Mount(host_path=host_dir_with_tmpfs, container_path="/mnt", recursive_read_only=True, **kw)
    e = _error(lambda: node.container(pod, ["true"], mounts=[m]))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.details(), e.details()


def test_a_failed_create_unmounts_the_staged_volumes(node, host_dir_with_tmpfs):  # noqa: F811
    pod = node.pod()
    mounts = [
        api_pb2.Mount(host_path=host_dir_with_tmpfs, container_path="/rro", readonly=True, recursive_read_only=True),
        api_pb2.Mount(host_path="/no/such/pycrio-path", container_path="/x"),  # refused after the staging
    ]
    e = _error(lambda: node.container(pod, ["true"], mounts=mounts))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "/no/such/pycrio-path" in e.details()
    assert not any("/volumes/" in p for p in _mounts_under(node.d.base))
    assert node.rt.ListContainers(api_pb2.ListContainersRequest()).containers == []


# ---------------------------------------------------------------- image volumes


@pytest.fixture
def data_image(node, registry):  # noqa: F811
    """A second image of two layers (the top one adds a sub dir and a symlink to it), pulled: (name, id)."""
    base = LayerBuilder().dir("data").file("data/hello", b"hi from the data image\n").dir("etc")
    base.file("etc/passwd", b"data:x:1:1::/:/bin/false\n")
    top = LayerBuilder().dir("data").dir("data/sub").file("data/sub/file", b"in the sub dir\n")
    top.symlink("link", "/../data/sub")
    image = build_image([base.build(), top.build()], {"Cmd": ["/nothing"]})
    push_image(registry.host, "test/data", "1", image)
    name = f"{registry.host}/test/data:1"
    return name, pull(node.d, name)


def _image_mount(path: str, image: str, sub: str = "", readonly: bool = True) -> api_pb2.Mount:
    return api_pb2.Mount(
        container_path=path, readonly=readonly, image=api_pb2.ImageSpec(image=image), image_sub_path=sub
    )


def test_image_volume_is_mounted_read_only_with_sub_paths(node, data_image):  # noqa: F811
    name, image_id = data_image
    pod = node.pod()
    mounts = [
        _image_mount("/vol", name),
        _image_mount("/sub", name, sub="link"),  # a symlink to /../data/sub, resolved inside the image
        _image_mount("/own", node.image, sub="bin"),  # the container's own image works too
    ]
    cid = node.run(pod, SLEEP, mounts=mounts)
    assert node.exec(cid, ["cat", "/vol/data/hello"]).stdout == b"hi from the data image\n"
    assert node.exec(cid, ["cat", "/vol/data/sub/file"]).stdout == b"in the sub dir\n"  # both layers
    assert node.exec(cid, ["cat", "/sub/file"]).stdout == b"in the sub dir\n"
    assert node.exec(cid, ["ls", "/sub/data"]).exit_code != 0  # the sub path, not the image's root
    assert node.exec(cid, ["/own/busybox", "true"]).exit_code == 0  # not noexec
    for path in ("/vol/x", "/vol/data/x", "/sub/x"):
        r = node.exec(cid, ["touch", path])
        assert r.exit_code != 0 and b"Read-only file system" in r.stderr, (path, r)
    reported = {m.container_path: m for m in node.status(cid).mounts}
    assert reported["/vol"].image.image == name and reported["/vol"].image.image_ref == image_id
    assert reported["/sub"].image_sub_path == "link" and reported["/sub"].image.image_ref == image_id
    assert reported["/own"].image.image_ref == node.status(cid).image_id

    # An image mounted as a volume is in use, like the image a container runs.
    spec = api_pb2.ImageSpec(image=name)
    e = _error(lambda: node.d.image.RemoveImage(api_pb2.RemoveImageRequest(image=spec)))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "used by a container" in e.details()
    staged = os.path.join(node.d.runroot, "containers", cid, "volumes")
    assert _mounts_under(staged) == []  # staged for runc create only
    node.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0), timeout=30)
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=30)
    assert _mounts_under(staged) == [] and not os.path.exists(staged)
    node.d.image.RemoveImage(api_pb2.RemoveImageRequest(image=spec))
    assert not node.d.image.ImageStatus(api_pb2.ImageStatusRequest(image=spec)).HasField("image")


def test_image_volume_refusals(node, data_image):  # noqa: F811
    name, _ = data_image
    pod = node.pod()
    cases = [
        (_image_mount("/v", name, readonly=False), grpc.StatusCode.INVALID_ARGUMENT, "must be readonly"),
        (_image_mount("/v", name.replace("data:1", "nothere:1")), grpc.StatusCode.NOT_FOUND, "nothere:1"),
        (_image_mount("/v", name, sub="not-existing"), grpc.StatusCode.INVALID_ARGUMENT, "'not-existing' does not"),
        (_image_mount("/v", name, sub="data/hello/x"), grpc.StatusCode.INVALID_ARGUMENT, "does not exist"),
        (_image_mount("/v", name, sub="../etc"), grpc.StatusCode.INVALID_ARGUMENT, "without '..'"),
        (_image_mount("/v", name, sub="/etc"), grpc.StatusCode.INVALID_ARGUMENT, "relative path"),
    ]
    for i, (m, code, words) in enumerate(cases):
        e = _error(lambda m=m, i=i: node.container(pod, ["true"], name=f"c{i}", mounts=[m]))
        assert e.code() == code and words in e.details(), (i, e.code(), e.details())
    assert not any("/volumes/" in p for p in _mounts_under(node.d.base))
    assert node.rt.ListContainers(api_pb2.ListContainersRequest()).containers == []


def test_busybox_layer_is_the_single_layer_case(node):  # noqa: F811
    # A single-layer image (busybox) is staged as a read-only bind of its layer, not an overlay.
    pod = node.pod()
    cid = node.run(pod, SLEEP, mounts=[_image_mount("/img", node.image)])
    assert node.exec(cid, ["/img/bin/busybox", "cat", "/img/etc/passwd"]).stdout.startswith(b"root:")
    assert node.exec(cid, ["touch", "/img/etc/x"]).exit_code != 0


# ---------------------------------------------------------------- crash, restart, wipe


def _volume_container(node, host: str, image: str) -> tuple[str, str]:  # noqa: F811
    mounts = [
        api_pb2.Mount(host_path=host, container_path="/rro", readonly=True, recursive_read_only=True),
        _image_mount("/img", image),
    ]
    cid = node.run(node.pod(), SLEEP, mounts=mounts)
    staged = os.path.join(node.d.runroot, "containers", cid, "volumes")
    assert _mounts_under(staged) == []  # staged for runc create only: the container holds its copies
    return cid, staged


def test_volumes_outlive_a_daemon_crash_and_go_at_removal(node, host_dir_with_tmpfs, data_image):  # noqa: F811
    cid, staged = _volume_container(node, host_dir_with_tmpfs, data_image[0])
    node.d.stop(signal.SIGKILL)
    node.d.start()
    assert node.exec(cid, ["cat", "/img/data/hello"]).stdout == b"hi from the data image\n"
    assert node.exec(cid, ["touch", "/rro/tmpfs/x"]).exit_code != 0
    node.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=30)
    assert _mounts_under(staged) == [] and not os.path.exists(staged)


def test_wipe_after_a_crash_leaves_no_mount(node, host_dir_with_tmpfs, data_image):  # noqa: F811
    _, staged = _volume_container(node, host_dir_with_tmpfs, data_image[0])
    node.d.stop(signal.SIGKILL)
    result = subprocess.run(
        [sys.executable, "-m", "pycrio.cli", "wipe", *node.d.args()], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert _mounts_under(node.d.base) == [] and not os.path.exists(staged)
    assert os.path.ismount(os.path.join(host_dir_with_tmpfs, "tmpfs"))  # the host's own mount stays
