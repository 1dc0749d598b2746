"""pycrio/cgroup_kill.py against a real cgroup and real processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid

import pytest

from pycrio import cgroup_kill
from pycrio.spec_resources import cgroup_version

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def cgroup():
    path = f"/pycrio-tests/ck-{uuid.uuid4().hex[:8]}"
    directory = cgroup_kill.cgroup_dir(path, cgroup_version())
    os.makedirs(directory)
    yield directory
    if os.path.isdir(directory):
        cgroup_kill.kill_all(directory)  # after a failed test
    deadline = time.monotonic() + 2
    while os.path.isdir(directory):  # EBUSY for a moment after its last process exited
        try:
            os.rmdir(directory)
        except OSError:
            assert time.monotonic() < deadline, f"{directory} could not be removed"
            time.sleep(0.01)
    with contextlib.suppress(OSError):  # other tests' cgroups may be there
        os.rmdir(os.path.dirname(directory))


def _start_in(directory: str, script: str) -> subprocess.Popen:
    """sh running script once it is in the cgroup (it waits for a line on stdin first)."""
    proc = subprocess.Popen(["sh", "-c", f"read go; {script}"], stdin=subprocess.PIPE)
    with open(os.path.join(directory, "cgroup.procs"), "w") as f:
        f.write(str(proc.pid))
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    return proc


def _listed(directory: str) -> set[int]:
    with open(os.path.join(directory, "cgroup.procs")) as f:
        return {int(line) for line in f if line.strip()}


def test_kills_every_process_including_ones_forked_after_joining(cgroup):
    forking = _start_in(cgroup, "sleep 60 & sleep 60 & wait")
    single = _start_in(cgroup, "exec sleep 60")
    deadline = 50
    while len(_listed(cgroup)) < 4 and deadline:  # sh and its two sleeps, and the single sleep
        deadline -= 1
        subprocess.run(["sleep", "0.02"])
    assert len(_listed(cgroup)) == 4
    assert cgroup_kill.kill_all(cgroup) == (True, 0)
    assert _listed(cgroup) == set()
    assert forking.wait(5) == -9 and single.wait(5) == -9


def test_an_empty_cgroup_holds_nothing_and_a_missing_one_is_an_error(cgroup):
    assert cgroup_kill.kill_all(cgroup) == (False, 0)
    with pytest.raises(FileNotFoundError):
        cgroup_kill.kill_all(cgroup + "-missing")


def test_processes_outside_the_cgroup_are_left_alone(cgroup):
    inside = _start_in(cgroup, "exec sleep 60")
    outside = subprocess.Popen(["sleep", "60"])
    try:
        assert cgroup_kill.kill_all(cgroup) == (True, 0)
        assert inside.wait(5) == -9
        assert outside.poll() is None
    finally:
        outside.kill()
        outside.wait()
