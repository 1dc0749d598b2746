"""Pod networks: the built-in one (a Linux bridge, a veth pair per pod, IPAM in sqlite, nftables masquerade) or CNI."""

from __future__ import annotations

from pycrio.network.backend import NetworkBackend, make_network
from pycrio.network.builtin import BuiltinNetwork, host_veth_name
from pycrio.network.ipam import Ipam
from pycrio.network.pod import PodInfo, PodNetwork, PortMapping

__all__ = [
    "BuiltinNetwork",
    "Ipam",
    "NetworkBackend",
    "PodInfo",
    "PodNetwork",
    "PortMapping",
    "host_veth_name",
    "make_network",
]
