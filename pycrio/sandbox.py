"""Pod sandbox mechanics: files, /dev/shm, pinned namespaces and the pause container; and their teardown.

No pause image is pulled: a pod that shares one PID namespace gets pycrio-pause as PID 1 of
that namespace, started directly (native.pause_spawn: no runc, no monitor; its own empty root,
no capabilities, as the pod's run_as_user/run_as_group/supplemental_groups, else 65535:65535)
and placed in the pod's cgroup <cgroup_parent>/pycrio-<pod id> here.
Every step of create is undone if a later one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import time
from typing import Any

from pycrio import lsm, native, pod_cgroup, procs, spec
from pycrio.config import Config
from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument
from pycrio.metrics import METRICS
from pycrio.network import NetworkBackend, PodInfo
from pycrio.oci import OCIRuntime
from pycrio.paths import helper_binary
from pycrio.spec_resources import cgroup_version, cgroups_path, oom_score_adj
from pycrio.spec_user import check_id

logger = logging.getLogger("pycrio.sandbox")

SHM_SIZE = 64 << 20
HOST_NAME_MAX = 64
PAUSE_STOP_TIMEOUT = 5.0
PAUSE_RECORD = "pause.json"  # in the pod dir: pid, start ticks, cgroups of a directly started pause
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_RMDIR_TIMEOUT = 2.0


def ctl_socket_path(cfg: Config, container_id: str) -> str:
    """A monitor's control socket: short, since unix socket paths end at 107 bytes."""
    directory = os.path.join(cfg.runroot, "ctl")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, container_id[:32] + ".sock")


def pod_name(meta: api_pb2.PodSandboxMetadata) -> str:
    return f"{meta.name}_{meta.namespace}_{meta.uid}_{meta.attempt}"


def namespace_modes(config: api_pb2.PodSandboxConfig) -> tuple[int, int, int]:
    """(network, pid, ipc) namespace modes of the pod (POD = 0 is the proto's default)."""
    opts = config.linux.security_context.namespace_options
    return opts.network, opts.pid, opts.ipc


def pause_user(sc: api_pb2.LinuxSandboxSecurityContext) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary groups) the pause runs as, as containerd runs its sandbox container.

    Nothing set: the Kubernetes pause image's user 65535:65535. run_as_user alone: that uid
    with gid 0 (the image has no etc/passwd to give a primary group, as for a container whose
    uid is not listed). run_as_group alone is legal in a pod (the kubelet sends it for a
    runAsGroup without runAsUser): uid 65535 with that gid. The groups are supplemental_groups,
    none by default. An id out of range is InvalidArgument.
    """
    if sc.HasField("run_as_user"):
        uid, gid = check_id(sc.run_as_user.value, "pod run_as_user"), 0
    else:
        uid, gid = native.PAUSE_ID, native.PAUSE_ID
    if sc.HasField("run_as_group"):
        gid = check_id(sc.run_as_group.value, "pod run_as_group")
    groups = list(dict.fromkeys(check_id(g, "pod supplemental_groups entry") for g in sc.supplemental_groups))
    if len(groups) > spec.NGROUPS_MAX:
        raise InvalidArgument(f"pod: {len(groups)} supplemental_groups, setgroups(2) takes at most {spec.NGROUPS_MAX}")
    return uid, gid, groups


def resolv_conf(dns: api_pb2.DNSConfig) -> str:
    lines = [f"nameserver {s}" for s in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


class Sandbox:
    """Creates and tears down one pod's host-side resources; facts record what exists."""

    def __init__(
        self, cfg: Config, runtime: OCIRuntime, runtime_facts: spec.RuntimeFacts, network: NetworkBackend | None
    ):
        self.cfg = cfg
        self.runtime = runtime
        self.runtime_facts = runtime_facts
        self.network = network

    def dirs(self, pod_id: str) -> tuple[str, str]:
        return os.path.join(self.cfg.runroot, "pods", pod_id), os.path.join(self.cfg.runtime.namespaces_dir, pod_id)

    async def create(self, pod_id: str, config: api_pb2.PodSandboxConfig) -> dict[str, Any]:
        """Make the pod's resources; returns the facts to record. Undoes everything on failure."""
        network, pid_mode, ipc = namespace_modes(config)
        if pid_mode == api_pb2.TARGET:
            raise InvalidArgument("a pod sandbox cannot use the TARGET PID namespace mode")
        spec.check_user_namespace(config.linux.security_context.namespace_options, "pod")
        pause_user(config.linux.security_context)  # ids checked before anything is made
        lsm.check_selinux(config.linux.security_context.selinux_options, "pod")
        if len(config.hostname.encode()) > HOST_NAME_MAX:
            raise InvalidArgument(f"hostname {config.hostname!r} is longer than {HOST_NAME_MAX} bytes")
        host = self.runtime_facts
        cgroup_plan = pod_cgroup.plan(host.cgroup_manager, host.cgroup_version, config.linux, pod_id)
        pod_dir, ns_dir = self.dirs(pod_id)
        facts: dict[str, Any] = {"dir": pod_dir, "ns_dir": ns_dir, "pid_mode": pid_mode}
        timings: dict[str, float] = {}
        try:
            t = time.monotonic()
            os.makedirs(pod_dir, mode=0o711)
            os.makedirs(ns_dir, mode=0o711)
            host_network = network == api_pb2.NODE
            # Like CRI-O and containerd: a pod that names no hostname gets the node's.
            hostname = config.hostname or os.uname().nodename
            facts["hostname"] = hostname
            hostname_path = os.path.join(pod_dir, "hostname")
            with open(hostname_path, "w") as f:
                f.write(hostname + "\n")
            facts["hostname_path"] = hostname_path
            if config.HasField("dns_config") and (config.dns_config.servers or config.dns_config.searches):
                path = os.path.join(pod_dir, "resolv.conf")
                with open(path, "w") as f:
                    f.write(resolv_conf(config.dns_config))
                facts["resolv_conf_path"] = path
            if ipc == api_pb2.NODE:
                facts["shm_path"] = "/dev/shm"
            else:
                shm = os.path.join(pod_dir, "shm")
                os.mkdir(shm)
                native.mount_tmpfs(shm, f"mode=1777,size={SHM_SIZE // 1024}k")
                facts["shm_path"] = shm
                facts["shm_mounted"] = True
            timings["files"] = time.monotonic() - t
            if cgroup_plan is not None:  # only for a pod with resources/overhead and no cgroup yet
                t = time.monotonic()
                await self._make_pod_cgroup(cgroup_plan, config, facts)
                timings["pod cgroup"] = time.monotonic() - t
            t = time.monotonic()
            kinds = 0
            if not host_network:
                kinds |= native.NS_NET | native.NS_UTS
            if ipc != api_pb2.NODE:
                kinds |= native.NS_IPC
            sysctls = {spec.dotted_sysctl(k): v for k, v in config.linux.sysctls.items()}  # ns_pin wants dots
            _check_sysctls(sysctls, host_network, ipc == api_pb2.NODE)
            if kinds:
                try:
                    pins = await asyncio.get_running_loop().run_in_executor(
                        None, native.ns_pin, ns_dir, kinds, hostname if not host_network else None, sysctls
                    )
                except native.NativeError as e:
                    # A sysctl the kernel lacks or a value it refuses is the request's fault.
                    if e.step == "sysctl" and e.errno != errno.ENOMEM:
                        raise InvalidArgument(f"pod sysctls: {e.strerror}") from e
                    raise
                facts.update({f"{kind}ns": path for kind, path in pins.items()})
            timings["namespaces"] = time.monotonic() - t
            if not host_network and self.network is not None:
                t = time.monotonic()
                facts["network"] = True  # from here on, teardown releases the address
                pod_info = PodInfo.from_config(config)
                pod_net = await asyncio.to_thread(self.network.setup, pod_id, facts["netns"], pod_info)
                facts["ip"] = pod_net.ip
                facts["additional_ips"] = pod_net.additional_ips
                timings["network"] = time.monotonic() - t
            if pid_mode == api_pb2.POD:
                t = time.monotonic()
                await self._start_pause(pod_id, config, facts, timings)
                timings["pause"] = time.monotonic() - t
        except BaseException:
            with contextlib.suppress(Exception):
                await self.teardown(pod_id, facts)
            with contextlib.suppress(Exception):
                await self.release_pod_cgroup(facts)
            self.remove_dirs(facts)
            raise
        METRICS.phases("RunPodSandbox", timings)
        logger.debug(
            "pod %s resources: %s", pod_id[:12], ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in timings.items())
        )
        return facts

    def sandbox_facts(self, pod_id: str, config: api_pb2.PodSandboxConfig, facts: dict[str, Any]) -> spec.SandboxFacts:
        _, pid_mode, _ = namespace_modes(config)
        pause_pid = facts.get("pause_pid")
        return spec.SandboxFacts(
            id=pod_id,
            hostname=facts.get("hostname", ""),
            netns_path=facts.get("netns"),
            ipcns_path=facts.get("ipcns"),
            utsns_path=facts.get("utsns"),
            pid_mode=pid_mode,
            pid_ns_path=f"/proc/{pause_pid}/ns/pid" if pause_pid else None,
            cgroup_parent=pod_cgroup.cgroup_parent(config, facts),
            resolv_conf_path=facts.get("resolv_conf_path"),
            hostname_path=facts.get("hostname_path"),
            shm_path=facts.get("shm_path"),
            sysctls=dict(config.linux.sysctls),
            privileged=config.linux.security_context.privileged,
            annotations=dict(config.annotations),
        )

    async def _start_pause(
        self, pod_id: str, config: api_pb2.PodSandboxConfig, facts: dict[str, Any], timings: dict[str, float]
    ) -> None:
        """pycrio-pause as PID 1 of the pod's PID namespace, started directly (no runc, no monitor).

        The pid is recorded in <pod dir>/pause.json at once, so that a daemon that dies before
        the pod's facts are stored still finds and stops it (teardown reads it back).
        """
        adj = oom_score_adj(spec.PAUSE_OOM_SCORE_ADJ, self.runtime_facts.daemon_oom_score_adj)
        facts["pause_direct"] = True
        facts["pause_cgroups"] = []
        cgroup = None
        if self.runtime_facts.cgroup_manager == "cgroupfs":
            cgroup = cgroups_path("cgroupfs", pod_cgroup.cgroup_parent(config, facts), pod_id)
        else:
            # A systemd scope would need a D-Bus call to systemd per pod: the pause stays in the
            # daemon's cgroup (it uses next to nothing); the containers get their scopes from runc.
            logger.warning("pod %s: cgroup_manager systemd: the pause stays in the daemon's cgroup", pod_id[:12])
        namespaces = (facts.get("netns"), facts.get("ipcns"), facts.get("utsns"))
        user = pause_user(config.linux.security_context)
        # One trip to a worker thread for both steps: each hop costs a loop wake-up.
        pid, facts["pause_cgroups"], phases = await asyncio.to_thread(_spawn_pause, cgroup, namespaces, adj, user)
        timings.update(phases)
        facts["pause_pid"] = pid
        facts["pause_start"] = procs.start_ticks(pid)
        _write_pause_record(facts)

    async def _make_pod_cgroup(
        self, plan: pod_cgroup.Plan, config: api_pb2.PodSandboxConfig, facts: dict[str, Any]
    ) -> None:
        """The pod cgroup with the pod's limits (pod_cgroup), recorded before it is made."""
        facts["pod_cgroup"] = plan.record()
        pod_cgroup.write_record(facts["dir"], facts["pod_cgroup"])
        await asyncio.to_thread(pod_cgroup.make, plan)
        if not config.linux.cgroup_parent:
            facts["cgroup_parent"] = plan.cgroup  # <default parent>/pycrio-pod-<id>

    async def release_pod_cgroup(self, facts: dict[str, Any]) -> None:
        """Remove the pod cgroup pycrio made (RemovePodSandbox, once the containers are gone); safe to repeat."""
        await asyncio.to_thread(pod_cgroup.release, facts)

    async def _stop_pause(self, facts: dict[str, Any]) -> None:
        """SIGKILL the directly started pause, wait until it is gone (a zombie counts), rmdir its cgroups."""
        pid, ticks = facts.get("pause_pid"), facts.get("pause_start")
        await procs.kill_and_wait(pid, ticks, PAUSE_STOP_TIMEOUT)
        facts.pop("pause_pid", None)
        await asyncio.to_thread(_remove_cgroups, facts.get("pause_cgroups") or [])
        facts["pause_cgroups"] = []
        facts["pause_direct"] = False
        if facts.get("dir"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(facts["dir"], PAUSE_RECORD))

    async def teardown(self, pod_id: str, facts: dict[str, Any]) -> None:
        """Stop the pause, unmount /dev/shm, unpin namespaces; safe to repeat."""
        errors: list[str] = []
        _read_pause_record(facts)
        if facts.get("pause_direct"):
            try:
                await self._stop_pause(facts)
            except Exception as e:  # noqa: BLE001 - keep tearing down, report at the end
                errors.append(f"pause process: {e}")
        if facts.get("shm_mounted"):
            try:
                native.unmount(facts["shm_path"], native.UNMOUNT_DETACH)
                facts["shm_mounted"] = False
            except OSError as e:
                errors.append(f"/dev/shm: {e}")
        if facts.get("network") and self.network is not None:
            try:
                # The pair goes with the netns unpinned below: no veth delete on this path.
                await asyncio.to_thread(self.network.teardown, pod_id, facts.get("netns"), not facts.get("netns"))
                facts["network"] = False
            except Exception as e:  # noqa: BLE001 - keep tearing down, report at the end
                errors.append(f"network: {e}")
        for kind in ("net", "ipc", "uts"):
            pin = facts.get(f"{kind}ns")
            if pin:
                try:
                    native.ns_unpin(pin)
                    facts.pop(f"{kind}ns")
                except OSError as e:
                    errors.append(f"{kind} namespace: {e}")
        if errors:
            raise OSError(f"pod {pod_id[:12]} teardown incomplete: " + "; ".join(errors))

    def remove_dirs(self, facts: dict[str, Any]) -> None:
        for key in ("dir", "ns_dir"):
            path = facts.get(key)
            if path and os.path.isdir(path) and not _has_mounts_below(path):
                shutil.rmtree(path, ignore_errors=True)


NAMESPACED_SYSCTL_PREFIXES = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.", "net.")


def _check_sysctls(sysctls: dict[str, str], host_network: bool, host_ipc: bool) -> None:
    for key in sysctls:
        name = key.replace("/", ".")
        if not name.startswith(NAMESPACED_SYSCTL_PREFIXES):
            raise InvalidArgument(f"sysctl {key} is not namespaced: a pod may not set it")
        if name.startswith("net.") and host_network:
            raise InvalidArgument(f"sysctl {key}: a pod on the host network may not set net.* sysctls")
        if not name.startswith("net.") and host_ipc:
            raise InvalidArgument(f"sysctl {key}: a pod in the host IPC namespace may not set IPC sysctls")


def _has_mounts_below(path: str) -> bool:
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].startswith(prefix) or line.split()[4] == path for line in f)


# ---------------------------------------------------------------- the pause started without runc


def _write_pause_record(facts: dict[str, Any]) -> None:
    record = {key: facts[key] for key in ("pause_pid", "pause_start", "pause_cgroups")}
    with open(os.path.join(facts["dir"], PAUSE_RECORD), "w") as f:
        json.dump(record, f)


def _read_pause_record(facts: dict[str, Any]) -> None:
    """Fill the pause's facts from <pod dir>/pause.json when they are missing (a crash mid-create)."""
    if facts.get("pause_direct") or not facts.get("dir"):
        return
    try:
        with open(os.path.join(facts["dir"], PAUSE_RECORD)) as f:
            record = json.load(f)
    except (FileNotFoundError, ValueError):
        return
    facts.update(record, pause_direct=True)


def _v1_hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of the cgroup v1 hierarchies under /sys/fs/cgroup (controllers and named ones)."""
    found: dict[str, None] = {}
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if "-" not in fields:
                continue
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup" and fields[4].startswith(CGROUP_ROOT + "/"):
                found[fields[4]] = None
    return list(found)


def _cgroup_dirs(cgroup: str) -> list[str]:
    """The directories of cgroup (an absolute cgroupfs path) in every hierarchy, or the unified one."""
    roots = [CGROUP_ROOT] if cgroup_version() == 2 else _v1_hierarchies()
    return [root + cgroup for root in roots]


def _mkdir_cgroup(path: str) -> None:
    """mkdir -p a cgroup; in a cpuset hierarchy each new level gets its parent's cpus and mems."""
    missing = []
    top = path
    while not os.path.isdir(top):
        missing.append(top)
        top = os.path.dirname(top)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        pod_cgroup.inherit_cpuset(directory)


def _spawn_pause(
    cgroup: str | None,
    namespaces: tuple[str | None, str | None, str | None],
    adj: int,
    user: tuple[int, int, list[int]],
) -> tuple[int, list[str], dict[str, float]]:
    """The pause's cgroup made in every hierarchy (cgroup None: none), then the pause started in
    it as user (uid, gid, groups): (pid, cgroup dirs, phase timings). The dirs are removed again
    when the spawn fails."""
    t = time.monotonic()
    dirs = _make_cgroups(cgroup) if cgroup is not None else []
    made = time.monotonic()
    join = "cgroup.procs" if cgroup_version() == 2 else "tasks"  # the pause writes "0" to it itself
    try:
        uid, gid, groups = user
        files = [os.path.join(d, join) for d in dirs]
        pause = helper_binary("pycrio-pause")
        pid = native.pause_spawn(pause, *namespaces, adj, files, uid=uid, gid=gid, groups=groups)
    except BaseException:
        with contextlib.suppress(OSError):
            _remove_cgroups(dirs)
        raise
    return pid, dirs, {"pause cgroups": made - t, "pause spawn": time.monotonic() - made}


def _make_cgroups(cgroup: str) -> list[str]:
    """mkdir -p cgroup (an absolute cgroupfs path) in every v1 hierarchy, or the unified one; the dirs."""
    dirs = _cgroup_dirs(cgroup)
    for directory in dirs:
        _mkdir_cgroup(directory)
    return dirs


def _remove_cgroups(dirs: list[str]) -> None:
    """rmdir each cgroup; EBUSY is retried briefly (a killed task leaves it a moment later)."""
    deadline = time.monotonic() + CGROUP_RMDIR_TIMEOUT
    for directory in dirs:
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)


def _pause_state(pid: int, ticks: int | None) -> str | None:
    """The state letter of pid when it is still the process that started at ticks, else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    if ticks is not None and int(fields[19]) != ticks:
        return None
    return fields[0].decode()


def kill_recorded_pauses(runroot: str) -> list[int]:
    """SIGKILL every directly started pause recorded under <runroot>/pods and rmdir its cgroups
    (`pycrio wipe`: no runtime lists them); the pids killed."""
    killed = []
    pods = os.path.join(runroot, "pods")
    for entry in os.scandir(pods) if os.path.isdir(pods) else []:
        facts: dict[str, Any] = {"dir": entry.path}
        _read_pause_record(facts)
        if not facts.get("pause_direct"):
            continue
        pid, ticks = facts.get("pause_pid"), facts.get("pause_start")
        if procs.signal_if_same(pid, ticks, signal.SIGKILL):
            assert pid is not None
            killed.append(pid)
            deadline = time.monotonic() + PAUSE_STOP_TIMEOUT
            while _pause_state(pid, ticks) not in (None, "Z", "X") and time.monotonic() < deadline:
                time.sleep(0.005)
        with contextlib.suppress(OSError):
            _remove_cgroups(facts.get("pause_cgroups") or [])
    return killed
