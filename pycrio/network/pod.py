"""What a network backend is told about a pod, and what it answers: the pod's side of the network API.

Both backends (the built-in bridge and CNI) take a PodInfo in setup() and give a PodNetwork back;
the daemon records PodNetwork's addresses in the pod's facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pycrio.cri import api_pb2

PROTOCOLS = {api_pb2.TCP: "tcp", api_pb2.UDP: "udp", api_pb2.SCTP: "sctp"}


@dataclass(frozen=True)
class PortMapping:
    """A hostPort: host_ip:host_port on the node to container_port in the pod (host_ip "" is any)."""

    protocol: str  # "tcp", "udp" or "sctp"
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass
class PodInfo:
    """The pod's identity and network wishes, from its PodSandboxConfig."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    port_mappings: list[PortMapping] = field(default_factory=list)
    dns_servers: list[str] = field(default_factory=list)
    dns_searches: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: api_pb2.PodSandboxConfig) -> PodInfo:
        return cls(
            name=config.metadata.name,
            namespace=config.metadata.namespace,
            uid=config.metadata.uid,
            # A mapping without a host port only documents the container port: nothing to publish.
            port_mappings=[
                PortMapping(PROTOCOLS[p.protocol], p.container_port, p.host_port, p.host_ip)
                for p in config.port_mappings
                if p.host_port > 0
            ],
            dns_servers=list(config.dns_config.servers),
            dns_searches=list(config.dns_config.searches),
            dns_options=list(config.dns_config.options),
            annotations=dict(config.annotations),
        )


@dataclass
class PodNetwork:
    """What setup() gave a pod: its primary address and any more (another family), the interface."""

    ip: str
    prefix: int
    gateway: str
    host_veth: str = ""
    interface: str = "eth0"
    additional_ips: list[str] = field(default_factory=list)
