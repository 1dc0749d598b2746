"""Container mechanics: the overlay rootfs, the bundle and its config.json, the monitor; stop and removal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from typing import Any

from pycrio import cgroup_kill, monitor, native, procs, spec, volumes
from pycrio.attach import attach_socket
from pycrio.config import Config
from pycrio.cri import api_pb2
from pycrio.image.images import Images
from pycrio.image.store import ImageRecord
from pycrio.metrics import METRICS
from pycrio.oci import OCIRuntime
from pycrio.runtime_store import ContainerRecord
from pycrio.sandbox import ctl_socket_path

logger = logging.getLogger("pycrio.container")

SIGNALS = {s.name: s for s in signal.Signals}
TRASH_PREFIX = ".trash-"  # container dirs being deleted; whatever a crash leaves is removed at start


def stop_signal(config: dict[str, Any]) -> int:
    """The image's StopSignal (name like "SIGWINCH" or "WINCH", or a number), else SIGTERM."""
    value = str(config.get("StopSignal") or "").strip().upper()
    if not value:
        return signal.SIGTERM
    if value.isdigit():
        return int(value)
    return int(SIGNALS.get(value if value.startswith("SIG") else "SIG" + value, signal.SIGTERM))


class ContainerOps:
    def __init__(self, cfg: Config, images: Images, runtime_facts: spec.RuntimeFacts):
        self.cfg = cfg
        self.images = images
        self.runtime_facts = runtime_facts

    def dirs(self, container_id: str) -> tuple[str, str]:
        """(persistent dir with upper/work/merged, volatile bundle dir)."""
        return (
            os.path.join(self.cfg.root, "containers", container_id),
            os.path.join(self.cfg.runroot, "containers", container_id),
        )

    def clear_trash(self) -> None:
        for parent in (os.path.join(self.cfg.root, "containers"), os.path.join(self.cfg.runroot, "containers")):
            if os.path.isdir(parent):
                for name in os.listdir(parent):
                    if name.startswith(TRASH_PREFIX):
                        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)

    def exit_file(self, container_id: str) -> str:
        return os.path.join(self.cfg.runtime.exits_dir, container_id)

    async def create(
        self,
        container_id: str,
        config: api_pb2.ContainerConfig,
        sandbox: spec.SandboxFacts,
        log_path: str,
        image: ImageRecord,
        runtime: OCIRuntime,
    ) -> dict[str, Any]:
        """Mount the rootfs, write the bundle, start the monitor (runtime create). Undone on failure."""
        top, bundle = self.dirs(container_id)
        merged = os.path.join(top, "merged")
        facts: dict[str, Any] = {"top": top, "bundle": bundle, "merged": merged, "log_path": log_path}
        timings: dict[str, float] = {}
        try:
            t = time.monotonic()
            for path in (os.path.join(top, "upper"), os.path.join(top, "work"), merged, bundle):
                os.makedirs(path, mode=0o711)
            lowers = [self.images.layers.diff(chain) for chain in reversed(image.layers)]
            await asyncio.get_running_loop().run_in_executor(
                None,
                native.mount_overlay,
                merged,
                lowers,
                os.path.join(top, "upper"),
                os.path.join(top, "work"),
            )
            facts["mounted"] = True
            timings["rootfs"] = time.monotonic() - t
            t = time.monotonic()
            staged = await asyncio.get_running_loop().run_in_executor(
                None, volumes.stage, config.mounts, bundle, self.images
            )
            if staged:
                timings["volumes"] = time.monotonic() - t
                t = time.monotonic()
            image_config = self.images.config(image).get("config") or {}
            document = spec.container_spec(
                container_id, config, sandbox, spec.ImageFacts(image_config, merged), self.runtime_facts, staged
            )
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(document, f)
            facts["stop_signal"] = stop_signal(image_config)
            facts["user"] = spec.effective_user(document["process"]["user"])  # ContainerStatus.user
            # In force, as ContainerStatus reports it: the request raised to the daemon's own when lower.
            facts["oom_score_adj"] = document["process"]["oomScoreAdj"]
            facts["cgroups_path"] = document["linux"].get("cgroupsPath", "")
            timings["spec"] = time.monotonic() - t
            t = time.monotonic()
            os.makedirs(os.path.dirname(log_path), mode=0o755, exist_ok=True)
            pid = await monitor.spawn(
                container_id,
                runtime=runtime.binary,
                runtime_root=runtime.root,
                bundle=bundle,
                pid_file=os.path.join(bundle, "pid"),
                exit_file=self.exit_file(container_id),
                ctl_socket=ctl_socket_path(self.cfg, container_id),
                log_path=log_path,
                terminal=config.tty,
                stdin=config.stdin,
                stdin_once=config.stdin_once,
                cgroup_oom_dir=self._oom_dir(facts["cgroups_path"]),
            )
            facts["created"] = True
            if staged:
                # runc gave the container its own copies; the host's go now, so that no host path
                # under them stays a mountpoint here (the host may unmount and rmdir a volume's
                # submounts while the container runs, as with an OCI runtime's own `rro`).
                await asyncio.get_running_loop().run_in_executor(None, volumes.unstage, bundle)
            facts["pid"] = pid
            facts["pid_start"] = procs.start_ticks(pid)
            facts["own_pid_ns"] = sandbox.pid_mode == api_pb2.CONTAINER
            timings["runtime create"] = time.monotonic() - t
        except BaseException:
            with contextlib.suppress(Exception):
                await self.cleanup(container_id, facts, runtime)
            raise
        METRICS.phases("CreateContainer", timings)
        logger.debug(
            "container %s created: %s",
            container_id[:12],
            ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in timings.items()),
        )
        return facts

    def _oom_dir(self, cgroups_path: str) -> str | None:
        if not cgroups_path or self.runtime_facts.cgroup_manager != "cgroupfs":
            return None
        if self.runtime_facts.cgroup_version == 2:
            return "/sys/fs/cgroup" + cgroups_path
        return "/sys/fs/cgroup/memory" + cgroups_path

    async def stop(self, record: ContainerRecord, runtime: OCIRuntime, timeout: float, exited: asyncio.Event) -> None:
        """The stop signal, up to timeout seconds, then SIGKILL; returns once the process is gone."""
        sig = int(record.facts.get("stop_signal", signal.SIGTERM))
        if timeout > 0 and await self._signal_init(record, runtime, sig):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), timeout)
        if exited.is_set():
            return
        if record.facts.get("own_pid_ns"):
            # Killing PID 1 of its own namespace kills every process in it.
            killed = await self._signal_init(record, runtime, signal.SIGKILL)
        else:
            killed = await self.kill_all(record, runtime)
        if killed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), 10)

    async def kill_all(self, record: ContainerRecord, runtime: OCIRuntime) -> bool:
        """SIGKILL every process of the container: by its cgroup (cgroup_kill) where pycrio knows
        it, else through the runtime (kill --all). True when there was something to kill."""
        directory = self._cgroup_dir(record.facts.get("cgroups_path", ""))
        if directory is not None:
            try:
                held, left = await asyncio.to_thread(cgroup_kill.kill_all, directory)
            except FileNotFoundError:
                return False  # no cgroup: the container's processes are all gone
            if left:
                logger.warning("container %s: %d processes outlived SIGKILL for 2 s", record.id[:12], left)
            return held
        return await runtime.kill(record.id, signal.SIGKILL, all_processes=True)

    def _cgroup_dir(self, cgroups_path: str) -> str | None:
        if not cgroups_path or self.runtime_facts.cgroup_manager != "cgroupfs":
            return None
        directory = cgroup_kill.cgroup_dir(cgroups_path, self.runtime_facts.cgroup_version)
        # Its hierarchy must be there, or a missing directory would mean nothing.
        return directory if os.path.isdir(directory[: -len(cgroups_path)]) else None

    async def _signal_init(self, record: ContainerRecord, runtime: OCIRuntime, sig: int) -> bool:
        """Signal the container's init: by pidfd when its identity is known, else through the runtime."""
        if record.state == "running" and record.facts.get("pid_start") is not None:
            return procs.signal_if_same(record.facts.get("pid"), record.facts["pid_start"], sig)
        return await runtime.kill(record.id, sig)

    async def cleanup(self, container_id: str, facts: dict[str, Any], runtime: OCIRuntime) -> None:
        """Remove everything the container holds: runtime state, rootfs mount, dirs, exit file. Repeatable."""
        if facts.get("created"):
            await runtime.delete(container_id, force=True)
            facts["created"] = False
        if facts.get("mounted"):
            native.unmount(facts["merged"], native.UNMOUNT_DETACH)
            facts["mounted"] = False
        if facts.get("bundle"):
            volumes.unstage(facts["bundle"])  # before the bundle dir goes: found on disk, also after a crash
        for key in ("bundle", "top"):
            path = facts.get(key)
            if path and os.path.isdir(path):
                # Renamed aside now, deleted in the background: the RPC does not wait for the tree walk.
                trash = os.path.join(os.path.dirname(path), TRASH_PREFIX + os.path.basename(path))
                os.rename(path, trash)
                asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, trash, True)
        ctl = ctl_socket_path(self.cfg, container_id)
        for path in (self.exit_file(container_id), ctl, attach_socket(ctl)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
