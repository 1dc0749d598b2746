"""A small SPDY/3.1 client for tests: the upgrade, streams, FIN, flow control (it sends WINDOW_UPDATE).

Frames are built with pycrio.streaming.spdy; tests/unit/test_streaming_spdy.py checks that codec
against byte layouts written out by hand from the SPDY/3 draft, and crictl checks interop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from urllib.parse import urlsplit

from pycrio.streaming import spdy


class UpgradeRefused(Exception):
    def __init__(self, status: int, headers: dict[str, list[str]], body: bytes):
        super().__init__(f"upgrade refused: {status} {body[:200]!r}")
        self.status, self.headers, self.body = status, headers, body


async def http_upgrade(url: str, headers: list[tuple[str, str]], method: str = "POST"):
    """Send the request head; (reader, writer, status, headers) once the response head is read."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port, limit=1 << 20)
    target = u.path + (f"?{u.query}" if u.query else "")
    head = f"{method} {target} HTTP/1.1\r\nHost: {u.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    writer.write(head.encode() + b"\r\n")
    await writer.drain()
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    got: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            got.setdefault(k.strip().lower(), []).append(v.strip())
    return reader, writer, status, got


class ClientStream:
    def __init__(self, conn: SpdyClient, sid: int):
        self.conn = conn
        self.id = sid
        self.replied = asyncio.Event()
        self.chunks: deque[bytes] = deque()
        self.fin = False
        self.reset: int | None = None
        self.ready = asyncio.Event()
        self.send_window = spdy.DEFAULT_WINDOW
        self.window_open = asyncio.Event()
        self.window_open.set()
        self.unacked = 0

    async def read(self) -> bytes:
        while not self.chunks:
            if self.fin or self.reset is not None:
                return b""
            self.ready.clear()
            await self.ready.wait()
        data = self.chunks.popleft()
        self.unacked += len(data)
        if self.conn.window_updates and self.unacked >= 32768:
            self.conn.send(spdy.encode_window_update(self.id, self.unacked))
            self.conn.send(spdy.encode_window_update(0, self.unacked))
            self.unacked = 0
        return data

    async def read_all(self) -> bytes:
        out = bytearray()
        while chunk := await self.read():
            out += chunk
        return bytes(out)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = min(len(view), 16384)
            self.conn.send(spdy.encode_data(self.id, bytes(view[:n])))
            view = view[n:]
            await self.conn.writer.drain()

    async def close(self) -> None:
        self.conn.send(spdy.encode_data(self.id, b"", fin=True))
        await self.conn.writer.drain()


class SpdyClient:
    def __init__(self, reader, writer, protocol: str, window_updates: bool = True):
        self.reader, self.writer = reader, writer
        self.protocol = protocol
        self.window_updates = window_updates
        self.enc, self.dec = spdy.HeaderEncoder(), spdy.HeaderDecoder()
        self.parser = spdy.FrameParser()
        self.streams: dict[int, ClientStream] = {}
        self.next_id = 1
        self.goaway: spdy.GoAway | None = None
        self.closed = asyncio.Event()
        self.pings: dict[int, asyncio.Future] = {}
        self.task = asyncio.get_running_loop().create_task(self._run())

    @classmethod
    async def connect(cls, url: str, protocols: list[str] | None, window_updates: bool = True) -> SpdyClient:
        headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
        headers += [("X-Stream-Protocol-Version", p) for p in protocols or []]
        reader, writer, status, got = await http_upgrade(url, headers)
        if status != 101:
            length = int(got.get("content-length", ["0"])[0])
            body = await reader.readexactly(length) if length else b""
            writer.close()
            raise UpgradeRefused(status, got, body)
        return cls(reader, writer, got.get("x-stream-protocol-version", [""])[0], window_updates)

    def send(self, frame: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame)

    async def open_stream(self, headers: dict[str, str], wait_reply: bool = True) -> ClientStream:
        sid = self.next_id
        self.next_id += 2
        stream = ClientStream(self, sid)
        self.streams[sid] = stream
        self.send(spdy.encode_syn_stream(self.enc, sid, {k: [v] for k, v in headers.items()}))
        await self.writer.drain()
        if wait_reply:
            await asyncio.wait_for(stream.replied.wait(), 10)
        return stream

    async def ping(self, ping_id: int = 1) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.pings[ping_id] = fut
        self.send(spdy.encode_ping(ping_id))
        await asyncio.wait_for(fut, 10)

    async def _run(self) -> None:
        try:
            while data := await self.reader.read(1 << 16):
                for raw in self.parser.feed(data):
                    if isinstance(raw, spdy.Data):
                        s = self.streams.get(raw.stream_id)
                        if s is None:
                            continue
                        if raw.data:
                            s.chunks.append(raw.data)
                        if raw.flags & spdy.FLAG_FIN:
                            s.fin = True
                        s.ready.set()
                        continue
                    frame = spdy.decode(raw, self.dec)
                    if isinstance(frame, spdy.SynReply):
                        if frame.stream_id in self.streams:
                            self.streams[frame.stream_id].replied.set()
                    elif isinstance(frame, spdy.RstStream):
                        s = self.streams.get(frame.stream_id)
                        if s is not None:
                            s.reset = frame.status
                            s.replied.set()
                            s.ready.set()
                    elif isinstance(frame, spdy.GoAway):
                        self.goaway = frame
                    elif isinstance(frame, spdy.Ping):
                        fut = self.pings.pop(frame.id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(None)
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for s in self.streams.values():
                s.fin = True
                s.ready.set()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


async def spdy_exec(
    url: str,
    *,
    stdin: bytes | None = None,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    resize: tuple[int, int] | None = None,
    protocol: str = "v4.channel.k8s.io",
) -> tuple[bytes, bytes, bytes]:
    """An exec or attach session as client-go makes it; (stdout, stderr, error stream)."""
    client = await SpdyClient.connect(url, [protocol])
    try:
        error = await client.open_stream({"streamtype": "error"})
        streams = {}
        if stdin is not None:
            streams["stdin"] = await client.open_stream({"streamtype": "stdin"})
        if stdout:
            streams["stdout"] = await client.open_stream({"streamtype": "stdout"})
        if stderr and not tty:
            streams["stderr"] = await client.open_stream({"streamtype": "stderr"})
        if tty and protocol in ("v3.channel.k8s.io", "v4.channel.k8s.io"):
            streams["resize"] = await client.open_stream({"streamtype": "resize"})
            if resize:
                await streams["resize"].write(json.dumps({"Width": resize[0], "Height": resize[1]}).encode())
        if stdin is not None:
            await streams["stdin"].write(stdin)
            if not tty:
                await streams["stdin"].close()
        out = asyncio.ensure_future(streams["stdout"].read_all()) if "stdout" in streams else None
        err = asyncio.ensure_future(streams["stderr"].read_all()) if "stderr" in streams else None
        status = await asyncio.wait_for(error.read_all(), 60)
        return (await out if out else b""), (await err if err else b""), status
    finally:
        await client.close()
