"""The `pycrio` command: help, version, config, status, wipe, and the daemon's start-up refusals."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys

import pytest

import pycrio
from pycrio import cli
from pycrio.cri import api_pb2

EXIT_TIMEOUT = 10.0  # seconds a daemon that refuses to start may take to exit


def pycrio_cmd(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pycrio.cli", *args], capture_output=True, text=True, timeout=timeout)


def write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def config_args(base: str, main: str = "", drop_ins: dict[str, str] | None = None) -> list[str]:
    """--config/--config-dir for a main file and drop-ins written under base (never /etc/pycrio)."""
    conf_d = os.path.join(base, "conf.d")
    os.makedirs(conf_d, exist_ok=True)
    for name, text in (drop_ins or {}).items():
        write(os.path.join(conf_d, name), text)
    return ["--config", write(os.path.join(base, "pycrio.conf"), main), "--config-dir", conf_d]


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def wait_refused(d) -> tuple[int, str]:
    """Start daemon d, which should refuse to start: its exit code and log."""
    d.start(wait=False)
    try:
        code = d.proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"daemon still running after {EXIT_TIMEOUT} s:\n{d.log()}") from None
    return code, d.log()


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def tree(path: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), path) for d, dirs, files in os.walk(path) for n in dirs + files)


# ---------------------------------------------------------------- help, version, config


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (
            [],
            [
                "--config",
                "--config-dir",
                "--root",
                "--runroot",
                "--listen",
                "--log-level",
                "--version",
                "run",
                "version",
                "config",
                "status",
                "wipe",
            ],
        ),
        (["run"], ["--config", "--config-dir", "--root", "--runroot", "--listen", "--log-level", "--registries-conf"]),
        (["version"], ["--json"]),
        (["config"], ["--default", "--config", "--root"]),
        (["status"], ["--json", "--timeout", "--listen"]),
        (["wipe"], ["--root", "--runroot", "--listen"]),
    ],
)
def test_help(capsys, command, flags):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['pycrio', *command])} ")
    for flag in flags:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", out), f"{flag} missing from:\n{out}"


def test_version():
    result = pycrio_cmd("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"pycrio {pycrio.__version__} (CRI v1, Python ")
    result = pycrio_cmd("version", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["name"], info["version"], info["runtime_api_version"]) == ("pycrio", pycrio.__version__, "v1")
    assert pycrio_cmd("--version").stdout.strip() == f"pycrio {pycrio.__version__}"


def test_config_prints_effective_values(capsys, tmp_path):
    args = config_args(
        str(tmp_path),
        '[pycrio]\nroot = "/from-file"\nrunroot = "/run/from-file"\n',
        {
            "10-log.conf": '[pycrio]\nlog_level = "WARN"\n',
            "20-crun.conf": '[pycrio.runtime.runtimes.crun]\nruntime_path = "/bin/crun"\n',
        },
    )
    code, out, err = run_main(capsys, "config", *args, "--root", "/from-flag")
    assert code == 0, err
    assert '\nroot = "/from-flag"\n' in out
    assert '\nrunroot = "/run/from-file"\n' in out
    assert '\nlog_level = "warning"\n' in out
    assert '\nlisten = "/run/from-file/pycrio.sock"\n' in out
    assert re.search(r'^\[pycrio\.runtime\.runtimes\.crun\]\n(#.*\n)*runtime_path = "/bin/crun"$', out, re.M)
    assert "[pycrio.runtime.runtimes.runc]" in out
    # What is printed loads back as the same configuration.
    again = write(str(tmp_path / "printed" / "pycrio.conf"), out)
    code, out2, _ = run_main(capsys, "config", "--config", again, "--config-dir", str(tmp_path / "printed"))
    assert (code, out2) == (0, out)


def test_config_default_ignores_files(capsys, tmp_path):
    args = config_args(str(tmp_path), '[pycrio]\nroot = "/from-file"\nlog_level = "debug"\n')
    code, out, _ = run_main(capsys, "config", "--default", *args, "--root", "/from-flag")
    assert code == 0
    assert '\nroot = "/var/lib/pycrio"\n' in out and '\nlog_level = "info"\n' in out
    assert "/from-file" not in out and "/from-flag" not in out


def test_config_error_exits_2(tmp_path):
    args = config_args(str(tmp_path), drop_ins={"50-bad.conf": "[pycrio]\n\nroot = 5\n"})
    result = pycrio_cmd("config", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "configuration error" in result.stderr
    assert f"{tmp_path}/conf.d/50-bad.conf:3: pycrio.root: expected a string" in result.stderr


# ---------------------------------------------------------------- status


def test_status_without_daemon(tmpdir_short):
    runroot = os.path.join(tmpdir_short, "run")
    result = pycrio_cmd("status", *config_args(tmpdir_short), "--runroot", runroot, "--timeout", "2")
    assert result.returncode == 1
    assert f"no daemon answers on {runroot}/pycrio.sock" in result.stderr
    assert result.stdout == ""


def test_status_of_running_daemon(daemon):
    expected = daemon.runtime.Status(api_pb2.StatusRequest()).status.conditions
    ready = {c.type: c.status for c in expected}["RuntimeReady"]
    result = pycrio_cmd("status", *daemon.args())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"pycrio {pycrio.__version__} (CRI v1) on {daemon.socket}\n")
    assert re.search(rf"^\s+RuntimeReady\s+{str(ready).lower()}\b", result.stdout, re.M), result.stdout
    assert re.search(r"^\s+NetworkReady\s+true", result.stdout, re.M), result.stdout
    assert re.search(r"runtime handlers: .*\brunc\b", result.stdout), result.stdout

    result = pycrio_cmd("status", "--json", *daemon.args())
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["version"]["runtimeName"] == "pycrio"
    assert info["version"]["runtimeVersion"] == pycrio.__version__
    assert {c["type"] for c in info["status"]["conditions"]} == {"RuntimeReady", "NetworkReady"}
    assert info["config"]["root"] == daemon.root
    assert "runc" in [h.get("name") for h in info["runtimeHandlers"]]


# ---------------------------------------------------------------- wipe


def fill_state(root: str, runroot: str) -> None:
    write(os.path.join(root, "images", "layer", "file"), "x")
    write(os.path.join(root, "metadata.db"), "x")
    write(os.path.join(runroot, "exits", "ctr1"), "0")
    os.makedirs(os.path.join(runroot, "ns", "pod1"), exist_ok=True)
    os.symlink("/etc", os.path.join(runroot, "link"))


def test_wipe_refuses_while_daemon_serves(daemon):
    fill_state(daemon.root, daemon.runroot)
    before = tree(daemon.root), tree(daemon.runroot)
    result = pycrio_cmd("wipe", *daemon.args())
    assert result.returncode == 1
    assert f"a daemon is serving {daemon.socket}" in result.stderr
    assert (tree(daemon.root), tree(daemon.runroot)) == before
    assert daemon.runtime.Version(api_pb2.VersionRequest(), timeout=5).runtime_name == "pycrio"


def test_wipe_after_daemon_stops(daemon):
    fill_state(daemon.root, daemon.runroot)
    assert daemon.stop() == 0
    result = pycrio_cmd("wipe", *daemon.args())
    assert result.returncode == 0, result.stderr
    assert f"wiped {daemon.root}\n" in result.stdout and f"wiped {daemon.runroot}\n" in result.stdout
    assert tree(daemon.root) == []
    assert tree(daemon.runroot) in ([], ["pycrio.sock.lock"])  # the lock stays: see listen.SocketLock
    assert os.path.exists("/etc"), "wipe followed a symlink"
    daemon.start()  # and a daemon starts on the wiped state


def test_wipe_unmounts_tmpfs_under_runroot(tmpdir_short):
    root, runroot = os.path.join(tmpdir_short, "root"), os.path.join(tmpdir_short, "run")
    fill_state(root, runroot)
    point = os.path.join(runroot, "ns", "pod1")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", point], check=True)
    try:
        write(os.path.join(point, "net"), "pinned")
        assert mounted(point)
        result = pycrio_cmd("wipe", *config_args(tmpdir_short), "--root", root, "--runroot", runroot)
        assert result.returncode == 0, result.stderr
        assert not mounted(point)
        assert tree(root) == [] and tree(runroot) == []
    finally:
        if mounted(point):
            subprocess.run(["umount", "--lazy", point], check=False)


# ---------------------------------------------------------------- daemon start-up refusals


@pytest.mark.parametrize(
    "flags", [{"--root": "root", "--runroot": "runroot"}, {"--listen": "socket"}], ids=["same-runroot", "listen"]
)
def test_second_daemon_refuses_served_socket(daemon, daemon_factory, flags):
    extra = [arg for flag, attr in flags.items() for arg in (flag, getattr(daemon, attr))]
    code, log = wait_refused(daemon_factory("second", extra))
    assert code == 1, log
    assert f"another pycrio daemon (pid {daemon.proc.pid}) is serving {daemon.socket}" in log
    assert daemon.runtime.Version(api_pb2.VersionRequest(), timeout=5).runtime_name == "pycrio"


def test_daemon_refuses_regular_file_at_socket_path(daemon_factory, tmpdir_short):
    path = write(os.path.join(tmpdir_short, "not-a-socket"), "precious\n")
    code, log = wait_refused(daemon_factory("d", ["--listen", path]))
    assert code == 1, log
    assert f"{path} exists and is not a socket" in log
    with open(path) as f:
        assert f.read() == "precious\n"


def test_daemon_refuses_socket_another_program_serves(daemon_factory, tmpdir_short):
    path = os.path.join(tmpdir_short, "other.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)
        other.listen()
        code, log = wait_refused(daemon_factory("d", ["--listen", path]))
    assert code == 1, log
    assert f"{path} is in use by another process" in log


def test_daemon_replaces_stale_socket(daemon_factory):
    d = daemon_factory()
    os.makedirs(d.runroot)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(d.socket)
    stale.close()  # the file stays, nobody listens: binding over it fails unless the daemon removes it
    d.start()
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o660
    assert d.runtime.Version(api_pb2.VersionRequest(), timeout=5).runtime_name == "pycrio"
    assert d.stop() == 0, d.log()
    assert not os.path.exists(d.socket)


def test_daemon_exits_2_on_bad_config(daemon_factory):
    d = daemon_factory()
    write(d.config_file, '[pycrio.runtime]\ncgroup_manager = "foo"\n')
    code, log = wait_refused(d)
    assert code == 2, log
    assert (
        f"configuration error: {d.config_file}:2: pycrio.runtime.cgroup_manager: "
        "expected one of 'cgroupfs', 'systemd', got 'foo'"
    ) in log
    assert "Traceback" not in log
    assert not os.path.exists(d.socket)
