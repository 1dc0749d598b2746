"""pycrio/heap_trim.py: a trim follows work, waits for in-flight RPCs, and never repeats while idle."""

from __future__ import annotations

import asyncio

from pycrio.heap_trim import HeapTrimmer


def test_one_trim_after_a_burst_of_rpcs():
    async def main() -> int:
        trimmer = HeapTrimmer(delay=0.05)
        for _ in range(10):
            trimmer.begin()
            trimmer.end()
        await asyncio.sleep(0.2)
        assert trimmer.trims == 1
        await asyncio.sleep(0.2)  # idle: nothing new freed, no new trim
        return trimmer.trims

    assert asyncio.run(main()) == 1


def test_a_trim_waits_for_rpcs_in_flight():
    async def main() -> None:
        trimmer = HeapTrimmer(delay=0.05)
        trimmer.begin()
        trimmer.end()
        trimmer.begin()  # a long RPC
        await asyncio.sleep(0.2)
        assert trimmer.trims == 0
        trimmer.end()
        await asyncio.sleep(0.15)
        assert trimmer.trims == 1

    asyncio.run(main())


def test_close_cancels_a_pending_trim():
    async def main() -> None:
        trimmer = HeapTrimmer(delay=0.05)
        trimmer.begin()
        trimmer.end()
        trimmer.close()
        await asyncio.sleep(0.15)
        assert trimmer.trims == 0

    asyncio.run(main())
