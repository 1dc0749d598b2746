"""Fixtures for the layer extraction tests: a destination beside a tree that must never change."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pycrio import native
from tests.support.tarcraft import memfd


@dataclass
class Layout:
    """base/dest is extracted into; base/outside (a sentinel file, a sub dir) must stay as it was."""

    base: str
    dest: str
    outside: str

    def snapshot(self) -> dict[str, tuple]:
        """Everything under base except dest, plus /etc/passwd: path -> (mode, size, mtime, links)."""
        seen: dict[str, tuple] = {}
        for root, dirs, files in os.walk(self.base):
            if root == self.base:
                dirs[:] = [d for d in dirs if d != "dest"]
            for name in dirs + files:
                p = os.path.join(root, name)
                st = os.lstat(p)
                seen[p] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink, os.listxattr(p, follow_symlinks=False))
        st = os.stat("/etc/passwd")
        seen["/etc/passwd"] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink)
        return seen


@pytest.fixture
def layout(tmpdir_short: str) -> Iterator[Layout]:
    """A fresh empty dest; after the test, nothing outside it may have changed or appeared."""
    lay = Layout(tmpdir_short, os.path.join(tmpdir_short, "dest"), os.path.join(tmpdir_short, "outside"))
    os.mkdir(lay.dest)
    os.makedirs(os.path.join(lay.outside, "sub"))
    with open(os.path.join(lay.outside, "sentinel"), "w") as f:
        f.write("untouched\n")
    before = lay.snapshot()
    yield lay
    assert lay.snapshot() == before, "something outside dest changed"


def extract_bytes(data: bytes, dest: str, **kwargs) -> native.ExtractStats:
    """native.extract_layer on data, read from a memfd."""
    fd = memfd(data)
    try:
        return native.extract_layer(fd, dest, **kwargs)
    finally:
        os.close(fd)


@pytest.fixture(params=[0, native.EXTRACT_NO_OPENAT2], ids=["openat2", "fallback"])
def resolver(request: pytest.FixtureRequest) -> int:
    """The flag choosing a path resolver: openat2, or the forced component-by-component fallback."""
    return request.param


@pytest.fixture
def extract(layout: Layout) -> Callable[..., native.ExtractStats]:
    """extract(data, **kwargs): run native.extract_layer on data into layout.dest."""

    def run(data: bytes, **kwargs) -> native.ExtractStats:
        return extract_bytes(data, layout.dest, **kwargs)

    return run
