"""The streaming server: one HTTP/1.1 request per connection, upgraded to SPDY/3.1 or WebSocket.

URLs are http://ADDRESS:PORT/{exec,attach,portforward}/TOKEN; a token comes from the Exec,
Attach or PortForward RPC, works once and expires (docs/streaming.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

from pycrio.config import StreamingConfig
from pycrio.cri import api_pb2
from pycrio.streaming import httpreq
from pycrio.streaming.httpreq import BadRequest, response
from pycrio.streaming.tokens import StreamRequest, Tokens

logger = logging.getLogger("pycrio.streaming")

KINDS = ("exec", "attach", "portforward")
STOP_GRACE = 1.0


class StreamingServer:
    def __init__(self, cfg: StreamingConfig, lifecycle: Any):
        self.cfg = cfg
        self.lifecycle = lifecycle
        self.tokens = Tokens(float(cfg.token_lifetime))
        self.server: asyncio.Server | None = None
        self.port = 0
        self.sessions: set[asyncio.Task] = set()
        self._exits: dict[str, set[asyncio.Event]] = {}  # container id -> events of its exec sessions
        self._watcher: asyncio.Task | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._connection, self.cfg.address, self.cfg.port, limit=64 * 1024)
        self.port = self.server.sockets[0].getsockname()[1]
        self._watcher = asyncio.get_running_loop().create_task(self._watch_exits())
        logger.info("streaming server on %s", self.base_url)

    async def _watch_exits(self) -> None:
        """A container that exits ends its exec sessions (their processes may outlive it in a shared PID namespace)."""
        queue = self.lifecycle.subscribe()
        try:
            while True:
                event = await queue.get()
                if event.kind == api_pb2.CONTAINER_STOPPED_EVENT:
                    for waiter in self._exits.get(event.container.id, ()):
                        waiter.set()
        finally:
            self.lifecycle.unsubscribe(queue)

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.wait(list(self.sessions), timeout=STOP_GRACE + 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), STOP_GRACE)
        self.server = None

    @property
    def base_url(self) -> str:
        host = self.cfg.address
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def url(self, request: StreamRequest) -> str:
        return f"{self.base_url}/{request.kind}/{self.tokens.issue(request)}"

    # ------------------------------------------------------------ connections

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
            logger.debug("streaming connection ended: %s", e)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - one broken session never takes the server down
            logger.exception("streaming session failed")
        finally:
            self.sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(self, writer: asyncio.StreamWriter, status: int, body: str, headers=None) -> None:
        writer.write(response(status, body + "\n", headers))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await httpreq.read_request(reader)
        except BadRequest as e:
            await self._reply(writer, 400, str(e))
            return
        if req is None:
            return
        parts = req.path.split("/")
        if len(parts) != 3 or parts[0] or parts[1] not in KINDS or not parts[2]:
            await self._reply(writer, 404, "not found")
            return
        if req.method not in ("GET", "POST"):
            await self._reply(writer, 405, "method not allowed", {"Allow": "GET, POST"})
            return
        request = self.tokens.take(parts[1], parts[2])
        if request is None:
            await self._reply(writer, 404, "unknown or expired token")
            return
        upgrade = req.header("upgrade").lower()
        connection = [t.lower() for t in req.header_tokens("connection")]
        if "upgrade" not in connection or not upgrade:
            await self._reply(writer, 400, "an Upgrade to SPDY/3.1 or websocket is required")
            return
        if upgrade not in ("websocket", "spdy/3.1"):
            await self._reply(writer, 400, f"unsupported upgrade {upgrade!r}: SPDY/3.1 or websocket")
            return
        # Imported at the first session: the protocols (SPDY, WebSocket, port-forward, exec) cost the
        # daemon about 1.3 MiB that a node which never streams need not carry.
        from pycrio.streaming.session import Session

        await Session(self, req, reader, writer, request).serve(upgrade)

    def watch_exit(self, container_id: str) -> asyncio.Event:
        """An event set when the container stops; give it back with unwatch_exit."""
        exited = asyncio.Event()
        self._exits.setdefault(container_id, set()).add(exited)
        return exited

    def unwatch_exit(self, container_id: str, exited: asyncio.Event) -> None:
        waiters = self._exits.get(container_id, set())
        waiters.discard(exited)
        if not waiters:
            self._exits.pop(container_id, None)
