"""The built-in pod network: bridge, per-pod veth (pod end created inside the pod's netns), IPAM.

Every method is synchronous and blocking (netlink, sqlite, `nft`) and thread-safe: the
daemon calls them with `asyncio.to_thread` / `run_in_executor`. No thread of the daemon ever
changes namespace: the pod end of the veth is created directly in the pod's netns
(IFLA_NET_NS_FD on the peer), and it is configured through a netlink socket made inside that
netns by a short-lived child (inside.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Iterator

from pycrio import native
from pycrio.config import NetworkConfig
from pycrio.errors import InvalidArgument, NotFound
from pycrio.network import hostports, inside, nft
from pycrio.network.ipam import Ipam
from pycrio.network.pod import PodInfo, PodNetwork
from pycrio.network.rtnl import IFF_UP, Rtnl
from pycrio.state import Database

logger = logging.getLogger("pycrio.network")

POD_IFNAME = "eth0"
NSFS_MAGIC = 0x6E736673


def host_veth_name(pod_id: str) -> str:
    """The host end of a pod's veth: "veth" + 8 hex of sha256(pod id), stable across restarts."""
    return "veth" + hashlib.sha256(pod_id.encode()).hexdigest()[:8]


class BuiltinNetwork:
    """The rtnetlink driver of the built-in network; see the module docstring for threading."""

    def __init__(self, cfg: NetworkConfig, db: Database):
        self.cfg = cfg
        self.subnet = ipaddress.IPv4Network(cfg.subnet, strict=True)
        self.gateway = ipaddress.IPv4Address(cfg.gateway) if cfg.gateway else next(self.subnet.hosts())
        # Subnets pods got addresses from before UpdateRuntimeConfig moved them (still routed, masqueraded).
        self.previous: list[ipaddress.IPv4Network] = []
        self._cidr_file = os.path.join(os.path.dirname(db.path), "pod-cidr.json")
        self._load_pod_cidr()
        self.ipam = Ipam(db, self.subnet, self.gateway)
        # Dual stack: an IPv6 address per pod beside the IPv4 one (PodNetwork.additional_ips).
        self.subnet6 = ipaddress.IPv6Network(cfg.subnet6, strict=True) if cfg.subnet6 else None
        self.gateway6 = next(self.subnet6.hosts()) if self.subnet6 else None
        self.ipam6 = Ipam(db, self.subnet6, self.gateway6) if self.subnet6 and self.gateway6 else None
        self.hostports = hostports.HostPorts(cfg.bridge)
        # One rtnetlink socket for the network's life, one request at a time.
        self._ipr: Rtnl | None = None
        self._ipr_lock = threading.Lock()

    @contextlib.contextmanager
    def _rtnl(self) -> Iterator[Rtnl]:
        """The shared rtnetlink socket, one user (thread) at a time."""
        with self._ipr_lock:
            if self._ipr is None:
                self._ipr = Rtnl()
            yield self._ipr

    def _delete_host_link(self, name: str) -> None:
        with self._rtnl() as ipr:
            ipr.delete_link(name)

    def close(self) -> None:
        self.hostports.wait_idle()
        with self._ipr_lock:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None
        self.ipam.close()
        if self.ipam6 is not None:
            self.ipam6.close()

    # ------------------------------------------------------------ the bridge

    def start(self) -> None:
        """At daemon start: make the network able to serve (the backends' common entry point)."""
        self.ensure_bridge()
        self.hostports.load()

    def ensure_bridge(self) -> None:
        """Bridge present, up, MTU, gateway/prefix on it; ip_forward=1; the masquerade rule. Idempotent."""
        br = self.cfg.bridge
        with self._rtnl() as ipr:
            if ipr.link_lookup(br) is None:
                with contextlib.suppress(FileExistsError):  # another caller made it meanwhile
                    ipr.add_bridge(br, self.cfg.mtu)
                logger.info("created bridge %s", br)
            index = ipr.link_index(br)
            kind, _ = ipr.link_kind_and_flags(br) or ("", 0)
            if kind != "bridge":
                raise InvalidArgument(f"network: {br} exists and is a {kind or 'non-bridge'} link, not a bridge")
            ipr.set_link(index, up=True, mtu=self.cfg.mtu)
            for subnet in [self.subnet, *self.previous]:
                gateway = self.gateway if subnet == self.subnet else next(subnet.hosts())
                with contextlib.suppress(FileExistsError):
                    ipr.add_address(index, str(gateway), subnet.prefixlen)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        # hostPorts on 127.0.0.1: DNAT'ed loopback traffic leaves through the bridge (nft.py guards it).
        with open(f"/proc/sys/net/ipv4/conf/{br}/route_localnet", "w") as f:
            f.write("1")
        nft.ensure_bridge_rules(br, [self.subnet, *self.previous], self.cfg.masquerade)
        if self.subnet6 is not None:
            self._ensure_ipv6(br)
        else:
            nft.remove_bridge_rules6(br)

    def _ensure_ipv6(self, br: str) -> None:
        """The bridge's IPv6 gateway address (no DAD: usable at once), forwarding, masquerade."""
        assert self.subnet6 is not None and self.gateway6 is not None
        with open(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6", "w") as f:
            f.write("0")
        with self._rtnl() as ipr:
            index = ipr.link_index(br)
            with contextlib.suppress(FileExistsError):
                ipr.add_address(index, str(self.gateway6), self.subnet6.prefixlen)  # no DAD
        with open("/proc/sys/net/ipv6/conf/all/forwarding", "w") as f:
            f.write("1")
        nft.ensure_bridge_rules6(br, self.subnet6, self.cfg.masquerade)

    # ------------------------------------------------------------ UpdateRuntimeConfig's pod CIDR

    def set_pod_cidr(self, cidrs: str) -> bool:
        """New pods get addresses from the IPv4 CIDR in cidrs (the kubelet's "v4,v6" list); pods
        that hold addresses keep them. Persisted beside the database, so it outlives restarts.
        False when nothing changed. InvalidArgument for a malformed or too small CIDR."""
        v4 = []
        for text in filter(None, (c.strip() for c in cidrs.split(","))):
            try:
                net = ipaddress.ip_network(text, strict=True)
            except ValueError as e:
                raise InvalidArgument(f"pod CIDR {text!r}: {e}") from e
            if net.version == 4:
                v4.append(net)
            else:
                logger.warning("pod CIDR %s ignored: the built-in network is IPv4 only", net)
        if not v4:
            return False
        subnet = v4[0]
        if subnet.prefixlen > 30:
            raise InvalidArgument(f"pod CIDR {subnet} is too small: a /30 or larger is needed")
        if subnet == self.subnet:
            return False
        held = [ipaddress.IPv4Address(ip) for ip in self.ipam.allocations().values()]
        old = [n for n in [self.subnet, *self.previous] if n != subnet and any(a in n for a in held)]
        self.subnet, self.gateway, self.previous = subnet, next(subnet.hosts()), old
        self.ipam.retarget(self.subnet, self.gateway)
        self._save_pod_cidr()
        self.ensure_bridge()
        logger.info("pod CIDR is now %s (gateway %s)", self.subnet, self.gateway)
        return True

    def _load_pod_cidr(self) -> None:
        try:
            with open(self._cidr_file) as f:
                saved = json.load(f)
            subnet = ipaddress.IPv4Network(saved["subnet"])
            previous = [ipaddress.IPv4Network(n) for n in saved.get("previous", [])]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.error("ignoring %s (%s): pods get addresses from %s", self._cidr_file, e, self.subnet)
            return
        self.subnet, self.gateway, self.previous = subnet, next(subnet.hosts()), previous
        logger.info("pod CIDR %s (from UpdateRuntimeConfig, saved in %s)", subnet, self._cidr_file)

    def _save_pod_cidr(self) -> None:
        tmp = self._cidr_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"subnet": str(self.subnet), "previous": [str(n) for n in self.previous]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self._cidr_file)

    def remove_bridge(self) -> None:
        """Delete the bridge and its nftables chains and maps (wipe, tests); missing is fine."""
        remove_bridge(self.cfg.bridge)
        self.hostports.clear()

    def ready(self) -> tuple[bool, str]:
        """(True, "") when the bridge exists and is administratively up; else (False, why)."""
        try:
            with self._rtnl() as ipr:
                found = ipr.link_kind_and_flags(self.cfg.bridge)
                if found is None:
                    return False, f"bridge {self.cfg.bridge} does not exist"
                if not found[1] & IFF_UP:
                    return False, f"bridge {self.cfg.bridge} is down"
        except OSError as e:
            return False, f"bridge {self.cfg.bridge}: {e}"
        return True, ""

    # ------------------------------------------------------------ pods

    def setup(self, pod_id: str, netns_path: str, pod: PodInfo | None = None) -> PodNetwork:
        """Give the pod in netns_path an address and an eth0 on the bridge; on failure undo it all.

        Raises NotFound when netns_path is missing or not a namespace pin, the bridge is
        missing (ensure_bridge() not called), ResourceExhausted when the subnet is full.
        """
        host = host_veth_name(pod_id)
        with contextlib.ExitStack() as undo:
            fd = _open_netns(pod_id, netns_path)
            undo.callback(os.close, fd)
            with self._rtnl() as ipr:
                bridge = ipr.link_lookup(self.cfg.bridge)
                if bridge is None:
                    raise NotFound(f"network: bridge {self.cfg.bridge} does not exist (ensure_bridge not run)")
                rollback = undo.enter_context(contextlib.ExitStack())
                ip = self.ipam.allocate(pod_id)
                rollback.callback(self.ipam.release, pod_id)  # both families' addresses
                ip6 = self.ipam6.allocate(pod_id) if self.ipam6 is not None else None
                try:
                    ipr.add_veth(host, self.cfg.mtu, bridge, POD_IFNAME, fd)
                except FileExistsError as e:
                    raise InvalidArgument(f"network: pod {pod_id}: link {host} already exists") from e
                rollback.callback(self._delete_host_link, host)  # runs after this block let go of the socket
                with open(f"/sys/class/net/{host}/brport/hairpin_mode", "w") as f:
                    f.write("1")
            addresses = [(str(ip), self.subnet.prefixlen)]
            gateways = [str(self.gateway)]
            if ip6 is not None and self.subnet6 is not None:
                addresses.append((str(ip6), self.subnet6.prefixlen))
                gateways.append(str(self.gateway6))
            try:
                inside.configure(netns_path, POD_IFNAME, addresses, gateways)
            except OSError as e:
                raise OSError(e.errno, f"network: configuring {POD_IFNAME} in {netns_path}: {e.strerror}") from e
            if pod is not None and pod.port_mappings:
                self.hostports.add(pod_id, str(ip), pod.port_mappings)
            rollback.pop_all()  # success: keep the veth, the address and the hostPorts
        return PodNetwork(
            ip=str(ip),
            prefix=self.subnet.prefixlen,
            gateway=str(self.gateway),
            host_veth=host,
            additional_ips=[str(ip6)] if ip6 is not None else [],
        )

    def teardown(self, pod_id: str, netns_path: str | None = None, delete_veth: bool = True) -> None:
        """Delete the pod's host veth (its eth0 goes with it) and release its address. Idempotent.

        netns_path is not needed (the host end is found by name) and may be missing. With
        delete_veth False the caller is about to drop the pod's netns, which takes the pair
        with it far more cheaply than a veth delete (about 20 ms under rtnl here). A pod with
        hostPorts keeps its address until they are unpublished, in the background (hostports.py).
        """
        if delete_veth:
            self._delete_host_link(host_veth_name(pod_id))
        ip = self.ipam.address(pod_id)
        if ip is not None and self.hostports.publishes(ip):
            self.hostports.remove_in_background(ip, then=lambda: self.ipam.release(pod_id))
        else:
            self.ipam.release(pod_id)

    def allocations(self) -> dict[str, str]:
        """pod_id -> IPv4 address, as recorded (for recovery after a restart)."""
        return self.ipam.allocations()


def remove_bridge(bridge: str) -> None:
    """Delete bridge and its nftables chains and maps; missing is fine (pycrio wipe needs no database)."""
    with Rtnl() as ipr:
        ipr.delete_link(bridge)
    nft.remove_bridge_rules(bridge)
    nft.remove_bridge_rules6(bridge)


def _open_netns(pod_id: str, path: str) -> int:
    """An O_RDONLY fd of the namespace pin at path; NotFound when it is no netns."""
    try:
        if native.fs_type(path) != NSFS_MAGIC:
            raise NotFound(f"network: pod {pod_id}: {path} is not a network namespace pin")
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise NotFound(f"network: pod {pod_id}: network namespace {path} does not exist") from e
