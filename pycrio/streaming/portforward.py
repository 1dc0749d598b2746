"""Port forwarding: TCP connections to ports inside a pod's network namespace, over SPDY or WebSocket.

SPDY (portforward.k8s.io): the client opens a pair of streams per connection, `streamtype`
"error" and "data", with the same `requestid` and the `port`; the daemon connects when both
are there, copies data both ways, and writes a failure as text on the error stream.
WebSocket: ports come from the `port` query parameters (else the PortForward request); port i
uses channel 2i for data and 2i+1 for errors; the first message on each is the port, 2 bytes
little-endian; one connection per port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from pycrio import native
from pycrio.streaming import spdy
from pycrio.streaming.spdy_session import SpdySession, SpdyStream
from pycrio.streaming.websocket import WebSocket, WebSocketError
from pycrio.streaming.ws_channels import decode, encode

logger = logging.getLogger("pycrio.streaming.portforward")

PAIR_TIMEOUT = 30.0  # the second stream of a pair must come within this
CONNECT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024
PROTOCOL = "portforward.k8s.io"
WS_PROTOCOLS = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "portforward.k8s.io", "channel.k8s.io",
                "base64.channel.k8s.io"]  # fmt: skip


async def connect(netns: str | None, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to localhost:port inside netns (None: the daemon's own namespace)."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            if netns:
                sock = socket.socket(fileno=native.netns_socket(netns, family, socket.SOCK_STREAM))
            else:
                sock = socket.socket(family, socket.SOCK_STREAM)
        except (OSError, native.NativeError) as e:
            if last is None:
                last = OSError(getattr(e, "errnum", errno.EIO), str(e))
            continue
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            sock.close()
            if last is None:  # the IPv4 attempt's error is the one to report
                last = e if isinstance(e, OSError) else OSError(errno.ETIMEDOUT, "connection timed out")
            continue
        return await asyncio.open_connection(sock=sock, limit=READ_SIZE)
    assert last is not None
    raise last


def failure(port: int, pod_id: str, e: BaseException) -> str:
    text = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else str(e)
    return f"error forwarding port {port} to pod {pod_id}: failed to connect to localhost:{port} inside the pod: {text}"


async def _tcp_to(reader: asyncio.StreamReader, send: Callable[[bytes], Awaitable[None]]) -> None:
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            return
        await send(data)


# ---------------------------------------------------------------- SPDY


class SpdyPortForward:
    def __init__(self, session: SpdySession, pod_id: str, netns: str | None):
        self.session = session
        self.pod_id = pod_id
        self.netns = netns
        self.pairs: dict[str, dict[str, SpdyStream]] = {}
        self.tasks: set[asyncio.Task] = set()

    def on_stream(self, stream: SpdyStream) -> None:
        kind, request = stream.header("streamtype"), stream.header("requestid")
        if kind not in ("error", "data") or not request:
            stream.abort(spdy.PROTOCOL_ERROR)
            return
        self.session.reply(stream)
        pair = self.pairs.setdefault(request, {})
        if kind in pair:
            stream.abort(spdy.PROTOCOL_ERROR)
            return
        pair[kind] = stream
        if len(pair) == 2:
            del self.pairs[request]
            self._spawn(self._forward(pair["error"], pair["data"]))
        elif len(pair) == 1:
            self._spawn(self._expire(request))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _expire(self, request: str) -> None:
        await asyncio.sleep(PAIR_TIMEOUT)
        pair = self.pairs.pop(request, None)
        for stream in (pair or {}).values():
            stream.abort(spdy.CANCEL)

    async def _forward(self, error: SpdyStream, data: SpdyStream) -> None:
        text = data.header("port")
        try:
            port = int(text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            await self._fail(error, data, f"invalid port {text!r}")
            return
        try:
            reader, writer = await connect(self.netns, port)
        except OSError as e:
            await self._fail(error, data, failure(port, self.pod_id, e))
            return
        try:
            await _copy_both(data, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            with contextlib.suppress(Exception):
                await error.close()

    async def _fail(self, error: SpdyStream, data: SpdyStream, message: str) -> None:
        logger.info("%s", message)
        with contextlib.suppress(Exception):
            await error.write(message.encode())
            await error.close()
            await data.close()

    async def run(self) -> None:
        try:
            await self.session.run()
        finally:
            for task in list(self.tasks):
                task.cancel()
            for task in list(self.tasks):
                with contextlib.suppress(BaseException):
                    await task
            await self.session.close()


async def _copy_both(stream: SpdyStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def upstream() -> None:
        while True:
            data = await stream.read()
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if stream.reset:
            raise ConnectionResetError("stream reset")
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def downstream() -> None:
        await _tcp_to(reader, stream.write)
        await stream.close()

    up = asyncio.ensure_future(upstream())
    down = asyncio.ensure_future(downstream())
    try:
        done, _ = await asyncio.wait([up, down], return_when=asyncio.FIRST_EXCEPTION)
        if not all(t.done() and t.exception() is None for t in done):
            stream.abort(spdy.CANCEL)
        elif not down.done():
            await down  # the client finished sending: the answer still comes
    except (ConnectionError, OSError):
        stream.abort(spdy.CANCEL)
    finally:
        for t in (up, down):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t


# ---------------------------------------------------------------- WebSocket


async def websocket_portforward(ws: WebSocket, protocol: str, ports: list[int], pod_id: str, netns: str | None) -> None:
    """One TCP connection per port, all on one WebSocket; it closes when every connection ended."""
    queues: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in ports]  # client data, kept until connected
    done = [False] * len(ports)
    finished = asyncio.Event()
    if not ports:
        finished.set()

    async def send(channel: int, data: bytes) -> None:
        await ws.send(encode(protocol, channel, data))

    async def upstream(index: int, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(await queues[index].get())
            await writer.drain()

    async def one(index: int, port: int) -> None:
        try:
            reader, writer = await connect(netns, port)
        except OSError as e:
            await send(2 * index + 1, failure(port, pod_id, e).encode())
            return
        up = asyncio.ensure_future(upstream(index, writer))
        try:
            await _tcp_to(reader, lambda d: send(2 * index, d))
        except (ConnectionError, OSError):
            pass
        finally:
            up.cancel()
            with contextlib.suppress(BaseException):
                await up
            writer.close()

    async def guarded(index: int, port: int) -> None:
        try:
            await one(index, port)
        finally:
            done[index] = True
            if all(done):
                finished.set()

    async def from_client() -> None:
        while True:
            message = await ws.recv()
            if message is None:
                return
            item = decode(protocol, message)
            if item is None or item[0] % 2 == 1 or item[0] // 2 >= len(ports) or not item[1]:
                continue
            if not done[item[0] // 2]:
                queues[item[0] // 2].put_nowait(item[1])

    for index, port in enumerate(ports):
        prefix = port.to_bytes(2, "little")
        await send(2 * index, prefix)
        await send(2 * index + 1, prefix)
    tasks = [asyncio.ensure_future(guarded(i, p)) for i, p in enumerate(ports)]
    reading = asyncio.ensure_future(from_client())
    ending = asyncio.ensure_future(finished.wait())
    try:
        await asyncio.wait([reading, ending], return_when=asyncio.FIRST_COMPLETED)
    except WebSocketError:
        pass
    finally:
        for t in [*tasks, reading, ending]:
            t.cancel()
        for t in [*tasks, reading, ending]:
            with contextlib.suppress(BaseException):
                await t
        await ws.close()
