"""pytest fixtures for network tests: a BuiltinNetwork on a bridge of its own, and pods as pinned netns."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from pycrio import native
from pycrio.config import NetworkConfig
from pycrio.network import BuiltinNetwork
from pycrio.state import Database


@pytest.fixture
def net(tmp_path, request) -> Iterator[BuiltinNetwork]:
    """A built-in network on a bridge of its own; indirect parametrization gives more NetworkConfig fields."""
    tag = f"{random.randrange(16**4):04x}"
    extra = getattr(request, "param", {})
    cfg = NetworkConfig(bridge=f"pycrio-t{tag}", subnet=f"10.213.{random.randrange(256)}.0/24", **extra)
    db = Database(str(tmp_path / "meta.db"))
    n = BuiltinNetwork(cfg, db)
    n.ensure_bridge()
    yield n
    n.remove_bridge()
    n.close()
    db.close()


@pytest.fixture
def pods(net) -> Iterator:
    """pods(n) -> [(pod_id, netns pin)]; every pod torn down and unpinned afterwards."""
    base = tempfile.mkdtemp(prefix="pycrio-net-")
    made: list[tuple[str, str]] = []

    def make(count: int = 1) -> list[tuple[str, str]]:
        out = []
        for _ in range(count):
            pod_id = os.urandom(32).hex()
            d = os.path.join(base, pod_id[:12])
            os.mkdir(d)
            out.append((pod_id, native.ns_pin(d, native.NS_NET)["net"]))
        made.extend(out)
        return out

    yield make
    for pod_id, pin in made:
        net.teardown(pod_id, pin)
        native.ns_unpin(pin)
    shutil.rmtree(base, ignore_errors=True)
