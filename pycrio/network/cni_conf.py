"""CNI network configurations: finding the network in the conf dir, its version, its plugins' binaries,
and the request configuration each plugin gets on stdin (CNI spec, sections 1 and 3).

Pure functions on dicts and files: no plugin is executed here.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pycrio.errors import InvalidArgument
from pycrio.network.pod import PodInfo

CONF_EXTENSIONS = (".conflist", ".conf", ".json")
# The spec versions pycrio speaks (results of 0.1.0/0.2.0 have another shape, cni_result reads both).
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PLUGIN_TYPE = re.compile(r"^[^/\\\s]+$")
# The kubelet's bandwidth annotations; the burst is the kubelet's and the other runtimes' fixed choice.
INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
BANDWIDTH_BURST = 2**32 - 1
# pycrio's own annotation for the `ips` capability (static addresses): comma-separated, CIDR or bare.
IPS_ANNOTATION = "pycrio.io/ips"


class CniConfError(ValueError):
    """A conf file that is not a usable CNI network configuration (the message names the file)."""


@dataclass
class NetworkConf:
    """One CNI network: its name, the version pycrio speaks to its plugins, the plugin list, its source."""

    name: str
    version: str
    plugins: list[dict[str, Any]]
    source: str = ""
    disable_check: bool = False
    disable_gc: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """What the result cache keeps so that DEL gets the very configuration ADD had."""
        return {"source": self.source, "version": self.version, "config": self.raw}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> NetworkConf:
        return parse(record["config"], record.get("source", ""), version=record.get("version"))


def version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (-1,)


def at_least(version: str, wanted: str) -> bool:
    return version_key(version) >= version_key(wanted)


def parse(data: Any, source: str = "", version: str | None = None) -> NetworkConf:
    """A network from a conflist (or a single plugin .conf, wrapped into a one-plugin list).

    version: the one chosen when it was first loaded (a stored record); else the highest of
    cniVersion and cniVersions that pycrio supports.
    """
    where = source or "CNI configuration"
    if not isinstance(data, dict):
        raise CniConfError(f"{where}: expected a JSON object")
    raw = data
    if "plugins" not in data:
        if "type" not in data:
            raise CniConfError(f'{where}: neither a conflist (no "plugins") nor a plugin configuration (no "type")')
        data = {"cniVersion": data.get("cniVersion", ""), "name": data.get("name", ""), "plugins": [data]}
    name = data.get("name")
    if not isinstance(name, str) or not NETWORK_NAME.match(name):
        raise CniConfError(f'{where}: "name" must be a network name (alphanumeric, then _ . -), got {name!r}')
    plugins = data.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CniConfError(f'{where}: network {name}: "plugins" must be a non-empty list')
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise CniConfError(f"{where}: network {name}: plugin {i} is not an object")
        kind = plugin.get("type")
        if not isinstance(kind, str) or not PLUGIN_TYPE.match(kind):
            raise CniConfError(f'{where}: network {name}: plugin {i} has no valid "type" ({kind!r})')
        ipam = plugin.get("ipam")
        if ipam is not None and not isinstance(ipam, dict):
            raise CniConfError(f'{where}: network {name}: plugin {kind}: "ipam" is not an object')
    if version is None:
        version = _select_version(data, where, name)
    return NetworkConf(
        name=name,
        version=version,
        plugins=plugins,
        source=source,
        disable_check=data.get("disableCheck") is True,
        disable_gc=data.get("disableGC") is True,
        raw=raw,
    )


def _select_version(data: dict[str, Any], where: str, name: str) -> str:
    """The highest version of cniVersion + cniVersions that pycrio supports (spec, version considerations)."""
    offered = [data.get("cniVersion")]
    if isinstance(data.get("cniVersions"), list):
        offered += data["cniVersions"]
    usable = [v for v in offered if isinstance(v, str) and v in SUPPORTED_VERSIONS]
    if not usable:
        shown = ", ".join(str(v) for v in offered if v) or "none"
        raise CniConfError(
            f"{where}: network {name}: no supported cniVersion (offered {shown}; "
            f"pycrio speaks {', '.join(SUPPORTED_VERSIONS)})"
        )
    return max(usable, key=version_key)


def conf_files(conf_dir: str) -> list[str]:
    """The network configuration files of conf_dir, by file name (missing dir: none)."""
    try:
        names = sorted(os.listdir(conf_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(conf_dir, n) for n in names if n.endswith(CONF_EXTENSIONS) and not n.startswith(".")]


def load_file(path: str) -> NetworkConf:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except OSError as e:
        raise CniConfError(f"{path}: cannot read: {e.strerror}") from e
    except ValueError as e:
        raise CniConfError(f"{path}: invalid JSON: {e}") from e
    return parse(data, path)


def find_network(conf_dir: str, wanted: str = "") -> NetworkConf:
    """The network named wanted, or ("") the first valid file by name; CniConfError says why none."""
    problems: list[str] = []
    for path in conf_files(conf_dir):
        try:
            conf = load_file(path)
        except CniConfError as e:
            problems.append(str(e))
            continue
        if not wanted or conf.name == wanted:
            return conf
    what = f"network {wanted!r}" if wanted else "network configuration"
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise CniConfError(f"no valid CNI {what} in {conf_dir}{detail}")


def find_binary(kind: str, bin_dirs: list[str]) -> str | None:
    for d in bin_dirs:
        path = os.path.join(d, kind)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def binaries(conf: NetworkConf) -> list[str]:
    """Every executable the network needs: its plugins' types and their IPAM types, in order."""
    needed: list[str] = []
    for plugin in conf.plugins:
        needed.append(plugin["type"])
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str):
            needed.append(ipam["type"])
    return list(dict.fromkeys(needed))


def missing_binaries(conf: NetworkConf, bin_dirs: list[str]) -> list[str]:
    return [kind for kind in binaries(conf) if find_binary(kind, bin_dirs) is None]


# ---------------------------------------------------------------- capability arguments


def capability_args(pod: PodInfo) -> dict[str, Any]:
    """The capability arguments pycrio can give (CNI conventions): what the pod asks for, by capability.

    Raises InvalidArgument on a bandwidth annotation or IP that does not parse.
    """
    args: dict[str, Any] = {}
    if pod.port_mappings:
        mappings = []
        for m in pod.port_mappings:
            entry: dict[str, Any] = {"hostPort": m.host_port, "containerPort": m.container_port, "protocol": m.protocol}
            if m.host_ip:
                entry["hostIP"] = m.host_ip
            mappings.append(entry)
        args["portMappings"] = mappings
    if pod.dns_servers or pod.dns_searches or pod.dns_options:
        args["dns"] = {"servers": pod.dns_servers, "searches": pod.dns_searches, "options": pod.dns_options}
    bandwidth: dict[str, int] = {}
    for key, prefix in ((INGRESS_ANNOTATION, "ingress"), (EGRESS_ANNOTATION, "egress")):
        if key in pod.annotations:
            bandwidth[f"{prefix}Rate"] = parse_quantity(pod.annotations[key], key)
            bandwidth[f"{prefix}Burst"] = BANDWIDTH_BURST
    if bandwidth:
        args["bandwidth"] = bandwidth
    if pod.annotations.get(IPS_ANNOTATION):
        args["ips"] = [ip.strip() for ip in pod.annotations[IPS_ANNOTATION].split(",") if ip.strip()]
    return args


_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([eE][+-]?[0-9]+)|(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei))?$")


def parse_quantity(text: str, what: str = "quantity") -> int:
    """A Kubernetes resource quantity ("10M", "1Gi", "1e6", "500k") as an integer, rounded up."""
    from decimal import ROUND_CEILING, Decimal

    m = _QUANTITY.match(text.strip())
    if not m:
        raise InvalidArgument(f"{what}: {text!r} is not a quantity like 10M or 1Gi")
    number, exponent, suffix = Decimal(m.group(1)), m.group(2), m.group(3) or ""
    if exponent:
        value = number * (Decimal(10) ** int(exponent[1:]))
    elif suffix == "m":
        value = number / 1000
    else:
        value = number * _SUFFIXES[suffix]
    result = int(value.to_integral_value(rounding=ROUND_CEILING))
    if result <= 0:
        raise InvalidArgument(f"{what}: {text!r} must be positive")
    return result


def request_config(
    conf: NetworkConf,
    plugin: dict[str, Any],
    capability: dict[str, Any] | None,
    prev_result: dict[str, Any] | None,
) -> dict[str, Any]:
    """What one plugin reads on stdin (spec section 3): its configuration plus cniVersion, name,
    runtimeConfig (the capabilities it declares and pycrio provides), prevResult; no capabilities.
    capability None: a GC/STATUS request (no runtimeConfig, no prevResult)."""
    request = copy.deepcopy(plugin)
    declared = request.pop("capabilities", None)
    request["cniVersion"] = conf.version
    request["name"] = conf.name
    if capability is not None and isinstance(declared, dict):
        runtime = {k: v for k, v in capability.items() if declared.get(k) is True}
        if runtime:
            request["runtimeConfig"] = runtime
    if prev_result is not None:
        request["prevResult"] = prev_result
    else:
        request.pop("prevResult", None)
    return request
