"""Mounts for the OCI spec: the filesystems every container gets, the pod's files, the CRI's mounts.

The OCI runtime mounts in list order, so a later mount may cover an earlier
one; a CRI mount at the same destination as a default one replaces it (the
kubelet sends its own /etc/hosts, for one), so nothing is mounted twice.
Image Volumes are not mounted: the kubelet mounts what the pod declares, and an
undeclared image volume stays part of the container's rootfs.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any

from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument, Unimplemented

_PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}

# The kubelet's defaults for unprivileged containers (what it sends in masked_paths / readonly_paths);
# the pause container gets them too.
DEFAULT_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def _mount(destination: str, kind: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": options}


def _bind(destination: str, source: str, *options: str) -> dict[str, Any]:
    return _mount(destination, "bind", source, ["rbind", *options])


def proc_mount() -> dict[str, Any]:
    return _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"])


def dev_mount() -> dict[str, Any]:
    return _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"])


def default_mounts(
    *,
    privileged: bool,
    readonly_rootfs: bool,
    shm_path: str | None,
    resolv_conf_path: str | None,
    hostname_path: str | None,
    hosts_path: str | None,
) -> list[dict[str, Any]]:
    """The mounts every container gets, in mount order (before the CRI's)."""
    rw = "rw" if privileged else "ro"
    mounts = [
        proc_mount(),
        dev_mount(),
        _mount(
            "/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
        ),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", rw]),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", rw]),
    ]
    if shm_path:
        mounts.append(_bind("/dev/shm", shm_path, "rprivate", "nosuid", "noexec", "nodev", "rw"))
    else:
        mounts.append(_mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]))
    # The pod's files follow the rootfs: read-only when it is.
    files_rw = "ro" if readonly_rootfs else "rw"
    for destination, source in (
        ("/etc/resolv.conf", resolv_conf_path),
        ("/etc/hostname", hostname_path),
        ("/etc/hosts", hosts_path),
    ):
        if source:
            mounts.append(_bind(destination, source, "rprivate", "nosuid", "noexec", "nodev", files_rw))
    return mounts


def _shared_state(path: str, mountinfo: str) -> str:
    """The propagation, "shared", "slave" or "private", of the mount that holds path on the host."""
    real = os.path.realpath(path)
    best, state = "", "private"
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if "-" not in fields or len(fields) < 7:
                continue
            point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):  # the deepest, and the last of equals, is the visible one
                optional = fields[6 : fields.index("-")]
                best = point
                if any(o.startswith("shared:") for o in optional):
                    state = "shared"
                elif any(o.startswith("master:") for o in optional):
                    state = "slave"
                else:
                    state = "private"
    return state


def is_image_volume(m) -> bool:
    """Whether the CRI mount m mounts an image (KEP-4639) rather than a host path."""
    return m.HasField("image") and bool(m.image.image)


def check_image_volume(m) -> None:
    """Refuse what an image volume cannot be: writable, or a sub path that is absolute or climbs out."""
    if not m.readonly:
        raise InvalidArgument(f"mount at {m.container_path}: an image volume ({m.image.image}) must be readonly")
    sub = m.image_sub_path
    if sub and (sub.startswith("/") or ".." in sub.split("/") or "\0" in sub):
        raise InvalidArgument(
            f"mount at {m.container_path}: image_sub_path {sub!r} must be a relative path inside the image, "
            "without '..'"
        )


def check_recursive_read_only(m) -> None:
    """Kubernetes' rule: recursive read-only needs readonly and PROPAGATION_PRIVATE."""
    if not m.readonly:
        raise InvalidArgument(f"mount at {m.container_path}: recursive_read_only needs readonly: true")
    if m.propagation != api_pb2.PROPAGATION_PRIVATE:
        name = api_pb2.MountPropagation.Name(m.propagation) if m.propagation in _PROPAGATION else str(m.propagation)
        raise InvalidArgument(
            f"mount at {m.container_path}: recursive_read_only needs propagation PROPAGATION_PRIVATE, not {name}"
        )


def check_host_path(m) -> None:
    if not m.host_path.startswith("/"):
        raise InvalidArgument(f"mount host_path {m.host_path!r}: must be an absolute path")
    if not os.path.exists(m.host_path):
        raise InvalidArgument(f"mount host_path {m.host_path}: no such file or directory")


def cri_mounts(
    mounts, mountinfo: str = "/proc/self/mountinfo", staged: Mapping[int, str] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """(OCI mounts, linux.rootfsPropagation or None) for a container's CRI mounts.

    Propagation other than private needs the host mount holding host_path to
    propagate (bidirectional: shared; host-to-container: shared or slave),
    checked here so the container fails at create with a message rather than
    silently not propagating; bidirectional also needs rootfsPropagation
    "shared". Host-to-container works with runc's default (rslave).

    Image volumes and recursive read-only mounts are made by pycrio.volumes
    before the runtime runs (runc 1.1 knows neither); staged maps the index of
    such a mount in mounts to the staged directory, bound here "rbind,ro": the
    bind clones keep each submount's read-only flag.
    """
    out: list[dict[str, Any]] = []
    rootfs_propagation: str | None = None
    staged = staged or {}
    for i, m in enumerate(mounts):
        if m.uidMappings or m.gidMappings:
            raise Unimplemented(f"mount at {m.container_path!r}: id-mapped mounts are not supported by pycrio yet")
        if not m.container_path.startswith("/"):
            raise InvalidArgument(f"mount container_path {m.container_path!r}: must be an absolute path")
        destination = posixpath.normpath(m.container_path)
        if is_image_volume(m) or m.recursive_read_only:
            if is_image_volume(m):
                check_image_volume(m)
            else:
                check_host_path(m)
                check_recursive_read_only(m)
            if i not in staged:
                kind = "image volumes" if is_image_volume(m) else "recursive read-only mounts"
                raise Unimplemented(f"mount at {m.container_path!r}: {kind} need a staged mount (pycrio.volumes)")
            # selinux_relabel is ignored: pycrio applies no SELinux labels.
            out.append(_bind(destination, staged[i], "rprivate", "ro"))
            continue
        check_host_path(m)
        propagation = _PROPAGATION.get(m.propagation)
        if propagation is None:
            raise InvalidArgument(f"mount at {m.container_path}: unknown propagation {m.propagation}")
        if propagation != "rprivate":
            state = _shared_state(m.host_path, mountinfo)
            wanted = ("shared",) if propagation == "rshared" else ("shared", "slave")
            if state not in wanted:
                raise InvalidArgument(
                    f"mount host_path {m.host_path}: {api_pb2.MountPropagation.Name(m.propagation)} needs the host "
                    f"mount holding it to be {' or '.join(wanted)}, and it is {state} (see mount --make-rshared)"
                )
            if propagation == "rshared":
                # Without it runc makes the whole tree a slave (its default, rslave), cutting the way back
                # to the host; "shared" (the spec's word) leaves the copies of host mounts peers of theirs.
                rootfs_propagation = "shared"
        # selinux_relabel is ignored: pycrio applies no SELinux labels.
        out.append(_bind(destination, m.host_path, propagation, "ro" if m.readonly else "rw"))
    return out, rootfs_propagation


def merge_mounts(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mounts of groups in order; a later mount at the same destination replaces the earlier one."""
    merged: dict[str, dict[str, Any]] = {}
    for group in groups:
        for mount in group:
            merged.pop(mount["destination"], None)  # re-inserted at the end: it mounts where it was listed
            merged[mount["destination"]] = mount
    return list(merged.values())
