"""The daemon: state directories, the gRPC server on its socket, signals and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

import grpc

from pycrio import __version__, config, listen, log, native
from pycrio.config import Config
from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition
from pycrio.heap_trim import HeapTrimmer
from pycrio.image.images import Images
from pycrio.lifecycle import Lifecycle
from pycrio.metrics import METRICS, gauge_lines
from pycrio.metrics_server import MetricsServer
from pycrio.network import NetworkBackend, make_network
from pycrio.server.container_service import ContainerServicer
from pycrio.server.image_service import ImageServicer
from pycrio.server.pod_service import PodServicer
from pycrio.server.rpc import generic_handler
from pycrio.server.runtime_info import RuntimeInfoServicer
from pycrio.server.stats_service import StatsServicer
from pycrio.server.streaming_service import StreamingServicer
from pycrio.state import Database
from pycrio.streaming.server import StreamingServer

logger = logging.getLogger("pycrio.daemon")

SHUTDOWN_GRACE = 4.0  # seconds in-flight RPCs get on SIGTERM; the whole stop stays under 5 s


class Daemon:
    """One running pycrio: its configuration and the servicers that read it."""

    def __init__(self, cfg: Config, reload: Callable[[], Config] | None = None):
        self.cfg = cfg.resolved()
        self._reload = reload
        self.server: grpc.aio.Server | None = None
        self.db: Database | None = None
        self.images: Images | None = None
        self.lifecycle: Lifecycle | None = None
        self.network: NetworkBackend | None = None
        self.streaming: StreamingServer | None = None
        self.metrics_server: MetricsServer | None = None
        self.lock = listen.SocketLock(listen.socket_path(self.cfg.api.listen))
        self.stopped = asyncio.Event()
        self.trimmer = HeapTrimmer()

    def prepare_dirs(self) -> None:
        for path, mode in (
            (self.cfg.root, 0o711),
            (self.cfg.runroot, 0o711),
            (self.cfg.runtime.exits_dir, 0o700),
            (self.cfg.runtime.namespaces_dir, 0o711),
        ):
            os.makedirs(path, mode=mode, exist_ok=True)
        if native.fs_type(self.cfg.root) == native.OVERLAYFS_MAGIC:
            raise FailedPrecondition(f"root {self.cfg.root} is on overlayfs, which cannot hold overlay upper dirs")

    def create_server(self) -> grpc.aio.Server:
        """The gRPC server with every CRI service registered (not yet bound)."""
        max_msg = self.cfg.api.grpc_max_msg_size
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", max_msg), ("grpc.max_send_message_length", max_msg)]
        )
        assert self.images is not None and self.lifecycle is not None and self.streaming is not None
        servicers: list[object] = [
            RuntimeInfoServicer(self),
            ImageServicer(self.images),
            PodServicer(self.lifecycle),
            ContainerServicer(self.lifecycle),
            StatsServicer(self.lifecycle),
            StreamingServicer(self.lifecycle, self.streaming),
        ]
        services = api_pb2.DESCRIPTOR.services_by_name
        server.add_generic_rpc_handlers(
            [
                generic_handler(services["RuntimeService"], servicers, self.trimmer),
                generic_handler(services["ImageService"], servicers, self.trimmer),
            ]
        )
        return server

    async def start(self) -> None:
        """Take the socket's lock, bind the socket (mode 0660) and start serving."""
        path = listen.socket_path(self.cfg.api.listen)
        self.prepare_dirs()
        self.lock.acquire()
        try:
            self.db = Database(os.path.join(self.cfg.root, "pycrio.db"))
            self.images = Images(self.cfg, self.db)
            self.images.recover()
            self.network = make_network(self.cfg.network, self.db)
            try:
                await asyncio.to_thread(self.network.start)
            except Exception as e:  # noqa: BLE001 - Status reports NetworkReady false with the reason
                logger.error("pod network not ready: %s", e)
            self.lifecycle = Lifecycle(self.cfg, self.db, self.images, self.network)
            self.images.images_in_use = self.lifecycle.store.image_in_use
            await self.lifecycle.start()
            self.streaming = StreamingServer(self.cfg.streaming, self.lifecycle)
            await self.streaming.start()
            if self.cfg.metrics.enable_metrics:
                self.metrics_server = MetricsServer(
                    self.cfg.metrics, METRICS, healthy=lambda: self.server is not None, collect=self._state_lines
                )
                await self.metrics_server.start()
            listen.clear_stale(path)
            self.server = self.create_server()
            self.server.add_insecure_port(f"unix:{path}")
            await self.server.start()
            os.chmod(path, listen.SOCKET_MODE)
        except BaseException:
            if self.server is not None:
                await self.server.stop(None)
            if self.streaming is not None:
                await self.streaming.stop()
            if self.metrics_server is not None:
                await self.metrics_server.stop()
                self.metrics_server = None
            await self._close_state()
            self.lock.release()
            raise
        logger.info(
            "pycrio %s serving the CRI on %s (root %s, runroot %s)", __version__, path, self.cfg.root, self.cfg.runroot
        )
        self.trimmer.trim()  # what configuration, recovery and imports freed

    def _state_lines(self) -> list[str]:
        """Pods and containers by state, for the metrics endpoint."""
        if self.lifecycle is None:
            return []
        pods, containers = self.lifecycle.store.state_counts()
        return gauge_lines("pycrio_pods", "Pod sandboxes pycrio holds, by state.", "state", pods) + gauge_lines(
            "pycrio_containers", "Containers pycrio holds, by state.", "state", containers
        )

    async def stop(self) -> None:
        """Let in-flight RPCs finish for SHUTDOWN_GRACE seconds, cancel the rest, release the socket."""
        if self.server is None:
            return
        logger.info("shutting down: in-flight requests get %.0f s", SHUTDOWN_GRACE)
        await self.server.stop(SHUTDOWN_GRACE)
        self.server = None
        self.trimmer.close()
        if self.streaming is not None:
            await self.streaming.stop()
            self.streaming = None
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        await self._close_state()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listen.socket_path(self.cfg.api.listen))
        self.lock.release()
        logger.info("stopped")
        self.stopped.set()

    async def _close_state(self) -> None:
        if self.lifecycle is not None:
            self.lifecycle.close()
            self.lifecycle = None
        if self.network is not None:
            self.network.close()
            self.network = None
        if self.images is not None:
            await self.images.close()
            self.images = None
        if self.db is not None:
            self.db.close()
            self.db = None

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; apply what can change while running."""
        if self._reload is None:
            return
        try:
            new = self._reload().resolved()
        except config.ConfigError as e:
            logger.error("reload refused, keeping the running configuration: %s", e)
            return
        if new.log_level != self.cfg.log_level:
            log.set_level(new.log_level)
            logger.info("log level is now %s", new.log_level)
        old = self.cfg.as_dict()
        changed = [k for k, v in new.as_dict().items() if k != "log_level" and old.get(k) != v]
        if changed:
            logger.warning("reload: changes to %s take effect after a restart", ", ".join(sorted(changed)))
        self.cfg = self._merge_reloadable(new)

    def _merge_reloadable(self, new: Config) -> Config:
        cfg = self.cfg.resolved()
        cfg.log_level = new.log_level
        return cfg

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT; SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        await self.start()
        stopping: list[asyncio.Task] = []

        def on_stop(signame: str) -> None:
            if stopping:
                return
            logger.info("received %s", signame)
            stopping.append(loop.create_task(self.stop()))

        loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.stopped.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
