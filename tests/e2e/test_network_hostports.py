"""hostPort mappings of the built-in network on the real kernel: nftables DNAT, 127.0.0.1, UDP, conflicts."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.network import BuiltinNetwork, PodInfo, PortMapping, host_veth_name, hostports
from pycrio.state import Database

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")

# A server inside the pod's netns: answers each TCP connection / UDP datagram with b"pod:" + what came.
SERVER = """
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
if proto == "tcp":
    s.listen(16)
print("ready", flush=True)
while True:
    if proto == "tcp":
        c, _ = s.accept()
        c.sendall(b"pod:" + c.recv(100))
        c.close()
    else:
        data, peer = s.recvfrom(100)
        s.sendto(b"pod:" + data, peer)
"""


@pytest.fixture
def serve() -> Iterator:
    """serve(pin, proto, port): a SERVER in the pod's netns; killed afterwards."""
    procs: list[subprocess.Popen] = []

    def start(pin: str, proto: str, port: int) -> None:
        p = subprocess.Popen(
            ["nsenter", f"--net={pin}", sys.executable, "-c", SERVER, proto, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _free_port() -> int:
    return random.randrange(20000, 40000)


def _tcp(host: str, port: int, payload: bytes = b"hi") -> bytes:
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(payload)
        return s.recv(100)


def _udp(host: str, port: int, payload: bytes = b"hi") -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(payload, (host, port))
        return s.recvfrom(100)[0]


def _in_pod_tcp(pin: str, host: str, port: int) -> str:
    code = f"import socket; s=socket.create_connection(({host!r},{port}),3); s.sendall(b'x'); print(s.recv(100))"
    done = subprocess.run(["nsenter", f"--net={pin}", sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def _pod(*mappings: PortMapping) -> PodInfo:
    return PodInfo(name="p", namespace="ns", uid="u", port_mappings=list(mappings))


def test_tcp_hostport_from_loopback_bridge_address_and_other_pods(net, pods, serve):
    (a, pin_a), (b, pin_b) = pods(2)
    port = _free_port()
    pa = net.setup(a, pin_a, _pod(PortMapping("tcp", 8080, port)))
    net.setup(b, pin_b, _pod())
    serve(pin_a, "tcp", 8080)
    gw = str(net.gateway)
    assert _tcp("127.0.0.1", port) == b"pod:hi", "host's 127.0.0.1"
    assert _tcp(gw, port, b"br") == b"pod:br", "the bridge address"
    assert _in_pod_tcp(pin_b, gw, port) == "b'pod:x'", "another pod through the host"
    assert _in_pod_tcp(pin_a, gw, port) == "b'pod:x'", "hairpin: the pod to its own hostPort"
    assert hostports.published(net.cfg.bridge) == [("", "tcp", port, pa.ip, 8080)]
    net.teardown(a, pin_a)
    net.hostports.wait_idle()
    assert hostports.published(net.cfg.bridge) == [] and a not in net.allocations()
    with pytest.raises(OSError):
        _tcp("127.0.0.1", port)


def test_udp_hostport_and_host_ip_bound_mapping(net, pods, serve):
    [(a, pin)] = pods(1)
    udp_port, tcp_port = _free_port(), _free_port()
    net.setup(a, pin, _pod(PortMapping("udp", 5353, udp_port), PortMapping("tcp", 80, tcp_port, "127.0.0.1")))
    serve(pin, "udp", 5353)
    serve(pin, "tcp", 80)
    assert _udp("127.0.0.1", udp_port, b"dns") == b"pod:dns"
    assert _udp(str(net.gateway), udp_port) == b"pod:hi"
    assert _tcp("127.0.0.1", tcp_port) == b"pod:hi"
    with pytest.raises(OSError):  # bound to 127.0.0.1 only: nothing on the bridge address
        _tcp(str(net.gateway), tcp_port)


def test_taken_hostport_refuses_the_second_pod_and_leaves_nothing_of_it(net, pods):
    (a, pin_a), (b, pin_b), (c, pin_c) = pods(3)
    port = _free_port()
    net.setup(a, pin_a, _pod(PortMapping("tcp", 80, port)))
    with pytest.raises(FailedPrecondition, match=f"hostPort 0.0.0.0:{port}/tcp is already used by another pod"):
        net.setup(b, pin_b, _pod(PortMapping("udp", 53, port + 1), PortMapping("tcp", 8080, port)))
    # A mapping on one address clashes with the same port on every address, too.
    with pytest.raises(FailedPrecondition, match="already used"):
        net.setup(c, pin_c, _pod(PortMapping("tcp", 80, port, "127.0.0.1")))
    assert os.listdir(f"/sys/class/net/{net.cfg.bridge}/brif") == [host_veth_name(a)]
    assert sorted(net.allocations()) == [a]
    assert [m[:3] for m in hostports.published(net.cfg.bridge)] == [("", "tcp", port)]
    # Another protocol on the same number is another port.
    net.setup(b, pin_b, _pod(PortMapping("udp", 53, port)))
    assert len(hostports.published(net.cfg.bridge)) == 2


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (PortMapping("tcp", 80, 70000), "ports must be 1-65535"),
        (PortMapping("tcp", 0, 8080), "ports must be 1-65535"),
        (PortMapping("tcp", 80, 8080, "::1"), "is IPv6"),
        (PortMapping("tcp", 80, 8080, "localhost"), "is not an IP address"),
    ],
)
def test_bad_mappings_are_invalid_argument_and_leave_nothing(net, pods, mapping, message):
    [(a, pin)] = pods(1)
    with pytest.raises(InvalidArgument, match=message):
        net.setup(a, pin, _pod(mapping))
    assert net.allocations() == {} and hostports.published(net.cfg.bridge) == []


def test_the_same_port_twice_in_one_pod_is_refused(net, pods):
    [(a, pin)] = pods(1)
    with pytest.raises(InvalidArgument, match="mapped twice"):
        net.setup(a, pin, _pod(PortMapping("tcp", 80, 30080), PortMapping("tcp", 81, 30080)))


def test_a_restarted_network_still_removes_the_hostports_of_old_pods(net, pods, tmp_path):
    [(a, pin)] = pods(1)
    net.setup(a, pin, _pod(PortMapping("tcp", 80, _free_port())))
    db = Database(str(tmp_path / "meta.db"))  # the net fixture's database, as a restarted daemon opens it
    again = BuiltinNetwork(net.cfg, db)
    try:
        again.start()
        again.teardown(a, pin)
        again.hostports.wait_idle()
        assert hostports.published(net.cfg.bridge) == [] and again.allocations() == {}
    finally:
        again.close()
        db.close()


def test_a_stopped_pods_hostport_goes_to_the_next_pod_at_once(net, pods, serve):
    """Teardown unpublishes in the background (nft waits for an RCU grace period); the address is
    held until then, and a new pod asking for the same hostPort waits for it instead of failing."""
    (a, pin_a), (b, pin_b) = pods(2)
    port = _free_port()
    pa = net.setup(a, pin_a, _pod(PortMapping("tcp", 80, port)))
    net.teardown(a, pin_a)
    pb = net.setup(b, pin_b, _pod(PortMapping("tcp", 8080, port)))
    serve(pin_b, "tcp", 8080)
    assert _tcp("127.0.0.1", port) == b"pod:hi"
    assert hostports.published(net.cfg.bridge) == [("", "tcp", port, pb.ip, 8080)]
    assert pb.ip != pa.ip and a not in net.allocations()


def test_remove_bridge_takes_maps_and_chains(net, pods):
    [(a, pin)] = pods(1)
    net.setup(a, pin, _pod(PortMapping("tcp", 80, _free_port())))
    net.teardown(a, pin)
    net.remove_bridge()
    listing = subprocess.run(["nft", "list", "table", "ip", "pycrio"], capture_output=True, text=True).stdout
    assert net.cfg.bridge not in listing
