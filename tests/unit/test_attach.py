"""pycrio/attach.py: against real monitors (runc, busybox) and, for protocol corners, a fake one."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

from pycrio import attach
from pycrio.attach import AttachSession, open_attach
from pycrio.errors import FailedPrecondition, ResourceExhausted
from tests.native.test_monitor import Case, monitors_of, sh
from tests.support.bundle import make_bundle


@pytest.fixture
def case(tmpdir_short) -> Iterator:
    made: list[Case] = []

    def make(args: list[str], name: str = "c", **options) -> Case:
        base = os.path.join(tmpdir_short, name)
        os.makedirs(os.path.join(base, "exits"))
        c = Case(base, make_bundle(base, f"pat-{uuid.uuid4().hex[:10]}", args, **options))
        made.append(c)
        return c

    yield make
    for c in made:
        c.cleanup()
        assert not monitors_of(c.id)


async def read_all(session: AttachSession, timeout: float = 10.0) -> list[tuple[str, bytes]]:
    """Every (stream, data) until read() says the end."""
    got = []
    async with asyncio.timeout(timeout):
        while (item := await session.read()) is not None:
            got.append(item)
    return got


def text(items: list[tuple[str, bytes]], stream: str) -> bytes:
    return b"".join(data for name, data in items if name == stream)


def test_frame_and_socket_path():
    assert attach.frame(attach.STDIN, b"ab") == b"\x01\x00\x00\x00\x02ab"
    assert attach.frame(attach.CLOSE_STDIN) == b"\x02\x00\x00\x00\x00"
    assert attach.attach_socket("/run/pycrio/ctl/x.sock") == "/run/pycrio/ctl/x.sock.attach"


# --- real monitors -------------------------------------------------------------------------------


def test_read_stdout_stderr_then_none(case):
    c = case(sh("while [ ! -e /tmp/go ]; do sleep 0.02; done; echo out; echo err >&2"))
    c.spawn()
    c.start()

    async def main():
        session = await open_attach(c.ctl, stdin=False)
        assert (session.tty, session.container_stdin, session.stdin) == (False, False, False)
        open(os.path.join(c.bundle.rootfs, "tmp", "go"), "w").close()
        items = await read_all(session)
        assert (text(items, "stdout"), text(items, "stderr")) == (b"out\n", b"err\n")
        assert await session.read() is None
        await session.close()
        await session.close()  # idempotent

    asyncio.run(main())
    assert c.wait_exit().exit_code == 0


def test_write_round_trip_and_close_stdin_without_stdin_once(case):
    c = case(["cat"])
    c.spawn(stdin=True)
    c.start()

    async def main():
        async with await open_attach(c.ctl, stdin=True) as session:
            assert session.stdin and not session.tty
            data = os.urandom(300 * 1024)  # more than one frame, more than the pipes hold
            writer = asyncio.create_task(session.write(data))
            got = b""
            async with asyncio.timeout(20):
                while len(got) < len(data):
                    stream, chunk = await session.read()
                    assert stream == "stdout"
                    got += chunk
            await writer
            assert got == data
            await session.close_stdin()
            with pytest.raises(FailedPrecondition, match="stdin was closed in this session"):
                await session.write(b"more")
        await asyncio.sleep(0.3)
        # stdin stays open for the next session
        async with await open_attach(c.ctl, stdin=True) as again:
            await again.write(b"next\n")
            assert await again.read() == ("stdout", b"next\n")

    asyncio.run(main())
    assert c.bundle.state()["status"] == "running"


def test_stdin_once_session_end_closes_stdin(case):
    c = case(["cat"])
    c.spawn(stdin=True, stdin_once=True)
    c.start()

    async def main():
        watcher = await open_attach(c.ctl, stdin=False)
        session = await open_attach(c.ctl, stdin=True)
        await session.write(b"only once\n")
        await session.close_stdin()
        assert text(await read_all(watcher), "stdout") == b"only once\n"
        await session.close()
        await watcher.close()

    asyncio.run(main())
    assert c.wait_exit().exit_code == 0


def test_tty_session(case):
    c = case(["cat"], terminal=True)
    c.spawn(terminal=True, stdin=True, stdin_once=True)
    c.start()

    async def main():
        session = await open_attach(c.ctl, stdin=True)
        assert session.tty and session.stdin
        await session.write(b"tty\n")
        await session.close()  # the session's end: stdin_once sends the pty's EOF

    asyncio.run(main())
    assert c.wait_exit().exit_code == 0


def test_write_without_stdin_is_failed_precondition(case):
    c = case(["sleep", "60"])
    c.spawn()
    c2 = case(["sleep", "60"], name="c2")
    c2.spawn(stdin=True)

    async def main():
        async with await open_attach(c.ctl, stdin=True) as session:
            assert not session.container_stdin
            with pytest.raises(FailedPrecondition, match="the container has no stdin"):
                await session.write(b"x")
            await session.close_stdin()  # nothing to close: no error
        async with await open_attach(c2.ctl, stdin=False) as session:
            with pytest.raises(FailedPrecondition, match="opened without stdin"):
                await session.write(b"x")
        session = await open_attach(c2.ctl, stdin=True)
        await session.close()
        with pytest.raises(FailedPrecondition, match="session is closed"):
            await session.write(b"x")

    asyncio.run(main())


def test_not_running_monitor_is_failed_precondition(case):
    c = case(["true"])

    async def opening():
        return await open_attach(c.ctl, stdin=False)

    with pytest.raises(FailedPrecondition, match="monitor is not running"):
        asyncio.run(opening())  # never started
    c.run()
    c.wait_monitor_gone()
    with pytest.raises(FailedPrecondition, match="monitor is not running"):
        asyncio.run(opening())  # exited
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a killed monitor's socket file
    stale.bind(c.ctl + ".attach")
    stale.close()
    with pytest.raises(FailedPrecondition, match="monitor is not running"):
        asyncio.run(opening())
    os.unlink(c.ctl + ".attach")
    open(c.ctl, "w").close()  # a control socket but no attach socket: an older monitor
    with pytest.raises(FailedPrecondition, match="predates attach"):
        asyncio.run(opening())


def test_too_many_sessions_is_resource_exhausted(case):
    c = case(["sleep", "60"])
    c.spawn()

    async def main():
        sessions = [await open_attach(c.ctl, stdin=False) for _ in range(16)]
        with pytest.raises(ResourceExhausted, match="too many attach connections"):
            await open_attach(c.ctl, stdin=False)
        await sessions.pop().close()
        for _ in range(100):
            try:
                sessions.append(await open_attach(c.ctl, stdin=False))
                break
            except ResourceExhausted:
                await asyncio.sleep(0.02)
        assert len(sessions) == 16
        for s in sessions:
            await s.close()

    asyncio.run(main())


# --- a fake monitor ------------------------------------------------------------------------------


def with_fake(tmpdir_short: str, serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]):
    """Run main(ctl) against a unix server at <ctl>.attach that runs serve for each client."""
    ctl = os.path.join(tmpdir_short, "fake")

    def run(main: Callable[[str], Awaitable[None]]) -> None:
        async def outer():
            async def handle(reader, writer):
                try:
                    await serve(reader, writer)
                finally:
                    writer.close()

            server = await asyncio.start_unix_server(handle, ctl + ".attach")
            async with server:
                await main(ctl)

        asyncio.run(outer())

    return run


HELLO = attach.frame(attach.HELLO, b"pycrio-attach 1 stdin=1 tty=0")


def test_fake_unknown_frames_skipped_error_raised_short_frame_is_end(tmpdir_short):
    async def serve(reader, writer):
        writer.write(HELLO + attach.frame(7, b"future") + attach.frame(attach.STDOUT, b"a"))
        writer.write(attach.frame(attach.ERROR, b"bad frame") + attach.frame(attach.STDERR, b"b"))
        writer.write(attach.frame(attach.STDOUT, b"cut short")[:-3])
        await writer.drain()

    async def main(ctl):
        session = await open_attach(ctl, stdin=False)
        assert await session.read() == ("stdout", b"a")
        with pytest.raises(FailedPrecondition, match="the monitor says: bad frame"):
            await session.read()
        assert await session.read() == ("stderr", b"b")
        assert await session.read() is None
        await session.close()

    with_fake(tmpdir_short, serve)(main)


def test_fake_input_session_marks_itself_and_splits_writes(tmpdir_short):
    received: list[tuple[int, bytes]] = []

    async def serve(reader, writer):
        writer.write(HELLO)
        await writer.drain()
        while True:
            try:
                kind, length = attach._HEADER.unpack(await reader.readexactly(5))
                received.append((kind, await reader.readexactly(length)))
            except asyncio.IncompleteReadError:
                return

    async def main(ctl):
        session = await open_attach(ctl, stdin=True)
        await session.write(b"x" * (attach.STDIN_FRAME_MAX + 10))
        await session.close_stdin()
        await session.close()
        await asyncio.sleep(0.2)

    with_fake(tmpdir_short, serve)(main)
    assert received == [
        (attach.STDIN, b""),
        (attach.STDIN, b"x" * attach.STDIN_FRAME_MAX),
        (attach.STDIN, b"x" * 10),
        (attach.CLOSE_STDIN, b""),
    ]


@pytest.mark.parametrize(
    ("greeting", "match"),
    [
        (b"", "closed the connection"),
        (attach.frame(attach.STDOUT, b"x"), "no greeting"),
        (attach.frame(attach.HELLO, b"conmon 2"), "unexpected greeting"),
        (attach.frame(attach.ERROR, b"something else"), "something else"),
        (b"\x01\xff\xff\xff\xff", "not the attach protocol"),
    ],
)
def test_fake_bad_greetings(tmpdir_short, greeting, match):
    async def serve(reader, writer):
        writer.write(greeting)
        await writer.drain()

    async def main(ctl):
        with pytest.raises(FailedPrecondition, match=match):
            await open_attach(ctl, stdin=True)

    with_fake(tmpdir_short, serve)(main)


def test_fake_silent_monitor_times_out(tmpdir_short, monkeypatch):
    monkeypatch.setattr(attach, "CONNECT_TIMEOUT", 0.2)

    async def serve(reader, writer):
        await asyncio.sleep(1)

    async def main(ctl):
        with pytest.raises(FailedPrecondition, match="no answer from the monitor"):
            await open_attach(ctl, stdin=False)

    with_fake(tmpdir_short, serve)(main)
