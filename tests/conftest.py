"""Shared fixtures: a real daemon on a temporary socket, and a guard against leaked resources."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import grpc
import psutil
import pytest

from pycrio.cri import api_pb2, api_pb2_grpc

pytest_plugins = ["tests.support.fixtures", "tests.support.network_fixtures"]

START_TIMEOUT = 15.0

# PYCRIO_TESTS_SHARED_HOST=1: other test sessions run on this host at the same time (parallel
# development). The leak guard then counts only mounts under this session's temporary
# directories and only this session's bridges, and skips the (host-wide) cgroup check.
SHARED_HOST = os.environ.get("PYCRIO_TESTS_SHARED_HOST") == "1"
_session_dirs: list[str] = []
_session_bridges: set[str] = set()


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        found = {" ".join(line.split()[3:5]) for line in f}
    if SHARED_HOST:
        found = {m for m in found if any(d in m for d in _session_dirs)}
    return found


def _links() -> set[str]:
    links = set(os.listdir("/sys/class/net"))
    if SHARED_HOST:
        links &= _session_bridges
    return links


CGROUP_ROOT = "/sys/fs/cgroup/memory" if os.path.isdir("/sys/fs/cgroup/memory") else "/sys/fs/cgroup"


def _cgroups() -> set[str]:
    """pycrio's cgroups (test pods live under /pycrio-tests, runc's under pycrio-<id>)."""
    found: set[str] = set()
    if SHARED_HOST:
        return found
    for top, dirs, _ in os.walk(CGROUP_ROOT):
        depth = top[len(CGROUP_ROOT) :].count("/")
        if depth >= 3:
            dirs[:] = []
        found.update(os.path.join(top, d) for d in dirs if "pycrio" in d)
    return found


def remove_test_cgroups() -> None:
    """rmdir the (empty) pod cgroup parents that runc created for test pods, deepest first (with
    SHARED_HOST only those of this session's daemons: another session's may be in the making),
    and, without SHARED_HOST, pycrio's empty default parent /pycrio."""
    for controller in os.listdir("/sys/fs/cgroup"):
        if not SHARED_HOST:  # pycrio's default parent, for pods without one: shared, so left by the daemons
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join("/sys/fs/cgroup", controller, "pycrio"))
        base = os.path.join("/sys/fs/cgroup", controller, "pycrio-tests")
        if not os.path.isdir(base):
            continue
        tops = [os.path.join(base, b) for b in _session_bridges] if SHARED_HOST else [base]
        for top in tops:
            for path, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):  # not empty: a leak the guard reports
                    os.rmdir(path)


def _children() -> set[tuple[int, str]]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add((p.pid, " ".join(p.cmdline())[:200]))
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(autouse=True)
def leak_guard():
    """Fail a test that leaves mounts, network links or child processes behind."""
    mounts, links, children, cgroups = _mounts(), _links(), _children(), _cgroups()
    yield
    remove_test_cgroups()
    deadline = time.monotonic() + 2.0
    while True:
        leaked = {
            "mounts": sorted(_mounts() - mounts),
            "links": sorted(_links() - links),
            "processes": sorted(_children() - children),
            "cgroups": sorted(_cgroups() - cgroups),
        }
        leaked = {k: v for k, v in leaked.items() if v}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"test leaked {leaked}"


@pytest.fixture
def tmpdir_short():
    """A short temporary directory (unix socket paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="pycrio-t-")
    _session_dirs.append(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Daemon:
    """A pycrio daemon process on its own root, runroot and socket."""

    base: str
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    channel: grpc.Channel | None = None
    # Each test daemon has a bridge and subnet of its own, so daemons of concurrent test sessions
    # (and the host's pycrio0) never share or remove each other's network.
    bridge: str = field(default_factory=lambda: f"pycrio{random.getrandbits(24):06x}")
    subnet: str = field(default_factory=lambda: f"10.{random.randrange(100, 200)}.{random.randrange(256)}.0/24")

    def __post_init__(self) -> None:
        _session_bridges.add(self.bridge)

    @property
    def network_config(self) -> str:
        return f'\n[pycrio.network]\nbridge = "{self.bridge}"\nsubnet = "{self.subnet}"\n'

    @property
    def root(self) -> str:
        return os.path.join(self.base, "root")

    @property
    def runroot(self) -> str:
        return os.path.join(self.base, "run")

    @property
    def socket(self) -> str:
        return os.path.join(self.runroot, "pycrio.sock")

    @property
    def config_file(self) -> str:
        return os.path.join(self.base, "pycrio.conf")

    @property
    def config_dir(self) -> str:
        return os.path.join(self.base, "pycrio.conf.d")

    @property
    def log_path(self) -> str:
        return os.path.join(self.base, "daemon.log")

    def write_config(self, text: str, drop_in: str | None = None) -> None:
        """Write the main config file, or a drop-in named drop_in, before start()."""
        os.makedirs(self.config_dir, exist_ok=True)
        path = os.path.join(self.config_dir, drop_in) if drop_in else self.config_file
        if not drop_in and "[pycrio.network]" not in text:
            text += self.network_config
        with open(path, "w") as f:
            f.write(text)

    def args(self) -> list[str]:
        return [
            "--config",
            self.config_file,
            "--config-dir",
            self.config_dir,
            "--root",
            self.root,
            "--runroot",
            self.runroot,
            *self.extra_args,
        ]

    def start(self, wait: bool = True) -> Daemon:
        os.makedirs(self.config_dir, exist_ok=True)
        if not os.path.exists(self.config_file):
            self.write_config("")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pycrio.cli", *self.args()], stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.socket):
                try:
                    self.runtime.Version(api_pb2.VersionRequest(), timeout=1)
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.02)
        raise AssertionError(f"daemon not ready after {START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def _channel(self) -> grpc.Channel:
        if self.channel is None:
            self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        return self.channel

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self._channel())

    @property
    def image(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self._channel())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the daemon and wait; returns its exit code."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"daemon ignored signal {sig} for {timeout} s:\n{self.log()}") from None
        return self.proc.returncode


@pytest.fixture
def daemon_factory(tmpdir_short):
    """Make daemons (not started) in subdirectories of one temporary directory; all stopped at the end."""
    made: list[Daemon] = []

    def make(name: str = "d", extra_args: list[str] | None = None) -> Daemon:
        d = Daemon(os.path.join(tmpdir_short, name), extra_args or [])
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)
        if d.proc is not None:
            # Whatever the test left (a failure halfway): containers, mounts, pins, the bridge go with
            # wipe; with a config of only the daemon's network, since a test may have left a broken one.
            empty = os.path.join(d.base, "wipe.conf")
            os.makedirs(os.path.join(d.base, "wipe.conf.d"), exist_ok=True)
            with open(empty, "w") as f:
                f.write(d.network_config)
            flags = ["--config", empty, "--config-dir", os.path.join(d.base, "wipe.conf.d"), "--root", d.root]
            subprocess.run(
                [sys.executable, "-m", "pycrio.cli", "wipe", *flags, "--runroot", d.runroot],
                capture_output=True,
                check=False,
            )


@pytest.fixture
def daemon(daemon_factory):
    """A started daemon with a clean state; stopped (SIGTERM) after the test, which must exit 0."""
    d = daemon_factory().start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        assert d.stop() == 0, d.log()
