"""tests/support/images.py: the test image builder writes the tar entries, compressions and documents it claims."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import stat
import tarfile

import pytest
import zstandard

from tests.support import images


def entries(blob: images.Blob) -> dict[str, tarfile.TarInfo]:
    data = blob.data
    if blob.compression == "gzip":
        data = gzip.decompress(data)
    elif blob.compression == "zstd":
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.diff_id
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_entries(compression):
    long_name = "d/" + "n" * 300
    blob = (
        images.LayerBuilder()
        .dir("d", mode=0o750, uid=5, gid=6)
        .file(
            "d/f", b"data", mode=0o4755, uid=1000, gid=1001, mtime=12345, xattrs={"user.a": b"\xff\x00", "user.b": "x"}
        )
        .file(long_name, b"long")
        .symlink("d/l", "../f")
        .hardlink("d/h", "d/f")
        .char_device("dev/null", 1, 3)
        .block_device("dev/loop0", 7, 0)
        .fifo("d/p")
        .whiteout("gone/file")
        .opaque("d")
        .build(compression)
    )
    assert blob.media_type == images.layer_media_type("oci", compression)
    got = entries(blob)
    f = got["d/f"]
    assert (f.mode, f.uid, f.gid, f.mtime, f.size) == (0o4755, 1000, 1001, 12345, 4)
    assert f.pax_headers["SCHILY.xattr.user.a"].encode("utf-8", "surrogateescape") == b"\xff\x00"
    assert f.pax_headers["SCHILY.xattr.user.b"] == "x"
    assert got["d"].isdir() and got["d"].mode == 0o750
    assert got[long_name].size == 4
    assert got["d/l"].issym() and got["d/l"].linkname == "../f"
    assert got["d/h"].islnk() and got["d/h"].linkname == "d/f"
    assert got["dev/null"].ischr() and (got["dev/null"].devmajor, got["dev/null"].devminor) == (1, 3)
    assert got["dev/loop0"].isblk()
    assert got["d/p"].isfifo()
    assert "gone/.wh.file" in got and "d/.wh..wh..opq" in got


def test_busybox_layer():
    got = entries(images.busybox_layer())
    assert got["bin/busybox"].mode == 0o755 and got["bin/busybox"].size > 100_000
    for applet in ("sh", "ls", "cat", "echo", "sleep", "id", "true", "false", "env", "ps", "mount", "hostname", "wget"):
        assert got[f"bin/{applet}"].linkname == "busybox"
    assert stat.S_IMODE(got["tmp"].mode) == 0o1777
    assert "etc/passwd" in got and "etc/group" in got


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_image_and_index_documents(kind):
    layer = images.LayerBuilder().file("x", b"1").build("gzip")
    image = images.build_image(
        [layer],
        {"Entrypoint": ["/bin/sh"], "User": "1:2", "WorkingDir": "/w"},
        architecture="arm64",
        variant="v8",
        kind=kind,
    )
    manifest = image.manifest
    assert (
        manifest["mediaType"]
        == image.media_type
        == (images.DOCKER_MANIFEST if kind == "docker" else images.OCI_MANIFEST)
    )
    assert manifest["config"]["digest"] == image.config_blob.digest
    assert manifest["layers"][0] == {
        "mediaType": images.layer_media_type(kind, "gzip"),
        "digest": layer.digest,
        "size": layer.size,
    }
    config = json.loads(image.config_blob.data)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id]}
    assert config["config"]["Entrypoint"] == ["/bin/sh"] and config["config"]["User"] == "1:2"
    assert (config["architecture"], config["variant"], config["os"]) == ("arm64", "v8", "linux")
    index = images.build_index([image], kind=kind)
    doc = json.loads(index.manifest_bytes)
    assert doc["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert doc["manifests"][0]["digest"] == image.manifest_digest
