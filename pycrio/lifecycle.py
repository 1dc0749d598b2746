"""Pods and containers as the CRI sees them: the records, their states, exits, and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import time
from collections import defaultdict
from typing import Any

from pycrio import monitor, pod_cgroup, procs, spec, spec_devices, spec_resources, volumes
from pycrio.config import Config
from pycrio.container import ContainerOps
from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument, NotFound
from pycrio.exits import ExitWatcher
from pycrio.image.images import Images
from pycrio.metrics import METRICS
from pycrio.monitor import ExitStatus
from pycrio.network import NetworkBackend
from pycrio.oci import OCIRuntime
from pycrio.runtime_store import ContainerRecord, PodRecord, RuntimeStore
from pycrio.sandbox import Sandbox, ctl_socket_path, pod_name
from pycrio.state import Database

logger = logging.getLogger("pycrio.lifecycle")

EVENT_QUEUE_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class ContainerEvent:
    kind: int  # api_pb2.ContainerEventType
    at_ns: int
    container: ContainerRecord  # as it was when the event happened
    pod: PodRecord | None


class Lifecycle:
    def __init__(self, cfg: Config, db: Database, images: Images, network: NetworkBackend | None = None):
        self.cfg = cfg
        self.network = network
        self.store = RuntimeStore(db)
        self.images = images
        self.runtime_facts = spec.RuntimeFacts.probe(
            cfg.runtime.default_capabilities,
            cfg.runtime.cgroup_manager,
            cfg.runtime.allowed_devices,
            cfg.runtime.seccomp_profile_roots,
        )
        self.containers_ops = ContainerOps(cfg, images, self.runtime_facts)
        self._runtimes: dict[str, OCIRuntime] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._exited: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._deleting: dict[str, asyncio.Task[None]] = {}  # runtime deletes started at exit
        self._starting: dict[str, ContainerRecord | None] = {}  # in StartContainer: an exit seen meanwhile
        self.watcher = ExitWatcher(cfg.runtime.exits_dir, self._on_exit)
        self.subscribers: set[asyncio.Queue[ContainerEvent]] = set()

    # ------------------------------------------------------------ events

    def subscribe(self) -> asyncio.Queue[ContainerEvent]:
        queue: asyncio.Queue[ContainerEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ContainerEvent]) -> None:
        self.subscribers.discard(queue)

    def _emit(self, kind: int, container: ContainerRecord) -> None:
        if not self.subscribers:
            return
        pod = self.store.pod(container.pod_id)
        event = ContainerEvent(kind, time.time_ns(), dataclasses.replace(container), pod)
        for queue in self.subscribers:
            if queue.full():  # a subscriber that does not read loses its oldest events, not the daemon's memory
                queue.get_nowait()
                logger.warning("container event subscriber too slow: dropped an event")
            queue.put_nowait(event)

    # ------------------------------------------------------------ plumbing

    def runtime(self, handler: str) -> OCIRuntime:
        name = handler or self.cfg.runtime.default_runtime
        if name not in self._runtimes:
            self._runtimes[name] = OCIRuntime(self.cfg, name)
        return self._runtimes[name]

    def sandbox_ops(self, handler: str) -> Sandbox:
        return Sandbox(self.cfg, self.runtime(handler), self.runtime_facts, self.network)

    async def start(self) -> None:
        """Watch exit files, then reconcile the records with what survived the last daemon."""
        self.watcher.start()
        await self.recover()
        self.watcher.scan()
        self._mark_vanished()
        if self.network is not None:
            pods = {p.id for p in self.store.pods()}
            for pod_id in set(self.network.allocations()) - pods:
                await asyncio.to_thread(self.network.teardown, pod_id)

    def _mark_vanished(self) -> None:
        """Containers whose process is gone without an exit file (a reboot, a killed monitor) exit now;
        pods whose namespaces or pause are gone are not ready any more."""
        for pod in self.store.pods():
            if pod.state != "ready":
                continue
            pins = [pod.facts[k] for k in ("netns", "ipcns", "utsns") if pod.facts.get(k)]
            pause = pod.facts.get("pause_pid")
            if all(os.path.exists(p) for p in pins) and (not pause or procs.alive(pause, pod.facts.get("pause_start"))):
                continue
            pod.state = "notready"
            self.store.update_pod(pod)
            logger.warning("pod %s: its namespaces or pause process were gone when pycrio started", pod.id[:12])
        for c in self.store.containers():
            if c.state not in ("created", "running"):
                continue
            if procs.alive(c.facts.get("pid"), c.facts.get("pid_start")):
                continue  # still the container's process
            c.state, c.finished_ns, c.exit_code, c.reason = "exited", time.time_ns(), 255, "Error"
            c.message = "the container's process was gone when pycrio started, with no exit recorded"
            self.store.update_container(c)
            logger.warning("container %s: %s", c.id[:12], c.message)
            self._emit(api_pb2.CONTAINER_STOPPED_EVENT, c)

    def close(self) -> None:
        self.watcher.close()

    def find_pod(self, pod_id: str) -> PodRecord:
        pod = self.store.pod(pod_id)
        if pod is None:
            matches = self.store.pods_by_prefix(pod_id) if len(pod_id) >= 6 else []
            if len(matches) != 1:
                raise NotFound(f"pod sandbox {pod_id} not found")
            pod = matches[0]
        return pod

    def find_container(self, container_id: str) -> ContainerRecord:
        c = self.store.container(container_id)
        if c is None:
            matches = self.store.containers_by_prefix(container_id) if len(container_id) >= 6 else []
            if len(matches) != 1:
                raise NotFound(f"container {container_id} not found")
            c = matches[0]
        return c

    # ------------------------------------------------------------ pods

    async def run_pod(self, config: api_pb2.PodSandboxConfig, handler: str) -> str:
        started = time.monotonic()
        pod = PodRecord(
            id=secrets.token_hex(32),
            name=pod_name(config.metadata),
            state="creating",
            config=config,
            runtime_handler=handler or self.cfg.runtime.default_runtime,
            created_ns=time.time_ns(),
        )
        ops = self.sandbox_ops(handler)  # an unknown handler fails before anything is made
        # The pod's io.pycrio.devices (for every container): its form and allowance, before anything is made.
        spec_devices.annotation_devices({}, config.annotations, self.runtime_facts.allowed_devices, check_host=False)
        self.store.add_pod(pod)  # name clashes fail here, before anything is made
        async with self._locks[pod.id]:
            try:
                pod.facts = await ops.create(pod.id, config)
            except BaseException:
                self.store.delete_pod(pod.id)
                raise
            pod.state = "ready"
            self.store.update_pod(pod)
        logger.info("pod %s (%s) ready in %.1f ms", pod.id[:12], pod.name, (time.monotonic() - started) * 1000)
        return pod.id

    async def stop_pod(self, pod_id: str) -> None:
        try:
            pod = self.find_pod(pod_id)
        except NotFound:
            return  # stopping what does not exist is done
        for c in self.store.containers(pod.id):
            if c.state in ("created", "running"):
                await self.stop_container(c.id, 0)
        async with self._locks[pod.id]:
            pod = self.find_pod(pod.id)
            await self.sandbox_ops(pod.runtime_handler).teardown(pod.id, pod.facts)
            pod.state = "notready"
            self.store.update_pod(pod)
        logger.info("pod %s stopped", pod.id[:12])

    async def update_pod_resources(
        self,
        pod_id: str,
        overhead: api_pb2.LinuxContainerResources | None,
        resources: api_pb2.LinuxContainerResources | None,
    ) -> None:
        """UpdatePodSandboxResources: the pod's new resources and overhead (None: unchanged) are
        recorded, and written to the pod cgroup when pycrio made it (pod_cgroup.update). A cgroup
        the kubelet made is the kubelet's: it has resized it itself before this call."""
        pod = self.find_pod(pod_id)
        async with self._locks[pod.id]:
            linux = api_pb2.LinuxPodSandboxConfig()
            linux.CopyFrom(pod.config.linux)
            if overhead is not None:
                linux.overhead.CopyFrom(overhead)
            if resources is not None:
                linux.resources.CopyFrom(resources)
            version = self.runtime_facts.cgroup_version
            limits = pod_cgroup.pod_limits(linux.resources, linux.overhead, version)  # InvalidArgument first
            record = pod.facts.get("pod_cgroup")
            if record:
                pod.facts["pod_cgroup"] = await asyncio.to_thread(pod_cgroup.update, record, limits, version)
                self.store.update_pod(pod)
            pod.config.linux.CopyFrom(linux)
            self.store.update_pod_config(pod)
            logger.info(
                "pod %s resources updated%s", pod.id[:12], "" if record else " (recorded: the cgroup is the kubelet's)"
            )

    async def remove_pod(self, pod_id: str) -> None:
        try:
            pod = self.find_pod(pod_id)
        except NotFound:
            return
        for c in self.store.containers(pod.id):
            await self.remove_container(c.id)
        async with self._locks[pod.id]:
            ops = self.sandbox_ops(pod.runtime_handler)
            await ops.teardown(pod.id, pod.facts)
            await ops.release_pod_cgroup(pod.facts)
            ops.remove_dirs(pod.facts)
            self.store.delete_pod(pod.id)
        self._locks.pop(pod.id, None)
        logger.info("pod %s removed", pod.id[:12])

    # ------------------------------------------------------------ containers

    def _log_path(self, pod: PodRecord, config: api_pb2.ContainerConfig, container_id: str) -> str:
        directory = pod.config.log_directory or os.path.join(self.cfg.runtime.log_dir, pod.id)
        relative = config.log_path or f"{config.metadata.name}_{config.metadata.attempt}.log"
        path = os.path.normpath(os.path.join(directory, relative))
        if not path.startswith(os.path.normpath(directory) + os.sep):
            raise InvalidArgument(f"log_path {config.log_path!r} leaves the pod's log directory")
        return path

    def _sandbox_facts(self, pod: PodRecord, config: api_pb2.ContainerConfig) -> spec.SandboxFacts:
        facts = self.sandbox_ops(pod.runtime_handler).sandbox_facts(pod.id, pod.config, pod.facts)
        mode = config.linux.security_context.namespace_options.pid
        pid_ns_path = None
        if mode == api_pb2.POD:
            if not pod.facts.get("pause_pid"):
                mode = api_pb2.CONTAINER  # the pod has no shared PID namespace
            else:
                pid_ns_path = f"/proc/{pod.facts['pause_pid']}/ns/pid"
        elif mode == api_pb2.TARGET:
            target = self.find_container(config.linux.security_context.namespace_options.target_id)
            if target.pod_id != pod.id or target.state != "running" or not target.pid:
                raise FailedPrecondition(f"target container {target.id[:12]} is not running in this pod")
            pid_ns_path = f"/proc/{target.pid}/ns/pid"
        return dataclasses.replace(facts, pid_mode=mode, pid_ns_path=pid_ns_path)

    async def create_container(
        self, pod_id: str, config: api_pb2.ContainerConfig, sandbox_config: api_pb2.PodSandboxConfig | None
    ) -> str:
        started = time.monotonic()
        pod = self.find_pod(pod_id)
        if pod.state != "ready":
            raise FailedPrecondition(f"pod sandbox {pod.id[:12]} is not ready (state {pod.state})")
        image = self.images.find(config.image.image)
        if image is None:
            raise NotFound(f"image {config.image.image!r} not found: pull it first")
        volumes.resolve_images(config.mounts, self.images)  # image volumes: pulled first, ids recorded
        record = ContainerRecord(
            id=secrets.token_hex(32),
            pod_id=pod.id,
            name=f"{pod.id}/{config.metadata.name}_{config.metadata.attempt}",
            state="creating",
            config=config,
            image_id=image.id,
            image_ref=(image.digests or image.tags or [image.id])[0],
            created_ns=time.time_ns(),
        )
        log_path = self._log_path(pod, config, record.id)
        sandbox = self._sandbox_facts(pod, config)
        # io.pycrio.devices refused (malformed, not allowed, missing) before anything is made;
        # container_spec adds the devices.
        spec_devices.annotation_devices(config.annotations, sandbox.annotations, self.runtime_facts.allowed_devices)
        self.store.add_container(record)
        runtime = self.runtime(pod.runtime_handler)
        try:
            record.facts = await self.containers_ops.create(record.id, config, sandbox, log_path, image, runtime)
        except BaseException:
            self.store.delete_container(record.id)
            raise
        record.state = "created"
        record.pid = record.facts.get("pid")
        self.store.update_container(record)
        self._emit(api_pb2.CONTAINER_CREATED_EVENT, record)
        logger.info("container %s (%s) created in %.1f ms", record.id[:12], config.metadata.name,
                    (time.monotonic() - started) * 1000)  # fmt: skip
        return record.id

    async def start_container(self, container_id: str) -> None:
        c = self.find_container(container_id)
        async with self._locks[c.id]:
            c = self.find_container(c.id)
            if c.state != "created":
                raise FailedPrecondition(f"container {c.id[:12]} is {c.state}, not created")
            pod = self.find_pod(c.pod_id)
            started_ns = time.time_ns()  # before: a quick process may exit before `start` returns
            self._starting[c.id] = None
            try:
                await self.runtime(pod.runtime_handler).start(c.id)
            finally:
                early_exit = self._starting.pop(c.id, None)
            c = self.find_container(c.id)
            if c.state == "created":  # the exit watcher may already have seen it finish
                c.state = "running"
            c.started_ns = started_ns
            self.store.update_container(c)
            self._emit(api_pb2.CONTAINER_STARTED_EVENT, c)
            if early_exit is not None:  # STOPPED after STARTED, even when the exit was seen first
                self._emit(api_pb2.CONTAINER_STOPPED_EVENT, early_exit)

    async def stop_container(self, container_id: str, timeout: int) -> None:
        try:
            c = self.find_container(container_id)
        except NotFound:
            return
        if c.state not in ("created", "running"):
            return
        pod = self.find_pod(c.pod_id)
        runtime = self.runtime(pod.runtime_handler)
        exited = self._exited[c.id]
        await self.containers_ops.stop(c, runtime, float(timeout), exited)
        if c.state == "created":  # never started: nothing will write an exit file
            c = self.find_container(c.id)
            if c.state == "created":
                c.state, c.finished_ns, c.exit_code, c.reason = "exited", time.time_ns(), 0, "Completed"
                self.store.update_container(c)
                self._emit(api_pb2.CONTAINER_STOPPED_EVENT, c)

    async def remove_container(self, container_id: str) -> None:
        try:
            c = self.find_container(container_id)
        except NotFound:
            return
        async with self._locks[c.id]:
            pod = self.find_pod(c.pod_id)
            runtime = self.runtime(pod.runtime_handler)
            timings: dict[str, float] = {}
            t = time.monotonic()
            if c.state in ("created", "running"):
                await self.containers_ops.kill_all(c, runtime)
                timings["kill"] = time.monotonic() - t
            deleting = self._deleting.pop(c.id, None)
            if deleting is not None:
                t = time.monotonic()
                with contextlib.suppress(Exception):  # on failure cleanup() deletes again
                    await deleting
                timings["runtime delete (started at exit)"] = time.monotonic() - t
                c = self.find_container(c.id)
            t = time.monotonic()
            await self.containers_ops.cleanup(c.id, c.facts, runtime)
            timings["cleanup"] = time.monotonic() - t
            t = time.monotonic()
            self.store.delete_container(c.id)
            timings["record"] = time.monotonic() - t
            self._emit(api_pb2.CONTAINER_DELETED_EVENT, c)
            METRICS.phases("RemoveContainer", timings)
            if logger.isEnabledFor(logging.DEBUG):
                phases = ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in timings.items())
                logger.debug("container %s removed: %s", c.id[:12], phases)
        self._locks.pop(c.id, None)
        self._exited.pop(c.id, None)
        self.watcher.forget(c.id)

    async def update_resources(self, container_id: str, resources: api_pb2.LinuxContainerResources) -> None:
        c = self.find_container(container_id)
        if c.state not in ("created", "running"):
            raise FailedPrecondition(f"container {c.id[:12]} is {c.state}: its resources cannot change")
        facts = self.runtime_facts
        merged, document = spec_resources.update_resources(
            c.config.linux.resources, resources, facts.cgroup_version, facts.hugepage_sizes
        )
        if resources.oom_score_adj not in (0, merged.oom_score_adj):
            logger.info(
                "container %s: oom_score_adj stays %d (it is set at start; %d asked)",
                c.id[:12],
                c.facts.get("oom_score_adj", merged.oom_score_adj),
                resources.oom_score_adj,
            )
        pod = self.find_pod(c.pod_id)
        await self.runtime(pod.runtime_handler).update(c.id, document)
        c.config.linux.resources.CopyFrom(merged)
        self.store.update_container_config(c)

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: int):
        c = self.find_container(container_id)
        if c.state != "running":
            raise FailedPrecondition(f"container {c.id[:12]} is not running")
        pod = self.find_pod(c.pod_id)
        with open(os.path.join(c.facts["bundle"], "config.json")) as f:
            process = dict(json.load(f)["process"])
        process.update({"args": list(cmd), "terminal": False})
        pid_file = os.path.join(c.facts["bundle"], f"exec-{secrets.token_hex(6)}.pid")
        return await self.runtime(pod.runtime_handler).exec_sync(c.id, process, float(timeout), pid_file)

    async def reopen_log(self, container_id: str) -> None:
        c = self.find_container(container_id)
        if c.state != "running":
            raise FailedPrecondition(f"container {c.id[:12]} is not running")
        await monitor.reopen_log(ctl_socket_path(self.cfg, c.id))

    # ------------------------------------------------------------ exits and recovery

    def _on_exit(self, container_id: str, status: ExitStatus) -> None:
        c = self.store.container(container_id)
        if c is not None:
            if c.state != "exited":
                c.state = "exited"
                c.finished_ns = status.finished_ns
                c.exit_code = status.exit_code
                c.reason = "OOMKilled" if status.oom_killed else ("Completed" if status.exit_code == 0 else "Error")
                self.store.update_container(c)
                logger.info("container %s exited with %d (%s)", c.id[:12], c.exit_code, c.reason)
                if status.oom_killed:
                    METRICS.containers_oom.inc()
                if c.id in self._starting:
                    self._starting[c.id] = dataclasses.replace(c)  # emitted once StartContainer is done
                else:
                    self._emit(api_pb2.CONTAINER_STOPPED_EVENT, c)
            self._exited[c.id].set()
            if c.facts.get("created") and c.id not in self._deleting:
                self._deleting[c.id] = asyncio.get_running_loop().create_task(self._delete_runtime_state(c.id))
            return
        pod = self.store.pod(container_id)
        if pod is not None and pod.state == "ready":
            logger.warning("pod %s: its pause process exited (code %d)", pod.id[:12], status.exit_code)

    async def _delete_runtime_state(self, container_id: str) -> None:
        """`runtime delete` as soon as a container exits, so that RemoveContainer has less to do."""
        c = self.store.container(container_id)
        pod = self.store.pod(c.pod_id) if c else None
        if c is None or pod is None or not c.facts.get("created"):
            return
        await self.runtime(pod.runtime_handler).delete(c.id, force=True)
        c = self.store.container(container_id)
        if c is not None:
            c.facts["created"] = False
            self.store.update_container(c)

    async def recover(self) -> None:
        """Drop what a crash caught half-made; mark as exited what ended while the daemon was down."""
        await asyncio.get_running_loop().run_in_executor(None, self.containers_ops.clear_trash)
        for c in self.store.containers():
            if c.state == "creating":
                logger.warning("container %s was being created when the daemon stopped: removing it", c.id[:12])
                top, bundle = self.containers_ops.dirs(c.id)
                leftovers = {"created": True, "mounted": True, "top": top, "bundle": bundle,
                             "merged": os.path.join(top, "merged"), **c.facts}  # fmt: skip
                with contextlib.suppress(Exception):
                    owner = self.store.pod(c.pod_id)
                    handler = owner.runtime_handler if owner else ""
                    await self.containers_ops.cleanup(c.id, leftovers, self.runtime(handler))
                self.store.delete_container(c.id)
        for pod in self.store.pods():
            if pod.state == "creating":
                logger.warning("pod %s was being created when the daemon stopped: removing it", pod.id[:12])
                ops = self.sandbox_ops(pod.runtime_handler)
                pod_dir, ns_dir = ops.dirs(pod.id)
                # The pause is found through its record (pause.json) beside the pod's files.
                facts: dict[str, Any] = {"dir": pod_dir, "ns_dir": ns_dir,
                                         "shm_mounted": os.path.isdir(os.path.join(pod_dir, "shm")),
                                         "shm_path": os.path.join(pod_dir, "shm")}  # fmt: skip
                for kind in ("net", "ipc", "uts"):
                    facts[f"{kind}ns"] = os.path.join(ns_dir, kind)
                with contextlib.suppress(Exception):
                    await ops.teardown(pod.id, facts)
                with contextlib.suppress(Exception):  # found through its record (pod-cgroup.json)
                    await ops.release_pod_cgroup(facts)
                ops.remove_dirs(facts)
                self.store.delete_pod(pod.id)
