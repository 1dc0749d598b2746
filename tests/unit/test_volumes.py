"""pycrio/volumes.py: staged recursive read-only binds and image volumes, sub paths resolved inside the image."""

from __future__ import annotations

import errno
import os

import pytest

from pycrio import native, volumes
from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument, NotFound


def _mount_points(under: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == under or p.startswith(under.rstrip("/") + "/")]


class FakeImages:
    """The part of Images that volumes uses: find(), store.get() and layers.diff()."""

    def __init__(self, base, layers: dict[str, dict[str, str]]):
        self.base = base
        self.chains = list(layers)  # bottom first, as ImageRecord.layers
        for chain, files in layers.items():
            for name, content in files.items():
                path = base / chain / "diff" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if content.startswith("->"):
                    os.symlink(content[2:], path)
                else:
                    path.write_text(content)
        record = type("Record", (), {"id": "sha256:" + "b" * 64, "layers": self.chains})()
        self.store = type("Store", (), {"get": lambda _, image_id: record if image_id == record.id else None})()
        self.layers = type("Layers", (), {"diff": lambda _, chain: str(base / chain / "diff")})()
        self.record = record

    def find(self, name):
        return self.record if name == "data:1" else None


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "bundle"
    path.mkdir()
    yield str(path)
    volumes.unstage(str(path))
    assert _mount_points(str(path)) == []


def image_mount(sub="", readonly=True, name="data:1"):
    return api_pb2.Mount(
        container_path="/data", readonly=readonly, image=api_pb2.ImageSpec(image=name), image_sub_path=sub
    )


def test_kernel_release_decides_recursive_read_only():
    assert volumes.recursive_read_only_supported("5.12.0")
    assert volumes.recursive_read_only_supported("6.1.0-18-amd64")
    assert not volumes.recursive_read_only_supported("5.11.22")
    assert not volumes.recursive_read_only_supported("4.19.0")
    assert not volumes.recursive_read_only_supported("weird")


def test_resolve_in_root_clamps_symlinks_to_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc" / "conf.d").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("x")
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../etc", root / "climb")
    os.symlink("etc/conf.d", root / "rel")
    os.symlink("loop", root / "loop")
    resolve = volumes.resolve_in_root
    assert resolve(str(root), "abs/passwd") == "etc/passwd"
    assert resolve(str(root), "climb") == "etc"
    assert resolve(str(root), "rel/../passwd") == "etc/passwd"  # ".." after a link: from its target
    assert resolve(str(root), "./etc//conf.d/") == "etc/conf.d"
    assert resolve(str(root), ".") == ""
    with pytest.raises(FileNotFoundError):
        resolve(str(root), "etc/missing")
    with pytest.raises(NotADirectoryError):
        resolve(str(root), "etc/passwd/x")
    with pytest.raises(OSError) as info:
        resolve(str(root), "loop")
    assert info.value.errno == errno.ELOOP


def test_nothing_to_stage_makes_nothing(bundle, tmp_path):
    assert volumes.stage([api_pb2.Mount(host_path=str(tmp_path), container_path="/x")], bundle, None) == {}
    assert not os.path.exists(os.path.join(bundle, volumes.VOLUMES_DIR))


def test_recursive_read_only_stages_a_read_only_tree(bundle, tmp_path):
    host = tmp_path / "host"
    sub = host / "tmpfs"
    sub.mkdir(parents=True)
    native.mount_tmpfs(str(sub), "size=1m")
    try:
        m = api_pb2.Mount(host_path=str(host), container_path="/mnt", readonly=True, recursive_read_only=True)
        plain = api_pb2.Mount(host_path=str(host), container_path="/plain")
        sources = volumes.stage([plain, m], bundle, None)
        assert sources == {1: os.path.join(bundle, "volumes", "1")}
        for path in (sources[1], os.path.join(sources[1], "tmpfs")):
            with pytest.raises(OSError) as info:
                open(os.path.join(path, "f"), "w").close()
            assert info.value.errno == errno.EROFS
        (sub / "f").write_text("the source stays writable")
        assert volumes.unstage(bundle) == 1
        assert _mount_points(bundle) == [] and not os.path.exists(os.path.join(bundle, "volumes"))
    finally:
        native.unmount(str(sub), native.UNMOUNT_DETACH)


def test_recursive_read_only_of_a_file(bundle, tmp_path):
    host = tmp_path / "file"
    host.write_text("hello")
    m = api_pb2.Mount(host_path=str(host), container_path="/f", readonly=True, recursive_read_only=True)
    source = volumes.stage([m], bundle, None)[0]
    with open(source) as f:
        assert f.read() == "hello"
    with pytest.raises(OSError):
        open(source, "a").close()


def test_refusals_come_before_any_mount(bundle, tmp_path):
    good = api_pb2.Mount(host_path=str(tmp_path), container_path="/a", readonly=True, recursive_read_only=True)
    bad = api_pb2.Mount(host_path=str(tmp_path), container_path="/b", recursive_read_only=True)
    with pytest.raises(InvalidArgument, match="needs readonly"):
        volumes.stage([good, bad], bundle, None)
    assert _mount_points(bundle) == []
    missing = api_pb2.Mount(host_path="/no/such/dir", container_path="/c", readonly=True, recursive_read_only=True)
    with pytest.raises(InvalidArgument, match="/no/such/dir"):
        volumes.stage([missing], bundle, None)


def test_image_volume_of_several_layers_is_a_read_only_overlay(bundle, tmp_path):
    images = FakeImages(
        tmp_path / "layers",
        {"l0": {"etc/passwd": "base", "bin/tool": "v1"}, "l1": {"bin/tool": "v2", "etc/link": "->/bin"}},
    )
    mounts = [image_mount()]
    volumes.resolve_images(mounts, images)
    assert mounts[0].image.image_ref == images.record.id
    root = volumes.stage(mounts, bundle, images)[0]
    with open(os.path.join(root, "bin", "tool")) as f:
        assert f.read() == "v2"  # the top layer wins
    with pytest.raises(OSError) as info:
        open(os.path.join(root, "new"), "w").close()
    assert info.value.errno == errno.EROFS
    assert _mount_points(bundle) == [root]


def test_image_volume_sub_path_resolved_inside_the_image(bundle, tmp_path):
    images = FakeImages(tmp_path / "layers", {"l0": {"etc/passwd": "base", "etc/link": "->/../../etc"}})
    source = volumes.stage([image_mount(sub="etc/link")], bundle, images)[0]
    assert source == os.path.join(bundle, "volumes", "0", "etc")  # a single layer: a read-only bind
    assert sorted(os.listdir(source)) == ["link", "passwd"]


def test_image_volume_missing_sub_path_or_image(bundle, tmp_path):
    images = FakeImages(tmp_path / "layers", {"l0": {"etc/passwd": "x"}})
    with pytest.raises(InvalidArgument, match="image_sub_path 'not-existing' does not exist in image data:1"):
        volumes.stage([image_mount(sub="not-existing")], bundle, images)
    volumes.unstage(bundle)
    with pytest.raises(NotFound, match="image 'other:2' not found"):
        volumes.resolve_images([image_mount(name="other:2")], images)
    with pytest.raises(InvalidArgument, match="must be readonly"):
        volumes.resolve_images([image_mount(readonly=False)], images)


def test_unstage_without_volumes_is_a_no_op(tmp_path):
    assert volumes.unstage(str(tmp_path)) == 0
