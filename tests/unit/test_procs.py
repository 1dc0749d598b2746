"""pycrio/procs.py: start times and signalling a process only while it is the same one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from pycrio import procs


def test_start_ticks_of_a_live_and_a_gone_process():
    assert procs.start_ticks(os.getpid()) == procs.start_ticks(os.getpid()) > 0
    child = subprocess.Popen(["sleep", "10"])
    ticks = procs.start_ticks(child.pid)
    assert ticks is not None and ticks >= procs.start_ticks(os.getpid())
    child.kill()
    child.wait()
    assert procs.start_ticks(child.pid) is None


def test_names_with_spaces_and_parentheses(tmp_path):
    odd = tmp_path / "a b) c"
    odd.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(odd), "10"])
    try:
        assert procs.start_ticks(child.pid) is not None
    finally:
        child.kill()
        child.wait()


def test_signal_only_the_same_process():
    child = subprocess.Popen(["sleep", "10"])
    ticks = procs.start_ticks(child.pid)
    assert procs.signal_if_same(child.pid, ticks + 1, signal.SIGKILL) is False  # another process
    assert child.poll() is None
    assert procs.signal_if_same(child.pid, ticks, signal.SIGKILL) is True
    assert child.wait(5) == -signal.SIGKILL
    assert procs.signal_if_same(child.pid, ticks, signal.SIGKILL) is False  # gone
    assert procs.signal_if_same(None, ticks, signal.SIGKILL) is False


def test_alive_is_false_for_zombies_and_other_processes():
    child = subprocess.Popen(["sleep", "10"])
    ticks = procs.start_ticks(child.pid)
    assert procs.alive(child.pid, ticks) and not procs.alive(child.pid, ticks + 1)
    child.kill()
    time.sleep(0.1)  # not reaped yet: a zombie
    assert procs.start_ticks(child.pid) == ticks
    assert not procs.alive(child.pid, ticks)
    child.wait()
    assert not procs.alive(child.pid, ticks) and not procs.alive(None, ticks)


def test_kill_and_wait_returns_once_the_process_has_exited_even_unreaped():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        ticks = procs.start_ticks(proc.pid)
        assert asyncio.run(procs.kill_and_wait(proc.pid, ticks, 5)) is True
        assert not procs.alive(proc.pid, ticks)  # a zombie now, not yet reaped by us
        assert asyncio.run(procs.kill_and_wait(proc.pid, ticks + 1, 5)) is False  # another start time
    finally:
        proc.kill()
        proc.wait()
    assert asyncio.run(procs.kill_and_wait(proc.pid, ticks, 5)) is False  # gone
