"""One upgraded streaming connection: protocol negotiation, then exec, attach or port-forward.

The server (server.py) has read the request, taken its token and checked the Upgrade header;
this module is imported at the first such connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from pycrio import attach as attach_mod
from pycrio import monitor
from pycrio.errors import FailedPrecondition
from pycrio.sandbox import ctl_socket_path
from pycrio.streaming import portforward, spdy_channels, ws_channels
from pycrio.streaming.channels import Channels
from pycrio.streaming.exec import ExecProcess
from pycrio.streaming.httpreq import Request, response
from pycrio.streaming.remotecommand import Sizes, serve_attach, serve_exec
from pycrio.streaming.spdy_session import SpdySession
from pycrio.streaming.status import failed
from pycrio.streaming.tokens import StreamRequest
from pycrio.streaming.websocket import WebSocket, WebSocketError

if TYPE_CHECKING:
    from pycrio.streaming.server import StreamingServer

logger = logging.getLogger("pycrio.streaming")

PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"
FIRST_SIZE_WAIT = 0.25  # seconds a tty exec waits for the client's first terminal size before it starts


class Session:
    def __init__(
        self,
        server: StreamingServer,
        req: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: StreamRequest,
    ):
        self.server = server
        self.lifecycle = server.lifecycle
        self.req = req
        self.reader = reader
        self.writer = writer
        self.request = request

    async def serve(self, upgrade: str) -> None:
        if upgrade == "websocket":
            await self._websocket()
        else:
            await self._spdy()

    async def _reply(self, status: int, body: str, headers=None) -> None:
        await self.server._reply(self.writer, status, body, headers)

    # ------------------------------------------------------------ SPDY

    async def _spdy(self) -> None:
        req, reader, writer, request = self.req, self.reader, self.writer, self.request
        offered = req.header_tokens(PROTOCOL_HEADER)
        supported = [portforward.PROTOCOL] if request.kind == "portforward" else spdy_channels.PROTOCOLS
        if not offered:
            await self._reply(400, f"unable to upgrade: {PROTOCOL_HEADER} is required")
            return
        protocol = next((p for p in offered if p in supported), None)
        if protocol is None:
            message = "unable to upgrade: unable to negotiate protocol: "
            message += f"client supports {offered}, server accepts {supported}"
            await self._reply(403, message, [(ACCEPTED_HEADER, p) for p in supported])
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
            await self._remotecommand(channels)
        finally:
            await session.close()
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner

    # ------------------------------------------------------------ WebSocket

    async def _websocket(self) -> None:
        req, request = self.req, self.request
        ws = WebSocket(self.reader, self.writer)
        try:
            handshake = ws.handshake(req.raw)
        except WebSocketError as e:
            await self._reply(400, f"bad WebSocket handshake: {e}")
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
                    400, f"unable to negotiate a protocol: client offers {offered}, server accepts {supported}"
                )
                return
        ports = list(request.ports)
        if request.kind == "portforward":
            try:
                ports = query_ports(req.query) or ports
            except ValueError as e:
                await self._reply(400, str(e))
                return
            if not ports:
                await self._reply(400, "no port to forward: give ?port=N")
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
        await self._remotecommand(channels)

    # ------------------------------------------------------------ exec and attach

    async def _remotecommand(self, channels: Channels) -> None:
        request = self.request
        try:
            c = self.lifecycle.find_container(request.container_id)
            if c.state != "running":
                raise FailedPrecondition(f"container {c.id[:12]} is not running")
            if request.kind == "exec":
                sizes = Sizes(channels.resize) if request.tty and channels.resize is not None else None
                size = await sizes.first(FIRST_SIZE_WAIT) if sizes is not None else None
                proc = await self._start_exec(c, size)
            else:
                session = await attach_mod.open_attach(ctl_socket_path(self.lifecycle.cfg, c.id), stdin=request.stdin)
        except Exception as e:  # noqa: BLE001 - the client hears it on the error stream
            logger.info("%s in %s failed: %s", request.kind, request.container_id[:12], e)
            with contextlib.suppress(Exception):
                await channels.finish(failed(str(e)))
            return
        if request.kind == "exec":
            exited = self.server.watch_exit(c.id)
            try:
                if self.lifecycle.find_container(c.id).state != "running":
                    exited.set()
                await serve_exec(channels, proc, request.cmd, exited, sizes)
            finally:
                self.server.unwatch_exit(c.id, exited)
        else:
            ctl = ctl_socket_path(self.lifecycle.cfg, c.id)

            async def resize(width: int, height: int) -> None:
                if request.tty:
                    await monitor.resize(ctl, height, width)

            await serve_attach(channels, session, resize)

    async def _start_exec(self, c: Any, size: tuple[int, int] | None) -> ExecProcess:
        request = self.request
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


def query_ports(query: dict[str, list[str]]) -> list[int]:
    """The ports of a WebSocket port-forward's ?port=N[,M] query."""
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
