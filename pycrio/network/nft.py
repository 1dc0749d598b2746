"""The masquerade rule of the built-in network, in nftables table `ip pycrio` (one chain per bridge).

Driven with `nft -f -`: each call is one atomic nftables transaction, and `add` + `flush` of
our own chain makes it idempotent (never a duplicate rule). Our own table keeps us out of
iptables-nft's and firewalld's tables; each bridge has its own chain so a test bridge never
touches the daemon's.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

TABLE = "pycrio"


def chain_name(bridge: str) -> str:
    return f"masq-{bridge}"


def _run(script: str) -> None:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    proc = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"nft -f failed (exit {proc.returncode}): {proc.stderr.strip()}\nscript:\n{script}")


def ensure_masquerade(bridge: str, subnet: ipaddress.IPv4Network) -> None:
    """Masquerade what the subnet sends to destinations outside it; idempotent, atomic."""
    chain = chain_name(bridge)
    _run(
        f"add table ip {TABLE}\n"
        f"add chain ip {TABLE} {chain} {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
        f"flush chain ip {TABLE} {chain}\n"
        f'add rule ip {TABLE} {chain} ip saddr {subnet} ip daddr != {subnet} masquerade comment "pycrio {bridge}"\n'
    )


def remove_masquerade(bridge: str) -> None:
    """Delete the bridge's chain, and the table when it was the last; missing is fine."""
    chain = chain_name(bridge)
    # `destroy` (nft >= 1.0.8) would make this one line; `add` first keeps old nft working.
    _run(f"add table ip {TABLE}\nadd chain ip {TABLE} {chain}\ndelete chain ip {TABLE} {chain}\n")
    listing = subprocess.run(
        [shutil.which("nft") or "/usr/sbin/nft", "list", "table", "ip", TABLE], capture_output=True, text=True
    )
    if listing.returncode == 0 and "chain " not in listing.stdout:
        _run(f"delete table ip {TABLE}\n")


def rules(bridge: str) -> list[str]:
    """The rules of the bridge's chain as `nft` prints them (empty when there is no chain)."""
    proc = subprocess.run(
        [shutil.which("nft") or "/usr/sbin/nft", "list", "chain", "ip", TABLE, chain_name(bridge)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if "masquerade" in line]
