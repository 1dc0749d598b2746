"""The streaming server: one HTTP/1.1 request per connection, upgraded to SPDY/3.1 or WebSocket.

URLs are http://ADDRESS:PORT/{exec,attach,portforward}/TOKEN; a token comes from the Exec,
Attach or PortForward RPC, works once and expires (docs/streaming.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from typing import Any

from pycrio import attach as attach_mod
from pycrio import monitor
from pycrio.config import StreamingConfig
from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition
from pycrio.sandbox import ctl_socket_path
from pycrio.streaming import httpreq, portforward, spdy_channels, ws_channels
from pycrio.streaming.channels import Channels
from pycrio.streaming.exec import ExecProcess
from pycrio.streaming.httpreq import BadRequest, Request, response
from pycrio.streaming.remotecommand import Sizes, serve_attach, serve_exec
from pycrio.streaming.spdy_session import SpdySession
from pycrio.streaming.status import failed
from pycrio.streaming.tokens import StreamRequest, Tokens
from pycrio.streaming.websocket import WebSocket, WebSocketError

logger = logging.getLogger("pycrio.streaming")

KINDS = ("exec", "attach", "portforward")
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"
STOP_GRACE = 1.0
FIRST_SIZE_WAIT = 0.25  # seconds a tty exec waits for the client's first terminal size before it starts


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
        if upgrade == "websocket":
            await self._websocket(req, reader, writer, request)
        elif upgrade == "spdy/3.1":
            await self._spdy(req, reader, writer, request)
        else:
            await self._reply(writer, 400, f"unsupported upgrade {upgrade!r}: SPDY/3.1 or websocket")

    # ------------------------------------------------------------ SPDY

    async def _spdy(self, req: Request, reader, writer, request: StreamRequest) -> None:
        offered = req.header_tokens(PROTOCOL_HEADER)
        supported = [portforward.PROTOCOL] if request.kind == "portforward" else spdy_channels.PROTOCOLS
        if not offered:
            await self._reply(writer, 400, f"unable to upgrade: {PROTOCOL_HEADER} is required")
            return
        protocol = next((p for p in offered if p in supported), None)
        if protocol is None:
            message = "unable to upgrade: unable to negotiate protocol: "
            message += f"client supports {offered}, server accepts {supported}"
            await self._reply(writer, 403, message, [(ACCEPTED_HEADER, p) for p in supported])
            return
        writer.write(
            response(101, headers=[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), (PROTOCOL_HEADER, protocol)])
        )
        await writer.drain()
        if request.kind == "portforward":
            netns = self._pod_netns(request.pod_id)
            holder: list[portforward.SpdyPortForward] = []
            session = SpdySession(reader, writer, lambda s: holder[0].on_stream(s))
            holder.append(portforward.SpdyPortForward(session, request.pod_id, netns))
            await holder[0].run()
            return
        wanted = spdy_channels.expected_streams(protocol, request.stdin, request.stdout, request.stderr, request.tty)
        channels_holder: list[spdy_channels.SpdyChannels] = []
        session = SpdySession(reader, writer, lambda s: channels_holder[0].on_stream(s))
        channels = spdy_channels.SpdyChannels(session, protocol, wanted)
        channels_holder.append(channels)
        runner = asyncio.get_running_loop().create_task(session.run())
        try:
            if not await channels.wait_ready():
                logger.info(
                    "%s session: the client did not open its streams (%s)", request.kind, session.error or "timeout"
                )
                return
            await self._remotecommand(channels, request)
        finally:
            await session.close()
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner

    # ------------------------------------------------------------ WebSocket

    async def _websocket(self, req: Request, reader, writer, request: StreamRequest) -> None:
        ws = WebSocket(reader, writer)
        try:
            handshake = ws.handshake(req.raw)
        except WebSocketError as e:
            await self._reply(writer, 400, f"bad WebSocket handshake: {e}")
            return
        supported = portforward.WS_PROTOCOLS if request.kind == "portforward" else ws_channels.PROTOCOLS
        offered = list(handshake.subprotocols)
        if not offered:
            protocol = "channel.k8s.io"  # the kubelet's default for a client that names none
            chosen: str | None = None
        else:
            protocol = chosen = next((p for p in offered if p in supported), "")
            if not chosen:
                await self._reply(
                    writer, 400, f"unable to negotiate a protocol: client offers {offered}, server accepts {supported}"
                )
                return
        ports = list(request.ports)
        if request.kind == "portforward":
            try:
                ports = _query_ports(req.query) or ports
            except ValueError as e:
                await self._reply(writer, 400, str(e))
                return
            if not ports:
                await self._reply(writer, 400, "no port to forward: give ?port=N")
                return
        await ws.accept(chosen)
        if request.kind == "portforward":
            netns = self._pod_netns(request.pod_id)
            await portforward.websocket_portforward(ws, protocol, ports, request.pod_id, netns)
            return
        channels = ws_channels.WsChannels(
            ws, protocol, stdin=request.stdin, stdout=request.stdout, stderr=request.stderr, tty=request.tty
        )
        await channels.start()
        await self._remotecommand(channels, request)

    # ------------------------------------------------------------ exec and attach

    async def _remotecommand(self, channels: Channels, request: StreamRequest) -> None:
        try:
            c = self.lifecycle.find_container(request.container_id)
            if c.state != "running":
                raise FailedPrecondition(f"container {c.id[:12]} is not running")
            if request.kind == "exec":
                sizes = Sizes(channels.resize) if request.tty and channels.resize is not None else None
                size = await sizes.first(FIRST_SIZE_WAIT) if sizes is not None else None
                proc = await self._start_exec(c, request, size)
            else:
                session = await attach_mod.open_attach(ctl_socket_path(self.lifecycle.cfg, c.id), stdin=request.stdin)
        except Exception as e:  # noqa: BLE001 - the client hears it on the error stream
            logger.info("%s in %s failed: %s", request.kind, request.container_id[:12], e)
            with contextlib.suppress(Exception):
                await channels.finish(failed(str(e)))
            return
        if request.kind == "exec":
            exited = asyncio.Event()
            self._exits.setdefault(c.id, set()).add(exited)
            try:
                if self.lifecycle.find_container(c.id).state != "running":
                    exited.set()
                await serve_exec(channels, proc, request.cmd, exited, sizes)
            finally:
                waiters = self._exits.get(c.id, set())
                waiters.discard(exited)
                if not waiters:
                    self._exits.pop(c.id, None)
        else:
            ctl = ctl_socket_path(self.lifecycle.cfg, c.id)

            async def resize(width: int, height: int) -> None:
                if request.tty:
                    await monitor.resize(ctl, height, width)

            await serve_attach(channels, session, resize)

    async def _start_exec(self, c: Any, request: StreamRequest, size: tuple[int, int] | None) -> ExecProcess:
        pod = self.lifecycle.find_pod(c.pod_id)
        runtime = self.lifecycle.runtime(pod.runtime_handler)
        bundle = c.facts["bundle"]
        with open(os.path.join(bundle, "config.json")) as f:
            process = dict(json.load(f)["process"])
        process["args"] = list(request.cmd)
        process.pop("consoleSize", None)
        if size is not None:
            process["consoleSize"] = {"width": size[0], "height": size[1]}
        return await ExecProcess.start(runtime, c.id, bundle, process, tty=request.tty, stdin=request.stdin, size=size)

    def _pod_netns(self, pod_id: str) -> str | None:
        pod = self.lifecycle.find_pod(pod_id)
        return pod.facts.get("netns") or None


def _query_ports(query: dict[str, list[str]]) -> list[int]:
    ports = []
    for value in query.get("port", []):
        for item in value.split(","):
            try:
                port = int(item)
            except ValueError:
                raise ValueError(f"invalid port {item!r}") from None
            if not 0 < port < 65536:
                raise ValueError(f"invalid port {port}")
            ports.append(port)
    return ports
