"""The built-in pod network: a Linux bridge, a veth pair per pod, IPAM in sqlite, nftables masquerade."""

from __future__ import annotations

from pycrio.network.builtin import BuiltinNetwork, host_veth_name
from pycrio.network.ipam import Ipam
from pycrio.network.pod import PodInfo, PodNetwork, PortMapping

__all__ = ["BuiltinNetwork", "Ipam", "PodInfo", "PodNetwork", "PortMapping", "host_veth_name"]
