"""Content digests (`sha256:<64 hex>`): checking their form and computing them."""

from __future__ import annotations

import hashlib
import re

from pycrio.errors import InvalidArgument

# OCI image-spec descriptor grammar: algorithm ":" encoded.
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")


def is_digest(value: object) -> bool:
    """True for a well-formed sha256 digest (the only algorithm pycrio pulls with)."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_digest(value: object, what: str = "digest") -> str:
    """value when it is a sha256 digest; InvalidArgument naming what is wrong otherwise."""
    if is_digest(value):
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise InvalidArgument(f"{what}: expected a digest string, got {type(value).__name__}")
    if _ANY_DIGEST.fullmatch(value):
        algorithm = value.split(":", 1)[0]
        if algorithm != "sha256":
            raise InvalidArgument(f"{what} {value!r}: digest algorithm {algorithm!r} is not supported (only sha256)")
        raise InvalidArgument(f"{what} {value!r}: a sha256 digest is 64 lowercase hexadecimal digits")
    raise InvalidArgument(f"{what} {value!r}: not a digest (expected sha256:<64 hex digits>)")


def sha256_digest(data: bytes) -> str:
    """The digest of data."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    """The hex part of a sha256 digest (its file name in the stores)."""
    return check_digest(digest)[len("sha256:") :]


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain id of each layer: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for diff_id in diff_ids:
        check_digest(diff_id, "diff id")
        out.append(diff_id if not out else sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out
