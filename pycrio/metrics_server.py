"""The HTTP endpoint of [pycrio.metrics]: GET /metrics (Prometheus text format) and GET /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from pycrio.config import MetricsConfig
from pycrio.errors import FailedPrecondition
from pycrio.metrics import CONTENT_TYPE, Metrics
from pycrio.streaming import httpreq
from pycrio.streaming.httpreq import BadRequest

logger = logging.getLogger("pycrio.metrics")

MAX_CONNECTIONS = 16  # scrapers are few; a flood of connections is refused, not queued


class MetricsServer:
    def __init__(
        self,
        cfg: MetricsConfig,
        metrics: Metrics,
        healthy: Callable[[], bool] = lambda: True,
        collect: Callable[[], list[str]] | None = None,
    ):
        self.cfg = cfg
        self.metrics = metrics
        self.healthy = healthy
        self.collect = collect
        self.server: asyncio.Server | None = None
        self.port = 0
        self._open = 0

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._connection, self.cfg.metrics_host, self.cfg.metrics_port)
        except OSError as e:
            where = f"{self.cfg.metrics_host}:{self.cfg.metrics_port}"
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise FailedPrecondition(f"metrics endpoint {where} (pycrio.metrics): {reason}") from e
        self.port = self.server.sockets[0].getsockname()[1]
        logger.info("metrics on http://%s:%d/metrics", self.cfg.metrics_host, self.port)

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1.0)
        self.server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                writer.write(httpreq.response(503, "too many connections\n"))
            else:
                writer.write(await self._answer(reader))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        try:
            req = await httpreq.read_request(reader)
        except BadRequest as e:
            return httpreq.response(400, f"{e}\n")
        if req is None:
            return b""
        if req.method not in ("GET", "HEAD"):
            return httpreq.response(405, "method not allowed\n", {"Allow": "GET, HEAD"})
        if req.path == "/metrics":
            body = self.metrics.render(self.collect)
            out = httpreq.response(200, body, content_type=CONTENT_TYPE)
        elif req.path == "/healthz":
            ok = self.healthy()
            out = httpreq.response(200 if ok else 503, "ok\n" if ok else "not serving\n")
        else:
            return httpreq.response(404, "not found: /metrics and /healthz are served\n")
        if req.method == "HEAD":
            out = out.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        return out
