"""Configuration: built-in defaults <- pycrio.conf <- pycrio.conf.d/*.conf <- command-line flags.

The schema is a tree of dataclasses; each field carries its documentation and
its checks, so loading, validation and `pycrio config` all walk one table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import pathlib
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CONFIG_FILE = "/etc/pycrio/pycrio.conf"
DEFAULT_CONFIG_DIR = "/etc/pycrio/pycrio.conf.d"

LOG_LEVELS = ("error", "warning", "info", "debug")
LOG_LEVEL_ALIASES = {"warn": "warning", "trace": "debug", "fatal": "error", "panic": "error"}

# What CRI-O grants a container by default; operators expect the same set.
DEFAULT_CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "KILL",
]


class ConfigError(ValueError):
    """A configuration that the daemon refuses: names the source, line and key."""

    def __init__(self, message: str, source: str = "", line: int | None = None, key: str = ""):
        self.source, self.line, self.key, self.detail = source, line, key, message
        where = source + (f":{line}" if line else "")
        parts = [p for p in (where, key) if p]
        super().__init__(": ".join([*parts, message]))


def opt(default: Any, doc: str, *, choices: tuple[str, ...] = (), path: bool = False, derived: str = "") -> Any:
    """A config option: its default, the comment `pycrio config` prints, and its checks.

    derived: when the value is "", it is computed from another option (said here).
    """
    meta = {"doc": doc, "choices": choices, "path": path, "derived": derived}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RuntimeHandlerConfig:
    """[pycrio.runtime.runtimes.NAME]: one OCI runtime handler."""

    runtime_path: str = opt("", 'The OCI runtime binary; "" looks up the handler\'s name on $PATH.')
    runtime_root: str = opt(
        "", "State directory passed to the runtime as --root.", path=True, derived="<runroot>/runtime/<name>"
    )
    runtime_type: str = opt(
        "oci", 'How the runtime is driven; only "oci" (runc/crun command line) exists.', choices=("oci",)
    )


@dataclass
class ApiConfig:
    """[pycrio.api]: the CRI gRPC endpoint."""

    listen: str = opt("", "Unix socket the CRI is served on (mode 0660).", path=True, derived="<runroot>/pycrio.sock")
    grpc_max_msg_size: int = opt(16 * 1024 * 1024, "Largest gRPC message accepted or sent, in bytes.")


@dataclass
class RuntimeConfig:
    """[pycrio.runtime]: containers and their OCI runtime."""

    default_runtime: str = opt("runc", "Runtime handler used when a pod names none.")
    cgroup_manager: str = opt(
        "cgroupfs", "Cgroup driver, matching the kubelet's cgroupDriver.", choices=("cgroupfs", "systemd")
    )
    exits_dir: str = opt("", "Where monitors write container exit files.", path=True, derived="<runroot>/exits")
    namespaces_dir: str = opt("", "Where pod namespaces are pinned.", path=True, derived="<runroot>/ns")
    log_dir: str = opt(
        "/var/log/pycrio/pods", "Container logs for pods whose log directory the kubelet leaves empty.", path=True
    )
    default_capabilities: list[str] = opt(DEFAULT_CAPABILITIES, "Capabilities a container gets unless it drops them.")
    allowed_devices: list[str] = opt(
        [],
        "Host devices a pod or container may ask for with the io.pycrio.devices annotation "
        '(absolute paths; ["/dev/fuse"] is the usual setting; [] allows none).',
        path=True,
    )
    seccomp_profile_roots: list[str] = opt(
        [],
        "Directories Localhost seccomp profiles must lie under, symlinks resolved "
        '(["/var/lib/kubelet/seccomp"] is the kubelet\'s; [] allows any absolute path).',
        path=True,
    )
    runtimes: dict[str, RuntimeHandlerConfig] = field(
        default_factory=lambda: {"runc": RuntimeHandlerConfig()},
        metadata={"doc": "Runtime handlers, one [pycrio.runtime.runtimes.NAME] table each.", "table_of": True},
    )


@dataclass
class ImageConfig:
    """[pycrio.image]: pulling and storing images."""

    registries_conf: str = opt(
        "/etc/containers/registries.conf",
        "containers-registries.conf(5) v2 file: search registries, aliases, mirrors.",
        path=True,
    )
    pull_progress_timeout: int = opt(60, "Seconds a pull may go without receiving a byte before it is cancelled.")
    max_concurrent_downloads: int = opt(6, "Layers downloaded and extracted at once, across all pulls.")
    pinned_images: list[str] = opt(
        [], "Images reported pinned (never garbage-collected by the kubelet): exact names, or globs ending in '*'."
    )


@dataclass
class NetworkConfig:
    """[pycrio.network]: the pod network, built in (a Linux bridge, one veth per pod, IPv4) or CNI plugins."""

    backend: str = opt(
        "builtin",
        'Who makes pod networks: "builtin" (the options bridge to masquerade) or "cni" (the cni_* options).',
        choices=("builtin", "cni"),
    )
    bridge: str = opt("pycrio0", "The host bridge pods are attached to (created when missing).")
    subnet: str = opt("10.88.0.0/16", "IPv4 subnet pods get their addresses from (CIDR).")
    gateway: str = opt(
        "", "The bridge's address and the pods' default route.", derived="the first host address of subnet"
    )
    mtu: int = opt(1500, "MTU of the bridge and of every pod's eth0.")
    subnet6: str = opt("", 'IPv6 subnet (CIDR, e.g. "fd00:10:88::/64") for dual-stack pods; "" is IPv4 only.')
    masquerade: bool = opt(True, "Masquerade (SNAT) traffic from the subnet to destinations outside it.")
    cni_conf_dir: str = opt(
        "/etc/cni/net.d", "CNI: where the network configurations (.conflist, .conf, .json) are.", path=True
    )
    cni_bin_dirs: list[str] = opt(
        ["/opt/cni/bin", "/usr/lib/cni"], "CNI: directories searched for plugin executables, in order (CNI_PATH)."
    )
    cni_network: str = opt(
        "", 'CNI: the network pods join, by name; "" is the first valid file of cni_conf_dir by file name.'
    )
    cni_timeout: int = opt(30, "CNI: seconds one plugin may run before it is killed and the operation fails.")
    cni_cache_dir: str = opt(
        "", "CNI: where each pod's ADD result is kept for its DEL (persistent).", path=True, derived="<root>/cni"
    )


@dataclass
class StreamingConfig:
    """[pycrio.streaming]: the server for exec, attach and port-forward (the URLs Exec, Attach, PortForward return)."""

    address: str = opt("127.0.0.1", "IP address the streaming server listens on (the kubelet connects there).")
    port: int = opt(0, "TCP port of the streaming server; 0 picks a free port at each start.")
    token_lifetime: int = opt(60, "Seconds a streaming URL stays valid; each works once.")


@dataclass
class MetricsConfig:
    """[pycrio.metrics]: the Prometheus endpoint (GET /metrics, GET /healthz); off unless enabled."""

    enable_metrics: bool = opt(False, "Serve the daemon's metrics over HTTP (CRI calls, phases, pulls, process).")
    metrics_host: str = opt("127.0.0.1", "IP address the metrics endpoint listens on.")
    metrics_port: int = opt(9090, "TCP port of the metrics endpoint; 0 picks a free port at each start.")


@dataclass
class Config:
    """[pycrio]: the whole configuration."""

    root: str = opt(
        "/var/lib/pycrio", "Persistent state: images, layers, containers, the metadata database.", path=True
    )
    runroot: str = opt("/run/pycrio", "Volatile state: socket, pinned namespaces, exit files.", path=True)
    log_level: str = opt("info", "Daemon log level (reloaded on SIGHUP).", choices=LOG_LEVELS)
    api: ApiConfig = field(default_factory=ApiConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def resolved(self) -> Config:
        """A copy with every derived ("") path filled in."""
        cfg = dataclasses.replace(
            self,
            api=dataclasses.replace(self.api),
            runtime=dataclasses.replace(self.runtime, runtimes=dict(self.runtime.runtimes)),
            image=dataclasses.replace(self.image),
            network=dataclasses.replace(self.network),
            streaming=dataclasses.replace(self.streaming),
            metrics=dataclasses.replace(self.metrics),
        )
        if not cfg.network.gateway:
            with contextlib.suppress(ValueError):  # load() validated it; a hand-built Config may not be
                cfg.network.gateway = str(next(ipaddress.IPv4Network(cfg.network.subnet).hosts()))
        cfg.network.cni_bin_dirs = list(cfg.network.cni_bin_dirs)
        cfg.network.cni_cache_dir = cfg.network.cni_cache_dir or os.path.join(cfg.root, "cni")
        cfg.api.listen = cfg.api.listen or os.path.join(cfg.runroot, "pycrio.sock")
        cfg.runtime.exits_dir = cfg.runtime.exits_dir or os.path.join(cfg.runroot, "exits")
        cfg.runtime.namespaces_dir = cfg.runtime.namespaces_dir or os.path.join(cfg.runroot, "ns")
        for name, handler in list(cfg.runtime.runtimes.items()):
            cfg.runtime.runtimes[name] = dataclasses.replace(
                handler, runtime_root=handler.runtime_root or os.path.join(cfg.runroot, "runtime", name)
            )
        return cfg

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- loading


def _toml_key_line(text: str, keypath: list[str]) -> int | None:
    """The line where keypath (["pycrio", "runtime", "x"]) is set in text, best effort."""
    table: list[str] = []
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assign = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")
    table_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        m = header.match(line)
        if m:
            table = [p.strip().strip("\"'") for p in m.group(1).split(".")]
            if table == keypath:
                table_line = number
            continue
        m = assign.match(line)
        if m:
            key = [p.strip().strip("\"'") for p in m.group(1).split(".")]
            if table + key == keypath:
                return number
    return table_line


def _check_value(value: Any, f: dataclasses.Field, key: str, where: tuple[str, int | None]) -> Any:
    expected = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }.get(expected)
    if ok is None:
        raise AssertionError(f"config schema: unsupported type {expected} for {key}")
    if not ok:
        wanted = {"str": "a string", "int": "an integer", "bool": "true or false", "list[str]": "a list of strings"}
        raise ConfigError(f"expected {wanted[expected]}, got {type(value).__name__} {value!r}", *where, key=key)
    meta = f.metadata
    if key.endswith("log_level") and isinstance(value, str):
        value = LOG_LEVEL_ALIASES.get(value.lower(), value.lower())
    if meta.get("choices") and value not in meta["choices"]:
        choices = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"expected one of {choices}, got {value!r}", *where, key=key)
    if meta.get("path") and isinstance(value, list):
        for entry in value:
            if not os.path.isabs(entry) or "\0" in entry:
                raise ConfigError(f"expected absolute paths, got {entry!r}", *where, key=key)
        normal = [os.path.normpath(entry) for entry in value]
        twice = sorted({entry for entry in normal if normal.count(entry) > 1})
        if twice:
            raise ConfigError(f"{', '.join(twice)} listed more than once", *where, key=key)
    elif meta.get("path") and value and not os.path.isabs(value.removeprefix("unix://")):
        raise ConfigError(f"expected an absolute path, got {value!r}", *where, key=key)
    if expected == "int" and value < 0:
        raise ConfigError(f"expected a non-negative integer, got {value}", *where, key=key)
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str, source: str, text: str) -> None:
    """Validate data against obj's dataclass schema and set it on obj in place."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in data.items():
        key = f"{prefix}.{name}"
        where = (source, _toml_key_line(text, key.split(".")))
        f = fields.get(name)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown option (known here: {known})", *where, key=key)
        current = getattr(obj, name)
        if f.metadata.get("table_of"):
            if not isinstance(value, dict):
                raise ConfigError("expected a table of named entries", *where, key=key)
            for entry_name, entry in value.items():
                if not isinstance(entry, dict):
                    raise ConfigError("expected a table", *where, key=f"{key}.{entry_name}")
                handler = current.get(entry_name) or RuntimeHandlerConfig()
                handler = dataclasses.replace(handler)
                _apply(handler, entry, f"{key}.{entry_name}", source, text)
                current[entry_name] = handler
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError("expected a table", *where, key=key)
            _apply(current, value, key, source, text)
        else:
            setattr(obj, name, _check_value(value, f, key, where))


def _load_file(cfg: Config, path: pathlib.Path) -> tuple[dict[str, Any], str]:
    """Apply one file to cfg; returns its parsed data and text."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", source=str(path)) from e
    try:
        text = raw.decode()
        data = tomllib.loads(text)
    except UnicodeDecodeError as e:
        raise ConfigError("not UTF-8 text", source=str(path), line=raw[: e.start].count(b"\n") + 1) from e
    except tomllib.TOMLDecodeError as e:
        line = re.search(r"line (\d+)", str(e))
        raise ConfigError(f"invalid TOML: {e}", source=str(path), line=int(line.group(1)) if line else None) from e
    for top, value in data.items():
        if top != "pycrio":
            raise ConfigError(
                "unknown table (everything lives under [pycrio])",
                source=str(path),
                line=_toml_key_line(text, [top]),
                key=top,
            )
        if not isinstance(value, dict):
            raise ConfigError("expected a table", source=str(path), line=_toml_key_line(text, [top]), key=top)
        _apply(cfg, value, "pycrio", str(path), text)
    return data, text


def config_files(config_file: str | None, config_dir: str | None) -> list[pathlib.Path]:
    """The files that make up the configuration, in the order they apply."""
    files = []
    main = pathlib.Path(config_file or DEFAULT_CONFIG_FILE)
    if main.exists() or config_file:
        files.append(main)
    drop_ins = pathlib.Path(config_dir or DEFAULT_CONFIG_DIR)
    if config_dir and not drop_ins.is_dir():
        raise ConfigError("not a directory", source=str(drop_ins))
    if drop_ins.is_dir():
        files += sorted(p for p in drop_ins.iterdir() if p.suffix == ".conf" and p.is_file())
    return files


def load(
    config_file: str | None = None, config_dir: str | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Defaults <- config_file <- config_dir/*.conf (lexical) <- overrides ({"pycrio.root": "/x"})."""
    cfg = Config()
    origin: dict[str, Any] = {}  # where default_runtime was last set, for _check_whole's error
    for path in config_files(config_file, config_dir):
        data, text = _load_file(cfg, path)
        if "default_runtime" in data.get("pycrio", {}).get("runtime", {}):
            origin = {"source": str(path), "line": _toml_key_line(text, ["pycrio", "runtime", "default_runtime"])}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *tables, name = key.split(".")
        nested: dict[str, Any] = {name: value}
        for table in reversed(tables[1:]):
            nested = {table: nested}
        _apply(cfg, nested, "pycrio", "command line", "")
        if key == "pycrio.runtime.default_runtime":
            origin = {"source": "command line"}
    _check_whole(cfg, origin)
    return cfg


def _check_whole(cfg: Config, origin: dict[str, Any]) -> None:
    """Checks that span options, after every source applied; origin: where default_runtime was set."""
    _check_network(cfg.network)
    _check_streaming(cfg.streaming)
    _check_metrics(cfg.metrics)
    if cfg.runtime.default_runtime not in cfg.runtime.runtimes:
        known = ", ".join(sorted(cfg.runtime.runtimes)) or "none"
        raise ConfigError(
            f"names no configured runtime handler (configured: {known})", key="pycrio.runtime.default_runtime", **origin
        )


IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _check_network(net: NetworkConfig) -> None:
    """[pycrio.network]: a valid bridge name, an IPv4 CIDR with room for pods, a gateway inside it."""
    if not IFNAME.match(net.bridge) or net.bridge in (".", ".."):
        raise ConfigError(
            f"expected an interface name (1-15 of A-Za-z0-9_.-), got {net.bridge!r}", key="pycrio.network.bridge"
        )
    try:
        subnet = ipaddress.IPv4Network(net.subnet, strict=True)
    except ValueError as e:
        raise ConfigError(f"expected an IPv4 CIDR like 10.88.0.0/16: {e}", key="pycrio.network.subnet") from e
    if subnet.prefixlen > 30:
        raise ConfigError(f"{net.subnet} is too small: a /30 or larger is needed", key="pycrio.network.subnet")
    if net.gateway:
        try:
            gateway = ipaddress.IPv4Address(net.gateway)
        except ValueError as e:
            raise ConfigError(f"expected an IPv4 address: {e}", key="pycrio.network.gateway") from e
        if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
            raise ConfigError(f"{gateway} is not a host address of {subnet}", key="pycrio.network.gateway")
    if net.subnet6:
        try:
            subnet6 = ipaddress.IPv6Network(net.subnet6, strict=True)
        except ValueError as e:
            raise ConfigError(f"expected an IPv6 CIDR like fd00:10:88::/64: {e}", key="pycrio.network.subnet6") from e
        if subnet6.prefixlen > 120:
            raise ConfigError(f"{net.subnet6} is too small: a /120 or larger is needed", key="pycrio.network.subnet6")
    if not 68 <= net.mtu <= 65535:
        raise ConfigError(f"expected an MTU between 68 and 65535, got {net.mtu}", key="pycrio.network.mtu")
    for d in net.cni_bin_dirs:
        if not os.path.isabs(d):
            raise ConfigError(f"expected absolute paths, got {d!r}", key="pycrio.network.cni_bin_dirs")
    if not net.cni_bin_dirs:
        raise ConfigError("expected at least one directory", key="pycrio.network.cni_bin_dirs")
    if net.cni_network and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", net.cni_network):
        raise ConfigError(
            f"expected a CNI network name (alphanumeric, then _ . -), got {net.cni_network!r}",
            key="pycrio.network.cni_network",
        )
    if not 1 <= net.cni_timeout <= 3600:
        raise ConfigError(
            f"expected between 1 and 3600 seconds, got {net.cni_timeout}", key="pycrio.network.cni_timeout"
        )


def _check_streaming(s: StreamingConfig) -> None:
    """[pycrio.streaming]: an IP address, a port, a lifetime of at least a second."""
    try:
        ipaddress.ip_address(s.address)
    except ValueError as e:
        raise ConfigError(f"expected an IP address: {e}", key="pycrio.streaming.address") from e
    if s.port > 65535:
        raise ConfigError(f"expected a port between 0 and 65535, got {s.port}", key="pycrio.streaming.port")
    if s.token_lifetime < 1:
        raise ConfigError(f"expected at least 1 second, got {s.token_lifetime}", key="pycrio.streaming.token_lifetime")


def _check_metrics(m: MetricsConfig) -> None:
    """[pycrio.metrics]: an IP address and a port."""
    try:
        ipaddress.ip_address(m.metrics_host)
    except ValueError as e:
        raise ConfigError(f"expected an IP address: {e}", key="pycrio.metrics.metrics_host") from e
    if not 0 <= m.metrics_port <= 65535:
        raise ConfigError(
            f"expected a port between 0 and 65535, got {m.metrics_port}", key="pycrio.metrics.metrics_port"
        )


# ---------------------------------------------------------------- rendering


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def _render_table(obj: Any, defaults: Any, table: str, out: list[str]) -> None:
    doc = (type(obj).__doc__ or "").strip()
    out += ["", f"# {doc}", f"[{table}]"]
    nested = []
    for f in dataclasses.fields(obj):
        value, default = getattr(obj, f.name), getattr(defaults, f.name)
        if dataclasses.is_dataclass(value) or f.metadata.get("table_of"):
            nested.append(f)
            continue
        shown = f.metadata.get("derived") or _toml_value(default)
        out.append(f"# {f.metadata['doc']}")
        if f.metadata.get("choices"):
            out.append("# One of: " + ", ".join(f.metadata["choices"]) + ".")
        out.append(f"# Default: {shown}")
        out.append(f"{f.name} = {_toml_value(value)}")
    for f in nested:
        value, default = getattr(obj, f.name), getattr(defaults, f.name)
        if f.metadata.get("table_of"):
            out += ["", f"# {f.metadata['doc']}"]
            for name, entry in value.items():
                _render_table(entry, default.get(name) or RuntimeHandlerConfig(), f"{table}.{f.name}.{name}", out)
        else:
            _render_table(value, default, f"{table}.{f.name}", out)


def render(cfg: Config) -> str:
    """cfg as commented TOML, each option with its documentation and default."""
    out = [
        "# pycrio configuration (TOML). Files apply in this order, later wins:",
        f"#   built-in defaults, {DEFAULT_CONFIG_FILE}, {DEFAULT_CONFIG_DIR}/*.conf (lexical), flags.",
    ]
    _render_table(cfg, Config(), "pycrio", out)
    return "\n".join(out) + "\n"
