"""Exec and attach over WebSocket: every message is one channel's, its first byte the channel number.

Channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize. base64.channel.k8s.io sends text
messages: the channel as an ASCII digit, then the data in base64. v5.channel.k8s.io adds the
close signal: a message [255, channel] from the client ends that channel (stdin's EOF).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging

from pycrio.streaming.channels import QueueInput
from pycrio.streaming.status import Outcome, status_json, status_text
from pycrio.streaming.websocket import WebSocket, WebSocketError

logger = logging.getLogger("pycrio.streaming.ws")

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255
OUTPUT = {"stdout": STDOUT, "stderr": STDERR}

# Sec-WebSocket-Protocol values for exec and attach.
PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io",
             "base64.channel.k8s.io"]  # fmt: skip


def is_base64(protocol: str) -> bool:
    return "base64." in protocol


def encode(protocol: str, channel: int, data: bytes) -> bytes | str:
    if is_base64(protocol):
        return chr(ord("0") + channel) + base64.b64encode(data).decode()
    return bytes([channel]) + data


def decode(protocol: str, message: bytes | str) -> tuple[int, bytes] | None:
    """(channel, data) of a client message; None when it is malformed."""
    if isinstance(message, str):
        if not message or not is_base64(protocol):
            return None
        channel = ord(message[0]) - ord("0")
        try:
            return channel, base64.b64decode(message[1:], validate=True)
        except (binascii.Error, ValueError):
            return None
    if not message or is_base64(protocol):
        return None
    return message[0], message[1:]


class WsChannels:
    """Channels (pycrio.streaming.channels) on an accepted WebSocket."""

    def __init__(self, ws: WebSocket, protocol: str, *, stdin: bool, stdout: bool, stderr: bool, tty: bool):
        self.ws = ws
        self.protocol = protocol
        self.stdin: QueueInput | None = QueueInput() if stdin else None
        self.resize: QueueInput | None = QueueInput() if tty else None
        self.gone = asyncio.Event()
        self.opened = {"stdout": stdout, "stderr": stderr and not tty}
        self._reader: asyncio.Task | None = None

    async def start(self) -> None:
        # An empty message on the lowest channel the server writes says the streams are ready.
        first = STDOUT if self.opened["stdout"] else STDERR if self.opened["stderr"] else ERROR
        await self.ws.send(encode(self.protocol, first, b""))
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.recv()
                if message is None:
                    break
                item = decode(self.protocol, message)
                if item is None:
                    continue
                channel, data = item
                if channel == STDIN and self.stdin is not None:
                    self.stdin.feed(data)
                elif channel == RESIZE and self.resize is not None:
                    self.resize.feed(data)
                elif channel == CLOSE_SIGNAL and self.protocol == "v5.channel.k8s.io" and data:
                    if data[0] == STDIN and self.stdin is not None:
                        self.stdin.feed_eof()
                    elif data[0] == RESIZE and self.resize is not None:
                        self.resize.feed_eof()
        except WebSocketError as e:
            logger.info("websocket client broke the protocol: %s", e)
        finally:
            for q in (self.stdin, self.resize):
                if q is not None:
                    q.feed_eof()
            self.gone.set()

    async def write(self, name: str, data: bytes) -> None:
        if self.gone.is_set():
            raise ConnectionResetError("client gone")
        await self.ws.send(encode(self.protocol, OUTPUT[name], data))

    async def finish(self, outcome: Outcome) -> None:
        body = status_text(outcome) if self.protocol in ("channel.k8s.io", "base64.channel.k8s.io") else None
        if body is None:
            body = status_json(outcome)
        if body:
            await self.ws.send(encode(self.protocol, ERROR, body))
        await self.abort()

    async def abort(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
