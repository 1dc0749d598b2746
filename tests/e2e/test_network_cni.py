"""pycrio/network/cni.py with Debian's CNI plugins (bridge, host-local, portmap, loopback) and shell-script
plugins, against pinned network namespaces; then a daemon in CNI mode with real containers."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from pycrio import native
from pycrio.config import NetworkConfig
from pycrio.cri import api_pb2
from pycrio.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from pycrio.network.cni import CniNetwork
from pycrio.network.pod import PodInfo, PortMapping
from tests.e2e.test_images import registry_daemon
from tests.e2e.test_pods import Node, busybox_node
from tests.support import cni as cnisupport
from tests.support.cni import CniEnv

pytestmark = pytest.mark.skipif(not cnisupport.available(), reason="needs root and the CNI plugins in /usr/lib/cni")

PING = ["/bin/busybox", "ping", "-c1", "-W1"]


@pytest.fixture
def env(tmpdir_short) -> Iterator[CniEnv]:
    e = CniEnv(os.path.join(tmpdir_short, "cni"))
    yield e
    e.cleanup()


def _net(env: CniEnv, **kw) -> CniNetwork:
    cfg = NetworkConfig(
        backend="cni",
        cni_conf_dir=env.conf_dir,
        cni_bin_dirs=env.bin_dirs,
        cni_cache_dir=os.path.join(env.base, "cache"),
        cni_timeout=kw.pop("timeout", 10),
        **kw,
    )
    return CniNetwork(cfg)


@pytest.fixture
def pins(tmpdir_short) -> Iterator:
    """pins(n) -> [(pod_id, netns pin)]; unpinned afterwards."""
    made: list[str] = []

    def make(count: int = 1) -> list[tuple[str, str]]:
        out = []
        for _ in range(count):
            pod_id = os.urandom(32).hex()
            d = os.path.join(tmpdir_short, "pods", pod_id[:12])
            os.makedirs(d)
            pin = native.ns_pin(d, native.NS_NET)["net"]
            made.append(pin)
            out.append((pod_id, pin))
        return out

    yield make
    for pin in made:
        if os.path.exists(pin):
            native.ns_unpin(pin)


def _gone(pid: int, timeout: float = 2.0) -> bool:
    """pid has exited (gone or a zombie) within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def _in(pin: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={pin}", *cmd], capture_output=True, text=True)


def _addrs(pin: str, ifname: str) -> list[str]:
    info = json.loads(_in(pin, "ip", "-j", "addr", "show", ifname).stdout or "[]")
    return [a["local"] for i in info for a in i["addr_info"] if a["family"] == "inet"]


# ---------------------------------------------------------------- the backend, real plugins


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_add_check_del_with_bridge_portmap_loopback(env, pins, version):
    env.write(env.conflist(version))
    net = _net(env)
    net.start()
    assert net.ready() == (True, "")
    [(pod, pin)] = pins(1)
    info = PodInfo(name="web", namespace="ns", uid="u1")
    pn = net.setup(pod, pin, info)
    assert pn.ip.startswith(env.subnet.rsplit(".", 1)[0] + ".") and pn.prefix == 24 and pn.gateway == env.gateway
    assert pn.interface == "eth0" and pn.additional_ips == []
    assert _addrs(pin, "eth0") == [pn.ip] and "UP" in _in(pin, "ip", "link", "show", "lo").stdout
    assert _in(pin, *PING, env.gateway).returncode == 0, "pod -> bridge gateway"
    assert net.allocations() == {pod: pn.ip} and env.reserved_ips() == [pn.ip]
    assert env.nat_rules(), "bridge ipMasq rules"
    # CHECK with the stored result (no hostPort: Debian's portmap 1.1.1 fails CHECK of IPv4-only
    # mappings, containernetworking/plugins#819).
    net.check(pod, pin)
    assert _in(pin, "ip", "route", "del", "default").returncode == 0
    with pytest.raises(Unavailable, match="CNI plugin bridge CHECK failed"):
        net.check(pod, pin)
    net.teardown(pod, pin)
    assert net.allocations() == {} and env.reserved_ips() == [] and env.nat_rules() == []
    assert not [x for x in json.loads(_in(pin, "ip", "-j", "link").stdout) if x["ifname"] == "eth0"]
    net.teardown(pod, pin)  # idempotent
    net.teardown("never-added")


def test_ready_reasons_and_setup_refused_while_not_ready(env, pins):
    net = _net(env)
    net.start()  # nothing configured: logs, does not raise
    ok, reason = net.ready()
    assert not ok and f"no valid CNI network configuration in {env.conf_dir}" in reason
    env.write("{not json", "05-broken.conflist")
    ok, reason = net.ready()
    assert not ok and "05-broken.conflist: invalid JSON" in reason
    env.write({"cniVersion": "1.0.0", "name": env.name, "plugins": [{"type": "no-such-plugin"}]})
    ok, reason = net.ready()
    assert not ok and "plugin no-such-plugin not found in" in reason and env.bin_dir in reason
    [(pod, pin)] = pins(1)
    with pytest.raises(FailedPrecondition, match="CNI is not ready.*no-such-plugin"):
        net.setup(pod, pin, PodInfo())
    assert net.allocations() == {} and not os.listdir(net.results_dir)
    env.write(env.conflist(), "10-test.conflist")
    assert net.ready() == (True, ""), "the broken file is skipped, the next valid one used"


def test_a_failing_plugin_is_a_clear_error_and_the_add_is_undone(env, pins):
    env.fake_plugin(
        "fail",
        'cat >/dev/null\n[ "$CNI_COMMAND" = DEL ] && exit 0\n'
        'echo \'{"cniVersion": "1.0.0", "code": 7, "msg": "bad config", "details": "no such thing"}\'\nexit 1\n',
    )
    env.write(env.conflist(extra=[{"type": "fail"}]))
    net = _net(env)
    [(pod, pin)] = pins(1)
    links = set(os.listdir("/sys/class/net"))
    with pytest.raises(FailedPrecondition, match=r"CNI plugin fail ADD failed \(code 7\): bad config: no such thing"):
        net.setup(pod, pin, PodInfo(port_mappings=[PortMapping("tcp", 80, random.randrange(20000, 30000))]))
    # bridge, portmap and loopback were DELed: no reservation, no rules, no veth, no record
    assert env.reserved_ips() == [] and env.nat_rules() == [] and net.allocations() == {}
    assert set(os.listdir("/sys/class/net")) - links <= {env.bridge}
    assert _addrs(pin, "eth0") == []


def test_a_hanging_plugin_is_killed_after_the_timeout(env, pins):
    marker = os.path.join(env.base, "sleeper.pid")
    env.fake_plugin(
        "hang", f'cat >/dev/null\nif [ "$CNI_COMMAND" = ADD ]; then sleep 60 & echo $! > {marker}; wait; fi\nexit 0\n'
    )
    env.write(env.conflist(extra=[{"type": "hang"}]))
    net = _net(env, timeout=1)
    [(pod, pin)] = pins(1)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"CNI plugin hang \(.*/bin/hang\) ADD did not finish in 1 s; killed"):
        net.setup(pod, pin, PodInfo())
    assert time.monotonic() - started < 5
    with open(marker) as f:
        sleeper = int(f.read())
    assert _gone(sleeper), "the plugin's child was killed with it"
    assert env.reserved_ips() == [] and net.allocations() == {}


def test_chain_parameters_reverse_del_and_del_with_the_stored_config(env, pins):
    """What each plugin is given, recorded by a shell-script plugin that passes prevResult through."""
    log = os.path.join(env.base, "calls")
    os.mkdir(log)
    script = (
        f"n=$(ls {log} | wc -l)\ncat > {log}/$n-$CNI_COMMAND-$PLUGIN.json\n"
        f"env | grep ^CNI_ | sort > {log}/$n-$CNI_COMMAND-$PLUGIN.env\n"
        '[ "$CNI_COMMAND" = ADD ] || exit 0\n'
        'echo \'{"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "\'"$CNI_NETNS"\'"}],'
        ' "ips": [{"version": "6", "address": "fd00::5/64", "interface": 0},'
        ' {"version": "4", "address": "10.1.2.3/16", "gateway": "10.1.0.1", "interface": 0}]}\'\n'
    )
    env.fake_plugin("first", "PLUGIN=first\n" + script)
    env.fake_plugin("second", "PLUGIN=second\n" + script)
    conf = {
        "cniVersion": "0.4.0",
        "name": env.name,
        "plugins": [
            {"type": "first", "capabilities": {"portMappings": True, "bandwidth": True}, "keep": [1, 2]},
            {"type": "second", "capabilities": {"dns": True}},
        ],
    }
    env.write(conf)
    net = _net(env)
    [(pod, pin)] = pins(1)
    info = PodInfo(
        name="p",
        namespace="ns",
        uid="uid-1",
        port_mappings=[PortMapping("tcp", 80, 8080, "127.0.0.1")],
        dns_servers=["10.0.0.10"],
        annotations={"kubernetes.io/ingress-bandwidth": "10M"},
    )
    pn = net.setup(pod, pin, info)
    assert (pn.ip, pn.prefix, pn.gateway, pn.additional_ips) == ("10.1.2.3", 16, "10.1.0.1", ["fd00::5"])
    os.unlink(os.path.join(env.conf_dir, "10-test.conflist"))  # DEL must not need it
    net.teardown(pod, pin)
    calls = sorted(os.listdir(log), key=lambda n: int(n.split("-")[0]))
    assert [c.split(".")[0] for c in calls[::2]] == ["0-ADD-first", "2-ADD-second", "4-DEL-second", "6-DEL-first"]

    def read(name: str) -> tuple[dict, dict]:
        with open(os.path.join(log, name + ".json")) as f:
            stdin = json.load(f)
        with open(os.path.join(log, name + ".env")) as f:
            environ = dict(line.rstrip("\n").split("=", 1) for line in f)
        return stdin, environ

    first, environ = read("0-ADD-first")
    assert first == {
        "type": "first",
        "keep": [1, 2],
        "cniVersion": "0.4.0",
        "name": env.name,
        "runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}],
            "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 2**32 - 1},
        },
    }
    assert environ == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": pod,
        "CNI_NETNS": pin,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID={pod};K8S_POD_UID=uid-1"
        ),
        "CNI_PATH": f"{env.bin_dir}:/usr/lib/cni",
    }
    second, _ = read("2-ADD-second")
    assert second["runtimeConfig"] == {"dns": {"servers": ["10.0.0.10"], "searches": [], "options": []}}
    assert second["prevResult"]["ips"][1]["address"] == "10.1.2.3/16" and "capabilities" not in second
    del_second, del_env = read("4-DEL-second")
    del_first, _ = read("6-DEL-first")
    assert del_second["prevResult"] == del_first["prevResult"] == second["prevResult"]
    assert del_first["runtimeConfig"] == first["runtimeConfig"] and del_env["CNI_COMMAND"] == "DEL"


def test_status_and_gc_for_a_1_1_0_network(env, pins):
    log = os.path.join(env.base, "calls.log")
    env.fake_plugin(
        "v11",
        f'input=$(cat)\necho "$CNI_COMMAND $input" >> {log}\n'
        "case $CNI_COMMAND in\n"
        '  STATUS) [ -e "$(dirname $0)/down" ] && { echo \'{"code": 50, "msg": "agent down"}\'; exit 1; }; exit 0;;\n'
        '  ADD) echo \'{"cniVersion": "1.1.0", "ips": [{"address": "10.9.0.2/24"}]}\';;\n'
        "esac\nexit 0\n",
    )
    env.write({"cniVersion": "1.1.0", "name": env.name, "plugins": [{"type": "v11"}]})
    net = _net(env)
    assert net.ready() == (True, "")
    open(os.path.join(env.bin_dir, "down"), "w").close()
    ok, reason = net.ready()
    assert not ok and "CNI plugin v11 STATUS failed (code 50): agent down" in reason
    [(pod, pin)] = pins(1)
    assert net.setup(pod, pin, PodInfo()).ip == "10.9.0.2"
    net.start()  # GC with the attachments pycrio holds
    with open(log) as f:
        gc = [json.loads(line.split(" ", 1)[1]) for line in f if line.startswith("GC ")]
    assert gc == [
        {
            "type": "v11",
            "cniVersion": "1.1.0",
            "name": env.name,
            "cni.dev/valid-attachments": [{"containerID": pod, "ifname": "eth0"}],
        }
    ]
    net.teardown(pod, pin)


# ---------------------------------------------------------------- a daemon in CNI mode


def _cni_config(d, env: CniEnv, timeout: int = 10) -> str:
    return (
        f'[pycrio.network]\nbackend = "cni"\nbridge = "{d.bridge}"\ncni_conf_dir = "{env.conf_dir}"\n'
        f"cni_bin_dirs = {json.dumps(env.bin_dirs)}\ncni_timeout = {timeout}\n"
    )


@pytest.fixture
def cni_node(env, daemon_factory, registry, busybox_image) -> Iterator[Node]:
    env.write(env.conflist())
    probe = daemon_factory("probe")  # only for its bridge name, never started
    d = registry_daemon(daemon_factory, registry.host, config=_cni_config(probe, env), log_level="debug")
    with busybox_node(d, registry.host) as n:
        yield n


def _network_condition(d) -> api_pb2.RuntimeCondition:
    conditions = d.runtime.Status(api_pb2.StatusRequest(), timeout=10).status.conditions
    return next(c for c in conditions if c.type == "NetworkReady")


def _entries(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def _pod_ip(node: Node, pod: str) -> str:
    status = node.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=10).status
    return status.network.ip


def test_two_pods_talk_over_tcp_and_a_host_port_reaches_a_pod(cni_node, env, capsys):
    node = cni_node
    assert _network_condition(node.d).status
    host_port = random.randrange(20000, 30000)
    server = node.pod(port_mappings=[api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=80, host_port=host_port)])
    client = node.pod()
    server_ip, client_ip = _pod_ip(node, server), _pod_ip(node, client)
    assert server_ip != client_ip and server_ip.startswith(env.subnet.rsplit(".", 1)[0] + ".")
    node.run(server, ["sh", "-c", "while true; do echo hello-from-server | nc -l -p 80; done"], name="srv")
    waiter = node.run(client, ["sh", "-c", "while true; do sleep 1; done"], name="cli")
    deadline = time.monotonic() + 10
    while True:
        r = node.exec(waiter, ["sh", "-c", f"nc {server_ip} 80 </dev/null"])
        if b"hello-from-server" in r.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.stdout == b"hello-from-server\n", r
    # The hostPort, through portmap's DNAT, from the host (to the bridge's address: a local one).
    got = b""
    while b"hello" not in got and time.monotonic() < deadline + 5:
        try:
            with socket.create_connection((env.gateway, host_port), timeout=2) as s:
                got = s.recv(100)
        except OSError:
            time.sleep(0.1)
    assert got == b"hello-from-server\n"
    assert sorted(env.reserved_ips()) == sorted([server_ip, client_ip])
    # Stop: the DEL releases the address and the rules; the record goes.
    for pod in (server, client):
        node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    assert env.reserved_ips() == [] and env.nat_rules() == []
    assert os.listdir(os.path.join(node.d.root, "cni", "results")) == []
    # A quick latency figure for RunPodSandbox / StopPodSandbox in CNI mode (bridge + portmap + loopback).
    runs, stops = [], []
    for _ in range(10):
        t = time.perf_counter()
        pod = node.pod()
        runs.append(time.perf_counter() - t)
        t = time.perf_counter()
        node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
        stops.append(time.perf_counter() - t)
        node.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    with capsys.disabled():
        runs.sort()
        stops.sort()
        print(
            f"\nCNI mode: RunPodSandbox median {runs[5] * 1000:.0f} ms, StopPodSandbox median {stops[5] * 1000:.0f} ms"
        )


def test_del_after_a_daemon_kill_and_restart_uses_the_stored_result(cni_node, env):
    node = cni_node
    pod = node.pod(port_mappings=[api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=80, host_port=23456)])
    ip = _pod_ip(node, pod)
    assert env.reserved_ips() == [ip] and env.nat_rules()
    node.d.stop(signal.SIGKILL)
    # The conf dir changes while no daemon runs: the DEL still gets what the ADD had.
    conf = env.conflist()
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.251.251.0/24"}]]
    env.write(conf)
    node.d.start()
    assert _pod_ip(node, pod) == ip
    node.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    assert env.reserved_ips() == [] and env.nat_rules() == []


def test_a_pod_whose_record_is_gone_is_deleted_from_the_network_at_restart(cni_node, env):
    node = cni_node
    pod = node.pod()
    node.d.stop(signal.SIGKILL)
    # As if the daemon died between ADD and recording the pod: the pod is unknown, the attachment stored.
    with sqlite3.connect(os.path.join(node.d.root, "pycrio.db")) as db:
        db.execute("DELETE FROM pods WHERE id = ?", (pod,))
    db.close()
    assert env.reserved_ips()
    node.d.start()
    assert env.reserved_ips() == [] and env.nat_rules() == []
    assert os.listdir(os.path.join(node.d.root, "cni", "results")) == []


def test_not_ready_network_and_run_pod_sandbox_fails_cleanly(env, daemon_factory, registry, busybox_image):
    probe = daemon_factory("probe")
    d = registry_daemon(daemon_factory, registry.host, config=_cni_config(probe, env))
    try:
        cond = _network_condition(d)
        assert not cond.status and cond.reason == "NetworkPluginNotReady"
        assert f"no valid CNI network configuration in {env.conf_dir}" in cond.message
        node = Node(d, "")
        links = set(os.listdir("/sys/class/net"))
        for conf, wanted in (
            (None, "no valid CNI network configuration"),
            ({"cniVersion": "1.0.0", "name": env.name, "plugins": [{"type": "nope"}]}, "plugin nope not found"),
        ):
            if conf is not None:
                env.write(conf)
                cond = _network_condition(d)
                assert not cond.status and wanted in cond.message
            with pytest.raises(grpc.RpcError) as info:
                node.pod()
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and wanted in info.value.details()
            assert list(node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items) == []
            assert _entries(os.path.join(d.runroot, "pods")) == _entries(os.path.join(d.runroot, "ns")) == []
            assert set(os.listdir("/sys/class/net")) == links
        env.write(env.conflist())
        assert _network_condition(d).status, "a conflist written later makes the network ready, no restart"
    finally:
        assert d.stop() == 0, d.log()


def test_wipe_deletes_stored_attachments_and_the_cache(cni_node, env):
    node = cni_node
    node.pod(port_mappings=[api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=80, host_port=23457)])
    assert env.reserved_ips() and env.nat_rules()
    node.d.stop(signal.SIGKILL)
    done = subprocess.run(
        [sys.executable, "-m", "pycrio.cli", "wipe", *node.d.args()], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "CNI DEL of pod" in done.stdout and "failed" not in done.stdout
    assert env.reserved_ips() == [] and env.nat_rules() == []
    assert not os.path.exists(os.path.join(node.d.root, "cni"))
