"""The specs spec.py writes, run by the real runc: it accepts them and the container sees what they say."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import uuid

import pytest

from pycrio import paths, spec
from pycrio.cri import api_pb2
from tests.support.spec_facts import container_config, make_rootfs, sandbox_facts

RUNC = shutil.which("runc")
BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runc needs root"),
    pytest.mark.skipif(RUNC is None, reason="runc is not installed"),
    pytest.mark.skipif(not os.access(BUSYBOX, os.X_OK), reason="busybox-static is not installed"),
]


@pytest.fixture
def runc(tmp_path):
    """run(bundle, id, *flags) → CompletedProcess; every container and cgroup is removed afterwards."""
    state = tmp_path / "runc-state"
    parent = f"/pycrio-spec-test-{uuid.uuid4().hex[:12]}"
    started: list[str] = []

    def run(spec_dict: dict, bundle, container_id: str, *flags: str) -> subprocess.CompletedProcess:
        (bundle / "config.json").write_text(json.dumps(spec_dict))
        started.append(container_id)
        # Files, not pipes: a detached container keeps its stdio open after runc returns.
        with open(tmp_path / f"{container_id}.out", "w+") as out, open(tmp_path / f"{container_id}.err", "w+") as err:
            rc = subprocess.run(
                [RUNC, "--root", str(state), "run", *flags, "--bundle", str(bundle), container_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=30,
            ).returncode
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess([], rc, out.read(), err.read())

    run.parent = parent  # type: ignore[attr-defined]
    run.state = state  # type: ignore[attr-defined]
    yield run
    for container_id in started:
        subprocess.run([RUNC, "--root", str(state), "delete", "--force", container_id], capture_output=True)
    for path in sorted(glob.glob(f"/sys/fs/cgroup/*{parent}") + glob.glob(f"/sys/fs/cgroup{parent}"), reverse=True):
        os.rmdir(path)


def busybox_rootfs(root) -> str:
    make_rootfs(root)
    for d in ("bin", "proc", "sys", "dev", "srv"):
        (root / d).mkdir(exist_ok=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "id", "cat", "grep", "env", "pwd", "hostname"):
        os.symlink("busybox", root / "bin" / applet)
    return str(root)


def test_runc_runs_a_container_spec(tmp_path, runc):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    rootfs = busybox_rootfs(bundle / "rootfs")
    config = container_config(
        command=["sh", "-c"],
        args=["id; pwd; env; grep -E '^Cap(Bnd|Eff)' /proc/self/status; cat /proc/self/oom_score_adj; cat /etc/hosts"],
        working_dir="/srv",
        envs=[api_pb2.KeyValue(key="GREETING", value="héllo".encode())],
    )
    sc = config.linux.security_context
    sc.run_as_username = "app"
    sc.supplemental_groups.append(5000)
    sc.capabilities.drop_capabilities.append("ALL")
    sc.capabilities.add_capabilities.extend(["CHOWN", "NET_BIND_SERVICE"])
    sc.masked_paths.append("/proc/kcore")
    sc.readonly_paths.append("/proc/sys")
    config.linux.resources.memory_limit_in_bytes = 64 << 20
    config.linux.resources.oom_score_adj = -900
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.1 pod-host\n")
    sandbox = sandbox_facts(
        netns_path=None,
        ipcns_path=None,
        utsns_path=None,
        cgroup_parent=runc.parent,
        hosts_path=str(hosts),
    )
    facts = spec.RuntimeFacts.probe(["CHOWN", "KILL"], "cgroupfs")
    out = spec.container_spec("spec-test-c", config, sandbox, spec.ImageFacts({"Env": ["PATH=/bin"]}, rootfs), facts)

    result = runc(out, bundle, f"spec-test-{uuid.uuid4().hex[:8]}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    ids, _, groups = lines[0].partition(" groups=")
    assert ids == "uid=1000(app) gid=1000(app)"
    assert sorted(groups.split(",")) == sorted(["1000(app)", "10(wheel)", "29(audio)", "5000"])  # the kernel sorts
    assert lines[1] == "/srv"
    assert "GREETING=héllo" in lines and "HOSTNAME=pod-host" in lines and "PATH=/bin" in lines
    wanted_mask = (1 << 0) | (1 << 10)  # CHOWN, NET_BIND_SERVICE in the bounding set
    assert f"CapBnd:\t{wanted_mask:016x}" in lines
    assert "CapEff:\t0000000000000000" in lines  # a non-root user keeps no effective capability
    assert str(max(-900, facts.daemon_oom_score_adj)) in lines
    assert lines[-1] == "10.0.0.1 pod-host"


def test_runc_runs_a_pause_spec(tmp_path, runc):
    try:
        pause = paths.helper_binary("pycrio-pause")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    bundle = tmp_path / "pause"
    (bundle / "rootfs").mkdir(parents=True)
    shutil.copy(pause, bundle / "rootfs" / "pause")
    sandbox = sandbox_facts(netns_path=None, ipcns_path=None, utsns_path=None, cgroup_parent=runc.parent)
    facts = spec.RuntimeFacts.probe([], "cgroupfs")
    out = spec.pause_spec(sandbox, "/pause", facts)
    container_id = f"spec-test-{uuid.uuid4().hex[:8]}"
    pid_file = tmp_path / "pause.pid"

    result = runc(out, bundle, container_id, "--detach", "--pid-file", str(pid_file))
    assert result.returncode == 0, result.stderr
    pid = int(pid_file.read_text())
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert status["CapBnd"] == status["CapEff"] == status["CapPrm"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    assert status["NSpid"].split()[-1] == "1"  # PID 1 of its own pid namespace
    with open(f"/proc/{pid}/oom_score_adj") as f:
        assert int(f.read()) == max(-998, facts.daemon_oom_score_adj)
