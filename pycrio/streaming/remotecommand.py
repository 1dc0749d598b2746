"""Exec and attach sessions: copying between a client's channels and a process or a monitor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pycrio.streaming.channels import Channels, Input, terminal_sizes
from pycrio.streaming.exec import ExecProcess, FdReader
from pycrio.streaming.status import Outcome, exited, failed

logger = logging.getLogger("pycrio.streaming")

OUTPUT_DRAIN = 1.0  # seconds output may keep coming after the process exited (a background child holds it)


async def _pump_out(reader: FdReader, channels: Channels, name: str) -> None:
    while True:
        data = await reader.read()
        if not data:
            return
        await channels.write(name, data)


async def _pump_resize(stream: Input, apply: Callable[[int, int], Awaitable[None] | None]) -> None:
    async for width, height in terminal_sizes(stream):
        result = apply(width, height)
        if result is not None:
            with contextlib.suppress(Exception):
                await result


class Sizes:
    """Terminal sizes from a resize stream, read ahead so that the first one can size an exec's pty."""

    def __init__(self, stream: Input):
        self.queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        self.task = _task(self._read(stream))

    async def _read(self, stream: Input) -> None:
        try:
            async for size in terminal_sizes(stream):
                self.queue.put_nowait(size)
        finally:
            self.queue.put_nowait(None)

    async def first(self, timeout: float) -> tuple[int, int] | None:
        """The first size when the client sends it within timeout (client-go sends it at once)."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    async def apply_all(self, apply: Callable[[int, int], Awaitable[None] | None]) -> None:
        while (size := await self.queue.get()) is not None:
            result = apply(*size)
            if result is not None:
                with contextlib.suppress(Exception):
                    await result

    def close(self) -> None:
        self.task.cancel()


def _task(coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(coro)


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(BaseException):
            await t


async def serve_exec(
    channels: Channels, proc: ExecProcess, cmd: tuple[str, ...], container_exited: asyncio.Event, sizes: Sizes | None
) -> None:
    """Run the session to its end: the process exits, the client goes, or the container exits."""
    outputs: list[asyncio.Task] = []
    inputs: list[asyncio.Task] = []
    try:
        if proc.stdout is not None:
            outputs.append(_task(_pump_out(proc.stdout, channels, "stdout")))
        if proc.stderr is not None:
            outputs.append(_task(_pump_out(proc.stderr, channels, "stderr")))
        if channels.stdin is not None:
            inputs.append(_task(_pump_stdin(channels.stdin, proc)))
        if sizes is not None:
            inputs.append(_task(sizes.apply_all(proc.resize)))
        waited = _task(proc.wait())
        gone = _task(channels.gone.wait())
        container = _task(container_exited.wait())
        await asyncio.wait([waited, gone, container], return_when=asyncio.FIRST_COMPLETED)
        await _cancel([gone, container])
        if not waited.done():
            await proc.kill()  # the client went away, or the container exited under us
        code = await waited
        if channels.gone.is_set():
            return
        _, pending = await asyncio.wait(outputs, timeout=OUTPUT_DRAIN) if outputs else (None, set())
        if pending:
            logger.debug("exec output still open %.1f s after the process exited", OUTPUT_DRAIN)
        await _cancel(outputs + inputs)
        await channels.finish(exited(code, cmd))
    except (ConnectionError, OSError) as e:
        logger.debug("exec session ended: %s", e)
    finally:
        await _cancel(outputs + inputs)
        if sizes is not None:
            sizes.close()
        await proc.kill()
        proc.close()
        await channels.abort()


async def _pump_stdin(stream: Input, proc: ExecProcess) -> None:
    while True:
        data = await stream.read()
        if not data:
            await proc.close_stdin()
            return
        if proc.stdin is None:
            continue
        try:
            await proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            return  # the process closed its stdin: drop the rest


async def serve_attach(channels: Channels, session: Any, resize: Callable[[int, int], Awaitable[None]]) -> None:
    """Copy a monitor's attach session (pycrio.attach.AttachSession) to and from the client."""
    inputs: list[asyncio.Task] = []
    try:
        if channels.stdin is not None:
            inputs.append(_task(_attach_stdin(channels.stdin, session)))
        if channels.resize is not None:
            inputs.append(_task(_pump_resize(channels.resize, resize)))
        output = _task(_attach_out(session, channels))
        gone = _task(channels.gone.wait())
        await asyncio.wait([output, gone], return_when=asyncio.FIRST_COMPLETED)
        await _cancel([gone])
        if channels.gone.is_set():
            await _cancel([output])
            return
        await output
        await _cancel(inputs)
        await channels.finish(Outcome(0))
    except (ConnectionError, OSError) as e:
        logger.debug("attach session ended: %s", e)
    except Exception as e:  # noqa: BLE001 - the client hears about it on the error stream
        with contextlib.suppress(Exception):
            await channels.finish(failed(str(e)))
    finally:
        await _cancel(inputs)
        with contextlib.suppress(Exception):
            await session.close()
        await channels.abort()


async def _attach_out(session: Any, channels: Channels) -> None:
    while True:
        item = await session.read()
        if item is None:
            return
        name, data = item
        await channels.write(name, data)


async def _attach_stdin(stream: Input, session: Any) -> None:
    while True:
        data = await stream.read()
        if not data:
            await session.close_stdin()
            return
        await session.write(data)
