"""Dual stack in the built-in network on the real kernel: an IPv6 address per pod beside the IPv4 one."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess

import pytest

from pycrio.network import nft

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")

SUBNET6 = f"fd00:{random.randrange(1, 0xFFFF):x}:88::/64"
DUAL = pytest.mark.parametrize("net", [{"subnet6": SUBNET6}], indirect=True)


def _in(pin: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={pin}", *cmd], capture_output=True, text=True)


def _addrs(pin: str, family: str) -> list[tuple[str, int]]:
    info = json.loads(_in(pin, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    return [(a["local"], a["prefixlen"]) for a in info["addr_info"] if a["family"] == family]


@DUAL
def test_pods_get_an_ipv6_address_route_and_reach_each_other(net, pods):
    (a, pin_a), (b, pin_b) = pods(2)
    na, nb = net.setup(a, pin_a), net.setup(b, pin_b)
    assert len(na.additional_ips) == 1 and na.additional_ips != nb.additional_ips
    v6 = na.additional_ips[0]
    assert v6.startswith(SUBNET6.split("::")[0]) and _addrs(pin_a, "inet6") == [(v6, 64)] + [
        x for x in _addrs(pin_a, "inet6") if x[0].startswith("fe80")
    ]
    routes = json.loads(_in(pin_a, "ip", "-j", "-6", "route", "show", "default").stdout)
    assert [r.get("gateway") for r in routes] == [str(net.gateway6)]
    ping6 = ["/bin/busybox", "ping", "-6", "-c1", "-W2"]
    assert _in(pin_a, *ping6, nb.additional_ips[0]).returncode == 0, "pod a -> pod b over IPv6"
    assert _in(pin_b, *ping6, str(net.gateway6)).returncode == 0, "pod -> the bridge's IPv6 address"
    assert nft.rules(net.cfg.bridge, family="ip6") == [
        f'ip6 saddr {SUBNET6} ip6 daddr != {SUBNET6} masquerade comment "pycrio {net.cfg.bridge}"'
    ]
    net.teardown(a, pin_a)
    assert net.ipam6.allocations() == {b: nb.additional_ips[0]} and net.allocations() == {b: nb.ip}


@DUAL
def test_remove_bridge_takes_the_ipv6_chain(net):
    net.remove_bridge()
    assert nft.rules(net.cfg.bridge, family="ip6") == []


def test_ipv4_only_network_has_no_ipv6_addresses(net, pods):
    [(a, pin)] = pods(1)
    assert net.setup(a, pin).additional_ips == []
    assert not [x for x in _addrs(pin, "inet6") if not x[0].startswith("fe80")]


def test_dual_stack_pod_through_the_daemon_reports_both_addresses(daemon_factory):
    from pycrio.cri import api_pb2
    from tests.e2e.test_pods import Node

    d = daemon_factory()
    d.write_config(f'[pycrio.network]\nbridge = "{d.bridge}"\nsubnet = "{d.subnet}"\nsubnet6 = "{SUBNET6}"\n')
    d.start()
    node = Node(d, "")
    try:
        pod = node.pod()
        status = node.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod)).status.network
        assert ipaddress.IPv4Address(status.ip) in ipaddress.IPv4Network(d.subnet)
        assert [ipaddress.IPv6Address(x.ip) in ipaddress.IPv6Network(SUBNET6) for x in status.additional_ips] == [True]
        d.stop()
        d.start()
        again = node.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod)).status.network
        assert again == status
    finally:
        node.cleanup()
    assert d.stop() == 0
