"""pycrio/network/ipam.py and [pycrio.network]: allocation, release, reuse, exhaustion, persistence, config."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from pycrio import config
from pycrio.errors import ResourceExhausted
from pycrio.network.ipam import Ipam
from pycrio.state import Database


def _ipam(path: str, subnet: str = "10.213.7.0/29", gateway: str | None = None) -> tuple[Database, Ipam]:
    net = ipaddress.IPv4Network(subnet)
    db = Database(path)
    gw = ipaddress.IPv4Address(gateway) if gateway else next(net.hosts())
    return db, Ipam(db, net, gw)


def test_allocates_hosts_never_network_broadcast_gateway_and_exhausts(tmp_path):
    db, ipam = _ipam(str(tmp_path / "m.db"))
    got = [str(ipam.allocate(f"pod{i}")) for i in range(5)]
    assert got == ["10.213.7.2", "10.213.7.3", "10.213.7.4", "10.213.7.5", "10.213.7.6"]
    with pytest.raises(ResourceExhausted, match="10.213.7.0/29"):
        ipam.allocate("pod-extra")
    assert ipam.allocations() == {f"pod{i}": ip for i, ip in enumerate(got)}
    ipam.close(), db.close()


def test_gateway_in_the_middle_is_skipped(tmp_path):
    db, ipam = _ipam(str(tmp_path / "m.db"), gateway="10.213.7.3")
    got = {str(ipam.allocate(f"pod{i}")) for i in range(5)}
    assert got == {"10.213.7.1", "10.213.7.2", "10.213.7.4", "10.213.7.5", "10.213.7.6"}
    ipam.close(), db.close()


def test_same_pod_gets_its_address_again_release_and_reuse(tmp_path):
    db, ipam = _ipam(str(tmp_path / "m.db"))
    first = ipam.allocate("a")
    assert ipam.allocate("a") == first
    for i in range(4):
        ipam.allocate(f"b{i}")
    assert ipam.release("b1") == ["10.213.7.4"]
    assert ipam.release("b1") == []  # idempotent
    assert str(ipam.allocate("c")) == "10.213.7.4"  # the only free one: reused
    ipam.close(), db.close()


def test_round_robin_does_not_reuse_a_just_released_address_while_others_are_free(tmp_path):
    db, ipam = _ipam(str(tmp_path / "m.db"))
    a = ipam.allocate("a")
    ipam.release("a")
    assert ipam.allocate("b") != a
    ipam.close(), db.close()


def test_allocations_survive_reopening_the_database(tmp_path):
    path = str(tmp_path / "m.db")
    db, ipam = _ipam(path)
    a, b = ipam.allocate("a"), ipam.allocate("b")
    ipam.close(), db.close()
    db, ipam = _ipam(path)
    assert ipam.allocations() == {"a": str(a), "b": str(b)}
    c = ipam.allocate("c")
    assert c not in (a, b)
    ipam.close(), db.close()


def test_concurrent_allocations_are_distinct(tmp_path):
    db, ipam = _ipam(str(tmp_path / "m.db"), subnet="10.213.0.0/24")
    db2, ipam2 = _ipam(str(tmp_path / "m.db"), subnet="10.213.0.0/24")  # a second connection, as another thread
    out: list[str] = []

    def run(which: Ipam, prefix: str) -> None:
        for i in range(50):
            out.append(str(which.allocate(f"{prefix}{i}")))

    threads = [threading.Thread(target=run, args=(w, p)) for w, p in ((ipam, "x"), (ipam2, "y"), (ipam, "z"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 150 and len(set(out)) == 150
    for i in (ipam, ipam2, db, db2):
        i.close()


def _load(tmp_path, text: str) -> config.Config:
    path = tmp_path / "pycrio.conf"
    path.write_text(text)
    return config.load(str(path), str(tmp_path))


def test_network_config_defaults_and_derived_gateway():
    cfg = config.Config()
    assert cfg.network.bridge == "pycrio0" and cfg.network.subnet == "10.88.0.0/16" and cfg.network.gateway == ""
    assert cfg.resolved().network.gateway == "10.88.0.1"
    assert cfg.network.gateway == ""  # resolved() is a copy
    assert "[pycrio.network]" in config.render(cfg)


@pytest.mark.parametrize(
    "text, match",
    [
        ('subnet = "10.88.0.1/16"', "subnet"),  # host bits set
        ('subnet = "10.88.0.0/31"', "too small"),
        ('subnet = "fd00::/64"', "IPv4"),
        ('gateway = "10.89.0.1"', "not a host address"),
        ('gateway = "10.88.255.255"', "not a host address"),
        ('gateway = "nope"', "IPv4 address"),
        ("mtu = 40", "MTU"),
        ('subnet6 = "10.0.0.0/8"', "IPv6 CIDR"),
        ('subnet6 = "fd00::1/64"', "IPv6 CIDR"),
        ('subnet6 = "fd00::/124"', "too small"),
        ('bridge = "a-bridge-name-too-long"', "interface name"),
        ('bridge = "br/0"', "interface name"),
    ],
)
def test_network_config_rejects(tmp_path, text, match):
    with pytest.raises(config.ConfigError, match=match):
        _load(tmp_path, f"[pycrio.network]\n{text}\n")


def test_network_config_accepts(tmp_path):
    cfg = _load(tmp_path, '[pycrio.network]\nbridge = "cni9"\nsubnet = "10.1.2.0/24"\ngateway = "10.1.2.254"\n')
    assert cfg.resolved().network.gateway == "10.1.2.254"


def test_ipv4_and_ipv6_ipams_share_the_table_each_seeing_its_family(tmp_path):
    db = Database(str(tmp_path / "meta.db"))
    v4 = Ipam(db, ipaddress.IPv4Network("10.213.7.0/29"), ipaddress.IPv4Address("10.213.7.1"))
    v6 = Ipam(db, ipaddress.IPv6Network("fd00:7::/120"), ipaddress.IPv6Address("fd00:7::1"))
    try:
        assert str(v4.allocate("a")) == "10.213.7.2" and str(v6.allocate("a")) == "fd00:7::2"
        assert str(v6.allocate("b")) == "fd00:7::3" and str(v4.allocate("b")) == "10.213.7.3"
        assert v4.allocations() == {"a": "10.213.7.2", "b": "10.213.7.3"}
        assert v6.allocations() == {"a": "fd00:7::2", "b": "fd00:7::3"}
        assert v6.address("a") == "fd00:7::2" and v4.address("a") == "10.213.7.2"
        assert sorted(v4.release("a")) == ["10.213.7.2", "fd00:7::2"]  # a pod's release frees both families
        assert v6.allocations() == {"b": "fd00:7::3"}
        # After a restart the IPv6 cursor continues after the newest IPv6 address, not an IPv4 one.
        again = Ipam(db, ipaddress.IPv6Network("fd00:7::/120"), ipaddress.IPv6Address("fd00:7::1"))
        assert str(again.allocate("c")) == "fd00:7::4"
        again.close()
    finally:
        v4.close()
        v6.close()
        db.close()
