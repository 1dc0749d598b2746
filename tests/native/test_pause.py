"""csrc/pause/pause.c: the pycrio-pause executable."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from pycrio.paths import helper_binary

PAUSE = helper_binary("pycrio-pause")


def _wait_exit(proc: subprocess.Popen, timeout: float = 2.0) -> int:
    return proc.wait(timeout=timeout)


def test_version():
    out = subprocess.run([PAUSE, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("pycrio-pause")


def test_is_static():  # also in sanitizer builds: pause_spawn.c executes it in an empty root
    out = subprocess.run(["file", "-L", PAUSE], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("file(1) not installed")
    assert "statically linked" in out.stdout or "static-pie" in out.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_at_once_on_signal(sig):
    proc = subprocess.Popen([PAUSE])
    time.sleep(0.05)
    assert proc.poll() is None
    started = time.monotonic()
    proc.send_signal(sig)
    assert _wait_exit(proc) == 0
    assert time.monotonic() - started < 1.0


def test_ignores_other_blocked_signals_and_keeps_running():
    proc = subprocess.Popen([PAUSE])
    try:
        proc.send_signal(signal.SIGCHLD)
        time.sleep(0.1)
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert _wait_exit(proc) == 0


def _pid1_pause() -> tuple[subprocess.Popen, psutil.Process]:
    """pycrio-pause as PID 1 of a new PID namespace; returns (unshare, pause)."""
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", PAUSE])
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        kids = psutil.Process(outer.pid).children()
        if kids and kids[0].exe() == os.path.realpath(PAUSE):
            return outer, kids[0]
        time.sleep(0.01)
    outer.kill()
    raise AssertionError("pause did not start in a new PID namespace")


def test_pid1_stops_on_sigterm():
    outer, pause = _pid1_pause()
    with open(f"/proc/{pause.pid}/status") as f:
        nspid = [line for line in f if line.startswith("NSpid:")][0].split()
    assert nspid[-1] == "1", nspid
    pause.send_signal(signal.SIGTERM)
    assert _wait_exit(outer) == 0


def test_pid1_reaps_orphans():
    outer, pause = _pid1_pause()
    try:
        # A shell in the namespace starts a short sleep and exits: the sleep is re-parented to pause.
        subprocess.run(["nsenter", "-t", str(pause.pid), "-p", "--", "/bin/sh", "-c", "sleep 0.2 & exit 0"], check=True)
        time.sleep(0.1)
        assert any(c.name() == "sleep" for c in pause.children()), "orphan not re-parented to pause"
        deadline = time.monotonic() + 3
        while pause.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pause.children() == [], "pause left a zombie"
    finally:
        pause.send_signal(signal.SIGTERM)
        assert _wait_exit(outer) == 0
