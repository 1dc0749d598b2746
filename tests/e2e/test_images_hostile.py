"""Pulls that must fail cleanly: lying registries, hostile layers, stalls, deadlines, crashes, auth."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import signal
import threading
import time

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_images import layer_dirs, leftovers, listed, pull, registry_daemon
from tests.support import tarcraft
from tests.support.fixtures import AUTH_PASSWORD, AUTH_USER
from tests.support.images import Blob, LayerBuilder, build_image, layer_media_type
from tests.support.push import push_image


def _assert_nothing_left(d) -> None:
    assert listed(d) == []
    assert layer_dirs(d) == []
    assert leftovers(d) == []
    assert os.listdir(os.path.join(d.root, "blobs", "sha256")) == []


def _raw_layer(tar: bytes) -> Blob:
    """A gzip layer from raw tar bytes (which tarfile would refuse to write)."""
    data = gzip.compress(tar, mtime=0)
    return Blob(data, layer_media_type("oci", "gzip"), "sha256:" + hashlib.sha256(tar).hexdigest(), "gzip")


def _pull_error(d, name: str, timeout: float = 30) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        pull(d, name, timeout=timeout)
    return info.value


@pytest.mark.parametrize(
    "tar",
    [
        tarcraft.entry("../escape", b"x") + tarcraft.end(),
        tarcraft.entry("/abs/../../escape2", b"x") + tarcraft.end(),
        tarcraft.entry("link", type=b"2", linkname="/tmp") + tarcraft.entry("link/pwned", b"x") + tarcraft.end(),
        tarcraft.entry("hard", type=b"1", linkname="../../../../etc/passwd") + tarcraft.end(),
        tarcraft.header("big", size=b"77777777777\0") + tarcraft.end(),
        tarcraft.entry("ok", b"x")[:700],  # truncated
    ],
    ids=["dotdot", "absolute", "symlink-escape", "hardlink-out", "oversized", "truncated"],
)
def test_hostile_layer_fails_or_stays_inside(daemon_factory, registry, tar):
    image = build_image([_raw_layer(tar)])
    push_image(registry.host, "hostile/layer", "1", image)
    d = registry_daemon(daemon_factory, registry.host)
    outside = ["/escape", "/escape2", "/tmp/pwned"]
    try:
        pull(d, f"{registry.host}/hostile/layer:1")
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), e.details()
        assert "layer" in e.details()
        _assert_nothing_left(d)
    else:
        # Tolerated only when everything landed inside the layer (e.g. "../escape" clamped to "/escape").
        (chain,) = layer_dirs(d)
        assert os.listdir(os.path.join(d.root, "layers", chain, "diff"))
    for path in outside:
        assert not os.path.exists(path), f"{path} written outside the layer"
    assert d.stop() == 0


def test_blob_digest_mismatch_is_refused(daemon_factory, registry, fault_proxy, busybox_image):
    proxy = fault_proxy(tamper_blobs=True)
    d = registry_daemon(daemon_factory, proxy.host)
    err = _pull_error(d, f"{proxy.host}/test/busybox:latest")
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    assert "hashing to sha256:" in err.details() or "digest mismatch" in err.details()
    _assert_nothing_left(d)
    assert d.stop() == 0


def test_diff_id_mismatch_is_refused(daemon_factory, registry):
    layer = LayerBuilder().file("a", b"a").build()
    lying = dataclasses.replace(layer, diff_id="sha256:" + "0" * 64)
    push_image(registry.host, "hostile/diffid", "1", build_image([lying]))
    d = registry_daemon(daemon_factory, registry.host)
    err = _pull_error(d, f"{registry.host}/hostile/diffid:1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config says" in err.details()
    _assert_nothing_left(d)
    assert d.stop() == 0


def test_layer_count_mismatch_is_refused(daemon_factory, registry):
    a, b = LayerBuilder().file("a", b"a").build(), LayerBuilder().file("b", b"b").build()
    image = build_image([a, b])
    broken = build_image([a], config={})  # config lists one diff id ...
    mixed = dataclasses.replace(broken, layers=[a, b])
    manifest = dict(image.manifest)
    manifest["config"] = broken.config_blob.descriptor()
    mixed = dataclasses.replace(mixed, manifest_bytes=json.dumps(manifest).encode())
    push_image(registry.host, "hostile/count", "1", mixed)
    d = registry_daemon(daemon_factory, registry.host)
    err = _pull_error(d, f"{registry.host}/hostile/count:1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "diff ids" in err.details()
    _assert_nothing_left(d)
    assert d.stop() == 0


def test_stalled_download_hits_the_progress_timeout(daemon_factory, registry, fault_proxy, busybox_image):
    proxy = fault_proxy(stall_after=1000)
    d = registry_daemon(daemon_factory, proxy.host, "[pycrio.image]\npull_progress_timeout = 1\n")
    started = time.monotonic()
    err = _pull_error(d, f"{proxy.host}/test/busybox:latest")
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "1 s" in err.details()  # "made no progress for 1 s" or "no answer within 1 s"
    assert time.monotonic() - started < 10
    _assert_nothing_left(d)
    assert d.stop() == 0


def test_rpc_deadline_is_honoured(daemon_factory, registry, fault_proxy, busybox_image):
    proxy = fault_proxy(stall_after=1000)
    d = registry_daemon(daemon_factory, proxy.host)
    started = time.monotonic()
    err = _pull_error(d, f"{proxy.host}/test/busybox:latest", timeout=1.0)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    # The daemon stays healthy and stops promptly with the pull still stalled.
    assert d.runtime.Version(api_pb2.VersionRequest()).runtime_name == "pycrio"
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 5.0


def test_kill9_mid_pull_leaves_no_half_image(daemon_factory, registry, fault_proxy, busybox_image):
    proxy = fault_proxy(stall_after=100_000)
    d = registry_daemon(daemon_factory, proxy.host)
    caller = threading.Thread(target=lambda: _pull_error(d, f"{proxy.host}/test/busybox:latest", timeout=20))
    caller.start()
    deadline = time.monotonic() + 10
    while not leftovers(d) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert leftovers(d), "the pull never started writing"
    d.stop(signal.SIGKILL)
    caller.join(10)
    d.start()
    _assert_nothing_left(d)
    assert "recovered image storage" in d.log()
    assert d.stop() == 0


def test_basic_auth_with_cri_auth_config(daemon_factory, auth_registry, busybox_image):
    push_image(auth_registry.host, "private/busybox", "1", busybox_image, creds=(AUTH_USER, AUTH_PASSWORD))
    d = registry_daemon(daemon_factory, auth_registry.host, log_level="debug")
    name = f"{auth_registry.host}/private/busybox:1"
    err = _pull_error(d, name)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    wrong = api_pb2.AuthConfig(username=AUTH_USER, password="wrong-password")
    with pytest.raises(grpc.RpcError) as info:
        pull(d, name, auth=wrong)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    auth = api_pb2.AuthConfig(username=AUTH_USER, password=AUTH_PASSWORD)
    assert pull(d, name, auth=auth) == busybox_image.config_blob.digest
    log = d.log()
    assert "PullImage request" in log
    assert AUTH_PASSWORD not in log and "wrong-password" not in log, "credentials leaked into the log"
    assert d.stop() == 0


def test_mirror_down_falls_back_to_the_next(daemon_factory, registry, busybox_image):
    d = daemon_factory()
    os.makedirs(d.base, exist_ok=True)
    conf = os.path.join(d.base, "registries.conf")
    with open(conf, "w") as f:
        f.write(
            '[[registry]]\nprefix = "docker.io/mirrored"\nlocation = "127.0.0.1:1/nowhere"\ninsecure = true\n'
            '[[registry.mirror]]\nlocation = "127.0.0.1:1"\ninsecure = true\n'
            f'[[registry.mirror]]\nlocation = "{registry.host}/test"\ninsecure = true\n'
        )
    d.extra_args = ["--registries-conf", conf]
    d.start()
    image_id = pull(d, "docker.io/mirrored/busybox:latest")
    assert image_id == busybox_image.config_blob.digest
    image = d.image.ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image="mirrored/busybox"))).image
    assert list(image.repo_tags) == ["docker.io/mirrored/busybox:latest"]
    assert d.stop() == 0


def test_pull_log_line_has_figures(daemon_factory, registry, busybox_image):
    d = registry_daemon(daemon_factory, registry.host)
    pull(d, f"{registry.host}/test/busybox:latest")
    line = next(line for line in d.log().splitlines() if "pulled " in line)
    assert "1 layers (1 fetched)" in line and "MB/s" in line and "bytes compressed" in line
    assert d.stop() == 0


def test_damaged_stored_blob_is_fetched_again(daemon_factory, registry, busybox_image):
    d = registry_daemon(daemon_factory, registry.host)
    name = f"{registry.host}/test/busybox:latest"
    pull(d, name)
    assert d.stop() == 0
    blob = os.path.join(d.root, "blobs", "sha256", busybox_image.layers[0].digest[7:])
    with open(blob, "r+b") as f:  # as a power loss might leave a blob that was never fsynced
        f.truncate(100)
    (chain,) = layer_dirs(d)
    shutil.rmtree(os.path.join(d.root, "layers", chain))
    d.start()
    assert pull(d, name) == busybox_image.config_blob.digest
    assert "is damaged" in d.log()
    with open(blob, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == busybox_image.layers[0].digest[7:]
    assert layer_dirs(d) == [chain]
    assert d.stop() == 0
