"""Manifests, indexes and image configs (OCI image spec, Docker schema 2): parsing, validation, platform choice."""

from __future__ import annotations

import functools
import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from pycrio.digest import check_digest
from pycrio.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)  # the Accept list, preferred first
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# Layer media type -> compression of the tar stream.
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",  # not in the Docker spec, written by some tools
}
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
MAX_MANIFEST_SIZE = 4 * 1024 * 1024


class NoMatchingPlatform(NotFound):
    """An image index has no manifest for the platform asked for."""


@dataclass(frozen=True)
class Platform:
    """What an image runs on, in Go's GOOS/GOARCH naming."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    features: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass
class Descriptor:
    """A reference to content by media type, digest and size."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)

    @property
    def compression(self) -> str:
        """For a layer: "gzip", "zstd" or "none"."""
        return LAYER_TYPES[self.media_type]


@dataclass
class ImageManifest:
    """One image: a config and its layers, bottom first."""

    config: Descriptor
    layers: list[Descriptor]
    media_type: str
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageIndex:
    """A list of manifests, one per platform (OCI index or Docker manifest list)."""

    manifests: list[Descriptor]
    media_type: str = OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageConfig:
    """The parts of an image config the runtime uses; raw keeps the whole document."""

    architecture: str
    os: str
    config: dict[str, Any]
    diff_ids: list[str]
    created: str | None = None
    variant: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- helpers


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return doc


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str, required: bool = False) -> Any:
    value = doc.get(key)
    if value is None:
        if required:
            raise InvalidArgument(f"{what}: {key} is missing")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidArgument(f"{what}: {key} has the wrong type ({type(value).__name__})")
    return value


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} must be a list of strings")
    return value


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{what} must be a map of strings")
    return value


def _platform_of(value: Any, what: str) -> Platform | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: platform must be an object")
    arch = _get(value, "architecture", str, f"{what}: platform", required=True)
    os_name = _get(value, "os", str, f"{what}: platform", required=True)
    return Platform(
        os=os_name,
        architecture=arch,
        variant=_get(value, "variant", str, f"{what}: platform") or "",
        os_version=_get(value, "os.version", str, f"{what}: platform") or "",
        os_features=tuple(_strings(value.get("os.features"), f"{what}: platform os.features")),
        features=tuple(_strings(value.get("features"), f"{what}: platform features")),
    )


def parse_descriptor(value: Any, what: str) -> Descriptor:
    """A descriptor object, checked: media type, sha256 digest, non-negative integer size."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} is not an object")
    media_type = _get(value, "mediaType", str, what, required=True)
    digest = check_digest(value.get("digest"), f"{what} digest")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{what}: size must be a non-negative integer, got {size!r}")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=_platform_of(value.get("platform"), what),
        annotations=_string_map(value.get("annotations"), f"{what} annotations"),
        urls=_strings(value.get("urls"), f"{what} urls"),
    )


# ---------------------------------------------------------------- manifests


def media_type_of(data: bytes, content_type: str | None = None) -> str:
    """The manifest's media type: its mediaType field, else a known Content-Type, else guessed from its shape."""
    return _media_type(_load_json(data, "manifest"), content_type)


def _media_type(doc: dict[str, Any], content_type: str | None) -> str:
    header = (content_type or "").split(";")[0].strip().lower()
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise InvalidArgument("manifest: mediaType is not a string")
    version = doc.get("schemaVersion")
    schema1 = version == 1 and not isinstance(version, bool)
    if declared in SCHEMA1_TYPES or header in SCHEMA1_TYPES or schema1:
        raise FailedPrecondition(
            "schema 1 manifests are not supported (deprecated Docker format); push the image again with a current tool"
        )
    if declared and header in MANIFEST_TYPES and declared != header:
        raise InvalidArgument(f"manifest: the registry sent Content-Type {header} for a document of type {declared}")
    media_type = declared or (header if header in MANIFEST_TYPES else "")
    if not media_type:
        if "manifests" in doc:
            media_type = OCI_INDEX
        elif "config" in doc and "layers" in doc:
            media_type = OCI_MANIFEST
        else:
            raise InvalidArgument(f"manifest: unknown media type {header or 'none'!r} and no mediaType field")
    if media_type not in MANIFEST_TYPES:
        raise InvalidArgument(f"manifest: unsupported media type {media_type!r} (not an image or image index)")
    return media_type


def parse_manifest(
    data: bytes, content_type: str | None = None, max_size: int = MAX_MANIFEST_SIZE
) -> ImageManifest | ImageIndex:
    """An image manifest or index from its bytes and the Content-Type it was served with."""
    if len(data) > max_size:
        raise ResourceExhausted(f"manifest is {len(data)} bytes, more than the {max_size}-byte limit")
    doc = _load_json(data, "manifest")
    media_type = _media_type(doc, content_type)
    version = doc.get("schemaVersion")
    if version != 2 or isinstance(version, bool):
        raise InvalidArgument(f"manifest: schemaVersion must be 2, got {version!r}")
    annotations = _string_map(doc.get("annotations"), "manifest annotations")
    if media_type in INDEX_TYPES:
        entries = _get(doc, "manifests", list, "index", required=True)
        manifests = [parse_descriptor(d, f"index manifests[{i}]") for i, d in enumerate(entries)]
        return ImageIndex(manifests, media_type, annotations)
    config = parse_descriptor(doc.get("config"), "manifest config")
    if config.media_type not in CONFIG_TYPES:
        raise InvalidArgument(f"not a container image: its config has media type {config.media_type!r}")
    layers = []
    for i, value in enumerate(_get(doc, "layers", list, "manifest", required=True)):
        layer = parse_descriptor(value, f"manifest layers[{i}]")
        if layer.media_type in FOREIGN_LAYER_TYPES:
            raise FailedPrecondition(
                f"layer {i} ({layer.digest}) is a non-distributable (foreign) layer of type {layer.media_type}; "
                "pycrio does not fetch layers from outside the registry"
            )
        if layer.media_type not in LAYER_TYPES:
            raise InvalidArgument(f"layer {i} ({layer.digest}) has unsupported media type {layer.media_type!r}")
        layers.append(layer)
    return ImageManifest(config, layers, media_type, annotations)


# ---------------------------------------------------------------- platforms

_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", ""),
    "i686": ("386", ""),
}
# Architectures whose variants are ordered levels: a host of level N runs images of levels <= N.
_DEFAULT_LEVEL = {"arm64": "v8", "arm": "v7", "amd64": "v1"}


def normalize_platform(os_name: str, architecture: str, variant: str = "") -> tuple[str, str, str]:
    """(os, GOARCH, variant) with Linux machine names mapped (x86_64 -> amd64, aarch64 -> arm64/v8)."""
    arch, implied = _ARCH_ALIASES.get(architecture.lower(), (architecture.lower(), ""))
    variant = (variant or implied).lower()
    if not variant and arch in _DEFAULT_LEVEL:
        variant = _DEFAULT_LEVEL[arch]
    if arch == "arm64" and variant == "8":
        variant = "v8"
    return os_name.lower(), arch, variant


@functools.cache
def _amd64_level() -> str:
    """The x86-64 micro-architecture level of this CPU (v1..v4), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "v1"
    have = set(flags)
    levels = [
        ("v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
        ("v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
        ("v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
    ]
    level = "v1"
    for name, needed in levels:
        if not needed <= have:
            break
        level = name
    return level


def host_platform() -> Platform:
    """This machine's platform, GOARCH naming (amd64 gets its micro-architecture level as variant)."""
    os_name, arch, variant = normalize_platform("linux", _platform.machine())
    if arch == "amd64":
        variant = _amd64_level()
    return Platform(os_name, arch, variant)


def _level(variant: str) -> tuple[int, ...] | None:
    """v7 -> (7,), v8.2 -> (8, 2); None when not a level."""
    if not variant.startswith("v"):
        return None
    try:
        return tuple(int(p) for p in variant[1:].split("."))
    except ValueError:
        return None


def _variant_rank(arch: str, wanted: str, offered: str) -> tuple[int, ...] | None:
    """How well an offered variant suits the wanted one (higher is better); None when it cannot run."""
    if arch in _DEFAULT_LEVEL:
        offered = offered or _DEFAULT_LEVEL[arch]
        want, have = _level(wanted), _level(offered)
        if want is None or have is None:
            return (1 << 16,) if offered == wanted else None
        if have > want:
            return None
        return (1 << 16,) if have == want else have
    if offered == wanted:
        return (1 << 16,)
    return (0,) if not offered else None


def select_platform(
    index: ImageIndex, os: str | None = None, architecture: str | None = None, variant: str | None = None
) -> Descriptor:
    """The index entry for the platform (default: this host); NotFound listing what the index offers."""
    if architecture is None:
        host = host_platform()
        want_os, want_arch, want_variant = normalize_platform(os or host.os, host.architecture, variant or host.variant)
    else:
        want_os, want_arch, want_variant = normalize_platform(os or "linux", architecture, variant or "")
    best: tuple[tuple[int, ...], int, Descriptor] | None = None
    unplatformed = []
    for position, desc in enumerate(index.manifests):
        if desc.media_type not in IMAGE_TYPES:
            continue
        if desc.platform is None:
            unplatformed.append(desc)
            continue
        p_os, p_arch, _ = normalize_platform(desc.platform.os, desc.platform.architecture)
        if p_os != want_os or p_arch != want_arch:
            continue
        rank = _variant_rank(want_arch, want_variant, desc.platform.variant.lower())
        if rank is not None and (best is None or rank > best[0]):
            best = (rank, position, desc)
    if best is not None:
        return best[2]
    if len(unplatformed) == 1:
        return unplatformed[0]
    offered = sorted({str(d.platform) if d.platform else "unspecified" for d in index.manifests}) or ["nothing"]
    wanted = "/".join(p for p in (want_os, want_arch, want_variant) if p)
    raise NoMatchingPlatform(f"the image index has no manifest for {wanted}; it offers {', '.join(offered)}")


# ---------------------------------------------------------------- image config

_CONFIG_FIELDS: dict[str, tuple[type, str]] = {
    "User": (str, "a string"),
    "WorkingDir": (str, "a string"),
    "StopSignal": (str, "a string"),
    "Env": (list, "a list of strings"),
    "Entrypoint": (list, "a list of strings"),
    "Cmd": (list, "a list of strings"),
    "Labels": (dict, "a map of strings"),
    "ExposedPorts": (dict, "an object"),
    "Volumes": (dict, "an object"),
}


def parse_image_config(data: bytes) -> ImageConfig:
    """An image config (OCI or Docker), checked: os, architecture, rootfs.type "layers", sha256 diff_ids."""
    doc = _load_json(data, "image config")
    arch = _get(doc, "architecture", str, "image config", required=True)
    os_name = _get(doc, "os", str, "image config", required=True)
    config = doc.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidArgument("image config: config must be an object")
    for key, (kind, wanted) in _CONFIG_FIELDS.items():
        value = config.get(key)
        if value is None:
            continue
        ok = isinstance(value, kind)
        if ok and kind is list:
            ok = all(isinstance(v, str) for v in value)
        if ok and key == "Labels":
            ok = all(isinstance(v, str) for v in value.values())
        if not ok:
            raise InvalidArgument(f"image config: config.{key} must be {wanted}")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise InvalidArgument("image config: rootfs is missing")
    if rootfs.get("type") != "layers":
        raise InvalidArgument(f"image config: rootfs.type must be 'layers', got {rootfs.get('type')!r}")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise InvalidArgument("image config: rootfs.diff_ids must be a list")
    diff_ids = [check_digest(d, f"image config: rootfs.diff_ids[{i}]") for i, d in enumerate(diff_ids)]
    created = _get(doc, "created", str, "image config")
    return ImageConfig(
        architecture=arch,
        os=os_name,
        config=config,
        diff_ids=diff_ids,
        created=created,
        variant=_get(doc, "variant", str, "image config") or "",
        raw=doc,
    )
