"""Exec and attach over SPDY: the client opens one stream per channel, named by its `streamtype` header."""

from __future__ import annotations

import asyncio
import contextlib

from pycrio.streaming.spdy_session import SpdySession, SpdyStream
from pycrio.streaming.status import Outcome, status_json, status_text

STREAM_CREATION_TIMEOUT = 30.0  # the kubelet's: the client has this long to open its streams

# X-Stream-Protocol-Version values, preferred first.
PROTOCOLS = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]


def expected_streams(protocol: str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> set[str]:
    wanted = {"error"}
    wanted |= {"stdin"} if stdin else set()
    wanted |= {"stdout"} if stdout else set()
    wanted |= {"stderr"} if stderr and not tty else set()
    if tty and protocol in ("v3.channel.k8s.io", "v4.channel.k8s.io"):
        wanted.add("resize")
    return wanted


class SpdyChannels:
    """Channels (pycrio.streaming.channels) on a SPDY session, once its streams are there."""

    def __init__(self, session: SpdySession, protocol: str, wanted: set[str]):
        self.session = session
        self.protocol = protocol
        self.wanted = wanted
        self.streams: dict[str, SpdyStream] = {}
        self.ready = asyncio.Event()
        self.gone = session.closed
        self.stdin: SpdyStream | None = None
        self.resize: SpdyStream | None = None

    def on_stream(self, stream: SpdyStream) -> None:
        self.session.reply(stream)
        kind = stream.header("streamtype")
        if kind in self.wanted and kind not in self.streams:
            self.streams[kind] = stream
            if set(self.streams) == self.wanted:
                self.stdin = self.streams.get("stdin")
                self.resize = self.streams.get("resize")
                self.ready.set()
        else:
            stream.abort()

    async def wait_ready(self) -> bool:
        """True once every expected stream is open; False when the client gave up or took too long."""
        ready = asyncio.ensure_future(self.ready.wait())
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await asyncio.wait([ready, gone], timeout=STREAM_CREATION_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            gone.cancel()
        return self.ready.is_set() and not self.gone.is_set()

    async def write(self, name: str, data: bytes) -> None:
        await self.streams[name].write(data)

    async def finish(self, outcome: Outcome) -> None:
        error = self.streams.get("error")
        if error is not None:
            body = status_json(outcome) if self.protocol == "v4.channel.k8s.io" else status_text(outcome)
            if body:
                await error.write(body)
        for stream in self.streams.values():
            await stream.close()
        await self.session.close()

    async def abort(self) -> None:
        with contextlib.suppress(Exception):
            await self.session.close()
