"""A server WebSocket on an asyncio stream, with wsproto (sans-IO) doing the RFC 6455 framing."""

from __future__ import annotations

import asyncio
import contextlib

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

MAX_MESSAGE = 16 << 20
READ_SIZE = 256 * 1024


class WebSocketError(Exception):
    pass


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.ws = WSConnection(ConnectionType.SERVER)
        self.request: Request | None = None
        self.closed = False
        self._events: list = []
        self._partial: list = []
        self._size = 0

    def handshake(self, head: bytes) -> Request:
        """Feed the HTTP request head (already read); the Request event wsproto parsed from it."""
        self.ws.receive_data(head)
        for event in self.ws.events():
            if isinstance(event, Request):
                self.request = event
                return event
        raise WebSocketError("not a WebSocket handshake")

    async def accept(self, subprotocol: str | None) -> None:
        self.writer.write(self.ws.send(AcceptConnection(subprotocol=subprotocol)))
        await self.writer.drain()

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            raise ConnectionResetError("websocket closed")
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        self.writer.write(self.ws.send(event))
        await self.writer.drain()

    async def recv(self) -> bytes | str | None:
        """The next whole message; None once the connection is closed."""
        while True:
            while self._events:
                event = self._events.pop(0)
                if isinstance(event, TextMessage | BytesMessage):
                    self._size += len(event.data)
                    if self._size > MAX_MESSAGE:
                        await self.close(1009, "message too big")
                        return None
                    self._partial.append(event.data)
                    if event.message_finished:
                        parts, self._partial, self._size = self._partial, [], 0
                        if isinstance(event, TextMessage):
                            return "".join(str(p) for p in parts)
                        return b"".join(bytes(p) for p in parts)  # type: ignore[arg-type]
                elif isinstance(event, Ping):
                    with contextlib.suppress(Exception):
                        self.writer.write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(Exception):
                        self.writer.write(self.ws.send(event.response()))
                    self.closed = True
                    return None
            if self.closed:
                return None
            try:
                data = await self.reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.closed = True
                return None
            try:
                self.ws.receive_data(data)
                self._events.extend(self.ws.events())
            except Exception as e:  # noqa: BLE001 - wsproto's protocol errors: close the connection
                await self.close(1002, "protocol error")
                raise WebSocketError(str(e)) from e

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.write(self.ws.send(CloseConnection(code=code, reason=reason)))
                await self.writer.drain()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
