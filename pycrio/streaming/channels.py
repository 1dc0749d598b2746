"""What exec and attach see of a client, whatever the protocol: input streams, output, the end."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from pycrio.streaming.status import Outcome

MAX_RESIZE_BUFFER = 4096


class Input(Protocol):
    async def read(self) -> bytes:
        """The next data from the client; b"" at its end."""
        ...


class Channels(Protocol):
    @property
    def stdin(self) -> Input | None: ...

    @property
    def resize(self) -> Input | None: ...

    @property
    def gone(self) -> asyncio.Event:
        """Set when the client disconnected."""
        ...

    async def write(self, name: str, data: bytes) -> None:
        """Output to "stdout" or "stderr"."""
        ...

    async def finish(self, outcome: Outcome) -> None:
        """The outcome on the error stream, then everything closed."""
        ...

    async def abort(self) -> None:
        """Close everything at once (the client is gone)."""
        ...


class QueueInput:
    """An Input fed by a protocol reader (WebSocket channels)."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._ready = asyncio.Event()

    def feed(self, data: bytes) -> None:
        if data and not self._eof:
            self._chunks.append(data)
            self._ready.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._ready.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._ready.clear()
            await self._ready.wait()
        return self._chunks.popleft()


async def terminal_sizes(stream: Input) -> AsyncIterator[tuple[int, int]]:
    """(width, height) of each JSON TerminalSize object {"Width": w, "Height": h} on stream."""
    decoder = json.JSONDecoder()
    buf = ""
    while True:
        chunk = await stream.read()
        if not chunk:
            return
        buf += chunk.decode(errors="replace")
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                doc, end = decoder.raw_decode(buf)
            except ValueError:
                if len(buf) > MAX_RESIZE_BUFFER:
                    return  # not JSON: stop listening to resizes
                break
            buf = buf[end:]
            if isinstance(doc, dict):
                width, height = doc.get("Width"), doc.get("Height")
                if isinstance(width, int) and isinstance(height, int) and 0 <= width < 65536 and 0 <= height < 65536:
                    yield width, height
