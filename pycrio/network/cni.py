"""The CNI backend: pods join a network of standard CNI plugins (bridge, Calico, Cilium, Flannel, ...).

The network is a conflist in cni_conf_dir (cni_network, or the first valid file by name); its
plugins are executables in cni_bin_dirs. ADD runs the chain in order, each plugin getting the
previous one's result; the final result is stored with the whole configuration and the
attachment parameters in <cni_cache_dir>/results/<pod id>.json, so DEL (the chain in reverse,
with that result as prevResult) gets exactly what ADD had, after a daemon restart or a change
of the conf dir too. A record is written before the first plugin runs: a daemon killed in the
middle of an ADD still DELs what the plugins made, at recovery.

Every method is blocking (plugins are processes) and thread-safe: the daemon calls them with
asyncio.to_thread. Operations on one pod are serialised (the spec forbids parallel operations
on one container); different pods run in parallel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from pycrio import native
from pycrio.config import NetworkConfig
from pycrio.errors import FailedPrecondition, NotFound, PycrioError
from pycrio.network import cni_conf, cni_result
from pycrio.network.cni_conf import CniConfError, NetworkConf
from pycrio.network.cni_exec import IFNAME, Invocation, plugin_error, run_plugin
from pycrio.network.pod import PodInfo, PodNetwork

logger = logging.getLogger("pycrio.network.cni")

NSFS_MAGIC = 0x6E736673
RECORD_FORMAT = 1


class CniNetwork:
    """The CNI driver; see the module docstring."""

    def __init__(self, cfg: NetworkConfig):
        if not cfg.cni_cache_dir:
            raise ValueError("CniNetwork needs a resolved NetworkConfig (cni_cache_dir is empty)")
        self.cfg = cfg
        self.conf_dir = cfg.cni_conf_dir
        self.bin_dirs = list(cfg.cni_bin_dirs)
        self.results_dir = os.path.join(cfg.cni_cache_dir, "results")
        self.timeout = float(cfg.cni_timeout)
        self._guard = threading.Lock()
        self._pod_locks: dict[str, threading.Lock] = {}

    def close(self) -> None:
        pass

    # ------------------------------------------------------------ the network

    def network(self) -> NetworkConf:
        """The configured network as the conf dir has it now; CniConfError says why there is none."""
        return cni_conf.find_network(self.conf_dir, self.cfg.cni_network)

    def start(self) -> None:
        """Log the network that will be used (or why none can be), GC stale attachments (1.1.0). Never raises."""
        try:
            os.makedirs(self.results_dir, mode=0o700, exist_ok=True)
            conf = self.network()
        except (OSError, CniConfError) as e:
            logger.warning("CNI: no network yet (pods wait until there is one): %s", e)
            return
        kinds = ", ".join(p["type"] for p in conf.plugins)
        logger.info("CNI network %s from %s: cniVersion %s, plugins %s", conf.name, conf.source, conf.version, kinds)
        missing = cni_conf.missing_binaries(conf, self.bin_dirs)
        if missing:
            logger.warning("CNI network %s: plugin %s not found in %s", conf.name, ", ".join(missing), self._path())
        elif cni_conf.at_least(conf.version, "1.1.0") and not conf.disable_gc:
            self._gc(conf)

    def ready(self) -> tuple[bool, str]:
        """(True, "") when there is a valid network whose plugins are all there (and, for 1.1.0
        networks, every plugin answers STATUS with success); else (False, why)."""
        try:
            conf = self.network()
        except CniConfError as e:
            return False, str(e)
        missing = cni_conf.missing_binaries(conf, self.bin_dirs)
        if missing:
            return False, (
                f"CNI network {conf.name} ({conf.source}): plugin {', '.join(missing)} not found in {self._path()}"
            )
        if cni_conf.at_least(conf.version, "1.1.0"):
            inv = Invocation("STATUS", path=self._path())
            for plugin in conf.plugins:
                try:
                    self._run(conf, plugin, inv, cni_conf.request_config(conf, plugin, None, None))
                except PycrioError as e:
                    return False, f"CNI network {conf.name}: {e}"
        return True, ""

    def _gc(self, conf: NetworkConf) -> None:
        """GC (spec 1.1.0) with every attachment pycrio has a record of in this network as still valid."""
        valid = [
            {"containerID": pod_id, "ifname": record.get("ifname", IFNAME)}
            for pod_id, record in self._records()
            if record.get("network", {}).get("config", {}).get("name") == conf.name
        ]
        inv = Invocation("GC", path=self._path())
        for plugin in conf.plugins:
            request = cni_conf.request_config(conf, plugin, None, None)
            request["cni.dev/valid-attachments"] = valid
            try:
                self._run(conf, plugin, inv, request)
            except PycrioError as e:  # GC goes on past a failing plugin (spec section 3)
                logger.warning("CNI GC of network %s: %s", conf.name, e)

    # ------------------------------------------------------------ pods

    def setup(self, pod_id: str, netns_path: str, pod: PodInfo | None = None) -> PodNetwork:
        """ADD the pod in netns_path to the network; on failure DEL what was made and raise.

        Raises FailedPrecondition while the network is not ready (no valid conflist, a plugin
        binary missing), NotFound when netns_path is no namespace pin, DeadlineExceeded when a
        plugin hangs, the plugin's error (see cni_exec.plugin_error) when one fails.
        """
        pod = pod or PodInfo()
        _check_netns(pod_id, netns_path)
        try:
            conf = self.network()
        except CniConfError as e:
            raise FailedPrecondition(f"network: CNI is not ready: {e}") from e
        missing = cni_conf.missing_binaries(conf, self.bin_dirs)
        if missing:
            raise FailedPrecondition(
                f"network: CNI is not ready: network {conf.name}: "
                f"plugin {', '.join(missing)} not found in {self._path()}"
            )
        capability = cni_conf.capability_args(pod)
        record: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "pod_id": pod_id,
            "network": conf.to_record(),
            "netns": netns_path,
            "ifname": IFNAME,
            "args": _cni_args(pod_id, pod),
            "capability_args": capability,
            "result": None,
            "ips": [],
        }
        with self._pod_lock(pod_id):
            if self._load(pod_id) is not None:
                raise FailedPrecondition(f"network: pod {pod_id[:12]} is attached to a CNI network already")
            self._store(pod_id, record)  # before any plugin runs: a crash from here on still gets a DEL
            inv = self._invocation("ADD", pod_id, record)
            result: dict[str, Any] | None = None
            try:
                for plugin in conf.plugins:
                    request = cni_conf.request_config(conf, plugin, capability, result)
                    result = self._run(conf, plugin, inv, request)
                    if result is None:
                        raise plugin_error(plugin["type"], "ADD", None, "printed no result")
                assert result is not None
                ips = cni_result.result_ips(result)
                primary, others = cni_result.primary_and_others(ips)
            except BaseException as e:
                record["result"] = result
                self._undo_add(pod_id, record, e)
                if isinstance(e, cni_result.CniResultError):
                    raise FailedPrecondition(f"network: CNI network {conf.name}: {e}") from e
                raise
            record["result"] = result
            record["ips"] = [str(ip.address.ip) for ip in [primary, *others]]
            self._store(pod_id, record)
        logger.debug("pod %s: CNI network %s gave %s", pod_id[:12], conf.name, ", ".join(record["ips"]))
        return PodNetwork(
            ip=str(primary.address.ip),
            prefix=primary.address.network.prefixlen,
            gateway=primary.gateway,
            interface=IFNAME,
            additional_ips=[str(ip.address.ip) for ip in others],
        )

    def _undo_add(self, pod_id: str, record: dict[str, Any], error: BaseException) -> None:
        """A failed ADD: DEL the whole chain (spec section 3), then forget the record; a failing DEL
        keeps it (recovery retries) and is reported beside the ADD's error."""
        try:
            self._delete(pod_id, record, record["netns"])
        except Exception as e:  # noqa: BLE001 - the ADD's error is the one raised
            logger.error("pod %s: DEL after a failed ADD failed too (kept for a later DEL): %s", pod_id[:12], e)
            error.add_note(f"cleanup DEL failed too: {e}")
            return
        self._forget(pod_id)

    def check(self, pod_id: str, netns_path: str | None = None) -> None:
        """CHECK the pod's attachment (every plugin, with the stored result); raises what a plugin says.

        NotFound when the pod has no complete attachment; a network with disableCheck passes.
        """
        with self._pod_lock(pod_id):
            record = self._load(pod_id)
            if record is None or record.get("result") is None:
                raise NotFound(f"network: pod {pod_id[:12]} has no CNI attachment")
            conf = NetworkConf.from_record(record["network"])
            if conf.disable_check or not cni_conf.at_least(conf.version, "0.4.0"):
                return
            inv = self._invocation("CHECK", pod_id, record, netns_path)
            for plugin in conf.plugins:
                request = cni_conf.request_config(conf, plugin, record["capability_args"], record["result"])
                self._run(conf, plugin, inv, request)

    def teardown(self, pod_id: str, netns_path: str | None = None, delete_veth: bool = True) -> None:
        """DEL the pod from the network it was ADDed to (as stored); idempotent, fine without a netns.

        delete_veth is the built-in network's business: here the plugins delete what they made
        (a DEL without the netns would keep them from finding the addresses they must release).
        """
        with self._pod_lock(pod_id):
            record = self._load(pod_id)
            if record is None:
                return
            self._delete(pod_id, record, netns_path or record.get("netns") or "")
            self._forget(pod_id)
        with self._guard:
            self._pod_locks.pop(pod_id, None)

    def _delete(self, pod_id: str, record: dict[str, Any], netns_path: str) -> None:
        conf = NetworkConf.from_record(record["network"])
        prev = record.get("result") if cni_conf.at_least(conf.version, "0.4.0") else None
        inv = self._invocation("DEL", pod_id, record, netns_path)
        for plugin in reversed(conf.plugins):
            request = cni_conf.request_config(conf, plugin, record.get("capability_args") or {}, prev)
            self._run(conf, plugin, inv, request)

    def allocations(self) -> dict[str, str]:
        """pod_id -> primary IP ("" while an ADD had not finished) of every stored attachment."""
        return {pod_id: (record.get("ips") or [""])[0] for pod_id, record in self._records()}

    # ------------------------------------------------------------ plumbing

    def _path(self) -> str:
        return os.pathsep.join(self.bin_dirs)

    def _invocation(
        self, command: str, pod_id: str, record: dict[str, Any], netns_path: str | None = None
    ) -> Invocation:
        netns = netns_path if netns_path is not None else record.get("netns", "")
        if command == "DEL" and netns and not _is_netns(netns):
            netns = ""  # the pin is gone (a reboot): plugins clean up what they can without it
        return Invocation(
            command,
            container_id=pod_id,
            netns=netns,
            ifname=record.get("ifname", IFNAME),
            args=record["args"],
            path=self._path(),
        )

    def _run(
        self, conf: NetworkConf, plugin: dict[str, Any], inv: Invocation, request: dict[str, Any]
    ) -> dict[str, Any] | None:
        kind = plugin["type"]
        binary = cni_conf.find_binary(kind, self.bin_dirs)
        if binary is None:
            raise FailedPrecondition(f"network: CNI network {conf.name}: plugin {kind} not found in {self._path()}")
        return run_plugin(binary, kind, inv, request, self.timeout)

    @contextlib.contextmanager
    def _pod_lock(self, pod_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._pod_locks.setdefault(pod_id, threading.Lock())
        with lock:
            yield

    def _record_path(self, pod_id: str) -> str:
        if not pod_id or "/" in pod_id or pod_id.startswith("."):
            raise ValueError(f"bad pod id {pod_id!r}")
        return os.path.join(self.results_dir, pod_id + ".json")

    def _load(self, pod_id: str) -> dict[str, Any] | None:
        return load_record(self._record_path(pod_id))

    def _store(self, pod_id: str, record: dict[str, Any]) -> None:
        os.makedirs(self.results_dir, mode=0o700, exist_ok=True)
        path = self._record_path(pod_id)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.results_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _forget(self, pod_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path(pod_id))

    def _records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            names = sorted(os.listdir(self.results_dir))
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(".json"):
                continue
            record = load_record(os.path.join(self.results_dir, name))
            if record is not None:
                yield name[: -len(".json")], record


def load_record(path: str) -> dict[str, Any] | None:
    """A stored attachment, or None (missing; unreadable ones are logged and skipped)."""
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        logger.error("CNI result cache: %s is unreadable, skipped: %s", path, e)
        return None
    if not isinstance(record, dict) or "network" not in record or "args" not in record:
        logger.error("CNI result cache: %s is not an attachment record, skipped", path)
        return None
    return record


def _cni_args(pod_id: str, pod: PodInfo) -> str:
    """CNI_ARGS as the kubelet-era runtimes set them (IgnoreUnknown first: plugins that do not know a key)."""
    pairs = [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", pod.namespace),
        ("K8S_POD_NAME", pod.name),
        ("K8S_POD_INFRA_CONTAINER_ID", pod_id),
        ("K8S_POD_UID", pod.uid),
    ]
    return ";".join(f"{k}={v.replace(';', '').replace('=', '')}" for k, v in pairs)


def _is_netns(path: str) -> bool:
    try:
        return native.fs_type(path) == NSFS_MAGIC
    except OSError:
        return False


def _check_netns(pod_id: str, path: str) -> None:
    if not os.path.exists(path):
        raise NotFound(f"network: pod {pod_id}: network namespace {path} does not exist")
    if not _is_netns(path):
        raise NotFound(f"network: pod {pod_id}: {path} is not a network namespace pin")


def wipe(cfg: NetworkConfig) -> list[str]:
    """`pycrio wipe`: DEL every stored attachment (best effort), then remove the cache; what happened."""
    net = CniNetwork(cfg)
    done = []
    for pod_id in list(net.allocations()):
        try:
            net.teardown(pod_id)
            done.append(f"CNI DEL of pod {pod_id[:12]}")
        except (OSError, PycrioError) as e:
            done.append(f"CNI DEL of pod {pod_id[:12]} failed: {e}")
    if os.path.isdir(cfg.cni_cache_dir):
        import shutil

        shutil.rmtree(cfg.cni_cache_dir, ignore_errors=True)
        done.append(f"removed {cfg.cni_cache_dir}")
    return done
