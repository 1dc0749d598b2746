"""Pulling an image: resolve the name, fetch config and layers, extract while downloading, commit.

Each layer streams from the registry into a pipe that the C extractor reads in a
worker thread; the extractor hashes and tees the compressed bytes into a
temporary blob and hashes the tar stream. Nothing becomes visible until its
digests check out: the blob is renamed into the content store, the layer dir
into the layer store (in layer order), and the image record is written last, in
one transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycrio import digest as dg
from pycrio import native
from pycrio.errors import InvalidArgument, NotFound, PycrioError
from pycrio.image import manifest as mf
from pycrio.image.credentials import Credentials
from pycrio.image.reference import Reference
from pycrio.image.registries_conf import RegistriesConf, Source
from pycrio.image.store import ImageRecord, ImageStore, LayerRecord
from pycrio.metrics import METRICS
from pycrio.storage.content import ContentStore
from pycrio.storage.layers import LayerStore, remove_tree

if TYPE_CHECKING:
    from pycrio.image.registry import RegistryClient

logger = logging.getLogger("pycrio.pull")

MAX_CONFIG_SIZE = 8 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


class LayerIntegrityError(InvalidArgument):
    """A blob or its tar stream does not hash to what the manifest or config says."""


@dataclass
class PullStats:
    layers: int = 0
    fetched_layers: int = 0
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    files: int = 0


class InUse:
    """Chain ids and blob digests that in-flight pulls hold; garbage collection keeps them."""

    def __init__(self) -> None:
        self.chains: Counter[str] = Counter()
        self.blobs: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, chains: Iterable[str], blobs: Iterable[str]):
        chains, blobs = list(chains), list(blobs)
        self.chains.update(chains)
        self.blobs.update(blobs)
        try:
            yield
        finally:
            self.chains.subtract(chains)
            self.blobs.subtract(blobs)
            self.chains += Counter()  # drop zero counts
            self.blobs += Counter()


class Puller:
    def __init__(
        self,
        store: ImageStore,
        content: ContentStore,
        layers: LayerStore,
        make_client: Callable[[], RegistryClient],
        registries: RegistriesConf,
        in_use: InUse,
        max_concurrent_downloads: int,
    ):
        self.store, self.content, self.layers = store, content, layers
        self._make_client = make_client
        self._client: RegistryClient | None = None
        self.registries, self.in_use = registries, in_use
        self.downloads = asyncio.Semaphore(max(1, max_concurrent_downloads))
        # Extraction threads: one per concurrent download, plus pipe writers.
        self.extractors = ThreadPoolExecutor(max(1, max_concurrent_downloads), thread_name_prefix="extract")
        self.writers = ThreadPoolExecutor(max(1, max_concurrent_downloads), thread_name_prefix="pipe")
        self._pulls: dict[tuple[str, str], asyncio.Task[str]] = {}
        self._layer_tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def client(self) -> RegistryClient:
        """The registry client, made at the first pull (a node that never pulls never opens a connection pool)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def close(self, timeout: float = 2.0) -> None:
        """Cancel in-flight pulls; their cleanup runs on the loop, so wait for it here, briefly."""
        tasks = [*self._pulls.values(), *self._layer_tasks.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self.extractors.shutdown(wait=False, cancel_futures=True)
        self.writers.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            await self._client.close()

    async def pull(self, name: str, creds: Credentials | None) -> str:
        """Pull name (normalised as Kubernetes does) and return the image id."""
        key = (name, repr(creds))
        task = self._pulls.get(key)
        if task is None:
            # A shared task: a caller that gives up (deadline) does not cancel the others' pull.
            task = asyncio.get_running_loop().create_task(self._pull_any(name, creds))
            self._pulls[key] = task
            task.add_done_callback(lambda _t: self._pulls.pop(key, None))
        else:
            logger.info("pull of %s joins one in progress", name)
        return await asyncio.shield(task)

    async def _pull_any(self, name: str, creds: Credentials | None) -> str:
        try:
            return await self._pull_candidates(name, creds)
        except Exception:
            METRICS.pulls.inc(("failure",))
            raise

    async def _pull_candidates(self, name: str, creds: Credentials | None) -> str:
        candidates = self.registries.candidates(name)
        errors: list[str] = []
        for ref in candidates:
            try:
                return await self._pull_ref(ref, creds)
            except NotFound as e:
                errors.append(f"{ref}: {e}")
        if len(errors) == 1:
            raise NotFound(errors[0])
        raise NotFound(f"{name} not found in any search registry: " + "; ".join(errors))

    async def _pull_ref(self, ref: Reference, creds: Credentials | None) -> str:
        started = time.monotonic()
        sources = self.registries.sources(ref)
        resolved = await self.client.resolve(ref, sources, creds)
        t_resolve = time.monotonic()
        manifest = resolved.manifest
        config_bytes = await self.client.fetch_blob(resolved.source, manifest.config, creds, MAX_CONFIG_SIZE)
        config = mf.parse_image_config(config_bytes)
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"{ref}: the config lists {len(config.diff_ids)} diff ids for {len(manifest.layers)} layers"
            )
        chains = dg.chain_ids(config.diff_ids)
        image_id = manifest.config.digest
        blobs = [resolved.manifest_digest, image_id, *(d.digest for d in manifest.layers)]
        if resolved.index_digest:
            blobs.insert(0, resolved.index_digest)
        stats = PullStats(layers=len(chains))
        with self.in_use.hold(chains, blobs):
            previous: asyncio.Task[None] | None = None
            tasks = []
            for i, (desc, diff_id, chain) in enumerate(zip(manifest.layers, config.diff_ids, chains, strict=True)):
                parent = chains[i - 1] if i else None
                previous = self._layer_task(resolved.source, desc, diff_id, chain, parent, previous, creds, stats)
                tasks.append(previous)
            await _gather_all(tasks)
            t_layers = time.monotonic()
            self.content.write(image_id, config_bytes)
            self.content.write(resolved.manifest_digest, resolved.manifest_bytes)
            if resolved.index_digest and resolved.index_bytes is not None:
                self.content.write(resolved.index_digest, resolved.index_bytes)
            record = ImageRecord(
                id=image_id,
                manifest_digest=resolved.manifest_digest,
                index_digest=resolved.index_digest,
                layers=chains,
                blobs=blobs,
                size=self.store.layer_sizes(chains) + len(config_bytes),
                user=str(config.config.get("User") or ""),
                created_ns=time.time_ns(),
            )
            self.store.add_image(record, _names(ref, record))
        done = time.monotonic()
        mbps = stats.compressed_bytes / max(done - t_resolve, 1e-6) / 1e6
        logger.info(
            "pulled %s as %s: %d layers (%d fetched), %d bytes compressed, %d unpacked, %d files "
            "in %.3f s (resolve %.3f s, layers %.3f s, commit %.3f s), %.1f MB/s",
            ref, image_id, stats.layers, stats.fetched_layers, stats.compressed_bytes, stats.uncompressed_bytes,
            stats.files, done - started, t_resolve - started, t_layers - t_resolve, done - t_layers, mbps,
        )  # fmt: skip
        METRICS.pulled(
            stats.compressed_bytes,
            stats.fetched_layers,
            {"resolve": t_resolve - started, "layers": t_layers - t_resolve, "commit": done - t_layers},
        )
        return image_id

    def _layer_task(self, source, desc, diff_id, chain, parent, previous, creds, stats) -> asyncio.Task[None]:
        """The task that makes layer chain present; shared by concurrent pulls of images holding it."""
        task = self._layer_tasks.get(chain)
        if task is None:
            coro = self._ensure_layer(source, desc, diff_id, chain, parent, previous, creds, stats)
            task = asyncio.get_running_loop().create_task(coro)
            self._layer_tasks[chain] = task
            task.add_done_callback(lambda _t: self._layer_tasks.pop(chain, None))
        return task

    async def _ensure_layer(
        self,
        source: Source,
        desc: mf.Descriptor,
        diff_id: str,
        chain: str,
        parent: str | None,
        previous: asyncio.Task[None] | None,
        creds: Credentials | None,
        stats: PullStats,
    ) -> None:
        if self.store.has_layer(chain) and self.layers.exists(chain):
            logger.debug("layer %s present", chain)
            if previous is not None:
                await previous
            return
        loop = asyncio.get_running_loop()
        temp: str | None = await loop.run_in_executor(None, self.layers.new_temp)
        try:
            started = time.monotonic()
            async with self.downloads:
                assert temp is not None
                result = None
                if self.content.has(desc.digest):
                    try:
                        result = await self._extract_local(desc, diff_id, temp)
                    except LayerIntegrityError as e:
                        logger.warning("stored blob %s is damaged (%s): fetching it again", desc.digest, e)
                        self.content.remove(desc.digest)
                        await loop.run_in_executor(None, remove_tree, temp)
                        temp = await loop.run_in_executor(None, self.layers.new_temp)
                if result is None:
                    result = await self._extract_remote(source, desc, diff_id, creds, temp)
            elapsed = time.monotonic() - started
            logger.debug(
                "layer %s: %d bytes -> %d bytes, %d files in %.3f s (%.1f MB/s unpacked)",
                desc.digest, result.compressed_bytes, result.uncompressed_bytes, result.files, elapsed,
                result.uncompressed_bytes / max(elapsed, 1e-6) / 1e6,
            )  # fmt: skip
            if previous is not None:
                await previous  # layers are committed in order
            self.layers.commit(temp, chain)
            temp = None
            inodes = result.files + result.dirs + result.symlinks + result.devices + result.fifos + result.whiteouts
            self.store.add_layer(LayerRecord(chain, diff_id, parent, desc.digest, result.uncompressed_bytes, inodes))
            stats.fetched_layers += 1
            stats.compressed_bytes += result.compressed_bytes
            stats.uncompressed_bytes += result.uncompressed_bytes
            stats.files += result.files
        finally:
            if temp is not None:
                await loop.run_in_executor(None, remove_tree, temp)

    async def _extract_local(self, desc: mf.Descriptor, diff_id: str, temp: str) -> native.ExtractStats:
        """Extract a layer whose blob the content store has already (e.g. after its layer was collected)."""
        fd = os.open(self.content.path(desc.digest), os.O_RDONLY | os.O_CLOEXEC)
        try:
            loop = asyncio.get_running_loop()
            stats = await loop.run_in_executor(
                self.extractors, functools.partial(native.extract_layer, fd, os.path.join(temp, "diff"))
            )
        except native.NativeError as e:
            raise LayerIntegrityError(f"layer {desc.digest}: {e}") from e
        finally:
            os.close(fd)
        _check_layer(desc, diff_id, stats)
        return stats

    async def _extract_remote(
        self, source: Source, desc: mf.Descriptor, diff_id: str, creds: Credentials | None, temp: str
    ) -> native.ExtractStats:
        blob_fd, blob_path = self.content.open_temp()
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_fd, F_SETPIPE_SZ, PIPE_SIZE)
        # Concurrent futures, not asyncio ones: a cancelled pull must still wait for its threads.
        extracting = self.extractors.submit(native.extract_layer, read_fd, os.path.join(temp, "diff"), tee_fd=blob_fd)
        # When the extractor stops (done or failed) the read end closes, so a blocked writer sees EPIPE.
        extracting.add_done_callback(lambda _f: os.close(read_fd))
        extract = asyncio.wrap_future(extracting)
        committed = False
        writing: concurrent.futures.Future[None] | None = None
        try:
            try:
                async for chunk in self.client.blob_chunks(source, desc, creds):
                    writing = self.writers.submit(_write_all, write_fd, chunk)
                    await asyncio.wrap_future(writing)
            except BrokenPipeError:
                pass  # the extractor stopped early; its error below says why
            finally:
                if writing is not None and not writing.done():
                    await asyncio.wait([asyncio.wrap_future(writing)])  # never close an fd a thread writes to
                os.close(write_fd)
            await asyncio.wait([extract])
            try:
                stats = extract.result()
            except native.NativeError as e:
                raise LayerIntegrityError(f"layer {desc.digest}: {e}") from e
            _check_layer(desc, diff_id, stats)
            self.content.commit(blob_path, desc.digest, sync=False)
            committed = True
            return stats
        finally:
            if not extracting.done():
                await asyncio.wait([asyncio.wrap_future(extracting)])
            os.close(blob_fd)
            if not committed:
                self.content.discard_temp(blob_path)


def _check_layer(desc: mf.Descriptor, diff_id: str, stats: native.ExtractStats) -> None:
    """The blob must hash to the manifest's digest and size, its tar stream to the config's diff id."""
    if stats.compressed_digest != desc.digest or stats.compressed_bytes != desc.size:
        raise LayerIntegrityError(
            f"layer blob {desc.digest} ({desc.size} bytes) arrived as {stats.compressed_digest} "
            f"({stats.compressed_bytes} bytes): digest mismatch, discarded"
        )
    if stats.diff_digest != diff_id:
        raise LayerIntegrityError(
            f"layer {desc.digest}: its tar stream hashes to {stats.diff_digest}, the config says {diff_id}"
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


async def _gather_all(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; raise the first real failure (cancellation of the others follows from it)."""
    results = await asyncio.gather(*[asyncio.shield(t) for t in tasks], return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        real = [e for e in errors if isinstance(e, PycrioError)] or errors
        raise real[0]


def _names(ref: Reference, record: ImageRecord) -> list[tuple[str, str]]:
    repo = f"{ref.registry}/{ref.repository}"
    names = [(f"{repo}@{record.repo_digest}", "digest")]
    if ref.tag:
        names.insert(0, (f"{repo}:{ref.tag}", "tag"))
    return names
