"""Restart after a crash: half-made pods and containers are removed, nothing leaks; wipe removes everything."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401 - the fixture


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def _runc_list(root: str) -> list[str]:
    out = subprocess.run(["runc", "--root", root, "list", "-q"], capture_output=True, text=True)
    return out.stdout.split()


def _set_state(d, table: str, row_id: str, state: str) -> None:
    conn = sqlite3.connect(os.path.join(d.root, "pycrio.db"))
    with conn:
        conn.execute(f"UPDATE {table} SET state = ? WHERE id = ?", (state, row_id))
    conn.close()


def _pause_pid(d, pod_id: str) -> int:
    with open(os.path.join(d.runroot, "pods", pod_id, "pause.json")) as f:
        return json.load(f)["pause_pid"]


def _alive(pid: int) -> bool:
    """pid runs and is no zombie (PID 1 here may never reap a killed pause)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return data[data.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def test_half_created_container_and_pod_are_cleaned_up(node):  # noqa: F811
    d = node.d
    keep = node.pod()
    kept = node.run(keep, ["sh", "-c", "while true; do sleep 1; done"], name="kept")
    doomed_pod = node.pod()
    doomed = node.container(keep, ["true"], name="doomed")
    d.stop(signal.SIGKILL)
    # As if the daemon died in the middle of CreateContainer and of RunPodSandbox.
    _set_state(d, "containers", doomed, "creating")
    _set_state(d, "pods", doomed_pod, "creating")
    runc_root = os.path.join(d.runroot, "runtime", "runc")
    assert doomed in _runc_list(runc_root)
    pause = _pause_pid(d, doomed_pod)  # started without runc (csrc/pause_spawn.c)
    assert _alive(pause)
    d.start()
    listed = [c.id for c in node.rt.ListContainers(api_pb2.ListContainersRequest()).containers]
    assert listed == [kept]
    assert [p.id for p in node.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items] == [keep]
    assert doomed not in _runc_list(runc_root) and doomed_pod not in _runc_list(runc_root)
    assert not _alive(pause)
    assert not _mounts_under(os.path.join(d.root, "containers", doomed))
    assert not _mounts_under(os.path.join(d.runroot, "ns", doomed_pod))
    assert not _mounts_under(os.path.join(d.runroot, "pods", doomed_pod))
    assert not os.path.exists(os.path.join(d.runroot, "pods", doomed_pod))
    assert node.exec(kept, ["echo", "ok"]).stdout == b"ok\n"


def test_wipe_removes_running_containers_and_all_state(node):  # noqa: F811
    d = node.d
    pod = node.pod()
    node.run(pod, ["sh", "-c", "while true; do sleep 1; done"])
    d.stop(signal.SIGKILL)
    out = subprocess.run([sys.executable, "-m", "pycrio.cli", "wipe", *d.args()], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "deleted container" in out.stdout
    assert not _mounts_under(d.root) and not _mounts_under(d.runroot)
    assert _runc_list(os.path.join(d.runroot, "runtime", "runc")) == []
    assert not os.path.exists(os.path.join(d.root, "pycrio.db"))


def test_a_container_that_vanished_while_the_daemon_was_down_is_exited(node):  # noqa: F811
    d = node.d
    pod = node.pod()
    cid = node.run(pod, ["sh", "-c", "while true; do sleep 1; done"])
    status = node.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True))
    pid = json.loads(status.info["info"])["pid"]
    d.stop(signal.SIGKILL)
    # As after a reboot: the process and its monitor are gone and no exit file was written.
    monitors = subprocess.run(["pgrep", "-f", f"pycrio-monitor --id {cid}"], capture_output=True, text=True)
    for monitor_pid in monitors.stdout.split():
        os.kill(int(monitor_pid), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    d.start()
    status = node.status(cid)
    assert status.state == api_pb2.CONTAINER_EXITED and status.exit_code == 255
    assert "gone" in status.message


def test_a_pod_whose_pause_vanished_is_not_ready(node):  # noqa: F811
    d = node.d
    pod = node.pod()
    pause = _pause_pid(d, pod)
    d.stop(signal.SIGKILL)
    os.kill(pause, signal.SIGKILL)
    d.start()
    status = node.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod)).status
    assert status.state == api_pb2.SANDBOX_NOTREADY
