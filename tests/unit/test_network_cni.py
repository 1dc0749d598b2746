"""pycrio/network/cni_conf.py, cni_result.py, cni_exec.py's error mapping and the CNI config options."""

from __future__ import annotations

import json

import pytest

from pycrio import config
from pycrio.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from pycrio.network import cni_conf, cni_result
from pycrio.network.cni_exec import CniPluginError, plugin_error
from pycrio.network.pod import PodInfo, PortMapping

RESULT_040 = {
    "cniVersion": "0.4.0",
    "interfaces": [
        {"name": "cni0", "mac": "00:11:22:33:44:55"},
        {"name": "veth1", "mac": "00:11:22:33:44:66"},
        {"name": "eth0", "mac": "00:11:22:33:44:77", "sandbox": "/run/netns/x"},
    ],
    "ips": [
        {"version": "4", "interface": 0, "address": "10.22.0.1/16"},  # the bridge's own: not the pod's
        {"version": "6", "interface": 2, "address": "fd00::2/64", "gateway": "fd00::1"},
        {"version": "4", "interface": 2, "address": "10.22.0.5/16", "gateway": "10.22.0.1"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}
RESULT_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
    "ips": [
        {"interface": 0, "address": "fd00::7/64"},
        {"interface": 0, "address": "10.1.0.7/24", "gateway": "10.1.0.1"},
    ],
}


def test_result_0_4_0_skips_host_interfaces_and_prefers_ipv4():
    ips = cni_result.result_ips(RESULT_040)
    assert [str(ip.address) for ip in ips] == ["fd00::2/64", "10.22.0.5/16"]
    primary, others = cni_result.primary_and_others(ips)
    assert (str(primary.address.ip), primary.address.network.prefixlen, primary.gateway) == (
        "10.22.0.5",
        16,
        "10.22.0.1",
    )
    assert [str(o.address.ip) for o in others] == ["fd00::2"]


def test_result_1_0_0_without_version_fields():
    primary, others = cni_result.primary_and_others(cni_result.result_ips(RESULT_100))
    assert str(primary.address.ip) == "10.1.0.7" and [str(o.address.ip) for o in others] == ["fd00::7"]
    only6 = {"cniVersion": "1.0.0", "ips": [{"address": "fd00::9/64"}]}
    assert str(cni_result.primary_and_others(cni_result.result_ips(only6))[0].address.ip) == "fd00::9"


def test_result_0_2_0_ip4_ip6():
    old = {"cniVersion": "0.2.0", "ip4": {"ip": "10.3.0.4/24", "gateway": "10.3.0.1"}, "ip6": {"ip": "fd01::4/64"}}
    assert [str(ip.address) for ip in cni_result.result_ips(old)] == ["10.3.0.4/24", "fd01::4/64"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"ips": [{"address": "10.0.0.1"}]}, "no prefix length"),
        ({"ips": [{"address": "nonsense/8"}]}, "bad address"),
        ({"ips": [{"version": "6", "address": "10.0.0.1/8"}]}, "marked version 6"),
        ({"ips": "x"}, "must be lists"),
        ([], "JSON object"),
    ],
)
def test_bad_results(bad, message):
    with pytest.raises(cni_result.CniResultError, match=message):
        cni_result.result_ips(bad)


def test_no_ip_is_an_error():
    with pytest.raises(cni_result.CniResultError, match="no IP address"):
        cni_result.primary_and_others(cni_result.result_ips({"cniVersion": "1.0.0", "interfaces": []}))


def _write(d, name, data):
    (d / name).write_text(data if isinstance(data, str) else json.dumps(data))


def test_find_network_by_file_name_skipping_invalid_and_by_name(tmp_path):
    _write(tmp_path, "00-broken.conflist", "{")
    _write(tmp_path, "10-b.conf", {"cniVersion": "0.4.0", "name": "single", "type": "bridge"})
    _write(tmp_path, "20-a.conflist", {"cniVersion": "1.0.0", "name": "listed", "plugins": [{"type": "ptp"}]})
    _write(tmp_path, "30-x.txt", {"cniVersion": "1.0.0", "name": "ignored", "plugins": [{"type": "ptp"}]})
    conf = cni_conf.find_network(str(tmp_path))
    assert (conf.name, conf.version, [p["type"] for p in conf.plugins]) == ("single", "0.4.0", ["bridge"])
    assert conf.source.endswith("10-b.conf")
    assert cni_conf.find_network(str(tmp_path), "listed").source.endswith("20-a.conflist")
    with pytest.raises(cni_conf.CniConfError, match=r"no valid CNI network 'ignored' in .*00-broken.conflist: invalid"):
        cni_conf.find_network(str(tmp_path), "ignored")
    with pytest.raises(cni_conf.CniConfError, match="no valid CNI network configuration in /nonexistent$"):
        cni_conf.find_network("/nonexistent")


def test_version_selection_and_refusals():
    conf = cni_conf.parse(
        {"cniVersion": "0.3.1", "cniVersions": ["1.0.0", "9.9.9"], "name": "n", "plugins": [{"type": "a"}]}
    )
    assert conf.version == "1.0.0"
    with pytest.raises(cni_conf.CniConfError, match="no supported cniVersion"):
        cni_conf.parse({"cniVersion": "2.0.0", "name": "n", "plugins": [{"type": "a"}]})
    for bad, message in (
        ({"cniVersion": "1.0.0", "name": "-bad", "plugins": [{"type": "a"}]}, "network name"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, "non-empty list"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]}, 'valid "type"'),
        ({"cniVersion": "1.0.0", "name": "n"}, "neither a conflist"),
    ):
        with pytest.raises(cni_conf.CniConfError, match=message):
            cni_conf.parse(bad)


def test_binaries_include_ipam(tmp_path):
    conf = cni_conf.parse(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}]}
    )
    assert cni_conf.binaries(conf) == ["bridge", "host-local"]
    exe = tmp_path / "bridge"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert cni_conf.missing_binaries(conf, [str(tmp_path)]) == ["host-local"]


def test_request_config_runtime_config_only_for_declared_capabilities():
    conf = cni_conf.parse({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}]})
    plugin = {"type": "portmap", "capabilities": {"portMappings": True, "ips": False}, "cniVersion": "0.1.0", "x": 1}
    args = {"portMappings": [{"hostPort": 1}], "ips": ["10.0.0.5/24"], "dns": {"servers": []}}
    req = cni_conf.request_config(conf, plugin, args, {"cniVersion": "1.0.0"})
    assert req == {
        "type": "portmap",
        "cniVersion": "1.0.0",
        "name": "n",
        "x": 1,
        "runtimeConfig": {"portMappings": [{"hostPort": 1}]},
        "prevResult": {"cniVersion": "1.0.0"},
    }
    assert "capabilities" in plugin, "the stored plugin configuration is not changed"
    assert "runtimeConfig" not in cni_conf.request_config(conf, {"type": "a"}, args, None)


def test_capability_args_from_pod_info():
    pod = PodInfo(
        port_mappings=[PortMapping("udp", 53, 5353, "127.0.0.1"), PortMapping("tcp", 80, 8080)],
        dns_searches=["svc.local"],
        annotations={
            "kubernetes.io/ingress-bandwidth": "1Mi",
            "kubernetes.io/egress-bandwidth": "2M",
            "pycrio.io/ips": "10.0.0.5/24, fd00::5",
        },
    )
    assert cni_conf.capability_args(pod) == {
        "portMappings": [
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        ],
        "dns": {"servers": [], "searches": ["svc.local"], "options": []},
        "bandwidth": {
            "ingressRate": 2**20,
            "ingressBurst": 2**32 - 1,
            "egressRate": 2_000_000,
            "egressBurst": 2**32 - 1,
        },
        "ips": ["10.0.0.5/24", "fd00::5"],
    }
    assert cni_conf.capability_args(PodInfo()) == {}
    with pytest.raises(InvalidArgument, match="kubernetes.io/egress-bandwidth: '10 bits'"):
        cni_conf.capability_args(PodInfo(annotations={"kubernetes.io/egress-bandwidth": "10 bits"}))


@pytest.mark.parametrize(
    "text, value",
    [("10M", 10_000_000), ("1Gi", 2**30), ("500k", 500_000), ("1e6", 1_000_000), ("1.5k", 1500), ("7", 7)],
)
def test_parse_quantity(text, value):
    assert cni_conf.parse_quantity(text) == value


def test_plugin_errors_map_to_domain_errors():
    e = plugin_error("bridge", "ADD", 7, "bad", "really bad")
    assert isinstance(e, FailedPrecondition) and isinstance(e, CniPluginError)
    assert str(e) == "network: CNI plugin bridge ADD failed (code 7): bad: really bad"
    assert isinstance(plugin_error("x", "ADD", 3, "gone"), NotFound)
    for code in (11, 50, 123, None):
        assert isinstance(plugin_error("x", "ADD", code, "m"), Unavailable)


def test_cni_config_options(tmp_path):
    cfg = config.load(None, str(tmp_path)).resolved()
    assert cfg.network.backend == "builtin" and cfg.network.cni_bin_dirs == ["/opt/cni/bin", "/usr/lib/cni"]
    assert cfg.network.cni_cache_dir == "/var/lib/pycrio/cni" and cfg.network.cni_timeout == 30
    for text, message in (
        ('backend = "calico"', "expected one of 'builtin', 'cni'"),
        ("cni_timeout = 0", "between 1 and 3600"),
        ('cni_bin_dirs = ["opt/cni"]', "absolute paths"),
        ('cni_network = "-x"', "CNI network name"),
        ('cni_conf_dir = "rel"', "absolute path"),
    ):
        (tmp_path / "10.conf").write_text(f"[pycrio.network]\n{text}\n")
        with pytest.raises(config.ConfigError, match=message):
            config.load(None, str(tmp_path))
    (tmp_path / "10.conf").write_text('[pycrio]\nroot = "/r"\n[pycrio.network]\nbackend = "cni"\n')
    assert config.load(None, str(tmp_path)).resolved().network.cni_cache_dir == "/r/cni"
    assert 'backend = "builtin"' in config.render(config.Config().resolved())
