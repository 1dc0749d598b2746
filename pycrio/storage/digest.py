"""Digest strings ("sha256:<64 hex>"): validation, hashing, OCI chain ids."""

from __future__ import annotations

import hashlib
import re

from pycrio.errors import InvalidArgument

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def check(digest: str) -> str:
    """digest, or InvalidArgument when it is not a sha256 digest."""
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise InvalidArgument(f"{digest!r} is not a sha256 digest (sha256:<64 lowercase hex>)")
    return digest


def is_digest(text: str) -> bool:
    return bool(_SHA256.fullmatch(text))


def hex_of(digest: str) -> str:
    return check(digest)[len("sha256:") :]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain id of each layer: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for diff_id in diff_ids:
        check(diff_id)
        out.append(diff_id if not out else sha256(f"{out[-1]} {diff_id}".encode()))
    return out
