"""pycrio/image/manifest.py: manifests, indexes and configs parsed strictly; platform selection."""

from __future__ import annotations

import json
from unittest import mock

import pytest

from pycrio.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from pycrio.image import manifest as mf

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def oci_manifest(**over) -> dict:
    doc = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "config": {"mediaType": mf.OCI_CONFIG, "digest": D1, "size": 100},
        "layers": [{"mediaType": GZIP, "digest": D2, "size": 2000, "annotations": {"a": "b"}}],
    }
    doc.update(over)
    return doc


def dumps(doc) -> bytes:
    return json.dumps(doc).encode()


def entry(arch: str, variant: str = "", os_name: str = "linux", digest: str = D1, media_type=mf.OCI_MANIFEST) -> dict:
    platform = {"architecture": arch, "os": os_name}
    if variant:
        platform["variant"] = variant
    return {"mediaType": media_type, "digest": digest, "size": 500, "platform": platform}


def index(*entries, media_type=mf.OCI_INDEX) -> mf.ImageIndex:
    parsed = mf.parse_manifest(dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": list(entries)}))
    assert isinstance(parsed, mf.ImageIndex)
    return parsed


def test_oci_manifest():
    m = mf.parse_manifest(dumps(oci_manifest()), mf.OCI_MANIFEST)
    assert isinstance(m, mf.ImageManifest)
    assert m.media_type == mf.OCI_MANIFEST
    assert m.config == mf.Descriptor(mf.OCI_CONFIG, D1, 100)
    assert m.layers == [mf.Descriptor(GZIP, D2, 2000, annotations={"a": "b"})]
    assert m.layers[0].compression == "gzip"


def test_docker_schema2_and_list():
    doc = oci_manifest(mediaType=mf.DOCKER_MANIFEST)
    doc["config"]["mediaType"] = mf.DOCKER_CONFIG
    doc["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    m = mf.parse_manifest(dumps(doc), "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8")
    assert isinstance(m, mf.ImageManifest) and m.media_type == mf.DOCKER_MANIFEST
    lst = index(entry("amd64", media_type=mf.DOCKER_MANIFEST), media_type=mf.DOCKER_LIST)
    assert lst.media_type == mf.DOCKER_LIST and lst.manifests[0].platform == mf.Platform("linux", "amd64")


def test_media_type_from_header_or_shape():
    doc = oci_manifest()
    del doc["mediaType"]
    assert mf.parse_manifest(dumps(doc), mf.OCI_MANIFEST).media_type == mf.OCI_MANIFEST
    assert mf.parse_manifest(dumps(doc), "application/json").media_type == mf.OCI_MANIFEST
    assert mf.parse_manifest(dumps({"schemaVersion": 2, "manifests": []}), None).media_type == mf.OCI_INDEX
    assert mf.media_type_of(dumps(doc), mf.DOCKER_MANIFEST) == mf.DOCKER_MANIFEST


@pytest.mark.parametrize(
    "data,content_type",
    [
        (b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', "application/json"),
        (b"{}", mf.DOCKER_SCHEMA1),
        (b'{"schemaVersion": 1}', mf.DOCKER_SCHEMA1_SIGNED),
        (dumps({"schemaVersion": 1, "mediaType": mf.DOCKER_SCHEMA1}), None),
    ],
)
def test_schema1_refused(data, content_type):
    with pytest.raises(FailedPrecondition, match="schema 1 manifests are not supported"):
        mf.parse_manifest(data, content_type)


@pytest.mark.parametrize(
    "doc,content_type,problem",
    [
        ({"schemaVersion": 2, "mediaType": "application/vnd.example+json"}, None, "unsupported media type"),
        ({"schemaVersion": 2}, "text/plain", "unknown media type 'text/plain'"),
        (oci_manifest(), mf.DOCKER_MANIFEST, "Content-Type application/vnd.docker"),
        (oci_manifest(schemaVersion=3), None, "schemaVersion must be 2"),
        (oci_manifest(schemaVersion=True), None, "schemaVersion must be 2"),
        (oci_manifest(layers="x"), None, "layers has the wrong type"),
        (oci_manifest(config=None), None, "manifest config is not an object"),
        (oci_manifest(layers=[{"mediaType": GZIP, "digest": "sha256:12", "size": 1}]), None, "64 lowercase"),
        (oci_manifest(layers=[{"mediaType": GZIP, "digest": "md5:" + "a" * 32, "size": 1}]), None, "'md5'"),
        (oci_manifest(layers=[{"mediaType": GZIP, "digest": D2, "size": -1}]), None, "non-negative integer"),
        (oci_manifest(layers=[{"mediaType": GZIP, "digest": D2, "size": 1.5}]), None, "non-negative integer"),
        (oci_manifest(layers=[{"mediaType": GZIP, "digest": D2, "size": True}]), None, "non-negative integer"),
        (oci_manifest(layers=[{"digest": D2, "size": 1}]), None, "mediaType is missing"),
        (oci_manifest(layers=[{"mediaType": "text/plain", "digest": D2, "size": 1}]), None, "unsupported media type"),
        (
            oci_manifest(config={"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": D1, "size": 1}),
            None,
            "not a container image",
        ),  # fmt: skip
        (oci_manifest(annotations={"a": 1}), None, "annotations must be a map of strings"),
        (
            {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [{"mediaType": mf.OCI_MANIFEST}]},
            None,
            "digest",
        ),  # fmt: skip
        (
            {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [entry("amd64") | {"platform": {"os": "x"}}]},
            None,
            "architecture is missing",
        ),  # fmt: skip
    ],
)
def test_invalid(doc, content_type, problem):
    with pytest.raises(InvalidArgument) as info:
        mf.parse_manifest(dumps(doc), content_type)
    assert problem in str(info.value)


def test_not_json():
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        mf.parse_manifest(b"\xff{", None)
    with pytest.raises(InvalidArgument, match="not a JSON object"):
        mf.parse_manifest(b"[]", None)


@pytest.mark.parametrize("media_type", sorted(mf.FOREIGN_LAYER_TYPES))
def test_foreign_layers_refused(media_type):
    doc = oci_manifest(layers=[{"mediaType": media_type, "digest": D2, "size": 1, "urls": ["https://x/y"]}])
    with pytest.raises(FailedPrecondition, match="non-distributable"):
        mf.parse_manifest(dumps(doc), None)


@pytest.mark.parametrize(
    "media_type,compression",
    [
        ("application/vnd.oci.image.layer.v1.tar", "none"),
        ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
        ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
    ],
)
def test_layer_types(media_type, compression):
    doc = oci_manifest(layers=[{"mediaType": media_type, "digest": D2, "size": 1}])
    parsed = mf.parse_manifest(dumps(doc), None)
    assert isinstance(parsed, mf.ImageManifest) and parsed.layers[0].compression == compression


def test_size_limit():
    data = dumps(oci_manifest()) + b" " * 100
    with pytest.raises(ResourceExhausted, match="more than the 50-byte limit"):
        mf.parse_manifest(data, None, max_size=50)
    big = b" " * mf.MAX_MANIFEST_SIZE + dumps(oci_manifest())
    with pytest.raises(ResourceExhausted):
        mf.parse_manifest(big, None)


# ---------------------------------------------------------------- platforms


@pytest.mark.parametrize(
    "machine,expected",
    [
        ("x86_64", ("linux", "amd64", "v1")),
        ("aarch64", ("linux", "arm64", "v8")),
        ("armv7l", ("linux", "arm", "v7")),
        ("armv6l", ("linux", "arm", "v6")),
        ("i686", ("linux", "386", "")),
        ("ppc64le", ("linux", "ppc64le", "")),
        ("s390x", ("linux", "s390x", "")),
    ],
)
def test_normalize_platform(machine, expected):
    assert mf.normalize_platform("Linux", machine) == expected


def test_host_platform_uses_goarch_names():
    with mock.patch("platform.machine", return_value="aarch64"):
        assert mf.host_platform() == mf.Platform("linux", "arm64", "v8")
    with mock.patch("platform.machine", return_value="armv7l"):
        assert str(mf.host_platform()) == "linux/arm/v7"
    with mock.patch("platform.machine", return_value="x86_64"):
        p = mf.host_platform()
        assert p.architecture == "amd64" and p.variant in ("v1", "v2", "v3", "v4")


def test_select_host_platform():
    idx = index(entry("arm64", "v8", digest=D1), entry("amd64", digest=D2), entry("arm", "v7", digest=D3))
    with mock.patch("platform.machine", return_value="x86_64"):
        assert mf.select_platform(idx).digest == D2
    with mock.patch("platform.machine", return_value="aarch64"):
        assert mf.select_platform(idx).digest == D1
    with mock.patch("platform.machine", return_value="armv7l"):
        assert mf.select_platform(idx).digest == D3


def test_variants():
    arm = index(entry("arm", "v5", digest=D1), entry("arm", "v6", digest=D2), entry("arm", "v7", digest=D3))
    assert mf.select_platform(arm, "linux", "arm", "v7").digest == D3
    assert mf.select_platform(arm, "linux", "arm", "v6").digest == D2
    assert mf.select_platform(arm, "linux", "arm", "v8").digest == D3  # the best one v8 can run
    older = index(entry("arm", "v6", digest=D2))
    assert mf.select_platform(older, "linux", "armv7l").digest == D2
    with pytest.raises(mf.NoMatchingPlatform):
        mf.select_platform(index(entry("arm", "v7")), "linux", "arm", "v6")
    # arm64 without a variant is v8
    assert mf.select_platform(index(entry("arm64", digest=D1)), "linux", "arm64", "v8").digest == D1
    assert mf.select_platform(index(entry("arm64", "v8", digest=D1)), "linux", "aarch64").digest == D1
    # amd64 levels: v1 (no variant) runs everywhere, v3 only on v3 and up
    amd = index(entry("amd64", digest=D1), entry("amd64", "v3", digest=D2))
    assert mf.select_platform(amd, "linux", "amd64", "v2").digest == D1
    assert mf.select_platform(amd, "linux", "amd64", "v4").digest == D2
    assert mf.select_platform(amd, "linux", "x86_64").digest == D1
    # other architectures: an entry's variant must equal the wanted one (none fits none)
    assert mf.select_platform(index(entry("riscv64", digest=D3)), "linux", "riscv64").digest == D3


def test_no_matching_platform_lists_what_there_is():
    idx = index(entry("arm64", "v8"), entry("s390x"), entry("amd64", os_name="windows"))
    with pytest.raises(NotFound) as info:
        mf.select_platform(idx, "linux", "amd64")
    assert isinstance(info.value, mf.NoMatchingPlatform)
    assert str(info.value) == (
        "the image index has no manifest for linux/amd64/v1; it offers linux/arm64/v8, linux/s390x, windows/amd64"
    )


def test_entries_without_platform_and_non_images():
    attestation = {
        "mediaType": mf.OCI_MANIFEST,
        "digest": D3,
        "size": 1,
        "platform": {"os": "unknown", "architecture": "unknown"},
    }
    nested = {"mediaType": mf.OCI_INDEX, "digest": D2, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}
    only = {"mediaType": mf.OCI_MANIFEST, "digest": D1, "size": 1}
    assert mf.select_platform(index(nested, attestation, only), "linux", "amd64").digest == D1
    with pytest.raises(mf.NoMatchingPlatform, match="it offers linux/amd64, unknown/unknown"):
        mf.select_platform(index(nested, attestation), "linux", "amd64")


# ---------------------------------------------------------------- image config


def config(**over) -> bytes:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "User": "1000:1000",
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/bin/sh"],
            "Cmd": None,
            "WorkingDir": "/w",
            "Labels": {"a": "b"},
            "StopSignal": "SIGINT",
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
        },
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        "history": [],
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_image_config():
    c = mf.parse_image_config(config())
    assert (c.architecture, c.os, c.created) == ("amd64", "linux", "2024-01-01T00:00:00Z")
    assert c.diff_ids == [D1, D2]
    assert c.config["User"] == "1000:1000" and c.config["Entrypoint"] == ["/bin/sh"]
    assert c.raw["history"] == []
    minimal = mf.parse_image_config(
        json.dumps(
            {"architecture": "arm", "variant": "v7", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
    )
    assert minimal.config == {} and minimal.variant == "v7" and minimal.created is None


@pytest.mark.parametrize(
    "over,problem",
    [
        ({"architecture": None}, "architecture is missing"),
        ({"os": 1}, "os has the wrong type"),
        ({"rootfs": None}, "rootfs is missing"),
        ({"rootfs": {"type": "tarball", "diff_ids": []}}, "rootfs.type must be 'layers'"),
        ({"rootfs": {"type": "layers"}}, "diff_ids must be a list"),
        ({"rootfs": {"type": "layers", "diff_ids": ["sha256:xyz"]}}, "rootfs.diff_ids[0]"),
        ({"config": {"Env": "PATH=/bin"}}, "config.Env must be a list of strings"),
        ({"config": {"Cmd": [1]}}, "config.Cmd must be a list of strings"),
        ({"config": {"User": 0}}, "config.User must be a string"),
        ({"config": {"Labels": {"a": 1}}}, "config.Labels must be a map of strings"),
        ({"config": []}, "config must be an object"),
        ({"created": 5}, "created has the wrong type"),
    ],
)
def test_image_config_invalid(over, problem):
    with pytest.raises(InvalidArgument) as info:
        mf.parse_image_config(config(**over))
    assert problem in str(info.value)
