"""hostPort mappings of the built-in network: elements of the bridge's nftables maps (see nft.py).

A pod's mappings are added in one transaction with `create element` (which also fails when the
key is taken), after a check against the in-memory index that also catches a port on one address
against the same port on every address; so two pods never share a hostPort and a refused pod adds
nothing. They are removed by value (the pod's address): teardown and recovery need no record of
them, and wipe removes the whole maps.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.network import nft
from pycrio.network.pod import PortMapping

logger = logging.getLogger("pycrio.network")

LEAVE_WAIT = 10.0  # seconds a new pod waits for the hostPort of a pod being torn down


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
        self._leaving: dict[str, threading.Event] = {}  # pod ip -> set when its mappings are gone
        self._threads: list[threading.Thread] = []

    def load(self) -> None:
        """Read what is published (a restarted daemon's pods)."""
        with self._lock:
            self._by_key = {(ip, p, port): pod_ip for ip, p, port, pod_ip, _ in published(self.bridge)}

    def add(self, pod_id: str, pod_ip: str, mappings: list[PortMapping]) -> None:
        """Publish the pod's hostPorts; FailedPrecondition (nothing added) when one is taken by another pod.

        A hostPort of a pod being torn down (remove_in_background) is waited for, up to LEAVE_WAIT s.
        """
        _check(mappings)
        deadline = time.monotonic() + LEAVE_WAIT
        while True:
            with self._lock:
                holders = {self._holder(m) for m in mappings} - {None}
                leaving = [self._leaving[ip] for ip in holders if ip in self._leaving]
                if not holders:
                    self._publish(pod_id, pod_ip, mappings)
                    break
                if len(leaving) < len(holders) or time.monotonic() > deadline:
                    m = next(m for m in mappings if self._holder(m) is not None)
                    where = f"{_host_ip(m) or '0.0.0.0'}:{m.host_port}/{m.protocol}"
                    raise FailedPrecondition(f"pod {pod_id[:12]}: hostPort {where} is already used by another pod")
            for event in leaving:
                event.wait(max(0.0, deadline - time.monotonic()))
        _forget_udp_flows(mappings)

    def _holder(self, m: PortMapping) -> str | None:
        """The pod address holding m's hostPort: the same port on the same address, or on every
        address against any one address. Called with the lock held."""
        key = (_host_ip(m), m.protocol, m.host_port)
        for k, ip in self._by_key.items():
            if k[1:] == key[1:] and (k[0] == key[0] or "" in (k[0], key[0])):
                return ip
        return None

    def _publish(self, pod_id: str, pod_ip: str, mappings: list[PortMapping]) -> None:
        lines, keys = [], []
        for m in mappings:
            key = (_host_ip(m), m.protocol, m.host_port)
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

    def publishes(self, pod_ip: str) -> bool:
        with self._lock:
            return pod_ip in self._by_key.values()

    def remove_in_background(self, pod_ip: str, then: Callable[[], object]) -> None:
        """remove(pod_ip) on a thread of its own, then `then()` (the address's release) once it worked.

        nftables deletes map elements only after an RCU grace period (10-20 ms here), which
        StopPodSandbox need not wait for. The address stays held until the mappings are gone, so
        no new pod gets traffic meant for the old one; a failure is logged and keeps it held.
        """
        with self._lock:
            if pod_ip in self._leaving:
                return
            done = self._leaving[pod_ip] = threading.Event()

        def work() -> None:
            try:
                self.remove(pod_ip)
            except OSError as e:
                logger.error("hostPorts of %s stay published, its address stays held: %s", pod_ip, e)
                return
            finally:
                with self._lock:
                    self._leaving.pop(pod_ip, None)
                done.set()
            then()

        thread = threading.Thread(target=work, name=f"hostports-{pod_ip}")
        self._threads.append(thread)
        thread.start()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait for the removals still running (daemon stop, tests)."""
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)

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
