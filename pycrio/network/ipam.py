"""Address management for the built-in network: the ip_allocations table, one address per pod and family.

One Ipam per subnet (an IPv4 one, and an IPv6 one for dual stack); they share the table, each
seeing only the rows of its family.

Thread-safe: one sqlite connection of its own (the daemon's Database connection belongs to
the event loop's thread) behind a lock; every change is one BEGIN IMMEDIATE transaction, so
two daemons or a crash never hand out an address twice.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading

from pycrio.errors import ResourceExhausted
from pycrio.state import Database

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Ipam:
    """Addresses of subnet for pods: never the network, broadcast or gateway address, never twice."""

    def __init__(self, db: Database, subnet: IPNetwork, gateway: IPAddress):
        self.subnet, self.gateway = subnet, gateway
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._first, self._last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
        self._cursor: int | None = None  # the last address handed out by this instance

    def retarget(self, subnet: IPNetwork, gateway: IPAddress) -> None:
        """Hand out addresses of another subnet from now on; held addresses stay held."""
        with self._lock:
            self.subnet, self.gateway = subnet, gateway
            self._first, self._last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
            self._cursor = None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def allocate(self, pod_id: str) -> IPAddress:
        """The pod's address: its existing one, or the next free after the last handed out (round robin).

        Raises ResourceExhausted when every address of the subnet is taken.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                ip = self._allocate_locked(pod_id)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return ip

    def _address(self, value: int) -> IPAddress:
        return ipaddress.IPv4Address(value) if self.subnet.version == 4 else ipaddress.IPv6Address(value)

    def _mine(self, text: str) -> bool:
        """The row's address is of this Ipam's family (the other family's Ipam owns the rest)."""
        return (":" in text) == (self.subnet.version == 6)

    def _allocate_locked(self, pod_id: str) -> IPAddress:
        taken: set[int] = set()
        for text, owner in self._conn.execute("SELECT ip, pod_id FROM ip_allocations"):
            addr = ipaddress.ip_address(text)
            if self._mine(text) and addr in self.subnet:
                if owner == pod_id:
                    return addr
                taken.add(int(addr))
        taken.add(int(self.gateway))
        if self._cursor is None:  # after a restart: continue after the newest allocation of this family
            for (text,) in self._conn.execute("SELECT ip FROM ip_allocations ORDER BY rowid DESC"):
                if self._mine(text):
                    if ipaddress.ip_address(text) in self.subnet:
                        self._cursor = int(ipaddress.ip_address(text))
                    break
        start = self._first if self._cursor is None else self._cursor + 1
        size = self._last - self._first + 1
        for step in range(size):
            candidate = self._first + (start - self._first + step) % size
            if candidate not in taken:
                new = self._address(candidate)
                self._conn.execute("INSERT INTO ip_allocations (ip, pod_id) VALUES (?, ?)", (str(new), pod_id))
                self._cursor = candidate
                return new
        family = f"IPv{self.subnet.version}"
        raise ResourceExhausted(f"no free {family} address left in {self.subnet} ({len(taken) - 1} pods hold one)")

    def release(self, pod_id: str) -> list[str]:
        """Free every address the pod holds, of both families; the addresses freed (none: already released)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self._conn.execute("SELECT ip FROM ip_allocations WHERE pod_id = ?", (pod_id,)).fetchall()
                self._conn.execute("DELETE FROM ip_allocations WHERE pod_id = ?", (pod_id,))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return [r[0] for r in rows]

    def address(self, pod_id: str) -> str | None:
        """The pod's address, None when it holds none."""
        with self._lock:
            rows = self._conn.execute("SELECT ip FROM ip_allocations WHERE pod_id = ?", (pod_id,)).fetchall()
        return next((text for (text,) in rows if self._mine(text)), None)

    def allocations(self) -> dict[str, str]:
        """pod_id -> address of this family, for every allocation (in this subnet or not)."""
        with self._lock:
            rows = self._conn.execute("SELECT ip, pod_id FROM ip_allocations").fetchall()
        return {pod: ip for ip, pod in rows if self._mine(ip)}
