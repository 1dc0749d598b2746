"""What the daemon needs of a pod network backend (the built-in bridge or CNI), and choosing one."""

from __future__ import annotations

from typing import Protocol

from pycrio.config import NetworkConfig
from pycrio.network.pod import PodInfo, PodNetwork
from pycrio.state import Database


class NetworkBackend(Protocol):
    """Blocking, thread-safe calls; the daemon runs them with asyncio.to_thread."""

    def start(self) -> None:
        """At daemon start: make the network able to serve; may raise (NetworkReady then says why)."""

    def ready(self) -> tuple[bool, str]:
        """(True, "") when pods can be networked now, else (False, the reason for NetworkReady)."""

    def setup(self, pod_id: str, netns_path: str, pod: PodInfo | None = None) -> PodNetwork:
        """Give the pod pinned at netns_path its network; on failure nothing of it stays."""

    def teardown(self, pod_id: str, netns_path: str | None = None, delete_veth: bool = True) -> None:
        """Undo setup(); idempotent; netns_path may be gone (delete_veth False: it is about to be)."""

    def allocations(self) -> dict[str, str]:
        """pod_id -> IP of every pod the backend holds something for (recovery releases the dead ones)."""

    def close(self) -> None:
        """Release what the backend object holds (not the pods' networks)."""


def make_network(cfg: NetworkConfig, db: Database) -> NetworkBackend:
    """The backend cfg.backend names (cfg resolved: the CNI cache dir is filled in)."""
    if cfg.backend == "cni":
        from pycrio.network.cni import CniNetwork

        return CniNetwork(cfg)
    from pycrio.network.builtin import BuiltinNetwork

    return BuiltinNetwork(cfg, db)
