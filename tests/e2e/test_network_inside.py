"""pycrio/network/inside.py: eth0 configured through an rtnetlink socket made inside a pinned netns."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from pycrio import native
from pycrio.network import inside

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def pin_with_eth0(tmp_path):
    """A pinned netns holding a link "eth0" (a veth with its peer in there too; down, no address)."""
    pin = native.ns_pin(str(tmp_path), native.NS_NET)["net"]
    try:
        add = ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]
        subprocess.run(["nsenter", f"--net={pin}", *add], check=True)
        yield pin
    finally:
        native.ns_unpin(pin)


def _ip(pin: str, *args: str) -> list[dict]:
    out = subprocess.run(["nsenter", f"--net={pin}", "ip", "-j", *args], capture_output=True, text=True).stdout
    return json.loads(out)


def test_addresses_link_up_and_default_routes_of_both_families(pin_with_eth0):
    pin = pin_with_eth0
    inside.configure(pin, "eth0", [("10.201.3.7", 24), ("fd00:3::7", 64)], ["10.201.3.1", "fd00:3::1"])
    link = _ip(pin, "addr", "show", "eth0")[0]
    assert "UP" in link["flags"]
    addrs = {(a["local"], a["prefixlen"]) for a in link["addr_info"] if not a["local"].startswith("fe80")}
    assert addrs == {("10.201.3.7", 24), ("fd00:3::7", 64)}
    assert not any(a.get("tentative") for a in link["addr_info"]), "IPv6 without DAD is usable at once"
    assert [r["gateway"] for r in _ip(pin, "-4", "route", "show", "default")] == ["10.201.3.1"]
    assert [r["gateway"] for r in _ip(pin, "-6", "route", "show", "default")] == ["fd00:3::1"]


def test_errors_carry_the_errno_and_no_descriptor_leaks(pin_with_eth0, tmp_path):
    pin = pin_with_eth0
    before = len(os.listdir("/proc/self/fd"))
    inside.configure(pin, "eth0", [("10.201.4.7", 24)], [])
    with pytest.raises(FileExistsError):
        inside.configure(pin, "eth0", [("10.201.4.7", 24)], [])
    with pytest.raises(OSError) as e:
        inside.configure(pin, "nope0", [], [])
    assert e.value.errno == 19  # ENODEV
    with pytest.raises(FileNotFoundError):
        inside.configure(str(tmp_path / "no-such-pin"), "eth0", [], [])
    with pytest.raises(OSError) as e:  # a gateway off every subnet of the link
        inside.configure(pin, "eth0", [], ["192.0.2.1"])
    assert e.value.errno == 101  # ENETUNREACH
    assert len(os.listdir("/proc/self/fd")) == before
