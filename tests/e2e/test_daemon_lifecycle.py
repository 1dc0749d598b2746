"""Daemon lifecycle: signals, graceful shutdown, reload, restart after a crash."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest

from pycrio.cri import api_pb2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_is_graceful_and_fast(daemon, sig):
    started = time.monotonic()
    assert daemon.stop(sig) == 0
    assert time.monotonic() - started < 5.0
    assert not os.path.exists(daemon.socket), "socket left behind"
    assert "stopped" in daemon.log()


def test_shutdown_under_load_answers_or_refuses_cleanly(daemon):
    outcomes: list[str] = []
    stop = threading.Event()

    def hammer():
        channel = grpc.insecure_channel(f"unix:{daemon.socket}")
        from pycrio.cri import api_pb2_grpc

        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        while not stop.is_set():
            try:
                stub.Status(api_pb2.StatusRequest(verbose=True), timeout=2)
                outcomes.append("ok")
            except grpc.RpcError as e:
                outcomes.append(e.code().name)
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    break
        channel.close()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5.0
    stop.set()
    for t in threads:
        t.join(timeout=5)
    assert "ok" in outcomes
    assert set(outcomes) <= {"ok", "UNAVAILABLE", "CANCELLED"}, set(outcomes)
    assert "Traceback" not in daemon.log()


def test_sighup_reloads_log_level(daemon_factory):
    d = daemon_factory()
    d.write_config('[pycrio]\nlog_level = "info"\n')
    d.start()
    d.runtime.Version(api_pb2.VersionRequest())
    assert "Version request" not in d.log()
    d.write_config('[pycrio]\nlog_level = "debug"\n', drop_in="50-debug.conf")
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "log level is now debug" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    d.runtime.Version(api_pb2.VersionRequest())
    log = d.log()
    assert "log level is now debug" in log
    assert "Version request" in log
    # Each RPC log line carries its request id.
    assert any(" req=" in line for line in log.splitlines() if "Version request" in line)
    assert d.stop() == 0


def test_sighup_with_broken_config_keeps_running(daemon_factory):
    d = daemon_factory()
    d.start()
    d.write_config("[pycrio]\nroot = 42\n")
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reload refused" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "reload refused" in d.log()
    assert "pycrio.root" in d.log()
    assert d.runtime.Version(api_pb2.VersionRequest()).runtime_name == "pycrio"
    assert d.stop() == 0


def test_sighup_names_options_needing_restart(daemon_factory):
    d = daemon_factory()
    d.start()
    d.write_config('[pycrio.runtime]\ncgroup_manager = "systemd"\n')
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "after a restart" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "runtime" in [line for line in d.log().splitlines() if "after a restart" in line][0]
    # The running daemon keeps the old value until restarted.
    resp = d.runtime.RuntimeConfig(api_pb2.RuntimeConfigRequest())
    assert resp.linux.cgroup_driver == api_pb2.CGROUPFS
    assert d.stop() == 0


def test_restart_after_kill9_replaces_stale_socket(daemon_factory):
    d = daemon_factory()
    d.start()
    d.stop(signal.SIGKILL)
    assert os.path.exists(d.socket), "a killed daemon leaves its socket"
    d.start()
    assert d.runtime.Version(api_pb2.VersionRequest()).runtime_name == "pycrio"
    assert oct(os.stat(d.socket).st_mode & 0o777) == oct(0o660)
    assert d.stop() == 0
