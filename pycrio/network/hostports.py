"""hostPort mappings of the built-in network: elements of the bridge's nftables maps (see nft.py).

A pod's mappings are added in one transaction with `create element`, which fails when the key
is taken, so two pods never share a hostPort and a refused pod adds nothing. They are removed
by value (the pod's address), so teardown, recovery and wipe need no record of them.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import threading

from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.network import nft
from pycrio.network.pod import PortMapping

_lock = threading.Lock()  # check-then-create of the any/addr overlap is one step per process


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


def add(bridge: str, pod_id: str, pod_ip: str, mappings: list[PortMapping]) -> None:
    """Publish the pod's hostPorts; FailedPrecondition (nothing added) when one is taken by another pod."""
    _check(mappings)
    with _lock:
        taken_any = {(p, port) for (p, port), _ in _elements(nft.any_map(bridge))}
        taken_addr = {(ip, p, port) for (ip, p, port), _ in _elements(nft.addr_map(bridge))}
        lines = []
        for m in mappings:
            host_ip = _host_ip(m)
            clash = (m.protocol, m.host_port) in taken_any or (
                (host_ip == "" and any((p, port) == (m.protocol, m.host_port) for _, p, port in taken_addr))
                or (host_ip, m.protocol, m.host_port) in taken_addr
            )
            where = f"{host_ip or '0.0.0.0'}:{m.host_port}/{m.protocol}"
            if clash:
                raise FailedPrecondition(f"pod {pod_id[:12]}: hostPort {where} is already used by another pod")
            value = f"{pod_ip} . {m.container_port}"
            if host_ip:
                lines.append(
                    f"create element ip {nft.TABLE} {nft.addr_map(bridge)} "
                    f"{{ {host_ip} . {m.protocol} . {m.host_port} : {value} }}"
                )
            else:
                lines.append(
                    f"create element ip {nft.TABLE} {nft.any_map(bridge)} {{ {m.protocol} . {m.host_port} : {value} }}"
                )
        try:
            nft.run("\n".join(lines) + "\n")
        except OSError as e:
            if "File exists" in str(e):  # another daemon on this bridge was faster
                raise FailedPrecondition(f"pod {pod_id[:12]}: a hostPort is already used by another pod") from e
            raise
    _forget_udp_flows(mappings)


def remove(bridge: str, pod_ip: str) -> int:
    """Unpublish every hostPort that leads to pod_ip; how many there were. Missing maps are fine."""
    lines = []
    with _lock:
        for name in (nft.addr_map(bridge), nft.any_map(bridge)):
            for key, value in _elements(name):
                if value and value[0] == pod_ip:
                    lines.append(f"delete element ip {nft.TABLE} {name} {{ {' . '.join(map(str, key))} }}")
        if lines:
            nft.run("\n".join(lines) + "\n")
    return len(lines)


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
