"""The built-in pod network: a Linux bridge, a veth pair per pod, IPAM in sqlite, nftables masquerade."""

from __future__ import annotations

from pycrio.network.builtin import BuiltinNetwork, PodNetwork, host_veth_name
from pycrio.network.ipam import Ipam

__all__ = ["BuiltinNetwork", "Ipam", "PodNetwork", "host_veth_name"]
