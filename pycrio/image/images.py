"""The image domain: pull, look up, list, remove and garbage-collect images; filesystem usage."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycrio import digest as dg
from pycrio.config import Config
from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.image.credentials import Credentials
from pycrio.image.pull import InUse, Puller
from pycrio.image.registries_conf import RegistriesConf
from pycrio.image.store import ImageRecord, ImageStore
from pycrio.state import Database
from pycrio.storage.content import ContentStore
from pycrio.storage.layers import LayerStore

if TYPE_CHECKING:
    from pycrio.image.registry import RegistryClient

logger = logging.getLogger("pycrio.images")


@dataclass(frozen=True)
class Usage:
    mountpoint: str
    bytes: int
    inodes: int


class Images:
    """Everything the ImageService needs, over the content store, layer store and database."""

    def __init__(self, cfg: Config, db: Database):
        self.cfg = cfg
        self.store = ImageStore(db)
        self.content = ContentStore(os.path.join(cfg.root, "blobs"))
        self.layers = LayerStore(os.path.join(cfg.root, "layers"))
        self.registries = RegistriesConf.load(cfg.image.registries_conf)
        self.in_use = InUse()
        self.puller = Puller(
            self.store,
            self.content,
            self.layers,
            self._registry_client,
            self.registries,
            self.in_use,
            cfg.image.max_concurrent_downloads,
        )
        self._gc_lock = asyncio.Lock()
        # Set by the daemon once containers exist: ids of images that containers are made from.
        self.images_in_use: Callable[[], set[str]] = set

    async def close(self) -> None:
        await self.puller.close()

    def _registry_client(self) -> RegistryClient:
        # Imported here: a node that never pulls needs neither the registry client nor its HTTP client.
        from pycrio.image.registry import RegistryClient

        return RegistryClient(progress_timeout=float(self.cfg.image.pull_progress_timeout))

    # ------------------------------------------------------------ start-up

    def recover(self) -> None:
        """After a restart or crash: drop temporary data and anything no record points to."""
        temps = self.content.clear_temp() + self.layers.clear_temp()
        recorded = self.store.layer_chain_ids()
        on_disk = self.layers.chain_ids_on_disk()
        for chain in on_disk - recorded:
            self.layers.remove(chain)  # renamed in, but the crash came before its record
        missing = recorded - on_disk
        if missing:
            logger.warning("%d layer records had no directory; dropping them", len(missing))
            self.store.remove_layer_records(missing)
        removed = self._collect()
        if temps or removed or on_disk - recorded:
            logger.info(
                "recovered image storage: %d temporary entries, %d orphan layer dirs, %d unreferenced objects removed",
                temps, len(on_disk - recorded), removed,
            )  # fmt: skip

    # ------------------------------------------------------------ pulling

    async def pull(self, name: str, creds: Credentials | None) -> str:
        return await self.puller.pull(name, creds)

    # ------------------------------------------------------------ lookups

    def find(self, spec: str) -> ImageRecord | None:
        """The image spec names: an id (full, bare hex or unique prefix), a name, or name@digest."""
        spec = spec.strip()
        if not spec:
            raise InvalidArgument("an image name or id is required")
        if dg.is_digest(spec):
            return self.store.get(spec) or self.store.by_id_prefix(spec)
        by_id = self.store.by_id_prefix(spec)
        if by_id is not None and len(spec.removeprefix("sha256:")) >= 12:
            return by_id
        try:
            candidates = self.registries.candidates(spec)
        except InvalidArgument:
            return by_id
        for ref in candidates:
            repo = f"{ref.registry}/{ref.repository}"
            if ref.digest:
                found = self.store.by_name(f"{repo}@{ref.digest}") or self.store.by_manifest_digest(repo, ref.digest)
            else:
                found = self.store.by_name(f"{repo}:{ref.tag or 'latest'}")
            if found is not None:
                return found
        return by_id

    def all(self) -> list[ImageRecord]:
        return self.store.all()

    def config(self, image: ImageRecord) -> dict:
        return json.loads(self.content.read(image.id))

    def is_pinned(self, image: ImageRecord) -> bool:
        patterns = self.cfg.image.pinned_images
        names = [*image.tags, *image.digests]
        return any(_pin_matches(p, n) for p in patterns for n in names)

    # ------------------------------------------------------------ removal and GC

    async def remove(self, spec: str) -> bool:
        """Remove the image spec names with every tag; False when there was none."""
        image = self.find(spec)
        if image is None:
            return False
        if image.id in self.images_in_use():
            raise FailedPrecondition(f"image {spec} ({image.id}) is used by a container; remove the container first")
        async with self._gc_lock:
            self.store.remove_image(image.id)
            removed = await asyncio.get_running_loop().run_in_executor(None, self._collect)
        logger.info(
            "removed image %s (%s); %d unreferenced objects collected", image.id, ", ".join(image.tags), removed
        )
        return True

    def _collect(self) -> int:
        """Delete layers and blobs that no image (and no in-flight pull) refers to; returns how many."""
        images = self.store.all()
        keep_layers = {c for i in images for c in i.layers} | set(self.in_use.chains)
        keep_blobs = {b for i in images for b in i.blobs} | set(self.in_use.blobs)
        doomed_layers = self.store.layer_chain_ids() - keep_layers
        for chain in doomed_layers:
            self.layers.remove(chain)
        if doomed_layers:
            self.store.remove_layer_records(doomed_layers)
        doomed_blobs = self.content.digests() - keep_blobs
        for blob in doomed_blobs:
            self.content.remove(blob)
        return len(doomed_layers) + len(doomed_blobs)

    # ------------------------------------------------------------ usage

    def usage(self) -> tuple[Usage, Usage]:
        """(image filesystem, container filesystem) usage, from the records (no tree walk)."""
        size, inodes = self.store.layer_usage()
        blob_bytes = 0
        for blob in self.content.digests():
            with contextlib.suppress(FileNotFoundError):  # removed by a concurrent collection
                blob_bytes += os.stat(self.content.path(blob)).st_size
        image_fs = Usage(self.cfg.root, size + blob_bytes, inodes)
        container_fs = Usage(os.path.join(self.cfg.root, "containers"), 0, 0)
        return image_fs, container_fs


def _pin_matches(pattern: str, name: str) -> bool:
    """CRI-O's pinned_images rule: an exact name, or a glob ending in '*'."""
    if pattern.endswith("*"):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or (":" not in pattern.rsplit("/", 1)[-1] and name == pattern + ":latest")


def parse_user(user: str) -> tuple[int | None, str]:
    """The config's User as the CRI reports it: (uid, "") when numeric, (None, name) otherwise."""
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        return int(name), ""
    return None, name
