"""OCIRuntime.delete and kill against a fake runtime binary: what they retry, tolerate and report."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from pycrio import config
from pycrio.oci import DELETE_ATTEMPTS, OCIRuntime, OCIRuntimeFailed

FAKE = """#!/bin/sh
# Answers each call with the next line of $0.answers: "CODE MESSAGE"; 0 prints MESSAGE on stdout,
# others an error line on stderr as runc does. Calls are recorded in $0.calls.
echo "$@" >> "$0.calls"
n=$(wc -l < "$0.calls")
line=$(sed -n "${n}p" "$0.answers")
[ -z "$line" ] && exit 0
if [ "${line%% *}" = 0 ]; then echo "${line#* }"; exit 0; fi
echo "time=x level=error msg=\\"${line#* }\\"" >&2
exit "${line%% *}"
"""


def _runtime(tmp_path, *answers: str) -> tuple[OCIRuntime, str]:
    fake = tmp_path / "fake-runc"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "fake-runc.answers").write_text("".join(a + "\n" for a in answers))
    cfg = config.Config(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"))
    handler = next(iter(cfg.runtime.runtimes))
    cfg.runtime.runtimes[handler].runtime_path = str(fake)
    cfg.runtime.runtimes[handler].runtime_root = str(tmp_path / "state")
    return OCIRuntime(cfg, handler), str(tmp_path / "fake-runc.calls")


def _calls(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.read().splitlines())


def test_a_freeze_race_on_delete_is_retried(tmp_path):
    rt, calls = _runtime(tmp_path, "1 invalid state transition from stopped to paused")
    asyncio.run(rt.delete("c1"))
    assert _calls(calls) == 2


def test_a_missing_container_is_fine_and_not_retried(tmp_path):
    rt, calls = _runtime(tmp_path, "1 container does not exist")
    asyncio.run(rt.delete("c1"))
    assert _calls(calls) == 1


def test_other_failures_and_a_lasting_race_are_reported(tmp_path):
    rt, calls = _runtime(tmp_path, "1 permission denied")
    with pytest.raises(OCIRuntimeFailed, match="delete c1: permission denied"):
        asyncio.run(rt.delete("c1"))
    assert _calls(calls) == 1
    rt, calls = _runtime(tmp_path, *["1 invalid state transition from stopped to paused"] * DELETE_ATTEMPTS)
    os.unlink(calls)
    with pytest.raises(OCIRuntimeFailed, match="invalid state transition"):
        asyncio.run(rt.delete("c1"))
    assert _calls(calls) == DELETE_ATTEMPTS


def test_kill_of_a_container_that_ended_meanwhile_is_not_running(tmp_path):
    # runc's `kill --all` fails on the vanished cgroup; `state` then says stopped.
    rt, calls = _runtime(tmp_path, "1 openat2 /sys/fs/cgroup/freezer/x/freezer.state: no such file or directory")
    state = tmp_path / "fake-runc.answers"
    state.write_text(state.read_text() + "1 container does not exist\n")
    assert asyncio.run(rt.kill("c1", 9, all_processes=True)) is False
    with open(calls) as f:
        assert f.read().splitlines() == [f"--root {rt.root} kill --all c1 9", f"--root {rt.root} state c1"]


def test_kill_failure_of_a_running_container_is_reported(tmp_path):
    rt, _ = _runtime(tmp_path, "1 operation not permitted")
    answers = tmp_path / "fake-runc.answers"
    answers.write_text(answers.read_text() + '0 {"status": "running"}\n')
    with pytest.raises(OCIRuntimeFailed, match="kill c1: operation not permitted"):
        asyncio.run(rt.kill("c1", 9))
