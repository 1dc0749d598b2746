"""Attaching to a container through its monitor's attach socket (docs/monitor.md, "Attach")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

from pycrio.errors import FailedPrecondition, ResourceExhausted

ATTACH_SUFFIX = ".attach"  # the attach socket is <ctl socket>.attach
CONNECT_TIMEOUT = 5.0
STDIN_FRAME_MAX = 64 * 1024
OUTPUT_FRAME_MAX = 1 << 20  # the monitor sends at most 16 KiB; more is a broken stream

_HEADER = struct.Struct(">BI")  # type, payload length
# monitor -> client
HELLO, STDOUT, STDERR, ERROR = 0, 1, 2, 3
# client -> monitor
STDIN, CLOSE_STDIN = 1, 2

_STREAMS = {STDOUT: "stdout", STDERR: "stderr"}
_GONE = (asyncio.IncompleteReadError, ConnectionError, OSError)


def attach_socket(ctl_socket: str) -> str:
    """The attach socket beside a monitor's control socket."""
    return ctl_socket + ATTACH_SUFFIX


def frame(kind: int, data: bytes = b"") -> bytes:
    """One frame of the attach protocol."""
    return _HEADER.pack(kind, len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next frame, or None at the end of the stream (a frame cut short counts as the end)."""
    try:
        header = await reader.readexactly(_HEADER.size)
        kind, length = _HEADER.unpack(header)
        if length > OUTPUT_FRAME_MAX:
            raise FailedPrecondition(f"attach: frame of {length} bytes from the monitor: not the attach protocol")
        return kind, await reader.readexactly(length)
    except _GONE:
        return None


def _parse_hello(data: bytes) -> dict[str, str]:
    words = data.decode(errors="replace").split()
    if words[:2] != ["pycrio-attach", "1"]:
        raise FailedPrecondition(f"attach: unexpected greeting from the monitor: {data[:100]!r}")
    return dict(w.split("=", 1) for w in words[2:] if "=" in w)


class AttachSession:
    """One connection to a container's attach socket: its output, and its stdin when asked for."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, stdin: bool, hello: dict[str, str]
    ):
        self._reader = reader
        self._writer = writer
        self.tty = hello.get("tty") == "1"
        self.container_stdin = hello.get("stdin") == "1"  # the container's stdin accepted input when attached
        self.stdin = stdin and self.container_stdin  # this session feeds it
        self._stdin_closed = False
        self._closed = False

    async def read(self) -> tuple[str, bytes] | None:
        """("stdout" | "stderr", data) as the container writes it; None at the end (exit, monitor gone)."""
        while True:
            got = await _read_frame(self._reader)
            if got is None:
                return None
            kind, data = got
            if kind in _STREAMS:
                return _STREAMS[kind], data
            if kind == ERROR:
                raise FailedPrecondition(f"attach: the monitor says: {data.decode(errors='replace')}")
            # other kinds: newer monitors' additions, skipped

    async def write(self, data: bytes) -> None:
        """Send data to the container's stdin; FailedPrecondition when there is none for this session."""
        self._need_stdin()
        try:
            for start in range(0, len(data), STDIN_FRAME_MAX):
                self._writer.write(frame(STDIN, data[start : start + STDIN_FRAME_MAX]))
                await self._writer.drain()  # backpressure: the container's stdin is full
        except _GONE as e:
            raise FailedPrecondition("attach: the container's monitor closed the connection") from e

    async def close_stdin(self) -> None:
        """This session's input ended (with stdin_once, the container's stdin closes)."""
        if not self.stdin or self._stdin_closed or self._closed:
            return
        self._stdin_closed = True
        with contextlib.suppress(*_GONE):
            self._writer.write(frame(CLOSE_STDIN))
            await self._writer.drain()

    async def close(self) -> None:
        """End the session (the container goes on)."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(*_GONE):
            await self._writer.wait_closed()

    async def __aenter__(self) -> AttachSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _need_stdin(self) -> None:
        if self._closed:
            raise FailedPrecondition("attach: the session is closed")
        if not self.container_stdin:
            raise FailedPrecondition("attach: the container has no stdin (not created with stdin, or closed)")
        if not self.stdin:
            raise FailedPrecondition("attach: this session was opened without stdin")
        if self._stdin_closed:
            raise FailedPrecondition("attach: stdin was closed in this session")


async def open_attach(ctl_socket: str, *, stdin: bool) -> AttachSession:
    """Attach to the container whose monitor serves ctl_socket.

    FailedPrecondition when the container (its monitor) is not running, ResourceExhausted when the
    monitor already serves as many attach clients as it takes.
    """
    path = attach_socket(ctl_socket)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            try:
                reader, writer = await asyncio.open_unix_connection(path)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if os.path.exists(ctl_socket) and not os.path.exists(path):
                    raise FailedPrecondition(
                        f"{ctl_socket}: the container's monitor predates attach (restart the container)"
                    ) from e
                raise FailedPrecondition(f"{ctl_socket}: the container's monitor is not running") from e
            got = await _read_frame(reader)
        if got is None:
            raise FailedPrecondition(f"{path}: the monitor closed the connection (container exiting)")
        kind, data = got
        if kind == ERROR:
            text = data.decode(errors="replace")
            if "too many" in text:
                raise ResourceExhausted(f"{path}: {text}")
            raise FailedPrecondition(f"{path}: {text}")
        if kind != HELLO:
            raise FailedPrecondition(f"{path}: no greeting from the monitor")
        session = AttachSession(reader, writer, stdin=stdin, hello=_parse_hello(data))
        if session.stdin:
            writer.write(frame(STDIN))  # an empty stdin frame: this session is an input session
            await writer.drain()
    except TimeoutError:
        if writer is not None:
            writer.close()
        raise FailedPrecondition(f"{path}: no answer from the monitor in {CONNECT_TIMEOUT:g} s") from None
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    return session
