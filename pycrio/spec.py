"""OCI runtime config.json (as a dict) for a CRI container and for a pod's pause container.

The caller (the container and sandbox code) resolves everything that needs
state into three small fact records — what the pod provides, what the image
says, what the runtime host is — and these functions turn them plus the CRI
request into a spec, refusing what Kubernetes forbids or runc would fail on
with InvalidArgument (or Unimplemented for what pycrio does not do yet).
The spec follows the OCI runtime spec v1.0.2, the version runc 1.1 implements.

Annotations pycrio adds (beside the CRI's own, which it copies):
  io.kubernetes.cri.container-type  "container" or "sandbox"
  io.kubernetes.cri.sandbox-id      the pod sandbox's id
  io.kubernetes.cri.container-name  the CRI container name (containers only)
  io.kubernetes.cri.image-name      the image the kubelet asked for (containers only)
Annotation pycrio reads: io.pycrio.devices (spec_devices.annotation_devices), host devices among the
configured allowed_devices, on the container or its pod.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from pycrio import caps, lsm, seccomp
from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument, Unimplemented
from pycrio.spec_devices import annotation_devices, cri_devices, default_device_rules, merge_devices
from pycrio.spec_mounts import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    cri_mounts,
    default_mounts,
    dev_mount,
    merge_mounts,
    proc_mount,
)
from pycrio.spec_resources import (
    cgroup_version,
    cgroups_path,
    daemon_oom_score_adj,
    hugepage_sizes,
    linux_resources,
    oom_score_adj,
)
from pycrio.spec_user import ImageUsers, check_id, lookup_user, resolve_image_user, resolve_user

__all__ = [
    "OCI_VERSION",
    "DEFAULT_PATH",
    "SandboxFacts",
    "ImageFacts",
    "RuntimeFacts",
    "check_user_namespace",
    "container_spec",
    "dotted_sysctl",
    "effective_user",
    "pause_spec",
    "resolve_user",
    "cgroup_version",
    "daemon_oom_score_adj",
]

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NGROUPS_MAX = 65536  # the kernel's limit on supplementary groups
PAUSE_OOM_SCORE_ADJ = -998  # what the kubelet gives pods' infrastructure; clamped to the daemon's own

ANNOTATION_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
ANNOTATION_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
ANNOTATION_CONTAINER_NAME = "io.kubernetes.cri.container-name"
ANNOTATION_IMAGE_NAME = "io.kubernetes.cri.image-name"

# Sysctls that live in a namespace a pod owns: which namespace, by prefix (or exact name).
_SYSCTL_NAMESPACE = (
    ("net.", "network"),
    ("kernel.shm", "ipc"),
    ("kernel.msg", "ipc"),
    ("kernel.sem", "ipc"),
    ("fs.mqueue.", "ipc"),
    ("kernel.hostname", "uts"),
    ("kernel.domainname", "uts"),
)


@dataclass(frozen=True)
class SandboxFacts:
    """What the pod provides to each of its containers. A namespace path of None means the host's."""

    id: str
    hostname: str
    netns_path: str | None
    ipcns_path: str | None
    utsns_path: str | None
    # api_pb2.NamespaceMode of this container's pid namespace, as the caller resolved it: POD and TARGET join
    # pid_ns_path (/proc/<pause or target pid>/ns/pid), CONTAINER gets a new one, NODE the host's.
    pid_mode: int
    pid_ns_path: str | None
    cgroup_parent: str  # as the kubelet sent it ("/kubepods/burstable/pod<uid>", or a systemd slice name)
    resolv_conf_path: str | None = None
    hostname_path: str | None = None
    hosts_path: str | None = None
    shm_path: str | None = None  # a directory the pod made for /dev/shm; None gives each container a tmpfs
    sysctls: dict[str, str] = field(default_factory=dict)
    privileged: bool = False
    annotations: dict[str, str] = field(default_factory=dict)  # the pod's (io.pycrio.devices applies to all)


@dataclass(frozen=True)
class ImageFacts:
    """What the image says: the OCI image config's "config" object, and the container's mounted rootfs."""

    config: dict[str, Any]  # Entrypoint, Cmd, Env, WorkingDir, User, StopSignal, Volumes
    rootfs: str  # absolute; its etc/passwd and etc/group are read (safely) to resolve users


@dataclass(frozen=True)
class RuntimeFacts:
    """What this host and configuration allow."""

    default_capabilities: list[str]  # config's runtime.default_capabilities (with or without CAP_)
    daemon_capabilities: set[str]  # "CAP_X" names the daemon holds: caps.daemon_capabilities()
    daemon_oom_score_adj: int  # spec_resources.daemon_oom_score_adj()
    cgroup_manager: str  # "cgroupfs" or "systemd"
    cgroup_version: int  # 1 or 2: spec_resources.cgroup_version()
    hugepage_sizes: frozenset | None = None  # spec_resources.hugepage_sizes(); None: not checked
    allowed_devices: tuple[str, ...] = ()  # config's runtime.allowed_devices: what io.pycrio.devices may name
    seccomp_profile_roots: tuple[str, ...] = ()  # config's runtime.seccomp_profile_roots; (): anywhere

    @classmethod
    def probe(
        cls,
        default_capabilities: list[str],
        cgroup_manager: str,
        allowed_devices: list[str] | None = None,
        seccomp_profile_roots: list[str] | None = None,
    ) -> RuntimeFacts:
        """Facts of this host read from /proc and /sys, with the given configuration."""
        version = cgroup_version()
        return cls(
            default_capabilities=list(default_capabilities),
            daemon_capabilities=caps.daemon_capabilities(),
            daemon_oom_score_adj=daemon_oom_score_adj(),
            cgroup_manager=cgroup_manager,
            cgroup_version=version,
            hugepage_sizes=hugepage_sizes(version),
            allowed_devices=tuple(allowed_devices or ()),
            seccomp_profile_roots=tuple(seccomp_profile_roots or ()),
        )


# ---------------------------------------------------------------- process


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"image config {what}: expected a list of strings")
    return value


def process_args(config: api_pb2.ContainerConfig, image: dict[str, Any]) -> list[str]:
    """The command line, as Kubernetes defines it: command replaces Entrypoint (and drops Cmd), args replace Cmd."""
    entrypoint, cmd = _strings(image.get("Entrypoint"), "Entrypoint"), _strings(image.get("Cmd"), "Cmd")
    if config.command:
        args = [*config.command, *config.args]
    elif config.args:
        args = [*entrypoint, *config.args]
    else:
        args = [*entrypoint, *cmd]
    if not args:
        raise InvalidArgument("no command specified: neither the container config nor the image gives one")
    if not args[0]:
        raise InvalidArgument("the command is an empty string")
    if any("\0" in a for a in args):
        raise InvalidArgument("the command line contains a NUL character")
    return args


def process_env(config: api_pb2.ContainerConfig, image: dict[str, Any], hostname: str) -> list[str]:
    """Image Env, then HOSTNAME, then the CRI's envs, each replacing an earlier value of the same name in place;
    PATH defaulted first when nobody set it."""
    env: dict[str, str | None] = {}  # None: an image entry without "=", kept as written
    for entry in _strings(image.get("Env"), "Env"):
        if "\0" in entry:
            raise InvalidArgument(f"image config Env entry {entry.split(chr(0))[0]!r}…: contains a NUL character")
        key, sep, value = entry.partition("=")
        env[key if sep else entry] = value if sep else None
    if hostname:
        env["HOSTNAME"] = hostname
    for kv in config.envs:
        if not kv.key or "=" in kv.key or "\0" in kv.key:
            raise InvalidArgument(f"environment variable name {kv.key!r}: must be non-empty without '=' or NUL")
        try:
            value = kv.value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(f"environment variable {kv.key}: value is not valid UTF-8 ({e.reason})") from e
        if "\0" in value:
            raise InvalidArgument(f"environment variable {kv.key}: value contains a NUL character")
        env[kv.key] = value
    out = [key if value is None else f"{key}={value}" for key, value in env.items()]
    if "PATH" not in env:
        out.insert(0, f"PATH={DEFAULT_PATH}")
    return out


def process_cwd(config: api_pb2.ContainerConfig, image: dict[str, Any]) -> str:
    if config.working_dir:
        if not config.working_dir.startswith("/"):
            raise InvalidArgument(f"working_dir {config.working_dir!r}: must be an absolute path")
        return posixpath.normpath(config.working_dir)
    workdir = image.get("WorkingDir") or ""
    if not isinstance(workdir, str):
        raise InvalidArgument("image config WorkingDir: expected a string")
    return posixpath.normpath(posixpath.join("/", workdir))


def process_user(sc: api_pb2.LinuxContainerSecurityContext, image: ImageFacts) -> dict[str, Any]:
    """process.user: run_as_user / run_as_username (gid: the user's primary group in the image, or
    run_as_group), else the image's User (run_as_group alone is refused, as the CRI says).

    The primary gid comes first in additionalGids (as `id -G` shows it), then,
    under SupplementalGroupsPolicy Merge (the default), the user's groups in
    the image's etc/group, then supplemental_groups.
    """
    users = ImageUsers(image.rootfs)
    has_user = sc.HasField("run_as_user") or bool(sc.run_as_username)
    if sc.HasField("run_as_group") and not has_user:
        raise InvalidArgument("run_as_group is set without run_as_user or run_as_username")
    if sc.HasField("run_as_user") and sc.run_as_username:
        raise InvalidArgument("run_as_user and run_as_username are both set; give one")
    if sc.HasField("run_as_user"):
        uid, gid, name = lookup_user(users, str(check_id(sc.run_as_user.value, "run_as_user")), "run_as_user")
        memberships = users.memberships(name)
    elif sc.run_as_username:
        uid, gid, name = lookup_user(users, sc.run_as_username, "run_as_username")
        memberships = users.memberships(name)
    else:
        user_spec = image.config.get("User") or ""
        if not isinstance(user_spec, str):
            raise InvalidArgument("image config User: expected a string")
        uid, gid, memberships = resolve_image_user(users, user_spec)
    if sc.HasField("run_as_group"):
        gid = check_id(sc.run_as_group.value, "run_as_group")
    if sc.supplemental_groups_policy == api_pb2.Strict:
        memberships = []
    elif sc.supplemental_groups_policy != api_pb2.Merge:
        raise InvalidArgument(f"supplemental_groups_policy {sc.supplemental_groups_policy}: expected Merge or Strict")
    extra = [check_id(g, "supplemental_groups entry") for g in sc.supplemental_groups]
    groups = list(dict.fromkeys([gid, *memberships, *extra]))
    if len(groups) > NGROUPS_MAX:
        raise InvalidArgument(f"{len(groups)} supplementary groups: setgroups(2) takes at most {NGROUPS_MAX}")
    return {"uid": uid, "gid": gid, "additionalGids": groups}


def effective_user(user: dict[str, Any]) -> dict[str, Any]:
    """The identity a process.user gives the container's processes, as ContainerStatus.user reports it:
    uid, gid and the supplementary groups as the kernel holds them (setgroups(2) sorts the list)."""
    return {
        "uid": user["uid"],
        "gid": user["gid"],
        "supplemental_groups": sorted(set(user.get("additionalGids", []))),
    }


def process_capabilities(sc: api_pb2.LinuxContainerSecurityContext, runtime: RuntimeFacts) -> dict[str, list[str]]:
    held = runtime.daemon_capabilities
    if sc.privileged:
        chosen, ambient = caps.ordered(held), []
    else:
        ambient = caps.ambient_capabilities(sc.capabilities.add_ambient_capabilities, held)
        chosen = caps.container_capabilities(
            runtime.default_capabilities,
            sc.capabilities.add_capabilities,
            sc.capabilities.drop_capabilities,
            held,
        )
        chosen = caps.ordered([*chosen, *ambient])  # an ambient capability is in every set (CRI's rule)
    return {
        "bounding": list(chosen),
        "effective": list(chosen),
        "permitted": list(chosen),
        "inheritable": list(ambient),
        "ambient": list(ambient),
    }


def _seccomp(
    sc: api_pb2.LinuxContainerSecurityContext, effective_caps: list[str], roots: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """The linux.seccomp section: None when unconfined (or privileged: the profile is ignored).

    The `seccomp` field wins over the deprecated `seccomp_profile_path`; an unset field
    and an empty path mean unconfined, as the CRI says."""
    if sc.privileged:
        return None
    if sc.HasField("seccomp"):
        kind, ref = sc.seccomp.profile_type, sc.seccomp.localhost_ref
        if kind == api_pb2.SecurityProfile.RuntimeDefault:
            return seccomp.default_profile(effective_caps)
        if kind == api_pb2.SecurityProfile.Unconfined:
            return None
        if kind == api_pb2.SecurityProfile.Localhost:
            return seccomp.read_localhost_profile(ref, effective_caps, roots)
        raise InvalidArgument(f"seccomp profile type {kind}: unknown")
    path = sc.seccomp_profile_path
    if path in ("", "unconfined"):
        return None
    if path in ("runtime/default", "docker/default"):
        return seccomp.default_profile(effective_caps)
    if path.startswith("localhost/"):
        return seccomp.read_localhost_profile(path[len("localhost/") :], effective_caps, roots)
    raise InvalidArgument(f"seccomp profile {path!r}: unknown (runtime/default, unconfined or localhost/<path>)")


# ---------------------------------------------------------------- namespaces and sysctls


def _namespaces(sandbox: SandboxFacts, runtime: RuntimeFacts, *, pause: bool) -> list[dict[str, str]]:
    ns: list[dict[str, str]] = [{"type": "mount"}]
    if pause:
        ns.append({"type": "pid"})
    elif sandbox.pid_mode in (api_pb2.POD, api_pb2.TARGET):
        if not sandbox.pid_ns_path:
            mode = api_pb2.NamespaceMode.Name(sandbox.pid_mode)
            raise FailedPrecondition(f"pid namespace mode {mode}: the namespace to join is unknown (no pid_ns_path)")
        ns.append({"type": "pid", "path": sandbox.pid_ns_path})
    elif sandbox.pid_mode == api_pb2.CONTAINER:
        ns.append({"type": "pid"})
    elif sandbox.pid_mode != api_pb2.NODE:
        raise InvalidArgument(f"pid namespace mode {sandbox.pid_mode}: expected POD, CONTAINER, NODE or TARGET")
    for kind, path in (("network", sandbox.netns_path), ("ipc", sandbox.ipcns_path), ("uts", sandbox.utsns_path)):
        if path:
            ns.append({"type": kind, "path": path})
    if runtime.cgroup_version == 2:
        ns.append({"type": "cgroup"})
    return ns


def check_user_namespace(options: api_pb2.NamespaceOption, where: str) -> None:
    """Refuse a user namespace of its own (userns_options mode POD): pycrio makes none, and running in the
    host's instead would silently drop the isolation asked for. Unset or NODE (the host's) is fine."""
    if options.HasField("userns_options") and options.userns_options.mode != api_pb2.NODE:
        mode = options.userns_options.mode
        name = api_pb2.NamespaceMode.Name(mode) if mode in api_pb2.NamespaceMode.values() else str(mode)
        raise Unimplemented(f"{where}: user namespaces (userns_options mode {name}) are not supported by pycrio yet")


def dotted_sysctl(name: str) -> str:
    """A sysctl name in the dotted form: "net/ipv4/conf/eth0.1/x" (the slash form) → "net.ipv4.conf.eth0/1.x"."""
    if "/" in name and ("." not in name or name.index("/") < name.index(".")):
        return name.translate(str.maketrans("/.", "./"))
    return name


def _sysctls(sandbox: SandboxFacts) -> dict[str, str]:
    """The pod's sysctls, each checked to live in a namespace the pod owns (not the host's)."""
    owned = {"network": sandbox.netns_path, "ipc": sandbox.ipcns_path, "uts": sandbox.utsns_path}
    out = {}
    for name in sorted(sandbox.sysctls):
        dotted = dotted_sysctl(name)
        kind = next((k for prefix, k in _SYSCTL_NAMESPACE if dotted.startswith(prefix)), None)
        if kind is None:
            raise InvalidArgument(f"sysctl {name}: not namespaced, so a pod may not set it")
        if not owned[kind]:
            raise InvalidArgument(f"sysctl {name}: the pod uses the host's {kind} namespace, so it may not set it")
        out[dotted] = sandbox.sysctls[name]
    return out


# ---------------------------------------------------------------- specs


def _container_paths(paths, what: str) -> list[str]:
    """masked_paths or readonly_paths as sent (the kubelet's defaults or none), each an absolute path."""
    for path in paths:
        if not posixpath.isabs(path) or "\0" in path:
            raise InvalidArgument(f"{what} entry {path!r}: must be an absolute path without NUL")
    return list(paths)


def _process_base(args: list[str], env: list[str], cwd: str, user: dict[str, Any]) -> dict[str, Any]:
    return {"terminal": False, "user": user, "args": args, "env": env, "cwd": cwd}


def container_spec(
    container_id: str,
    config: api_pb2.ContainerConfig,
    sandbox: SandboxFacts,
    image: ImageFacts,
    runtime: RuntimeFacts,
    staged_mounts: dict[int, str] | None = None,
) -> dict[str, Any]:
    """The config.json of a CRI container; raises InvalidArgument, FailedPrecondition or Unimplemented.

    staged_mounts: the sources pycrio.volumes made for image volumes and recursive read-only mounts."""
    linux_cfg = config.linux
    sc, res = linux_cfg.security_context, linux_cfg.resources
    privileged = sc.privileged
    check_user_namespace(sc.namespace_options, f"container {config.metadata.name}")
    if privileged and not sandbox.privileged:
        raise InvalidArgument("a privileged container needs a privileged pod (the pod's security context)")
    if not posixpath.isabs(image.rootfs):
        raise InvalidArgument(f"rootfs {image.rootfs!r}: must be an absolute path")

    process = _process_base(
        process_args(config, image.config),
        process_env(config, image.config, sandbox.hostname),
        process_cwd(config, image.config),
        process_user(sc, image),
    )
    process["terminal"] = config.tty
    process["capabilities"] = process_capabilities(sc, runtime)
    seccomp_section = _seccomp(sc, process["capabilities"]["effective"], runtime.seccomp_profile_roots)
    apparmor = lsm.apparmor_profile(sc)
    if apparmor is not None:
        process["apparmorProfile"] = apparmor
    lsm.check_selinux(sc.selinux_options, f"container {config.metadata.name}")
    process["noNewPrivileges"] = sc.no_new_privs
    process["oomScoreAdj"] = oom_score_adj(res.oom_score_adj, runtime.daemon_oom_score_adj)

    extra_mounts, rootfs_propagation = cri_mounts(config.mounts, staged=staged_mounts)
    mounts = merge_mounts(
        default_mounts(
            privileged=privileged,
            readonly_rootfs=sc.readonly_rootfs,
            shm_path=sandbox.shm_path,
            resolv_conf_path=sandbox.resolv_conf_path,
            hostname_path=sandbox.hostname_path,
            hosts_path=sandbox.hosts_path,
        ),
        extra_mounts,
    )
    annotated = annotation_devices(config.annotations, sandbox.annotations, runtime.allowed_devices)
    devices, device_rules = cri_devices(merge_devices(config.devices, annotated), privileged)
    resources = linux_resources(res, runtime.cgroup_version, runtime.hugepage_sizes)
    resources["devices"] = device_rules

    linux: dict[str, Any] = {
        "namespaces": _namespaces(sandbox, runtime, pause=False),
        "cgroupsPath": cgroups_path(runtime.cgroup_manager, sandbox.cgroup_parent, container_id),
        "resources": resources,
        "devices": devices,
        "sysctl": _sysctls(sandbox),
        "maskedPaths": [] if privileged else _container_paths(sc.masked_paths, "masked_paths"),
        "readonlyPaths": [] if privileged else _container_paths(sc.readonly_paths, "readonly_paths"),
    }
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation
    if seccomp_section is not None:
        linux["seccomp"] = seccomp_section

    annotations = dict(config.annotations)
    annotations.update(
        {
            ANNOTATION_CONTAINER_TYPE: "container",
            ANNOTATION_SANDBOX_ID: sandbox.id,
            ANNOTATION_CONTAINER_NAME: config.metadata.name,
            ANNOTATION_IMAGE_NAME: config.image.user_specified_image or config.image.image,
        }
    )
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": image.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    }


def pause_spec(
    sandbox: SandboxFacts, pause_binary_in_rootfs: str, runtime: RuntimeFacts, *, rootfs: str = "rootfs"
) -> dict[str, Any]:
    """The config.json of a pod's pause container: PID 1 of the pod's new pid namespace, nothing more.

    rootfs is the minimal read-only directory the caller prepared with the
    pause binary in it (absolute, or relative to the bundle as "rootfs").
    It joins the pod's network/ipc/uts namespaces, holds no capability, and
    sets the pod's hostname (when the pod has its own UTS namespace) and sysctls.
    """
    if not posixpath.isabs(pause_binary_in_rootfs):
        raise InvalidArgument(f"pause binary {pause_binary_in_rootfs!r}: must be an absolute path in the rootfs")
    process = _process_base([pause_binary_in_rootfs], [f"PATH={DEFAULT_PATH}"], "/", {"uid": 0, "gid": 0})
    process["capabilities"] = {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    process["noNewPrivileges"] = True
    process["oomScoreAdj"] = oom_score_adj(PAUSE_OOM_SCORE_ADJ, runtime.daemon_oom_score_adj)
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": True},
        "mounts": [proc_mount(), dev_mount()],
        "annotations": {ANNOTATION_CONTAINER_TYPE: "sandbox", ANNOTATION_SANDBOX_ID: sandbox.id},
        "linux": {
            "namespaces": _namespaces(sandbox, runtime, pause=True),
            "cgroupsPath": cgroups_path(runtime.cgroup_manager, sandbox.cgroup_parent, sandbox.id),
            "resources": {"devices": default_device_rules()},
            "sysctl": _sysctls(sandbox),
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }
    if sandbox.utsns_path and sandbox.hostname:
        spec["hostname"] = sandbox.hostname
    return spec
