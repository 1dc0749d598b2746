"""Hand the heap's free memory back to the kernel a while after the daemon has worked.

A pull or a burst of pod starts frees most of what it allocated, but glibc keeps freed memory
that lies below live blocks, so RSS would stay at the burst's high-water mark. After work, once no
unary RPC is in flight, pycrio calls malloc_trim(0) (native.heap_trim): at most once per `delay`
seconds while the kubelet keeps calling, never while idle with nothing new freed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pycrio import native
from pycrio.metrics import METRICS

logger = logging.getLogger("pycrio.memory")


class HeapTrimmer:
    def __init__(self, delay: float = 1.0):
        self.delay = delay
        self.in_flight = 0
        self.trims = 0
        self._pending: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        """A unary RPC finished: it may have freed memory, so a trim is due after `delay`."""
        self.in_flight -= 1
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.delay, self._due)

    def _due(self) -> None:
        if self.in_flight:
            # Mid-RPC the heap is in use; try again when this one has had time to finish.
            self._pending = asyncio.get_running_loop().call_later(self.delay, self._due)
            return
        self._pending = None
        self.trim()

    def trim(self) -> bool:
        started = time.monotonic()
        released = native.heap_trim()
        self.trims += 1
        METRICS.heap_trims.inc(("true" if released else "false",))
        logger.debug(
            "heap trim: %s in %.2f ms",
            "released memory" if released else "nothing to release",
            (time.monotonic() - started) * 1000,
        )
        return released

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
