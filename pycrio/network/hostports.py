"""hostPort mappings of the built-in network: elements of the bridge's nftables maps (see nft.py).

A pod's mappings are added in one transaction with `create element` (which also fails when the
key is taken), after a check against the in-memory index that also catches a port on one address
against the same port on every address; so two pods never share a hostPort and a refused pod adds
nothing. They are removed by value (the pod's address): teardown and recovery need no record of
them, and wipe removes the whole maps.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import threading

from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.network import nft
from pycrio.network.pod import PortMapping


def _host_ip(mapping: PortMapping) -> str:
    """ "" for any address, else the IPv4 address; IPv6 or garbage is refused."""
    text = mapping.host_ip
    if text in ("", "0.0.0.0"):
        return ""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError as e:
        raise InvalidArgument(f"hostPort {mapping.host_port}: host_ip {text!r} is not an IP address") from e
    if addr.version != 4:
        raise InvalidArgument(f"hostPort {mapping.host_port}: host_ip {text} is IPv6; pod networks are IPv4")
    return str(addr)


def _check(mappings: list[PortMapping]) -> None:
    seen: set[tuple[str, str, int]] = set()
    for m in mappings:
        if not 0 < m.host_port < 65536 or not 0 < m.container_port < 65536:
            raise InvalidArgument(f"port mapping {m.host_port}->{m.container_port}: ports must be 1-65535")
        if m.protocol not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"port mapping {m.host_port}: unknown protocol {m.protocol!r}")
        key = (_host_ip(m), m.protocol, m.host_port)
        if key in seen:
            raise InvalidArgument(f"hostPort {m.protocol}/{m.host_port} is mapped twice in the pod")
        seen.add(key)


class HostPorts:
    """The hostPorts published on one bridge, indexed in memory (loaded from nftables at start), so
    adding or removing a pod's mappings is one `nft` run. Thread-safe."""

    def __init__(self, bridge: str):
        self.bridge = bridge
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str, int], str] = {}  # (host ip or "", protocol, port) -> pod ip

    def load(self) -> None:
        """Read what is published (a restarted daemon's pods)."""
        with self._lock:
            self._by_key = {(ip, p, port): pod_ip for ip, p, port, pod_ip, _ in published(self.bridge)}

    def add(self, pod_id: str, pod_ip: str, mappings: list[PortMapping]) -> None:
        """Publish the pod's hostPorts; FailedPrecondition (nothing added) when one is taken by another pod."""
        _check(mappings)
        with self._lock:
            lines, keys = [], []
            for m in mappings:
                key = (_host_ip(m), m.protocol, m.host_port)
                # The same port on the same address, or on every address against any one address.
                if any(k[1:] == key[1:] and (k[0] == key[0] or "" in (k[0], key[0])) for k in self._by_key):
                    where = f"{key[0] or '0.0.0.0'}:{m.host_port}/{m.protocol}"
                    raise FailedPrecondition(f"pod {pod_id[:12]}: hostPort {where} is already used by another pod")
                keys.append(key)
                value = f"{pod_ip} . {m.container_port}"
                if key[0]:
                    name, elem = nft.addr_map(self.bridge), f"{key[0]} . {m.protocol} . {m.host_port}"
                else:
                    name, elem = nft.any_map(self.bridge), f"{m.protocol} . {m.host_port}"
                lines.append(f"create element ip {nft.TABLE} {name} {{ {elem} : {value} }}")
            try:
                nft.run("\n".join(lines) + "\n")
            except OSError as e:
                if "File exists" in str(e):  # published by someone else on this bridge
                    raise FailedPrecondition(f"pod {pod_id[:12]}: a hostPort is already used by another pod") from e
                raise
            self._by_key.update(dict.fromkeys(keys, pod_ip))
        _forget_udp_flows(mappings)

    def remove(self, pod_ip: str) -> int:
        """Unpublish every hostPort that leads to pod_ip; how many there were."""
        with self._lock:
            keys = [k for k, ip in self._by_key.items() if ip == pod_ip]
            lines = []
            for host_ip, protocol, port in keys:
                if host_ip:
                    name, elem = nft.addr_map(self.bridge), f"{host_ip} . {protocol} . {port}"
                else:
                    name, elem = nft.any_map(self.bridge), f"{protocol} . {port}"
                lines.append(f"delete element ip {nft.TABLE} {name} {{ {elem} }}")
            if lines:
                nft.run("\n".join(lines) + "\n")
            for k in keys:
                del self._by_key[k]
        return len(keys)

    def clear(self) -> None:
        """Forget everything (the bridge and its maps were removed)."""
        with self._lock:
            self._by_key.clear()


def published(bridge: str) -> list[tuple[str, str, int, str, int]]:
    """(host ip or "", protocol, host port, pod ip, pod port) of every hostPort on the bridge."""
    out = [(ip, p, port, v[0], v[1]) for (ip, p, port), v in _elements(nft.addr_map(bridge))]
    out += [("", p, port, v[0], v[1]) for (p, port), v in _elements(nft.any_map(bridge))]
    return out


def _elements(name: str) -> list[tuple[tuple, list]]:
    return [(tuple(k), v) for k, v in nft.map_elements(name)]


def _forget_udp_flows(mappings: list[PortMapping]) -> None:
    """Drop conntrack entries of new UDP hostPorts: a flow tracked before the mapping existed would
    keep going to the host and never reach the pod. Best effort (needs the conntrack tool)."""
    tool = shutil.which("conntrack")
    for m in mappings:
        if m.protocol == "udp" and tool:
            subprocess.run(
                [tool, "-D", "-p", "udp", "--orig-port-dst", str(m.host_port)],
                capture_output=True,
                check=False,
            )
