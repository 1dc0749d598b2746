"""The content store: immutable blobs under blobs/sha256/<hex>, written only once verified."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil

from pycrio import digest as dg
from pycrio.errors import InvalidArgument


class ContentStore:
    def __init__(self, root: str):
        self.root = root
        self.blobs = os.path.join(root, "sha256")
        self.tmp = os.path.join(root, "tmp")
        for path in (self.blobs, self.tmp):
            os.makedirs(path, mode=0o700, exist_ok=True)

    def path(self, digest: str) -> str:
        return os.path.join(self.blobs, dg.hex_of(digest))

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def read(self, digest: str) -> bytes:
        with open(self.path(digest), "rb") as f:
            return f.read()

    def open_temp(self) -> tuple[int, str]:
        """A new temporary file for a download: (fd, path)."""
        path = os.path.join(self.tmp, secrets.token_hex(12))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return fd, path

    def commit(self, temp_path: str, digest: str, sync: bool = True) -> None:
        """Make a verified temporary file visible as digest (renamed; fsynced first when sync).

        Layer blobs skip the fsync: on ext4 it also flushes every file just extracted, which
        costs seconds per layer. A blob damaged by a power loss fails its digest when reused
        and is fetched again.
        """
        if sync:
            fd = os.open(temp_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.rename(temp_path, self.path(digest))

    def write(self, digest: str, data: bytes) -> None:
        """Store small data (manifest, config) after checking it hashes to digest."""
        if dg.sha256_digest(data) != digest:
            raise InvalidArgument(f"content does not match its digest {digest}")
        if self.has(digest):
            return
        fd, path = self.open_temp()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.commit(path, digest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise

    def discard_temp(self, temp_path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)

    def remove(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def digests(self) -> set[str]:
        return {"sha256:" + name for name in os.listdir(self.blobs) if dg.is_digest("sha256:" + name)}

    def clear_temp(self) -> int:
        """Remove leftovers of interrupted downloads (daemon start); returns how many."""
        names = os.listdir(self.tmp)
        shutil.rmtree(self.tmp)
        os.makedirs(self.tmp, mode=0o700)
        return len(names)
