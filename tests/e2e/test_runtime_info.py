"""Version, Status and RuntimeConfig against a real daemon."""

from __future__ import annotations

import json

from pycrio import __version__
from pycrio.cri import api_pb2


def test_version(daemon):
    v = daemon.runtime.Version(api_pb2.VersionRequest(version="0.1.0"))
    assert v.runtime_name == "pycrio"
    assert v.runtime_api_version == "v1"
    assert v.runtime_version == __version__
    assert v.version == "0.1.0"


def _conditions(status):
    return {c.type: c for c in status.status.conditions}


def test_status_conditions_and_handlers(daemon):
    status = daemon.runtime.Status(api_pb2.StatusRequest())
    cond = _conditions(status)
    assert cond["RuntimeReady"].status is True, cond["RuntimeReady"]
    assert cond["NetworkReady"].status is True, cond["NetworkReady"]
    assert [h.name for h in status.runtime_handlers] == ["", "runc"]
    assert dict(status.info) == {}  # verbose info only when asked


def test_status_verbose_has_effective_config(daemon):
    status = daemon.runtime.Status(api_pb2.StatusRequest(verbose=True))
    cfg = json.loads(status.info["config"])
    assert cfg["root"] == daemon.root
    assert cfg["runroot"] == daemon.runroot
    assert cfg["api"]["listen"] == daemon.socket
    assert cfg["runtime"]["exits_dir"] == daemon.runroot + "/exits"


def test_runtime_not_ready_when_binary_missing(daemon_factory):
    d = daemon_factory()
    d.write_config('[pycrio.runtime.runtimes.runc]\nruntime_path = "/nonexistent/runc"\n')
    d.start()
    cond = _conditions(d.runtime.Status(api_pb2.StatusRequest()))
    assert cond["RuntimeReady"].status is False
    assert cond["RuntimeReady"].reason == "OCIRuntimeNotFound"
    assert "/nonexistent/runc" in cond["RuntimeReady"].message
    assert d.stop() == 0


def test_runtime_config_reports_cgroup_driver(daemon_factory):
    d = daemon_factory()
    for manager, driver in (("cgroupfs", api_pb2.CGROUPFS), ("systemd", api_pb2.SYSTEMD)):
        d.write_config(f'[pycrio.runtime]\ncgroup_manager = "{manager}"\n')
        d.start()
        resp = d.runtime.RuntimeConfig(api_pb2.RuntimeConfigRequest())
        assert resp.linux.cgroup_driver == driver
        assert d.stop() == 0
