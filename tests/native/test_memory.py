"""csrc/memory.c through cffi: freed heap memory goes back to the kernel."""

from __future__ import annotations

import os

import pytest

from pycrio import native


def rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


@pytest.mark.skipif(os.environ.get("PYCRIO_SANITIZE") == "1", reason="ASan's allocator is not glibc's")
def test_heap_trim_returns_holes_below_the_top():
    # 80 MB of 4 kB blocks, one in 64 kept: the freed blocks merge into holes that free() keeps
    # resident, because a kept block above each hole stops glibc from shrinking the heap.
    kept, freed = [], []
    for i in range(20000):
        (kept if i % 64 == 0 else freed).append(native.ffi.new("char[]", 4000))
    native.heap_trim()
    del freed
    before = rss_anon_kib()
    assert native.heap_trim() is True
    after = rss_anon_kib()
    assert before - after > 40 * 1024, (before, after)
    assert len(kept) == 313


def test_heap_trim_with_nothing_to_release_is_harmless():
    native.heap_trim()
    assert native.heap_trim() in (True, False)
