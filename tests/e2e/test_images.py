"""The ImageService against a real daemon and a real registry: pull, status, list, remove, usage."""

from __future__ import annotations

import concurrent.futures
import json
import os
import stat

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.support.images import LayerBuilder, build_image, build_index, busybox_layer, goarch
from tests.support.push import push_image, push_index


def registries_conf(registry_host: str, extra: str = "") -> str:
    return (
        f'unqualified-search-registries = ["{registry_host}"]\n'
        f'[[registry]]\nlocation = "{registry_host}"\ninsecure = true\n' + extra
    )


def registry_daemon(daemon_factory, registry_host: str, config: str = "", log_level: str = "info"):
    """A started daemon whose registries.conf trusts registry_host (plain http) and searches it."""
    d = daemon_factory()
    os.makedirs(d.base, exist_ok=True)
    conf = os.path.join(d.base, "registries.conf")
    with open(conf, "w") as f:
        f.write(registries_conf(registry_host))
    if config:
        d.write_config(config)
    d.extra_args = ["--registries-conf", conf, "--log-level", log_level]
    return d.start()


@pytest.fixture
def image_daemon(daemon_factory, registry):
    """A daemon whose registries.conf trusts the test registry (plain http) and searches it."""
    d = registry_daemon(daemon_factory, registry.host, log_level="debug")
    yield d
    assert d.stop() == 0, d.log()


def pull(d, name: str, auth: api_pb2.AuthConfig | None = None, timeout: float = 30) -> str:
    request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=name))
    if auth is not None:
        request.auth.CopyFrom(auth)
    return d.image.PullImage(request, timeout=timeout).image_ref


def status(d, name: str, verbose: bool = False) -> api_pb2.ImageStatusResponse:
    return d.image.ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=name), verbose=verbose))


def listed(d) -> list[api_pb2.Image]:
    return list(d.image.ListImages(api_pb2.ListImagesRequest()).images)


def remove(d, name: str) -> None:
    d.image.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=name)))


def layer_dirs(d) -> list[str]:
    root = os.path.join(d.root, "layers")
    return sorted(n for n in os.listdir(root) if n != "tmp")


def leftovers(d) -> list[str]:
    return os.listdir(os.path.join(d.root, "layers", "tmp")) + os.listdir(os.path.join(d.root, "blobs", "tmp"))


def test_pull_status_list_and_remove(image_daemon, registry, busybox_image):
    d = image_daemon
    name = f"{registry.host}/test/busybox:latest"
    image_id = pull(d, name)
    assert image_id == busybox_image.config_blob.digest
    image = status(d, name).image
    assert image.id == image_id
    assert list(image.repo_tags) == [name]
    assert list(image.repo_digests) == [f"{registry.host}/test/busybox@{busybox_image.manifest_digest}"]
    assert image.size > 0
    assert image.spec.image == image_id
    assert not image.pinned
    # The layer is extracted: busybox is there with its mode.
    (chain,) = layer_dirs(d)
    busybox = os.path.join(d.root, "layers", chain, "diff", "bin", "busybox")
    assert os.stat(busybox).st_mode & 0o111
    # Lookups by id, bare hex, id prefix and digest find the same image.
    for spec in (
        image_id,
        image_id[7:],
        image_id[7:19],
        f"{registry.host}/test/busybox@{busybox_image.manifest_digest}",
    ):
        assert status(d, spec).image.id == image_id, spec
    assert [i.id for i in listed(d)] == [image_id]
    verbose = status(d, name, verbose=True)
    info = json.loads(verbose.info["info"])
    assert info["manifestDigest"] == busybox_image.manifest_digest
    assert info["imageSpec"]["rootfs"]["diff_ids"] == [busybox_image.layers[0].diff_id]
    remove(d, name)
    assert listed(d) == []
    assert not status(d, name).HasField("image")
    assert layer_dirs(d) == []
    assert os.listdir(os.path.join(d.root, "blobs", "sha256")) == []
    remove(d, name)  # not found is not an error


def test_absent_image_status_is_empty_not_an_error(image_daemon):
    resp = status(image_daemon, "docker.io/library/never-pulled:1")
    assert not resp.HasField("image")


def test_short_name_uses_search_registries(image_daemon, registry, busybox_image):
    push_image(registry.host, "shortname", "v1", busybox_image)
    image_id = pull(image_daemon, "shortname:v1")
    assert image_id == busybox_image.config_blob.digest
    assert list(status(image_daemon, "shortname:v1").image.repo_tags) == [f"{registry.host}/shortname:v1"]


def test_pull_by_digest_and_tag_plus_digest(image_daemon, registry, busybox_image):
    by_digest = f"{registry.host}/test/busybox@{busybox_image.manifest_digest}"
    assert pull(image_daemon, by_digest) == busybox_image.config_blob.digest
    image = status(image_daemon, by_digest).image
    assert list(image.repo_tags) == []
    assert list(image.repo_digests) == [by_digest]
    both = f"{registry.host}/test/busybox:latest@{busybox_image.manifest_digest}"
    pull(image_daemon, both)
    assert list(status(image_daemon, by_digest).image.repo_tags) == [f"{registry.host}/test/busybox:latest"]


def test_multi_layer_image_with_every_entry_type(image_daemon, registry):
    base = (
        LayerBuilder()
        .file("etc/conf", b"old", mode=0o644)
        .dir("var/cache", mode=0o755)
        .file("var/cache/a", b"a")
        .file("bin/tool", b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0)
        .build("gzip")
    )
    long_name = "deep/" + "n" * 150 + "/file"
    top = (
        LayerBuilder()
        .whiteout("etc/conf")
        .opaque("var/cache")
        .file("var/cache/b", b"b", uid=1234, gid=5678)
        .file(long_name, b"long")
        .file("data/orig", b"linked")
        .hardlink("data/link", "data/orig")
        .symlink("data/sym", "../etc/passwd")
        .char_device("dev/null2", 1, 3)
        .fifo("run/fifo")
        .build("zstd")
    )
    plain = LayerBuilder().file("plain.txt", b"uncompressed").build("none")
    image = build_image([base, top, plain], config={"User": "1234:5678", "Cmd": ["sh"]})
    push_image(registry.host, "test/layered", "1", image)
    image_id = pull(image_daemon, f"{registry.host}/test/layered:1")
    assert status(image_daemon, image_id).image.uid.value == 1234
    dirs = {os.path.basename(p) for p in layer_dirs(image_daemon)}
    assert len(dirs) == 3
    top_dir = next(
        os.path.join(image_daemon.root, "layers", n, "diff")
        for n in dirs
        if os.path.exists(os.path.join(image_daemon.root, "layers", n, "diff", "data"))
    )
    whiteout = os.lstat(os.path.join(top_dir, "etc", "conf"))
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(os.path.join(top_dir, "var", "cache"), "trusted.overlay.opaque") == b"y"
    b = os.stat(os.path.join(top_dir, "var", "cache", "b"))
    assert (b.st_uid, b.st_gid) == (1234, 5678)
    with open(os.path.join(top_dir, long_name), "rb") as f:
        assert f.read() == b"long"
    assert (
        os.stat(os.path.join(top_dir, "data", "orig")).st_ino == os.stat(os.path.join(top_dir, "data", "link")).st_ino
    )
    assert os.readlink(os.path.join(top_dir, "data", "sym")) == "../etc/passwd"
    assert stat.S_ISCHR(os.lstat(os.path.join(top_dir, "dev", "null2")).st_mode)
    assert stat.S_ISFIFO(os.lstat(os.path.join(top_dir, "run", "fifo")).st_mode)


def test_index_selects_the_host_platform(image_daemon, registry):
    host = build_image([busybox_layer()], architecture=goarch(), labels={"which": "host"})
    other_arch = "arm64" if goarch() != "arm64" else "amd64"
    other = build_image([LayerBuilder().file("other", b"x").build()], architecture=other_arch)
    index = build_index([other, host])
    push_index(registry.host, "test/multiarch", "1", index)
    image_id = pull(image_daemon, f"{registry.host}/test/multiarch:1")
    assert image_id == host.config_blob.digest
    assert list(status(image_daemon, image_id).image.repo_digests) == [f"{registry.host}/test/multiarch@{index.digest}"]


def test_shared_layers_are_kept_until_the_last_image_goes(image_daemon, registry, busybox_image):
    extra = LayerBuilder().file("extra", b"x").build()
    second = build_image([busybox_image.layers[0], extra])
    push_image(registry.host, "test/second", "1", second)
    pull(image_daemon, f"{registry.host}/test/busybox:latest")
    pull(image_daemon, f"{registry.host}/test/second:1")
    assert len(layer_dirs(image_daemon)) == 2  # busybox's layer is shared
    remove(image_daemon, f"{registry.host}/test/busybox:latest")
    assert len(layer_dirs(image_daemon)) == 2
    remove(image_daemon, second.config_blob.digest)
    assert layer_dirs(image_daemon) == []


def test_remove_by_id_removes_every_tag(image_daemon, registry, busybox_image):
    push_image(registry.host, "test/tags", "a", busybox_image)
    push_image(registry.host, "test/tags", "b", busybox_image)
    pull(image_daemon, f"{registry.host}/test/tags:a")
    pull(image_daemon, f"{registry.host}/test/tags:b")
    image = status(image_daemon, f"{registry.host}/test/tags:a").image
    assert sorted(image.repo_tags) == [f"{registry.host}/test/tags:a", f"{registry.host}/test/tags:b"]
    remove(image_daemon, image.id)
    assert listed(image_daemon) == []


def test_concurrent_pulls_share_one_download(daemon_factory, registry, fault_proxy, busybox_image):
    proxy = fault_proxy()
    d = registry_daemon(daemon_factory, proxy.host)
    name = f"{proxy.host}/test/busybox:latest"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: pull(d, name), range(4)))
    assert set(ids) == {busybox_image.config_blob.digest}
    layer_gets = [r for r in proxy.blob_gets() if busybox_image.layers[0].digest in r.path]
    assert len(layer_gets) == 1, [r.path for r in proxy.blob_gets()]
    assert d.stop() == 0


def test_image_fs_info_tracks_usage(image_daemon, registry, busybox_image):
    def usage():
        resp = image_daemon.image.ImageFsInfo(api_pb2.ImageFsInfoRequest())
        (fs,) = resp.image_filesystems
        assert fs.fs_id.mountpoint == image_daemon.root and fs.timestamp > 0
        assert len(resp.container_filesystems) == 1
        return fs.used_bytes.value, fs.inodes_used.value

    assert usage() == (0, 0)
    pull(image_daemon, f"{registry.host}/test/busybox:latest")
    used, inodes = usage()
    assert used > os.path.getsize("/bin/busybox") and inodes > 10
    remove(image_daemon, f"{registry.host}/test/busybox:latest")
    assert usage() == (0, 0)


def test_pinned_images(daemon_factory, registry, busybox_image):
    d = registry_daemon(
        daemon_factory, registry.host, f'[pycrio.image]\npinned_images = ["{registry.host}/test/busy*"]\n'
    )
    pull(d, f"{registry.host}/test/busybox:latest")
    assert status(d, f"{registry.host}/test/busybox:latest").image.pinned
    assert d.stop() == 0


def test_stream_images(image_daemon, registry, busybox_image):
    pull(image_daemon, f"{registry.host}/test/busybox:latest")
    batches = list(image_daemon.image.StreamImages(api_pb2.StreamImagesRequest()))
    assert [i.id for b in batches for i in b.images] == [busybox_image.config_blob.digest]


def test_list_filter(image_daemon, registry, busybox_image):
    pull(image_daemon, f"{registry.host}/test/busybox:latest")
    spec = api_pb2.ImageSpec(image=f"{registry.host}/test/busybox:latest")
    found = image_daemon.image.ListImages(api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec))).images
    assert len(found) == 1
    spec = api_pb2.ImageSpec(image=f"{registry.host}/test/other:latest")
    assert not image_daemon.image.ListImages(api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec))).images


def test_missing_image_is_not_found(image_daemon, registry):
    with pytest.raises(grpc.RpcError) as info:
        pull(image_daemon, f"{registry.host}/test/nothing-here:1")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nothing-here" in info.value.details()


def test_bad_names_are_invalid_argument(image_daemon):
    for bad in ["upper/CASE:1", "x:tag with space", "x@sha256:1234", "a//b"]:
        with pytest.raises(grpc.RpcError) as info:
            pull(image_daemon, bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
