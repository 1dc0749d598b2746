"""Builders of spec.py's fact records and CRI configs for tests, and a checker of OCI config.json shape."""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from pycrio import caps, config
from pycrio.cri import api_pb2
from pycrio.spec import ImageFacts, RuntimeFacts, SandboxFacts

# Like this host: everything but CAP_SYS_RESOURCE.
DAEMON_CAPS = frozenset(caps.CAPABILITIES) - {"CAP_SYS_RESOURCE"}

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
other:x:1001:1001::/home/other:/bin/sh
"""
GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:root,app
app:x:1000:
other:x:1001:
audio:x:29:app,other
video:x:44:other
"""


def runtime_facts(**overrides: Any) -> RuntimeFacts:
    values: dict[str, Any] = {
        "default_capabilities": list(config.DEFAULT_CAPABILITIES),
        "daemon_capabilities": set(DAEMON_CAPS),
        "daemon_oom_score_adj": 0,
        "cgroup_manager": "cgroupfs",
        "cgroup_version": 1,
    }
    values.update(overrides)
    return RuntimeFacts(**values)


def sandbox_facts(**overrides: Any) -> SandboxFacts:
    values: dict[str, Any] = {
        "id": "sb0123",
        "hostname": "pod-host",
        "netns_path": "/run/pycrio/ns/net/sb0123",
        "ipcns_path": "/run/pycrio/ns/ipc/sb0123",
        "utsns_path": "/run/pycrio/ns/uts/sb0123",
        "pid_mode": api_pb2.CONTAINER,
        "pid_ns_path": None,
        "cgroup_parent": "/kubepods/burstable/pod1234",
    }
    values.update(overrides)
    return SandboxFacts(**values)


def make_rootfs(root: Path, passwd: str | None = PASSWD, group: str | None = GROUP) -> str:
    """A rootfs directory with etc/passwd and etc/group (None: the file is absent)."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if passwd is not None:
        (root / "etc" / "passwd").write_text(passwd)
    if group is not None:
        (root / "etc" / "group").write_text(group)
    return str(root)


def image_facts(rootfs: str, **image_config: Any) -> ImageFacts:
    return ImageFacts(config=dict(image_config), rootfs=rootfs)


def container_config(**fields: Any) -> api_pb2.ContainerConfig:
    """A ContainerConfig named "app" from image "busybox"; fields are set as the proto's keyword arguments."""
    fields.setdefault("metadata", api_pb2.ContainerMetadata(name="app"))
    fields.setdefault("image", api_pb2.ImageSpec(image="busybox"))
    return api_pb2.ContainerConfig(**fields)


# ---------------------------------------------------------------- OCI shape (runtime-spec v1.0.2, Linux)

_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_NAMESPACES = {"mount", "pid", "network", "uts", "ipc", "user", "cgroup"}
_CAP_SETS = {"bounding", "effective", "inheritable", "permitted", "ambient"}
_PROPAGATION = {"private", "shared", "slave", "unbindable"}
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)


def _int(value: Any, where: str, bounds: tuple[int, int] = _INT64) -> None:
    assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an integer"
    assert bounds[0] <= value <= bounds[1], f"{where}: {value} outside {bounds}"


def _strs(value: Any, where: str) -> None:
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{where}: not a list of strings"


def _abs(value: Any, where: str) -> None:
    assert isinstance(value, str) and posixpath.isabs(value), f"{where}: {value!r} is not an absolute path"


def _only(obj: dict, where: str, allowed: set[str]) -> None:
    unknown = set(obj) - allowed
    assert not unknown, f"{where}: unknown fields {sorted(unknown)}"


def check_oci_shape(spec: dict[str, Any]) -> None:
    """Assert that spec is a valid Linux config.json by the OCI runtime spec v1.0.2 (the fields pycrio uses)."""
    assert isinstance(spec, dict)
    _only(spec, "config", {"ociVersion", "root", "mounts", "process", "hostname", "annotations", "linux"})
    assert isinstance(spec["ociVersion"], str) and _SEMVER.fullmatch(spec["ociVersion"]), spec.get("ociVersion")

    root = spec["root"]  # REQUIRED on Linux
    _only(root, "root", {"path", "readonly"})
    assert isinstance(root["path"], str) and root["path"]
    assert isinstance(root.get("readonly", False), bool)

    for i, m in enumerate(spec.get("mounts", [])):
        _only(m, f"mounts[{i}]", {"destination", "source", "options", "type"})
        _abs(m["destination"], f"mounts[{i}].destination")
        assert isinstance(m.get("type", ""), str) and isinstance(m.get("source", ""), str)
        _strs(m.get("options", []), f"mounts[{i}].options")
        if {"bind", "rbind"} & set(m.get("options", [])):
            _abs(m["source"], f"mounts[{i}].source (bind)")

    p = spec["process"]
    _only(
        p,
        "process",
        {"terminal", "user", "args", "env", "cwd", "capabilities", "noNewPrivileges", "oomScoreAdj", "rlimits"},
    )
    _abs(p["cwd"], "process.cwd")
    _strs(p["args"], "process.args")
    assert p["args"], "process.args: at least one entry is REQUIRED"
    _strs(p.get("env", []), "process.env")
    assert isinstance(p.get("terminal", False), bool)
    user = p["user"]
    _only(user, "process.user", {"uid", "gid", "umask", "additionalGids"})
    _int(user["uid"], "process.user.uid", _UINT32)
    _int(user["gid"], "process.user.gid", _UINT32)
    for g in user.get("additionalGids", []):
        _int(g, "process.user.additionalGids", _UINT32)
    capabilities = p.get("capabilities", {})
    _only(capabilities, "process.capabilities", _CAP_SETS)
    for name, values in capabilities.items():
        _strs(values, f"process.capabilities.{name}")
        assert set(values) <= set(caps.CAPABILITIES), f"process.capabilities.{name}: {values}"
    assert isinstance(p.get("noNewPrivileges", False), bool)
    if "oomScoreAdj" in p:
        _int(p["oomScoreAdj"], "process.oomScoreAdj", (-1000, 1000))

    if "hostname" in spec:
        assert isinstance(spec["hostname"], str)
    for key, value in spec.get("annotations", {}).items():
        assert isinstance(key, str) and key and isinstance(value, str), f"annotation {key!r}"

    _check_linux(spec.get("linux", {}))


def _check_linux(linux: dict[str, Any]) -> None:
    _only(
        linux,
        "linux",
        {
            "namespaces",
            "devices",
            "cgroupsPath",
            "resources",
            "sysctl",
            "maskedPaths",
            "readonlyPaths",
            "rootfsPropagation",
            "uidMappings",
            "gidMappings",
            "seccomp",
        },
    )
    if "seccomp" in linux:
        check_seccomp_shape(linux["seccomp"])
    kinds = [ns["type"] for ns in linux.get("namespaces", [])]
    assert len(kinds) == len(set(kinds)), f"duplicated namespaces: {kinds}"
    for ns in linux.get("namespaces", []):
        _only(ns, "linux.namespaces[]", {"type", "path"})
        assert ns["type"] in _NAMESPACES
        if "path" in ns:
            _abs(ns["path"], f"linux.namespaces[{ns['type']}].path")
    for d in linux.get("devices", []):
        _only(d, "linux.devices[]", {"type", "path", "major", "minor", "fileMode", "uid", "gid"})
        assert d["type"] in ("c", "b", "u", "p")
        _abs(d["path"], "linux.devices[].path")
        if d["type"] != "p":
            _int(d["major"], "major")
            _int(d["minor"], "minor")
        for key in ("fileMode", "uid", "gid"):
            if key in d:
                _int(d[key], f"linux.devices[].{key}", _UINT32)
    assert isinstance(linux.get("cgroupsPath", ""), str)
    for key, value in linux.get("sysctl", {}).items():
        assert isinstance(key, str) and isinstance(value, str)
    for key in ("maskedPaths", "readonlyPaths"):
        for path in linux.get(key, []):
            _abs(path, f"linux.{key}[]")
    if "rootfsPropagation" in linux:
        assert linux["rootfsPropagation"] in _PROPAGATION, linux["rootfsPropagation"]
    _check_resources(linux.get("resources", {}))


def check_seccomp_shape(sc: dict[str, Any]) -> None:
    """linux.seccomp as the OCI runtime spec (config-linux.md "Seccomp") describes it."""
    _only(sc, "linux.seccomp", {"defaultAction", "defaultErrnoRet", "architectures", "flags", "syscalls"})
    assert isinstance(sc["defaultAction"], str) and sc["defaultAction"].startswith("SCMP_ACT_")
    if "defaultErrnoRet" in sc:
        _int(sc["defaultErrnoRet"], "linux.seccomp.defaultErrnoRet", _UINT32)
    for arch in sc.get("architectures", []):
        assert isinstance(arch, str) and arch.startswith("SCMP_ARCH_"), arch
    _strs(sc.get("flags", []), "linux.seccomp.flags")
    for rule in sc.get("syscalls", []):
        _only(rule, "linux.seccomp.syscalls[]", {"names", "action", "errnoRet", "args"})
        assert rule["names"] and all(isinstance(n, str) and n for n in rule["names"])
        assert isinstance(rule["action"], str) and rule["action"].startswith("SCMP_ACT_")
        if "errnoRet" in rule:
            _int(rule["errnoRet"], "linux.seccomp.syscalls[].errnoRet", _UINT32)
        for arg in rule.get("args", []):
            _only(arg, "linux.seccomp.syscalls[].args[]", {"index", "value", "valueTwo", "op"})
            assert 0 <= arg["index"] <= 5
            assert isinstance(arg["value"], int) and 0 <= arg["value"] < 1 << 64
            assert isinstance(arg.get("valueTwo", 0), int) and 0 <= arg.get("valueTwo", 0) < 1 << 64
            assert arg["op"].startswith("SCMP_CMP_")


def _check_resources(r: dict[str, Any]) -> None:
    _only(r, "linux.resources", {"devices", "memory", "cpu", "hugepageLimits", "unified", "pids"})
    for rule in r.get("devices", []):
        _only(rule, "linux.resources.devices[]", {"allow", "type", "major", "minor", "access"})
        assert isinstance(rule["allow"], bool), "linux.resources.devices[].allow is REQUIRED"
        assert rule.get("type", "a") in ("a", "c", "b")
        for key in ("major", "minor"):
            if key in rule:
                _int(rule[key], f"linux.resources.devices[].{key}")
        assert set(rule.get("access", "")) <= set("rwm")
    memory = r.get("memory", {})
    _only(memory, "memory", {"limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller"})
    for key, value in memory.items():
        _int(value, f"memory.{key}")
    cpu = r.get("cpu", {})
    _only(cpu, "cpu", {"shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems"})
    for key in ("shares", "period"):
        if key in cpu:
            _int(cpu[key], f"cpu.{key}", (0, 2**64 - 1))
    if "quota" in cpu:
        _int(cpu["quota"], "cpu.quota")
    for key in ("cpus", "mems"):
        assert isinstance(cpu.get(key, ""), str)
    for h in r.get("hugepageLimits", []):
        assert set(h) == {"pageSize", "limit"} and isinstance(h["pageSize"], str)
        _int(h["limit"], "hugepageLimits[].limit", (0, 2**64 - 1))
    for key, value in r.get("unified", {}).items():
        assert isinstance(key, str) and isinstance(value, str)


def device_numbers(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return os.major(st.st_rdev), os.minor(st.st_rdev)
