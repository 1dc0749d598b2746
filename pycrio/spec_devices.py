"""Devices for the OCI spec: linux.devices entries and the device cgroup rules (linux.resources.devices)."""

from __future__ import annotations

import os
import posixpath
import stat
from typing import Any

from pycrio.errors import InvalidArgument

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
