"""The built-in network's nftables rules, in pycrio's own table `ip pycrio`, per bridge.

Driven with `nft -f -` (one atomic transaction per call) rather than pyroute2's nftables
netlink, which cannot express maps with concatenated keys. Our own table keeps us out of
iptables-nft's and firewalld's tables; every name carries the bridge, so a test bridge never
touches the daemon's.

Per bridge BR:

    chain masq-BR      nat postrouting: egress masquerade (subnet -> outside), and masquerade
                       of hostPort traffic that came from 127.0.0.0/8 or from a pod of the
                       subnet (hairpin), so replies come back through the host
    chain hp-BR-pre    nat prerouting:  DNAT of traffic to a local address through the maps
    chain hp-BR-out    nat output:      the same for connections made on the host itself
    chain hp-BR-guard  filter input:    drop what pods send to 127.0.0.0/8 (route_localnet is on
                                        for the bridge, so 127.0.0.1 hostPorts work; this keeps
                                        the host's loopback services out of the pods' reach)
    map hp-BR-addr     host ip . proto . port : pod ip . pod port   (hostPort with a hostIP)
    map hp-BR-any      proto . port : pod ip . pod port             (hostPort on every address)

Chains are flushed and rewritten by ensure_bridge_rules(); the maps never are: their elements are
the hostPorts of running pods, added and deleted per pod (hostports.py).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

TABLE = "pycrio"


def masq_chain(bridge: str) -> str:
    return f"masq-{bridge}"


def addr_map(bridge: str) -> str:
    return f"hp-{bridge}-addr"


def any_map(bridge: str) -> str:
    return f"hp-{bridge}-any"


ADDR_MAP_TYPE = "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;"
ANY_MAP_TYPE = "type inet_proto . inet_service : ipv4_addr . inet_service;"


def _chains(bridge: str) -> list[str]:
    return [masq_chain(bridge), f"hp-{bridge}-pre", f"hp-{bridge}-out", f"hp-{bridge}-guard"]


def _nft() -> str:
    return shutil.which("nft") or "/usr/sbin/nft"


def run(script: str) -> None:
    """Apply script as one transaction; OSError with nft's message when it is refused."""
    proc = subprocess.run([_nft(), "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"nft -f failed (exit {proc.returncode}): {proc.stderr.strip()}\nscript:\n{script}")


def ensure_bridge_rules(bridge: str, subnets: list[ipaddress.IPv4Network], masquerade: bool) -> None:
    """The bridge's chains with their rules and its (kept) maps; idempotent, atomic."""
    t, masq, pre, out, guard = TABLE, *_chains(bridge)
    dnat = [
        f"fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @{addr_map(bridge)}",
        f"fib daddr type local dnat ip to meta l4proto . th dport map @{any_map(bridge)}",
    ]
    lines = [
        f"add table ip {t}",
        f"add map ip {t} {addr_map(bridge)} {{ {ADDR_MAP_TYPE} }}",
        f"add map ip {t} {any_map(bridge)} {{ {ANY_MAP_TYPE} }}",
        f"add chain ip {t} {masq} {{ type nat hook postrouting priority srcnat; policy accept; }}",
        f"add chain ip {t} {pre} {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"add chain ip {t} {out} {{ type nat hook output priority -100; policy accept; }}",
        f"add chain ip {t} {guard} {{ type filter hook input priority filter; policy accept; }}",
        *(f"flush chain ip {t} {c}" for c in (masq, pre, out, guard)),
    ]
    for subnet in subnets if masquerade else []:
        lines.append(
            f'add rule ip {t} {masq} ip saddr {subnet} ip daddr != {subnet} masquerade comment "pycrio {bridge}"'
        )
    lines.append(f'add rule ip {t} {masq} oifname "{bridge}" ip saddr 127.0.0.0/8 ct status dnat masquerade')
    for subnet in subnets:
        lines.append(
            f'add rule ip {t} {masq} oifname "{bridge}" ip saddr {subnet} ip daddr {subnet} ct status dnat masquerade'
        )
    lines += [
        *(f"add rule ip {t} {pre} {rule}" for rule in dnat),
        *(f"add rule ip {t} {out} {rule}" for rule in dnat),
        f'add rule ip {t} {guard} iifname "{bridge}" ip daddr 127.0.0.0/8 ct status ! dnat drop',
    ]
    run("\n".join(lines) + "\n")


def remove_bridge_rules(bridge: str) -> None:
    """Delete the bridge's chains and maps, and the table when nothing else is in it; missing is fine."""
    t = TABLE
    # `destroy` (nft >= 1.0.8) would make this simpler; `add` first keeps Debian 12's nft working.
    lines = [f"add table ip {t}"]
    for chain in _chains(bridge):
        lines += [f"add chain ip {t} {chain}", f"delete chain ip {t} {chain}"]
    lines += [
        f"add map ip {t} {addr_map(bridge)} {{ {ADDR_MAP_TYPE} }}",
        f"delete map ip {t} {addr_map(bridge)}",
        f"add map ip {t} {any_map(bridge)} {{ {ANY_MAP_TYPE} }}",
        f"delete map ip {t} {any_map(bridge)}",
    ]
    run("\n".join(lines) + "\n")
    listing = subprocess.run([_nft(), "list", "table", "ip", t], capture_output=True, text=True)
    if listing.returncode == 0 and "chain " not in listing.stdout and "map " not in listing.stdout:
        _delete_table("ip")


def _delete_table(family: str) -> None:
    """Delete our (empty) table of family; gone already (another daemon removing its bridge) is fine."""
    try:
        run(f"delete table {family} {TABLE}\n")
    except OSError as e:
        if "No such file or directory" not in str(e):
            raise


def rules(bridge: str, chain: str | None = None, family: str = "ip") -> list[str]:
    """The rules of one of the bridge's chains (default: masq-BR) in table `FAMILY pycrio`, as `nft`
    prints them; [] without it."""
    proc = subprocess.run(
        [_nft(), "list", "chain", family, TABLE, chain or masq_chain(bridge)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return []
    return [
        line.strip()
        for line in proc.stdout.splitlines()
        if line.strip() and not line.strip().startswith(("table", "chain", "type", "}"))
    ]


def map_elements(name: str) -> list[tuple[list, list]]:
    """(key parts, value parts) of every element of map name; [] when the map does not exist."""
    proc = subprocess.run([_nft(), "-j", "list", "map", "ip", TABLE, name], capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    out = []
    for item in json.loads(proc.stdout)["nftables"]:
        for key, value in item.get("map", {}).get("elem", []):
            out.append((_parts(key), _parts(value)))
    return out


def _parts(expr) -> list:  # type: ignore[no-untyped-def]
    return list(expr["concat"]) if isinstance(expr, dict) and "concat" in expr else [expr]


def ensure_bridge_rules6(bridge: str, subnet6: ipaddress.IPv6Network, masquerade: bool) -> None:
    """Dual stack: the bridge's IPv6 masquerade chain in table `ip6 pycrio`; idempotent, atomic."""
    chain = masq_chain(bridge)
    lines = [
        f"add table ip6 {TABLE}",
        f"add chain ip6 {TABLE} {chain} {{ type nat hook postrouting priority srcnat; policy accept; }}",
        f"flush chain ip6 {TABLE} {chain}",
    ]
    if masquerade:
        lines.append(
            f"add rule ip6 {TABLE} {chain} ip6 saddr {subnet6} ip6 daddr != {subnet6} masquerade "
            f'comment "pycrio {bridge}"'
        )
    run("\n".join(lines) + "\n")


def remove_bridge_rules6(bridge: str) -> None:
    """Delete the bridge's IPv6 chain, and table `ip6 pycrio` when it was the last; missing is fine."""
    chain = masq_chain(bridge)
    run(f"add table ip6 {TABLE}\nadd chain ip6 {TABLE} {chain}\ndelete chain ip6 {TABLE} {chain}\n")
    listing = subprocess.run([_nft(), "list", "table", "ip6", TABLE], capture_output=True, text=True)
    if listing.returncode == 0 and "chain " not in listing.stdout:
        _delete_table("ip6")
