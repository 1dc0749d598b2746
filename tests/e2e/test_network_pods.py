"""The built-in pod network through the daemon: pods talk over TCP, hostPorts, IPAM across crashes, leaks."""
# ruff: noqa: F811  (test functions take the imported netnode fixture by name)

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import threading
import time

import grpc
import pytest

from pycrio.cri import api_pb2
from pycrio.network import host_veth_name
from tests.e2e.test_pods import Node
from tests.e2e.test_pods import node as netnode  # noqa: F401 - test_pods' node fixture, here as netnode

SERVE = ["nc", "-ll", "-p", "8080", "-e", "echo", "hello from the pod"]


def _ip(node: Node, pod_id: str) -> str:
    return node.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status.network.ip


def _gateway(node: Node) -> str:
    return str(next(ipaddress.IPv4Network(node.d.subnet).hosts()))


def _wait_listening(node: Node, cid: str) -> None:
    for _ in range(100):
        if ":1F90 " in node.exec(cid, ["cat", "/proc/net/tcp", "/proc/net/tcp6"]).stdout.decode():
            return
    raise AssertionError("nc never listened on 8080")


def _recv(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as s:
        return s.recv(100)


def _bridge_ports(node: Node, expect: list[str] | None = None) -> list[str]:
    """The veths on the node's bridge; with expect, waits up to 5 s for exactly those (the kernel
    removes the veth of a dropped network namespace in the background)."""
    path = f"/sys/class/net/{node.d.bridge}/brif"
    deadline = time.monotonic() + 5
    while True:
        found = sorted(os.listdir(path)) if os.path.isdir(path) else []
        if expect is None or found == sorted(expect) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_two_pods_talk_over_tcp_and_reach_the_host(netnode):
    a, b = netnode.pod(), netnode.pod()
    ip_a, ip_b = _ip(netnode, a), _ip(netnode, b)
    assert ip_a and ip_b and ip_a != ip_b
    server = netnode.run(a, SERVE, name="server")
    client = netnode.run(b, ["sleep", "3600"], name="client")
    _wait_listening(netnode, server)
    got = netnode.exec(client, ["nc", ip_a, "8080"])
    assert got.stdout == b"hello from the pod\n", got
    # A pod reaches a service on the host through the bridge address (its default gateway).
    listener = socket.create_server(("0.0.0.0", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, peer = listener.accept()
        conn.sendall(f"host sees {peer[0]}\n".encode())
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    got = netnode.exec(client, ["nc", _gateway(netnode), str(port)])
    t.join(5)
    listener.close()
    assert got.stdout.decode() == f"host sees {ip_b}\n"
    assert sorted(_bridge_ports(netnode)) == sorted([host_veth_name(a), host_veth_name(b)])


def test_host_port_from_the_hosts_loopback_and_the_bridge_address_until_the_pod_stops(netnode):
    port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
    mapping = api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=8080, host_port=port)
    pod = netnode.pod(port_mappings=[mapping])
    _wait_listening(netnode, netnode.run(pod, SERVE, name="server"))
    assert _recv("127.0.0.1", port) == b"hello from the pod\n"
    assert _recv(_gateway(netnode), port) == b"hello from the pod\n"
    # A second pod asking for the same hostPort is refused, and nothing of it stays.
    with pytest.raises(grpc.RpcError) as e:
        netnode.pod(port_mappings=[mapping])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"0.0.0.0:{port}/tcp is already used by another pod" in e.value.details()
    assert [p.id for p in netnode.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items] == [pod]
    assert _bridge_ports(netnode) == [host_veth_name(pod)]
    netnode.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    # Unpublished (in the background, within moments): the host itself refuses the port again.
    deadline = time.monotonic() + 5
    while True:
        try:
            _recv("127.0.0.1", port)
        except ConnectionRefusedError:
            break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the hostPort still leads somewhere"
        time.sleep(0.05)
    assert _bridge_ports(netnode, []) == []


def test_a_hundred_pods_come_and_go_without_leaking(netnode):
    seen: set[str] = set()
    pods = []
    for _ in range(100):
        pod = netnode.pod()
        pods.append(pod)
        seen.add(_ip(netnode, pod))
    assert len(seen) == 100 and len(_bridge_ports(netnode)) == 100
    for pod in pods:
        netnode.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
        netnode.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    assert _bridge_ports(netnode, []) == []
    links = set(os.listdir("/sys/class/net"))
    assert not {host_veth_name(p) for p in pods} & links
    # Every address is free again: a /24 holds 253 pods, and 150 more fit.
    more = [netnode.pod() for _ in range(3)]
    assert all(_ip(netnode, p) for p in more)


def test_addresses_survive_a_daemon_kill_and_are_never_handed_out_twice(netnode):
    before = {p: _ip(netnode, p) for p in (netnode.pod() for _ in range(5))}
    netnode.d.stop(signal.SIGKILL)
    netnode.d.start()
    after = {p: _ip(netnode, p) for p in (netnode.pod() for _ in range(5))}
    assert {p: _ip(netnode, p) for p in before} == before, "a restarted daemon reports the same addresses"
    assert len(set(before.values()) | set(after.values())) == 10
    for pod in before:
        netnode.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    expect = sorted(host_veth_name(p) for p in after)
    assert _bridge_ports(netnode, expect) == expect


def test_an_exhausted_subnet_is_resource_exhausted_and_leaves_nothing(daemon_factory):
    d = daemon_factory()
    d.subnet = "10.99.{}.0/29".format(int.from_bytes(os.urandom(1), "big"))  # 6 hosts, the gateway takes one
    d.start()
    node = Node(d, "")
    try:
        pods = [node.pod() for _ in range(5)]
        with pytest.raises(grpc.RpcError) as e:
            node.pod()
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"no free IPv4 address left in {d.subnet}" in e.value.details()
        assert len(node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items) == 5
        assert sorted(_bridge_ports(node)) == sorted(host_veth_name(p) for p in pods)
    finally:
        node.cleanup()
    assert d.stop() == 0


def _update_cidr(node: Node, cidr: str) -> None:
    config = api_pb2.RuntimeConfig(network_config=api_pb2.NetworkConfig(pod_cidr=cidr))
    node.rt.UpdateRuntimeConfig(api_pb2.UpdateRuntimeConfigRequest(runtime_config=config))


def test_update_runtime_config_pod_cidr_applies_to_new_pods_and_outlives_a_restart(netnode):
    old_pod = netnode.pod()
    old_ip = _ip(netnode, old_pod)
    cidr = "10.98.{}.0/24".format(int.from_bytes(os.urandom(1), "big"))
    _update_cidr(netnode, f"{cidr},fd00:10::/64")  # the kubelet's dual-stack list: the IPv4 one counts
    new_pod = netnode.pod()
    assert ipaddress.IPv4Address(_ip(netnode, new_pod)) in ipaddress.IPv4Network(cidr)
    assert _ip(netnode, old_pod) == old_ip
    # Pods of the old and the new subnet still reach each other (through the host).
    server = netnode.run(old_pod, SERVE, name="server")
    client = netnode.run(new_pod, ["sleep", "3600"], name="client")
    _wait_listening(netnode, server)
    assert netnode.exec(client, ["nc", old_ip, "8080"]).stdout == b"hello from the pod\n"
    netnode.d.stop()
    netnode.d.start()
    assert ipaddress.IPv4Address(_ip(netnode, netnode.pod())) in ipaddress.IPv4Network(cidr)
    for bad in ("10.1.2.3/24", "banana", "10.1.0.0/31"):
        with pytest.raises(grpc.RpcError) as e:
            _update_cidr(netnode, bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pod CIDR" in e.value.details()
