"""A server-side SPDY/3.1 session on an asyncio stream: client-opened streams, data, flow control.

Flow control (docs/streaming.md): what the daemon receives is acknowledged with WINDOW_UPDATE
(per stream and for the session) as the consumer reads it. What it sends respects the peer's
windows once the peer has shown it does flow control (it sent a WINDOW_UPDATE or an initial
window in SETTINGS); the kubelet's and crictl's library (spdystream) sends neither and relies
on TCP back-pressure, so until then the windows are counted but not waited on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from pycrio.streaming import spdy

logger = logging.getLogger("pycrio.streaming.spdy")

CHUNK = 32 * 1024  # data frame size we send
RECV_BUFFER_LIMIT = 4 << 20  # bytes buffered for one stream before the session stops reading
READ_SIZE = 256 * 1024


class StreamReset(ConnectionError):
    """The stream was reset (by the peer, or the session ended)."""


class SpdyStream:
    def __init__(self, session: SpdySession, stream_id: int, headers: dict[str, list[str]], fin: bool):
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        self.remote_closed = fin  # the peer sent FIN: no more data from it
        self.local_closed = False  # we sent FIN
        self.reset = False
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.send_window = session.peer_initial_window
        self._window_open = asyncio.Event()
        self._window_open.set()
        self.unacked = 0  # bytes consumed not yet given back with WINDOW_UPDATE
        if fin:
            self._readable.set()

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    # -------------------------------------------------- receiving

    def _receive(self, data: bytes, fin: bool) -> None:
        if data:
            self._chunks.append(data)
            self.buffered += len(data)
            if self.buffered >= RECV_BUFFER_LIMIT:
                self._space.clear()
        if fin:
            self.remote_closed = True
        self._readable.set()

    async def read(self) -> bytes:
        """The next data from the peer; b"" once it sent FIN or the stream was reset."""
        while not self._chunks:
            if self.remote_closed or self.reset:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self.buffered -= len(data)
        if self.buffered < RECV_BUFFER_LIMIT:
            self._space.set()
        self.session._consumed(self, len(data))
        return data

    async def read_all(self, limit: int) -> bytes:
        out = bytearray()
        while len(out) <= limit:
            chunk = await self.read()
            if not chunk:
                return bytes(out)
            out += chunk
        raise ValueError(f"more than {limit} bytes on stream {self.id}")

    # -------------------------------------------------- sending

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.reset or self.local_closed:
                raise StreamReset(f"stream {self.id} is closed")
            size = min(len(view), CHUNK)
            if self.session.flow_control:
                await self.session._wait_window(self)
                size = min(size, self.send_window, self.session.send_window)
            self.send_window -= size
            self.session.send_window -= size
            self.session._send(spdy.encode_data(self.id, bytes(view[:size])))
            view = view[size:]
            await self.session.drain()

    async def close(self) -> None:
        """Send FIN: no more data from us (the peer may still send)."""
        if self.local_closed or self.reset:
            return
        self.local_closed = True
        self.session._send(spdy.encode_data(self.id, b"", fin=True))
        with contextlib.suppress(ConnectionError):
            await self.session.drain()
        self.session._maybe_forget(self)

    def abort(self, status: int = spdy.CANCEL) -> None:
        if not self.reset:
            self.reset = True
            self._readable.set()
            self._window_open.set()
            self.session._send(spdy.encode_rst_stream(self.id, status))
            self.session._forget(self)

    def _on_reset(self) -> None:
        self.reset = True
        self._readable.set()
        self._window_open.set()
        self._space.set()


StreamHandler = Callable[[SpdyStream], None]


class SpdySession:
    """Reads frames, keeps the streams; on_stream is called (on the loop) for each new stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_stream: StreamHandler):
        self.reader = reader
        self.writer = writer
        self.on_stream = on_stream
        self.streams: dict[int, SpdyStream] = {}
        self.last_stream_id = 0
        self.parser = spdy.FrameParser()
        self.decoder = spdy.HeaderDecoder()
        self.encoder = spdy.HeaderEncoder()
        self.flow_control = False
        self.peer_initial_window = spdy.DEFAULT_WINDOW
        self.send_window = spdy.DEFAULT_WINDOW
        self._session_window_open = asyncio.Event()
        self._session_window_open.set()
        self.session_unacked = 0
        self.closed = asyncio.Event()
        self.error: str | None = None
        self._goaway_sent = False

    # -------------------------------------------------- output

    def _send(self, frame: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame)

    async def drain(self) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("connection closed")
        await self.writer.drain()

    def reply(self, stream: SpdyStream, headers: dict[str, list[str]] | None = None) -> None:
        self._send(spdy.encode_syn_reply(self.encoder, stream.id, headers or {}))

    async def goaway(self, status: int = spdy.GOAWAY_OK) -> None:
        if not self._goaway_sent:
            self._goaway_sent = True
            self._send(spdy.encode_goaway(self.last_stream_id, status))
            with contextlib.suppress(ConnectionError):
                await self.drain()

    async def close(self) -> None:
        await self.goaway()
        self._end()
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    # -------------------------------------------------- flow control

    def _consumed(self, stream: SpdyStream, n: int) -> None:
        stream.unacked += n
        self.session_unacked += n
        if stream.unacked >= spdy.DEFAULT_WINDOW // 2 and not stream.remote_closed and not stream.reset:
            self._send(spdy.encode_window_update(stream.id, stream.unacked))
            stream.unacked = 0
        if self.session_unacked >= spdy.DEFAULT_WINDOW // 2:
            self._send(spdy.encode_window_update(0, self.session_unacked))
            self.session_unacked = 0

    async def _wait_window(self, stream: SpdyStream) -> None:
        while stream.send_window <= 0 or self.send_window <= 0:
            if stream.reset or self.closed.is_set():
                raise StreamReset(f"stream {stream.id} is closed")
            if stream.send_window <= 0:
                stream._window_open.clear()
                await stream._window_open.wait()
            else:
                self._session_window_open.clear()
                await self._session_window_open.wait()

    # -------------------------------------------------- input

    async def run(self, on_frame: Callable[[], Awaitable[None]] | None = None) -> None:
        """Serve until the peer closes, says GOAWAY or breaks the protocol (then GOAWAY is sent)."""
        try:
            while not self.closed.is_set():
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                for frame in self.parser.feed(data):
                    stream = self._handle(frame)
                    if stream is not None and not stream._space.is_set():
                        await stream._space.wait()  # TCP back-pressure for a peer that ignores windows
                    if self.closed.is_set():
                        break
        except spdy.ProtocolError as e:
            self.error = str(e)
            logger.info("SPDY protocol error from the client: %s", e)
            status = spdy.GOAWAY_PROTOCOL_ERROR
            await self.goaway(status)
        except (ConnectionError, OSError) as e:
            self.error = str(e)
        finally:
            self._end()

    def _end(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            for stream in list(self.streams.values()):
                stream._on_reset()
            self._session_window_open.set()

    def _forget(self, stream: SpdyStream) -> None:
        self.streams.pop(stream.id, None)

    def _maybe_forget(self, stream: SpdyStream) -> None:
        if stream.local_closed and stream.remote_closed and not stream._chunks:
            self._forget(stream)

    def _handle(self, frame: spdy.Data | spdy.Control) -> SpdyStream | None:
        if isinstance(frame, spdy.Data):
            stream = self.streams.get(frame.stream_id)
            if stream is None or stream.remote_closed:
                self._send(spdy.encode_rst_stream(frame.stream_id, spdy.INVALID_STREAM))
                return None
            stream._receive(frame.data, bool(frame.flags & spdy.FLAG_FIN))
            return stream
        typed = spdy.decode(frame, self.decoder)
        if isinstance(typed, spdy.SynStream):
            return self._syn_stream(typed)
        if isinstance(typed, spdy.RstStream):
            stream = self.streams.pop(typed.stream_id, None)
            if stream is not None:
                stream._on_reset()
        elif isinstance(typed, spdy.Settings):
            window = typed.values.get(spdy.SETTINGS_INITIAL_WINDOW_SIZE)
            if window is not None:
                if window > spdy.MAX_WINDOW:
                    raise spdy.ProtocolError(f"initial window {window} too large")
                delta = window - self.peer_initial_window
                self.peer_initial_window = window
                self.flow_control = True
                for s in self.streams.values():
                    s.send_window += delta
                    if s.send_window > 0:
                        s._window_open.set()
        elif isinstance(typed, spdy.Ping):
            if typed.id % 2 == 1:  # the client's ping: echo it; ours (even) we never send
                self._send(spdy.encode_ping(typed.id))
        elif isinstance(typed, spdy.GoAway):
            self.closed.set()
        elif isinstance(typed, spdy.WindowUpdate):
            self.flow_control = True
            if typed.stream_id == 0:
                self.send_window += typed.delta
                if self.send_window > spdy.MAX_WINDOW:
                    raise spdy.ProtocolError("session window overflow", status=spdy.FLOW_CONTROL_ERROR)
                if self.send_window > 0:
                    self._session_window_open.set()
            else:
                stream = self.streams.get(typed.stream_id)
                if stream is not None:
                    stream.send_window += typed.delta
                    if stream.send_window > spdy.MAX_WINDOW:
                        self._send(spdy.encode_rst_stream(stream.id, spdy.FLOW_CONTROL_ERROR))
                        self._forget(stream)
                        stream._on_reset()
                    elif stream.send_window > 0:
                        stream._window_open.set()
        # SYN_REPLY / HEADERS from a client (we open no streams), unknown types: ignored.
        return None

    def _syn_stream(self, frame: spdy.SynStream) -> SpdyStream | None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self.last_stream_id:
            if sid in self.streams:
                self._send(spdy.encode_rst_stream(sid, spdy.STREAM_IN_USE))
                return None
            raise spdy.ProtocolError(f"stream id {sid} is not a new odd id (last {self.last_stream_id})")
        self.last_stream_id = sid
        if self._goaway_sent:
            self._send(spdy.encode_rst_stream(sid, spdy.REFUSED_STREAM))
            return None
        stream = SpdyStream(self, sid, frame.headers, bool(frame.flags & spdy.FLAG_FIN))
        self.streams[sid] = stream
        try:
            self.on_stream(stream)
        except Exception:  # noqa: BLE001 - a handler bug resets that stream, not the session
            logger.exception("stream handler failed")
            stream.abort(spdy.INTERNAL_ERROR)
        return stream
