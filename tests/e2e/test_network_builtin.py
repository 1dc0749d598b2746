"""pycrio/network/builtin.py on the real kernel: bridge, veth pairs in pinned netns, ping, nftables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from pycrio import native
from pycrio.errors import NotFound
from pycrio.network import host_veth_name, nft

PING = ["/bin/busybox", "ping", "-c1", "-W1"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")


def _in(pin: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={pin}", *cmd], capture_output=True, text=True)


def _ip_json(pin: str, *args: str) -> list[dict]:
    return json.loads(_in(pin, "ip", "-j", *args).stdout)


def _host_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _bridge_ports(net) -> set[str]:
    """The links on the test's own bridge (other test sessions may add links elsewhere meanwhile)."""
    return set(os.listdir(f"/sys/class/net/{net.cfg.bridge}/brif"))


def test_ensure_bridge_idempotent_ready_and_one_masquerade_rule(net):
    assert net.ready() == (True, "")
    net.ensure_bridge()
    net.ensure_bridge()
    br, sub = net.cfg.bridge, net.subnet
    assert nft.rules(br) == [
        f'ip saddr {sub} ip daddr != {sub} masquerade comment "pycrio {br}"',
        f'oifname "{br}" ip saddr 127.0.0.0/8 ct status dnat masquerade',
        f'oifname "{br}" ip saddr {sub} ip daddr {sub} ct status dnat masquerade',
    ]
    assert nft.rules(br, f"hp-{br}-guard") == [f'iifname "{br}" ip daddr 127.0.0.0/8 ct status ! dnat drop']
    assert len(nft.rules(br, f"hp-{br}-pre")) == len(nft.rules(br, f"hp-{br}-out")) == 2
    with open(f"/proc/sys/net/ipv4/conf/{br}/route_localnet") as f:
        assert f.read().strip() == "1"
    info = json.loads(subprocess.run(["ip", "-j", "addr", "show", net.cfg.bridge], capture_output=True).stdout)[0]
    assert [(a["local"], a["prefixlen"]) for a in info["addr_info"] if a["family"] == "inet"] == [
        (str(net.gateway), 24)
    ]
    assert "UP" in info["flags"] and info["mtu"] == 1500
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == "1"


def test_ready_reports_missing_and_down_bridge(net):
    subprocess.run(["ip", "link", "set", net.cfg.bridge, "down"], check=True)
    assert net.ready() == (False, f"bridge {net.cfg.bridge} is down")
    net.remove_bridge()
    assert net.ready() == (False, f"bridge {net.cfg.bridge} does not exist")
    assert nft.rules(net.cfg.bridge) == []
    net.ensure_bridge()
    assert net.ready() == (True, "")


def test_two_pods_distinct_ips_eth0_route_mtu_and_ping(net, pods):
    (a, pin_a), (b, pin_b) = pods(2)
    na, nb = net.setup(a, pin_a), net.setup(b, pin_b)
    assert na.ip != nb.ip and na.gateway == nb.gateway == str(net.gateway) and na.prefix == 24
    assert na.interface == "eth0" and na.host_veth == host_veth_name(a)
    for pin, pn in ((pin_a, na), (pin_b, nb)):
        eth0 = _ip_json(pin, "addr", "show", "eth0")[0]
        assert eth0["mtu"] == 1500 and "UP" in eth0["flags"]
        assert [(x["local"], x["prefixlen"]) for x in eth0["addr_info"] if x["family"] == "inet"] == [(pn.ip, 24)]
        assert [(r["dst"], r.get("gateway")) for r in _ip_json(pin, "route", "show", "default")] == [
            ("default", str(net.gateway))
        ]
        assert "UP" in _ip_json(pin, "link", "show", "lo")[0]["flags"]
    link = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show", na.host_veth], capture_output=True).stdout)[0]
    assert link["master"] == net.cfg.bridge and link["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert _in(pin_a, *PING, nb.ip).returncode == 0, "pod a -> pod b"
    assert _in(pin_b, *PING, na.ip).returncode == 0, "pod b -> pod a"
    assert _in(pin_a, *PING, str(net.gateway)).returncode == 0, "pod -> gateway (host)"
    assert subprocess.run([*PING, na.ip], capture_output=True).returncode == 0, "host -> pod"
    assert net.allocations() == {a: na.ip, b: nb.ip}


def test_teardown_is_idempotent_and_tolerates_a_missing_netns(net, pods):
    [(a, pin)] = pods(1)
    pn = net.setup(a, pin)
    net.teardown(a, pin)
    assert pn.host_veth not in _host_links() and net.allocations() == {}
    net.teardown(a, pin)
    native.ns_unpin(pin)
    net.teardown(a, pin)
    net.teardown("never-set-up", None)


def test_setup_failure_leaves_no_veth_and_no_allocation(net, pods, tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        net.setup("p1", str(tmp_path / "no-such-netns"))
    not_ns = tmp_path / "plain-file"
    not_ns.write_text("")
    with pytest.raises(NotFound, match="not a network namespace"):
        net.setup("p2", str(not_ns))
    # Half-way: the veth and address exist when the in-netns step fails (the pod already has a default route).
    [(a, pin)] = pods(1)
    assert _in(pin, "ip", "route", "add", "default", "dev", "lo").returncode == 0
    with pytest.raises(OSError, match="File exists"):
        net.setup(a, pin)
    assert _bridge_ports(net) == set() and host_veth_name(a) not in _host_links() and net.allocations() == {}
    assert _ip_json(pin, "link", "show") and not [x for x in _ip_json(pin, "link", "show") if x["ifname"] == "eth0"]


def test_setup_without_bridge_fails_cleanly(net, pods):
    [(a, pin)] = pods(1)
    net.remove_bridge()
    with pytest.raises(NotFound, match="ensure_bridge"):
        net.setup(a, pin)
    assert net.allocations() == {}


def test_twenty_pods_set_up_and_torn_down_leave_nothing_and_timing(net, pods, capsys):
    made = pods(20)
    t0 = time.perf_counter()
    ips = [net.setup(pod_id, pin).ip for pod_id, pin in made]
    t1 = time.perf_counter()
    assert len(set(ips)) == 20
    for pod_id, pin in made:
        net.teardown(pod_id, pin)
    t2 = time.perf_counter()
    assert _bridge_ports(net) == set() and net.allocations() == {}
    assert not {host_veth_name(pod_id) for pod_id, _ in made} & _host_links()
    with capsys.disabled():
        print(
            f"\nbuiltin network: setup {(t1 - t0) / 20 * 1000:.1f} ms/pod, teardown {(t2 - t1) / 20 * 1000:.1f} ms/pod"
        )
