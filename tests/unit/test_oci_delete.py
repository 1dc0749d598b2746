"""OCIRuntime.delete against a fake runtime binary: what it retries, what it tolerates, what it reports."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from pycrio import config
from pycrio.oci import DELETE_ATTEMPTS, OCIRuntime, OCIRuntimeFailed

FAKE = """#!/bin/sh
# Answers `delete` with the next line of $0.answers (exit code, message), counting calls.
echo "$@" >> "$0.calls"
n=$(wc -l < "$0.calls")
line=$(sed -n "${n}p" "$0.answers")
[ -z "$line" ] && exit 0
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
    return len(open(path).read().splitlines()) if os.path.exists(path) else 0


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
