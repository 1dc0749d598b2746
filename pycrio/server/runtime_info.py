"""Version, Status, RuntimeConfig and UpdateRuntimeConfig: what the runtime is and whether it can serve."""

from __future__ import annotations

import asyncio
import json
import logging
import os

from pycrio import __version__
from pycrio.config import Config
from pycrio.cri import api_pb2
from pycrio.network import BuiltinNetwork
from pycrio.oci import runtime_binary
from pycrio.volumes import recursive_read_only_supported

logger = logging.getLogger("pycrio.runtime_info")

RUNTIME_NAME = "pycrio"
RUNTIME_API_VERSION = "v1"
KUBELET_API_VERSION = "0.1.0"  # the CRI's own version string, as every runtime reports it


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> api_pb2.RuntimeCondition:
    return api_pb2.RuntimeCondition(type=kind, status=ok, reason="" if ok else reason, message="" if ok else message)


class RuntimeInfoServicer:
    def __init__(self, daemon):
        self.daemon = daemon  # read daemon.cfg on each call: SIGHUP may replace it

    @property
    def cfg(self) -> Config:
        return self.daemon.cfg

    async def Version(self, request, context):
        return api_pb2.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=__version__,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    def _runtime_condition(self) -> api_pb2.RuntimeCondition:
        handler = self.cfg.runtime.default_runtime
        if runtime_binary(self.cfg, handler) is None:
            wanted = self.cfg.runtime.runtimes[handler].runtime_path or f"{handler} on $PATH"
            return _condition(
                "RuntimeReady",
                False,
                "OCIRuntimeNotFound",
                f"default runtime handler {handler!r}: {wanted} is not an executable file",
            )
        for path in (self.cfg.root, self.cfg.runroot):
            if not os.access(path, os.W_OK | os.X_OK):
                return _condition("RuntimeReady", False, "StateDirUnusable", f"{path} is not a writable directory")
        return _condition("RuntimeReady", True)

    async def _network_condition(self) -> api_pb2.RuntimeCondition:
        network = self.daemon.network
        if network is None:
            return _condition("NetworkReady", False, "NetworkPluginNotReady", "the pod network is not set up")
        ok, reason = await asyncio.to_thread(network.ready)  # netlink (pyroute2) blocks
        return _condition("NetworkReady", ok, "NetworkPluginNotReady", reason)

    async def Status(self, request, context):
        conditions = [self._runtime_condition(), await self._network_condition()]
        # Recursive read-only mounts are staged by pycrio itself (pycrio.volumes), whatever the handler.
        features = api_pb2.RuntimeHandlerFeatures(recursive_read_only_mounts=recursive_read_only_supported())
        handlers = [
            api_pb2.RuntimeHandler(name=name, features=features) for name in ["", *sorted(self.cfg.runtime.runtimes)]
        ]
        info = {}
        if request.verbose:
            info["config"] = json.dumps(self.cfg.as_dict(), sort_keys=True)
            info["version"] = json.dumps({"runtimeName": RUNTIME_NAME, "runtimeVersion": __version__})
        return api_pb2.StatusResponse(
            status=api_pb2.RuntimeStatus(conditions=conditions),
            info=info,
            runtime_handlers=handlers,
            # SupplementalGroupsPolicy: Merge and Strict in spec.process_user, ContainerStatus.user reported.
            features=api_pb2.RuntimeFeatures(supplemental_groups_policy=True),
        )

    async def UpdateRuntimeConfig(self, request, context):
        cidr = request.runtime_config.network_config.pod_cidr
        network = self.daemon.network
        if cidr and isinstance(network, BuiltinNetwork):
            await asyncio.to_thread(network.set_pod_cidr, cidr)
        elif cidr:
            logger.info("UpdateRuntimeConfig: pod CIDR %s left to the network plugin's own IPAM", cidr)
        return api_pb2.UpdateRuntimeConfigResponse()

    async def RuntimeConfig(self, request, context):
        driver = api_pb2.SYSTEMD if self.cfg.runtime.cgroup_manager == "systemd" else api_pb2.CGROUPFS
        return api_pb2.RuntimeConfigResponse(linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=driver))
