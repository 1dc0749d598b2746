"""A small rtnetlink client on pyroute2's message classes: the few link, address and route
requests the built-in network makes, on the host or inside a pinned network namespace.

pyroute2's package `__init__` imports every subsystem it has (IPDB, NDB, nftables, wireless,
ipset, ...): about 10 MiB of a daemon whose idle RSS budget is 45 MiB. Its message classes
alone cost under 1 MiB. So the `pyroute2` package is registered here without running its
`__init__`; the first access to one of its top-level names (`from pyroute2 import IPRoute`,
as tests and tools do) runs the real `__init__` then, so nothing else sees a difference.

One blocking socket, one request at a time, each acked; callers serialise (builtin.py holds
one Rtnl under a lock; inside.py makes one per pod).
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import socket
import struct
import sys
from typing import Any


def _register_pyroute2_without_init() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        raise ImportError("pyroute2 is not installed")
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> Any:
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")  # `from pyroute2 import config`
        # Someone wants one of the names the real __init__ defines: run it in this module now.
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules["pyroute2"] = package


_register_pyroute2_without_init()

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR  # noqa: E402
from pyroute2.netlink.rtnl import (  # noqa: E402
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # noqa: E402
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402

from pycrio import native  # noqa: E402

IFF_UP = 0x1
IFA_F_NODAD = 0x02
ENODEV = 19
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
NLMSG_HEADER = struct.Struct("=LHHLL")
NETLINK_ROUTE = 0


class Rtnl:
    """An rtnetlink socket: the host's, or one inside the network namespace pinned at netns_path.

    Every failure is an OSError of the kernel's errno (FileExistsError for EEXIST, ...) whose
    message names the request.
    """

    def __init__(self, netns_path: str | None = None):
        if netns_path is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        else:
            # Made by a short-lived child inside the netns: no daemon thread changes namespace.
            fd = native.netns_socket(netns_path, socket.AF_NETLINK, socket.SOCK_RAW)
            self.sock = socket.socket(fileno=fd)
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, msg: Any, kind: int, what: str, flags: int = 0) -> bytes:
        """Send msg as kind with NLM_F_REQUEST|NLM_F_ACK|flags; the first answer (header included),
        b"" when the kernel only acked."""
        self.seq += 1
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        self.sock.send(msg.data)
        answer = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise OSError(5, f"rtnetlink {what}: empty answer")
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length, mtype, _, seq, _ = NLMSG_HEADER.unpack_from(data, offset)
                if length < NLMSG_HEADER.size:
                    raise OSError(5, f"rtnetlink {what}: malformed answer")
                message = data[offset : offset + length]
                offset += (length + 3) & ~3
                if seq != self.seq:
                    continue  # the tail of an earlier request that failed half-way
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", message, NLMSG_HEADER.size)[0]
                    if code:
                        raise OSError(code, f"rtnetlink {what}: {os.strerror(code)}")
                    return answer
                answer = answer or message

    # ------------------------------------------------------------ links

    def link_lookup(self, name: str) -> int | None:
        """The index of the link called name, None when there is none."""
        found = self._get_link(name)
        return None if found is None else int(found["index"])

    def link_index(self, name: str) -> int:
        found = self._get_link(name)
        if found is None:
            raise OSError(ENODEV, f"rtnetlink: no link {name}")
        return int(found["index"])

    def link_kind_and_flags(self, name: str) -> tuple[str, int] | None:
        """(IFLA_INFO_KIND or "", ifi_flags) of the link called name; None when there is none."""
        found = self._get_link(name)
        if found is None:
            return None
        info = found.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        return kind or "", int(found["flags"])

    def _get_link(self, name: str) -> Any:
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        try:
            answer = self.request(msg, RTM_GETLINK, f"get link {name}")
        except OSError as e:
            if e.errno == ENODEV:
                return None
            raise
        found = ifinfmsg(answer)
        found.decode()
        return found

    def add_bridge(self, name: str, mtu: int) -> None:
        msg = ifinfmsg()
        msg["attrs"] = [
            ("IFLA_IFNAME", name),
            ("IFLA_MTU", mtu),
            ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}),
        ]
        self.request(msg, RTM_NEWLINK, f"add bridge {name}", NLM_F_CREATE | NLM_F_EXCL)

    def add_veth(self, name: str, mtu: int, master: int, peer: str, peer_netns_fd: int) -> None:
        """A veth pair: name here, up and enslaved to master; peer (down) created directly in
        peer_netns_fd's netns."""
        peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_MTU", mtu), ("IFLA_NET_NS_FD", peer_netns_fd)]
        msg = ifinfmsg()
        msg["flags"], msg["change"] = IFF_UP, IFF_UP
        msg["attrs"] = [
            ("IFLA_IFNAME", name),
            ("IFLA_MTU", mtu),
            ("IFLA_MASTER", master),
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "veth"),
                        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]}),
                    ]
                },
            ),
        ]
        self.request(msg, RTM_NEWLINK, f"add veth {name}", NLM_F_CREATE | NLM_F_EXCL)

    def set_link(self, index: int, up: bool = True, mtu: int | None = None) -> None:
        msg = ifinfmsg()
        msg["index"], msg["change"] = index, IFF_UP
        msg["flags"] = IFF_UP if up else 0
        if mtu is not None:
            msg["attrs"] = [("IFLA_MTU", mtu)]
        self.request(msg, RTM_NEWLINK, f"set link {index}")

    def delete_link(self, name: str) -> bool:
        """Delete the link called name; False when there was none."""
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        try:
            self.request(msg, RTM_DELLINK, f"delete link {name}")
        except OSError as e:
            if e.errno == ENODEV:
                return False
            raise
        return True

    # ------------------------------------------------------------ addresses and routes

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        """address/prefixlen on link index; IPv6 ones without DAD (usable at once)."""
        ip = ipaddress.ip_address(address)
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        msg["prefixlen"], msg["index"] = prefixlen, index
        attrs: list[tuple[str, str | int]] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        if ip.version == 6:
            attrs = [("IFA_ADDRESS", address), ("IFA_FLAGS", IFA_F_NODAD)]
            msg["flags"] = IFA_F_NODAD
        msg["attrs"] = attrs
        self.request(msg, RTM_NEWADDR, f"add address {address}/{prefixlen}", NLM_F_CREATE | NLM_F_EXCL)

    def add_default_route(self, gateway: str) -> None:
        ip = ipaddress.ip_address(gateway)
        msg = rtmsg()
        msg["family"] = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        msg["table"], msg["proto"], msg["scope"], msg["type"] = (
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        )
        msg["attrs"] = [("RTA_GATEWAY", gateway)]
        self.request(msg, RTM_NEWROUTE, f"add default route via {gateway}", NLM_F_CREATE | NLM_F_EXCL)
