"""CNI test networks: a conf dir with a conflist of Debian's plugins (/usr/lib/cni) on a bridge and a /24
of its own, fake plugins in a bin dir of its own, and the removal of what the plugins leave on the host.

The bridge plugin does not delete its bridge on DEL, portmap keeps its shared CNI-HOSTPORT-* chains
and iptables-nft its `nat` tables: cleanup() removes them (the shared ones only when no other network
has rules in them).
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

CNI_BIN = "/usr/lib/cni"


def available() -> bool:
    return os.geteuid() == 0 and all(
        os.access(os.path.join(CNI_BIN, p), os.X_OK) for p in ("bridge", "host-local", "portmap", "loopback")
    )


@dataclass
class CniEnv:
    base: str
    tag: str = field(default_factory=lambda: f"{random.getrandbits(24):06x}")
    subnet: str = field(default_factory=lambda: f"10.{random.randrange(200, 251)}.{random.randrange(256)}.0/24")

    def __post_init__(self) -> None:
        for d in (self.conf_dir, self.bin_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)

    @property
    def bridge(self) -> str:
        return f"cni{self.tag}"

    @property
    def name(self) -> str:
        return f"pycrio-t{self.tag}"

    @property
    def conf_dir(self) -> str:
        return os.path.join(self.base, "net.d")

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.base, "bin")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base, "ipam")

    @property
    def gateway(self) -> str:
        return self.subnet.rsplit(".", 1)[0] + ".1"

    def bridge_plugin(self) -> dict[str, Any]:
        return {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir,
            },
        }

    def conflist(self, version: str = "1.0.0", extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """bridge (+ host-local) + portmap + loopback, then extra plugins."""
        plugins = [
            self.bridge_plugin(),
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "loopback"},
            *(extra or []),
        ]
        return {"cniVersion": version, "name": self.name, "plugins": plugins}

    def write(self, data: Any, filename: str = "10-test.conflist") -> str:
        path = os.path.join(self.conf_dir, filename)
        with open(path, "w") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))
        return path

    def fake_plugin(self, name: str, script: str) -> str:
        """An executable shell script plugin in bin_dir."""
        path = os.path.join(self.bin_dir, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + script)
        os.chmod(path, 0o755)
        return path

    @property
    def bin_dirs(self) -> list[str]:
        return [self.bin_dir, CNI_BIN]

    def reserved_ips(self) -> list[str]:
        """Addresses host-local holds in this network (its dataDir files named by address)."""
        d = os.path.join(self.data_dir, self.name)
        if not os.path.isdir(d):
            return []
        return sorted(n for n in os.listdir(d) if n[0].isdigit())

    def nat_rules(self) -> list[str]:
        """iptables nat rules naming this network (bridge ipMasq, portmap)."""
        return [line for line in _save("iptables") if line.startswith("-A ") and f'\\"{self.name}\\"' in line]

    def cleanup(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        remove_nat_leftovers(self.name)
        shutil.rmtree(self.base, ignore_errors=True)


def _save(tool: str) -> list[str]:
    out = subprocess.run([f"{tool}-save", "-t", "nat"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()


def _ipt(tool: str, *args: str) -> None:
    subprocess.run([tool, "-w", "-t", "nat", *args], capture_output=True, check=False)


def remove_nat_leftovers(network: str) -> None:
    """Delete the nat rules and per-container chains of network; then portmap's shared chains and the
    iptables-nft nat tables when nothing else uses them."""
    for tool, family in (("iptables", "ip"), ("ip6tables", "ip6")):
        lines = _save(tool)
        ours = [line for line in lines if line.startswith("-A ") and f'\\"{network}\\"' in line]
        chains = set()
        for line in ours:
            words = shlex.split(line)
            if "-j" in words:
                target = words[words.index("-j") + 1]
                if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT-"):
                    chains.add(target)
            _ipt(tool, "-D", *words[1:])
        for chain in chains:
            _ipt(tool, "-F", chain)
            _ipt(tool, "-X", chain)
        lines = _save(tool)
        if not any(line.startswith("-A CNI-HOSTPORT-DNAT ") for line in lines):
            for line in lines:
                if line.startswith(("-A PREROUTING ", "-A OUTPUT ", "-A POSTROUTING ")) and "-j CNI-HOSTPORT-" in line:
                    _ipt(tool, "-D", *shlex.split(line)[1:])
            for chain in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
                _ipt(tool, "-F", chain)
                _ipt(tool, "-X", chain)
        lines = _save(tool)
        builtin = {":PREROUTING", ":INPUT", ":OUTPUT", ":POSTROUTING"}
        chains = [line.split()[0] for line in lines if line.startswith(":")]
        if not any(line.startswith("-A ") for line in lines) and set(chains) <= builtin:
            subprocess.run(["nft", "delete", "table", family, "nat"], capture_output=True, check=False)
