"""Build OCI / Docker schema 2 images in memory for tests: layers (tar), configs, manifests, indexes."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import platform as _platform
import tarfile
from dataclasses import dataclass, field
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

BUSYBOX = "/bin/busybox"  # Debian's busybox-static
_APPLETS = (
    "sh ash ls cat echo sleep id true false env ps mount umount hostname wget mkdir rm rmdir touch cp mv ln "
    "chmod chown grep sed head tail wc test [ kill pwd date uname whoami stat find printf sync nc ip ifconfig "
    "top vi tee tr cut sort uniq xargs dd df du free ping nslookup mkfifo mknod readlink realpath seq timeout "
    "usleep basename dirname which yes nproc uptime"
)
BUSYBOX_APPLETS = tuple(_APPLETS.split())


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def goarch() -> str:
    machine = _platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


@dataclass
class Blob:
    """Content as pushed: data, its digest and size; for a layer also the compression and the tar's digest."""

    data: bytes
    media_type: str
    diff_id: str = ""
    compression: str = "none"

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, media_type: str | None = None) -> dict[str, Any]:
        return {"mediaType": media_type or self.media_type, "digest": self.digest, "size": self.size}


def layer_media_type(kind: str, compression: str) -> str:
    """The layer media type for a manifest kind ("oci" or "docker") and a compression."""
    if kind == "docker":
        return {
            "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "none": "application/vnd.docker.image.rootfs.diff.tar",
        }[compression]
    suffix = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[compression]
    return f"application/vnd.oci.image.layer.v1.tar{suffix}"


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


class LayerBuilder:
    """A layer tar (PAX format) built entry by entry; paths are relative to the image root."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed in tar())
        self._data: bytes | None = None

    def _info(self, path: str, kind: bytes, mode: int, uid: int, gid: int, mtime: float, xattrs=None, **kw):
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
        info.uname = kw.pop("uname", "")
        info.gname = kw.pop("gname", "")
        for key, value in kw.items():
            setattr(info, key, value)
        for name, value in (xattrs or {}).items():
            if isinstance(value, bytes):
                value = value.decode("utf-8", "surrogateescape")
            info.pax_headers[f"SCHILY.xattr.{name}"] = value
        return info

    def file(self, path: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: float = 0,
             xattrs: dict[str, bytes | str] | None = None, **kw: Any) -> LayerBuilder:  # fmt: skip
        info = self._info(path, tarfile.REGTYPE, mode, uid, gid, mtime, xattrs, size=len(data), **kw)
        self._tar.addfile(info, io.BytesIO(data))
        return self

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: float = 0,
            xattrs: dict[str, bytes | str] | None = None) -> LayerBuilder:  # fmt: skip
        self._tar.addfile(self._info(path, tarfile.DIRTYPE, mode, uid, gid, mtime, xattrs))
        return self

    def symlink(self, path: str, target: str, uid: int = 0, gid: int = 0, mtime: float = 0) -> LayerBuilder:
        self._tar.addfile(self._info(path, tarfile.SYMTYPE, 0o777, uid, gid, mtime, linkname=target))
        return self

    def hardlink(self, path: str, target: str) -> LayerBuilder:
        """A hard link to target, an earlier entry of this layer (path relative to the root)."""
        self._tar.addfile(self._info(path, tarfile.LNKTYPE, 0o644, 0, 0, 0, linkname=target.lstrip("/")))
        return self

    def char_device(self, path: str, major: int, minor: int, mode: int = 0o666) -> LayerBuilder:
        self._tar.addfile(self._info(path, tarfile.CHRTYPE, mode, 0, 0, 0, devmajor=major, devminor=minor))
        return self

    def block_device(self, path: str, major: int, minor: int, mode: int = 0o660) -> LayerBuilder:
        self._tar.addfile(self._info(path, tarfile.BLKTYPE, mode, 0, 0, 0, devmajor=major, devminor=minor))
        return self

    def fifo(self, path: str, mode: int = 0o644) -> LayerBuilder:
        self._tar.addfile(self._info(path, tarfile.FIFOTYPE, mode, 0, 0, 0))
        return self

    def whiteout(self, path: str) -> LayerBuilder:
        """Delete path (from a lower layer): an empty `.wh.<name>` file beside it."""
        parent, name = os.path.split(path.strip("/"))
        return self.file(os.path.join(parent, f".wh.{name}"))

    def opaque(self, dir_path: str) -> LayerBuilder:
        """Hide the lower layers' contents of dir_path: a `.wh..wh..opq` marker inside it."""
        return self.file(os.path.join(dir_path.strip("/"), ".wh..wh..opq"))

    def tar(self) -> bytes:
        """The uncompressed tar (the builder is finished after this)."""
        if self._data is None:
            self._tar.close()
            self._data = self._buf.getvalue()
        return self._data

    def build(self, compression: str = "gzip") -> Blob:
        raw = self.tar()
        return Blob(compress(raw, compression), layer_media_type("oci", compression), sha256(raw), compression)


@functools.cache
def busybox_layer(compression: str = "gzip") -> Blob:
    """/bin/busybox (Debian busybox-static) with applet symlinks, /etc/passwd, /etc/group and /tmp (1777)."""
    with open(BUSYBOX, "rb") as f:
        binary = f.read()
    layer = LayerBuilder().dir("bin").file("bin/busybox", binary, mode=0o755)
    for applet in BUSYBOX_APPLETS:
        layer.symlink(f"bin/{applet}", "busybox")
    layer.dir("etc")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    layer.dir("root", mode=0o700).dir("tmp", mode=0o1777)
    return layer.build(compression)


@dataclass
class Image:
    """An image ready to push: config blob, layer blobs and the manifest bytes."""

    config: dict[str, Any]
    config_blob: Blob
    layers: list[Blob]
    manifest_bytes: bytes
    media_type: str
    platform: dict[str, str] = field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest_bytes)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_bytes)

    def descriptor(self) -> dict[str, Any]:
        """This image's entry in an index."""
        return {
            "mediaType": self.media_type,
            "digest": self.manifest_digest,
            "size": len(self.manifest_bytes),
            "platform": dict(self.platform),
        }


def build_image(
    layers: list[Blob] | None = None,
    config: dict[str, Any] | None = None,
    *,
    os_name: str = "linux",
    architecture: str | None = None,
    variant: str = "",
    kind: str = "oci",
    created: str = "1970-01-01T00:00:00Z",
    labels: dict[str, str] | None = None,
) -> Image:
    """An image of layers (default: busybox) with config overrides (Entrypoint, Cmd, Env, User, WorkingDir, ...).

    kind: "oci" (OCI manifest and config types) or "docker" (Docker schema 2).
    """
    layers = list(layers) if layers is not None else [busybox_layer()]
    architecture = architecture or goarch()
    runtime = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}
    runtime.update(config or {})
    if labels:
        runtime["Labels"] = dict(labels)
    doc: dict[str, Any] = {
        "created": created,
        "architecture": architecture,
        "os": os_name,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": created, "created_by": "pycrio tests"} for _ in layers],
    }
    if variant:
        doc["variant"] = variant
    config_type, manifest_type = (DOCKER_CONFIG, DOCKER_MANIFEST) if kind == "docker" else (OCI_CONFIG, OCI_MANIFEST)
    config_blob = Blob(json.dumps(doc, indent=2, sort_keys=True).encode(), config_type)
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor(layer_media_type(kind, layer.compression)) for layer in layers],
    }
    platform = {"architecture": architecture, "os": os_name}
    if variant:
        platform["variant"] = variant
    return Image(doc, config_blob, layers, json.dumps(manifest, indent=2).encode(), manifest_type, platform)


@dataclass
class Index:
    """An OCI image index or Docker manifest list over images."""

    images: list[Image]
    manifest_bytes: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.manifest_bytes)


def build_index(images: list[Image], kind: str = "oci", annotations: dict[str, str] | None = None) -> Index:
    media_type = DOCKER_LIST if kind == "docker" else OCI_INDEX
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [image.descriptor() for image in images],
    }
    if annotations:
        doc["annotations"] = annotations
    return Index(list(images), json.dumps(doc, indent=2).encode(), media_type)
