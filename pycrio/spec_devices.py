"""Devices for the OCI spec: linux.devices entries and the device cgroup rules (linux.resources.devices),
and the devices an io.pycrio.devices annotation asks for among the configured allowed_devices."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument, PermissionDenied

# Comma-separated host_path[:container_path[:permissions]] entries (CRI-O's io.kubernetes.cri-o.Devices),
# on a container config or on the pod's config (every container; the container's wins), each of whose
# host paths must be one of the runtime's allowed_devices.
ANNOTATION_DEVICES = "io.pycrio.devices"

# Deny everything, then allow what every container runtime allows: creating
# any device node (not using it), and the devices a Linux process expects.
DEFAULT_DEVICE_RULES: tuple[dict[str, Any], ...] = (
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},  # mknod of any char device
    {"allow": True, "type": "b", "access": "m"},  # mknod of any block device
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # /dev/full
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # /dev/urandom
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # /dev/tty
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},  # /dev/console
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # /dev/ptmx
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # /dev/net/tun
)
ALLOW_ALL_DEVICES: tuple[dict[str, Any], ...] = ({"allow": True, "access": "rwm"},)

# Under /dev but not devices of the host to copy: the container gets its own.
_HOST_DEV_SKIP = {"/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/console", "/dev/fd", "/dev/.lxc", "/dev/.udev"}


def default_device_rules() -> list[dict[str, Any]]:
    return [dict(rule) for rule in DEFAULT_DEVICE_RULES]


def _device_entry(st: os.stat_result, container_path: str) -> dict[str, Any] | None:
    """A linux.devices entry for a char or block device's stat; None for anything else."""
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": container_path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _walk_devices(host_dir: str, container_dir: str) -> list[dict[str, Any]]:
    """Every device under host_dir (symlinks not followed), placed under container_dir."""
    found = []
    for top, dirs, files in os.walk(host_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if posixpath.join(top, d) not in _HOST_DEV_SKIP)
        for name in sorted(files):
            path = posixpath.join(top, name)
            if path in _HOST_DEV_SKIP:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # a device that went away while walking
            entry = _device_entry(st, posixpath.join(container_dir, posixpath.relpath(path, host_dir)))
            if entry:
                found.append(entry)
    return found


def host_devices(dev: str = "/dev") -> list[dict[str, Any]]:
    """All the host's devices for a privileged container (/dev/pts, /dev/shm and symlinks skipped)."""
    return _walk_devices(dev, "/dev")


def _check_permissions(permissions: str) -> bool:
    return bool(permissions) and set(permissions) <= set("rwm") and len(set(permissions)) == len(permissions)


def parse_devices_annotation(value: str) -> list[api_pb2.Device]:
    """The entries of an io.pycrio.devices value as CRI devices; InvalidArgument naming a malformed entry.

    Each entry is host_path[:container_path[:permissions]]; container_path defaults to host_path and
    permissions to "rwm"; as in CRI-O, host_path:permissions is accepted too. Empty entries are skipped.
    """
    devices = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        fields = entry.split(":")
        if len(fields) > 3:
            raise InvalidArgument(
                f"{ANNOTATION_DEVICES} entry {entry!r}: expected host_path[:container_path[:permissions]]"
            )
        if len(fields) == 2 and fields[1].isalpha():
            fields.insert(1, fields[0])  # host_path:permissions
        host = fields[0]
        container = fields[1] if len(fields) > 1 else host
        permissions = fields[2] if len(fields) > 2 else "rwm"
        if "\0" in entry or not posixpath.isabs(host) or not posixpath.isabs(container):
            raise InvalidArgument(f"{ANNOTATION_DEVICES} entry {entry!r}: device paths must be absolute")
        if not _check_permissions(permissions):
            raise InvalidArgument(
                f"{ANNOTATION_DEVICES} entry {entry!r}: permissions {permissions!r}: expected letters of 'rwm'"
            )
        devices.append(api_pb2.Device(host_path=host, container_path=container, permissions=permissions))
    return devices


def annotation_devices(
    container_annotations: Mapping[str, str],
    pod_annotations: Mapping[str, str],
    allowed: Sequence[str],
    *,
    check_host: bool = True,
) -> list[api_pb2.Device]:
    """The devices io.pycrio.devices asks for (the container's annotation, else the pod's), each allowed.

    A host path (symlinks resolved) not among allowed (resolved too) is PermissionDenied: the request is
    well formed, the node's configuration does not let it through. With check_host, a host path that is
    missing is FailedPrecondition (allowed, but not on this host).
    """
    annotations = container_annotations if ANNOTATION_DEVICES in container_annotations else pod_annotations
    devices = parse_devices_annotation(annotations.get(ANNOTATION_DEVICES, ""))
    if not devices:
        return []
    resolved = {os.path.realpath(p) for p in allowed}
    for d in devices:
        if os.path.realpath(d.host_path) not in resolved:
            how = (
                f"add it to allowed_devices in [pycrio.runtime] (allowed now: {', '.join(allowed)})"
                if allowed
                else "allowed_devices in [pycrio.runtime] is empty: list it there"
            )
            raise PermissionDenied(
                f"{ANNOTATION_DEVICES}: device {d.host_path} is not allowed by this node's configuration; {how}"
            )
        if check_host and not os.path.exists(d.host_path):
            raise FailedPrecondition(
                f"{ANNOTATION_DEVICES}: device {d.host_path} is allowed but does not exist on this host"
            )
    return devices


def merge_devices(requested: Sequence[api_pb2.Device], annotated: Sequence[api_pb2.Device]) -> list[api_pb2.Device]:
    """ContainerConfig.devices, then the annotation's devices at container paths that none of them uses."""
    taken = {posixpath.normpath(d.container_path or d.host_path) for d in requested}
    return [*requested, *(d for d in annotated if posixpath.normpath(d.container_path) not in taken)]


def cri_devices(devices, privileged: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(linux.devices, linux.resources.devices) for a container's CRI devices.

    A host_path that is a directory brings every device under it. Privileged
    containers get every host device and a cgroup that allows all; a CRI
    device then replaces the host device at the same container path.
    """
    entries: dict[str, dict[str, Any]] = {}
    rules = list(ALLOW_ALL_DEVICES) if privileged else default_device_rules()
    if privileged:
        entries = {e["path"]: e for e in host_devices()}
    for d in devices:
        permissions = d.permissions or "rwm"
        if not set(permissions) <= set("rwm") or len(set(permissions)) != len(permissions):
            raise InvalidArgument(f"device {d.host_path}: permissions {d.permissions!r}: expected letters of 'rwm'")
        container_path = d.container_path or d.host_path
        if not posixpath.isabs(container_path) or not posixpath.isabs(d.host_path):
            raise InvalidArgument(f"device {d.host_path!r} → {container_path!r}: paths must be absolute")
        container_path = posixpath.normpath(container_path)
        try:
            st = os.stat(d.host_path)
        except OSError as e:
            raise InvalidArgument(f"device {d.host_path}: {e.strerror}") from e
        if stat.S_ISDIR(st.st_mode):
            found = _walk_devices(d.host_path, container_path)
        else:
            entry = _device_entry(st, container_path)
            if entry is None:
                raise InvalidArgument(f"device {d.host_path}: not a character or block device")
            found = [entry]
        for entry in found:
            entries[entry["path"]] = entry
            if not privileged:
                rule = {k: entry[k] for k in ("type", "major", "minor")}
                rules.append({"allow": True, **rule, "access": permissions})
    return list(entries.values()), rules
