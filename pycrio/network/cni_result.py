"""CNI ADD results (spec section 5) of every version, reduced to what a pod's facts need: its addresses.

0.3.x / 0.4.0 results carry `ips[].version` ("4" / "6"), 1.0.0 and later do not (the address tells);
0.1.0 / 0.2.0 results have `ip4` / `ip6` objects instead of `ips`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any


class CniResultError(ValueError):
    """A result that is not a CNI result pycrio can read."""


@dataclass(frozen=True)
class ResultIP:
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: str = ""


def result_ips(result: dict[str, Any]) -> list[ResultIP]:
    """The container's addresses in result order: IPs of a sandbox interface, or of no named interface.

    Addresses a plugin reports for host interfaces (an `interface` index whose entry has no
    `sandbox`) are not the pod's.
    """
    if not isinstance(result, dict):
        raise CniResultError("a CNI result must be a JSON object")
    found: list[ResultIP] = []
    if "ips" in result:
        ips, interfaces = result.get("ips") or [], result.get("interfaces") or []
        if not isinstance(ips, list) or not isinstance(interfaces, list):
            raise CniResultError('"ips" and "interfaces" must be lists')
        for entry in ips:
            if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
                raise CniResultError(f"an entry of ips has no address: {entry!r}")
            index = entry.get("interface")
            if isinstance(index, int) and 0 <= index < len(interfaces):
                iface = interfaces[index]
                if isinstance(iface, dict) and not iface.get("sandbox"):
                    continue  # a host-side interface's address
            found.append(_ip(entry["address"], entry.get("gateway"), entry.get("version")))
    else:  # 0.1.0 / 0.2.0
        for key, family in (("ip4", "4"), ("ip6", "6")):
            entry = result.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("ip"), str):
                found.append(_ip(entry["ip"], entry.get("gateway"), family))
    return found


def _ip(address: str, gateway: Any, version: Any) -> ResultIP:
    try:
        iface = ipaddress.ip_interface(address)
    except ValueError as e:
        raise CniResultError(f"bad address {address!r} in a CNI result: {e}") from e
    if "/" not in address:
        raise CniResultError(f"address {address!r} in a CNI result has no prefix length")
    if version is not None and str(version) != str(iface.version):
        raise CniResultError(f"address {address} is marked version {version}")
    return ResultIP(iface, gateway if isinstance(gateway, str) else "")


def primary_and_others(ips: list[ResultIP]) -> tuple[ResultIP, list[ResultIP]]:
    """The pod's primary address (the first IPv4, else the first) and the others in order."""
    if not ips:
        raise CniResultError("the CNI result gives the pod no IP address")
    primary = next((ip for ip in ips if ip.address.version == 4), ips[0])
    return primary, [ip for ip in ips if ip is not primary]
