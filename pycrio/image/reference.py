"""Image references: parse `busybox`, `user/app:1`, `host:5000/x@sha256:…` into a normalised Reference.

Normalisation is what Kubernetes users expect (the Docker rules): a name whose
first component has no `.` or `:` and is not `localhost` (and is lowercase)
lives on docker.io, a one-component docker.io repository lives under
`library/`, `index.docker.io` is `docker.io`, and a name with neither tag nor
digest means `:latest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pycrio.digest import check_digest
from pycrio.errors import InvalidArgument

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
NAME_MAX = 255  # registry + "/" + repository
_INPUT_MAX = 1024

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference; with both tag and digest, the digest is what is fetched."""

    registry: str  # host[:port], e.g. "docker.io", "127.0.0.1:5000"
    repository: str  # e.g. "library/busybox"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the manifests endpoint is asked for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_domain(name: str) -> tuple[str | None, str]:
    """(registry or None when the name gives none, remainder), by the Docker rule."""
    first, slash, rest = name.partition("/")
    if not slash:
        return None, name
    if "." in first or ":" in first or first == "localhost" or first.lower() != first:
        return first, rest
    return None, name


def _split_tag_digest(text: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) as written, unchecked."""
    name, at, digest = text.partition("@")
    tag = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, (digest if at else None)


def is_short_name(name: str) -> bool:
    """True when name gives no registry (`busybox`, `user/app:1`), so search registries apply."""
    base, _, _ = _split_tag_digest(name)
    return _split_domain(base)[0] is None


def parse(name: str) -> Reference:
    """Parse and normalise an image name; InvalidArgument naming the problem when it is not one."""
    if not isinstance(name, str):
        raise InvalidArgument(f"image name must be a string, got {type(name).__name__}")

    def bad(problem: str) -> InvalidArgument:
        return InvalidArgument(f"invalid image name {name!r}: {problem}")

    if not name:
        raise InvalidArgument("invalid image name: empty")
    if len(name) > _INPUT_MAX:
        raise bad(f"longer than {_INPUT_MAX} characters")
    if any(c.isspace() for c in name):
        raise bad("contains white space")
    if name.count("@") > 1:
        raise bad("more than one '@'")
    base, tag, digest = _split_tag_digest(name)
    if digest is not None:
        if not digest:
            raise bad("empty digest after '@'")
        try:
            check_digest(digest)
        except InvalidArgument as e:
            raise bad(str(e)) from None
    if tag is not None:
        if not tag:
            raise bad("empty tag after ':'")
        if not _TAG.fullmatch(tag):
            raise bad(f"tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    if not base:
        raise bad("no repository")
    registry, repository = _split_domain(base)
    if registry is None:
        if tag is None and digest is None and _IMAGE_ID.fullmatch(base):
            raise bad("a 64-hex-digit name is an image ID, not a name that can be pulled")
        registry = DOCKER_HUB
    elif not _DOMAIN.fullmatch(registry):
        raise bad(f"registry {registry!r} is not host[:port]")
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if not repository:
        raise bad("no repository after the registry")
    for component in repository.split("/"):
        if not component:
            raise bad("empty path component (double or trailing '/')")
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component and _PATH_COMPONENT.fullmatch(component.lower()):
                raise bad("repository name must be lowercase")
            raise bad(
                f"path component {component!r} must be lowercase letters and digits, separated by '.', '_', '__' or '-'"
            )
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if len(registry) + 1 + len(repository) > NAME_MAX:
        raise bad(f"registry/repository is longer than {NAME_MAX} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)
