"""csrc/monitor/: pycrio-monitor with real runc and busybox containers, through pycrio.monitor."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest

from pycrio import monitor
from pycrio.errors import DeadlineExceeded, FailedPrecondition
from pycrio.exits import ExitWatcher
from pycrio.monitor import ExitStatus, MonitorError, RuntimeCreateFailed
from pycrio.paths import helper_binary
from tests.support.bundle import RUNC, Bundle, make_bundle

MONITOR = helper_binary("pycrio-monitor")
# A sanitized build runs the tests with libasan preloaded; runc (Go + cgo) must not inherit that.
ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
LINE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP]) (.*)$", re.S)
READ_BUF = 16 * 1024


@dataclass
class Record:
    """One CRI log line."""

    time: datetime.datetime
    stream: str
    tag: str
    text: bytes


def parse_log(path: str) -> list[Record]:
    """Every line of a CRI log file, each checked against the format."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n") or not data, data[-100:]
    records = []
    for line in data.split(b"\n")[:-1]:
        m = LINE.match(line)
        assert m, f"bad log line {line[:200]!r}"
        stamp = m.group(1).decode()
        # RFC3339Nano: nine fraction digits; datetime keeps six.
        head, frac_zone = stamp.split(".")
        frac, zone = frac_zone[:9], frac_zone[9:]
        parsed = datetime.datetime.fromisoformat(f"{head}.{frac[:6]}{zone}")
        records.append(Record(parsed, m.group(2).decode(), m.group(3).decode(), m.group(4)))
    return records


def joined(records: list[Record], stream: str) -> list[bytes]:
    """The logical lines of a stream: P pieces joined up to their F."""
    lines, cur = [], b""
    for r in records:
        if r.stream != stream:
            continue
        cur += r.text
        if r.tag == "F":
            lines.append(cur)
            cur = b""
    if cur:
        lines.append(cur)
    return lines


def monitors_of(container_id: str) -> list[psutil.Process]:
    """Live pycrio-monitor processes for container_id."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].endswith("pycrio-monitor") and container_id in cmd:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
    return found


@dataclass
class Case:
    """One container: its bundle, the monitor's paths, and helpers around them."""

    base: str
    bundle: Bundle
    started: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.bundle.container_id

    @property
    def exits_dir(self) -> str:
        return os.path.join(self.base, "exits")

    @property
    def exit_file(self) -> str:
        return os.path.join(self.exits_dir, self.id)

    @property
    def ctl(self) -> str:
        return os.path.join(self.base, "ctl")

    @property
    def log(self) -> str:
        return os.path.join(self.base, "ctr.log")

    @property
    def monitor_log(self) -> str:
        return os.path.join(self.base, "monitor.log")

    def spawn_kwargs(self, **overrides) -> dict:
        kwargs = dict(
            runtime=RUNC,
            runtime_root=self.bundle.runc_root,
            bundle=self.bundle.path,
            pid_file=os.path.join(self.base, "pid"),
            exit_file=self.exit_file,
            ctl_socket=self.ctl,
            log_path=self.log,
            monitor_log=self.monitor_log,
            env=ENV,
            timeout=20.0,
        )
        kwargs.update(overrides)
        return kwargs

    def spawn(self, **overrides) -> int:
        return asyncio.run(monitor.spawn(self.id, **self.spawn_kwargs(**overrides)))

    def start(self) -> None:
        self.bundle.runc("start", self.id)

    def run(self, **overrides) -> ExitStatus:
        """spawn + start + wait for the exit file."""
        self.spawn(**overrides)
        self.start()
        return self.wait_exit()

    def wait_exit(self, timeout: float = 15.0) -> ExitStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = monitor.read_exit_file(self.exit_file)
            if status is not None:
                return status
            time.sleep(0.02)
        raise AssertionError(f"no exit file after {timeout} s; monitor log: {self.monitor_text()}")

    def wait_monitor_gone(self, timeout: float = 5.0) -> None:
        _, alive = psutil.wait_procs(monitors_of(self.id), timeout=timeout)
        assert not alive, f"monitor still running: {alive}"

    def log_has(self, text: bytes) -> bool:
        try:
            with open(self.log, "rb") as f:
                return text in f.read()
        except FileNotFoundError:
            return False

    def monitor_text(self) -> str:
        try:
            with open(self.monitor_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def cleanup(self) -> None:
        """Kill the container, let (or make) its monitor exit, delete runc's state and cgroups."""
        mons = monitors_of(self.id)
        self.bundle.runc("kill", self.id, "KILL", check=False)
        _, alive = psutil.wait_procs(mons, timeout=5)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=5)
        self.bundle.delete()


@pytest.fixture
def make_case(tmpdir_short) -> Iterator:
    """make_case(args, **bundle_options) -> Case; every container and monitor is removed afterwards."""
    made: list[Case] = []

    def make(args: list[str], name: str = "c", **options) -> Case:
        base = os.path.join(tmpdir_short, name)
        os.makedirs(os.path.join(base, "exits"))
        cid = f"mon-{uuid.uuid4().hex[:10]}"
        case = Case(base, make_bundle(base, cid, args, **options))
        made.append(case)
        return case

    yield make
    for case in made:
        case.cleanup()
        assert case.bundle.state() is None, "runc state left"
        assert not monitors_of(case.id)
        text = case.monitor_text()
        assert "Sanitizer" not in text and "runtime error:" not in text, text


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# --- flags -------------------------------------------------------------------------------------


def test_version():
    out = subprocess.run([MONITOR, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("pycrio-monitor")


def test_bad_flags_exit_2_with_usage():
    out = subprocess.run([MONITOR, "--id", "x"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "usage: pycrio-monitor" in out.stderr


def test_bad_flags_reported_on_sync_fd(make_case):
    case = make_case(["true"])
    with pytest.raises(MonitorError, match="--bundle must be an absolute path"):
        case.spawn(bundle="relative/bundle")
    assert not monitors_of(case.id)


def test_missing_runtime_is_a_monitor_error(make_case):
    case = make_case(["true"])
    with pytest.raises(MonitorError, match="cannot run the runtime /nonexistent/runc"):
        case.spawn(runtime="/nonexistent/runc")
    case.wait_monitor_gone()


# --- process model -----------------------------------------------------------------------------


def test_detached_subreaper_and_survives_the_daemon(make_case):
    """A 'daemon' process spawns the monitor and exits: monitor and container carry on."""
    case = make_case(sh("echo started; sleep 60"))
    daemon = (
        "import asyncio, json, sys; from pycrio import monitor; "
        "kw = json.loads(sys.argv[1]); print(asyncio.run(monitor.spawn(sys.argv[2], **kw)))"
    )
    kwargs = case.spawn_kwargs()
    out = subprocess.run(
        [sys.executable, "-c", daemon, json.dumps(kwargs), case.id], capture_output=True, text=True, env=ENV
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout)
    mons = monitors_of(case.id)
    assert len(mons) == 1
    mon = mons[0]
    assert mon.ppid() != os.getpid() and mon.pid not in {p.pid for p in psutil.Process().children(recursive=True)}
    assert os.getsid(mon.pid) == mon.pid, "the monitor is not a session leader"
    assert psutil.Process(pid).ppid() == mon.pid, "the container is not the monitor's child"
    case.start()
    case.wait_for(lambda: case.log_has(b"started"), what="output")
    assert case.bundle.state()["status"] == "running"
    case.bundle.runc("kill", case.id, "KILL")
    status = case.wait_exit()
    assert (status.exit_code, status.signal) == (137, 9)
    case.wait_monitor_gone()


def test_no_monitor_when_its_pid_cannot_be_reported(make_case, tmpdir_short):
    """The sync pipe's reader is gone: the first process cannot report, so no monitor goes on."""
    case = make_case(["true"])
    marker = os.path.join(tmpdir_short, "runtime-ran")
    fake = os.path.join(tmpdir_short, "marker-runtime")
    with open(fake, "w") as f:
        f.write(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    os.chmod(fake, 0o755)
    r, w = os.pipe()
    os.close(r)
    kwargs = case.spawn_kwargs(runtime=fake)
    for name in ("monitor_log", "env", "timeout"):  # spawn()'s own, not flags
        del kwargs[name]
    argv = monitor.command(case.id, sync_fd=w, **kwargs)
    proc = subprocess.Popen(argv, pass_fds=(w,), env=ENV, stderr=subprocess.DEVNULL)
    os.close(w)
    assert proc.wait(5) == 0
    time.sleep(0.3)
    assert not monitors_of(case.id)
    assert not os.path.exists(marker), "the runtime ran under an unreported monitor"


def test_sigterm_to_the_monitor_is_forwarded_to_the_container(make_case):
    case = make_case(sh("trap 'echo bye; exit 7' TERM; echo ready; while :; do sleep 0.05; done"))
    pid = case.spawn()
    mon = psutil.Process(pid).parent()
    case.start()
    case.wait_for(lambda: case.log_has(b"ready"), what="ready")
    mon.send_signal(signal.SIGTERM)
    assert case.wait_exit().exit_code == 7
    assert joined(parse_log(case.log), "stdout") == [b"ready", b"bye"]


# --- create failures ---------------------------------------------------------------------------


def test_create_failure_missing_binary(make_case):
    case = make_case(["/nope/missing"])
    with pytest.raises(RuntimeCreateFailed) as info:
        case.spawn()
    err = info.value
    assert "/nope/missing" in err.runtime_message and "no such file or directory" in err.runtime_message
    assert err.exit_code == 1
    assert "level=error" in err.output  # the whole stderr is kept
    assert isinstance(err, FailedPrecondition)
    case.wait_monitor_gone()
    assert not os.path.exists(case.exit_file)
    assert case.bundle.state() is None
    assert os.listdir(case.exits_dir) == []
    assert not os.path.exists(case.ctl), "control socket left behind"


def test_create_failure_bad_spec(make_case):
    def relative_cwd(config):
        config["process"]["cwd"] = "relative"

    case = make_case(["true"], edit=relative_cwd)
    with pytest.raises(RuntimeCreateFailed, match="(?i)cwd must be an absolute path"):
        case.spawn()
    case.wait_monitor_gone()


def test_create_timeout_stops_runtime_and_monitor(make_case, tmpdir_short):
    case = make_case(["true"])
    fake = os.path.join(tmpdir_short, "slow-runtime")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\nexec sleep 30\n")
    os.chmod(fake, 0o755)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        case.spawn(runtime=fake, timeout=0.5)
    assert time.monotonic() - started < 4
    case.wait_monitor_gone()
    leftover = [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:2] == ["/bin/sh", fake]]
    leftover += [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or []) == ["sleep", "30"]]
    psutil.wait_procs(leftover, timeout=2)
    assert not [p for p in leftover if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_cancelled_spawn_leaves_no_monitor(make_case, tmpdir_short):
    case = make_case(["true"])
    fake = os.path.join(tmpdir_short, "slow-runtime")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\nexec sleep 31\n")
    os.chmod(fake, 0o755)

    async def main():
        task = asyncio.create_task(monitor.spawn(case.id, **case.spawn_kwargs(runtime=fake)))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    case.wait_monitor_gone()
    sleepers = [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or []) == ["sleep", "31"]]
    psutil.wait_procs(sleepers, timeout=2)
    assert not [p for p in sleepers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


# --- log format --------------------------------------------------------------------------------


def test_stdout_and_stderr_lines(make_case):
    case = make_case(sh("echo out1; echo err1 >&2; echo 'out 2  with  spaces'; echo; echo err2 >&2"))
    before = datetime.datetime.now(datetime.UTC)
    assert case.run().exit_code == 0
    after = datetime.datetime.now(datetime.UTC)
    records = parse_log(case.log)
    assert joined(records, "stdout") == [b"out1", b"out 2  with  spaces", b""]
    assert joined(records, "stderr") == [b"err1", b"err2"]
    assert all(r.tag == "F" for r in records)
    for r in records:
        assert before - datetime.timedelta(seconds=1) <= r.time <= after + datetime.timedelta(seconds=1)
    assert os.stat(case.log).st_mode & 0o777 == 0o640


def test_timestamps_are_local_time_with_offset(make_case):
    case = make_case(sh("echo hi"))
    assert case.run(env={**ENV, "TZ": "<+0130>-1:30"}).exit_code == 0
    with open(case.log, "rb") as f:
        line = f.read()
    assert re.match(rb"^\S+\.\d{9}\+01:30 stdout F hi\n$", line), line
    (record,) = parse_log(case.log)
    assert abs((datetime.datetime.now(datetime.UTC) - record.time).total_seconds()) < 30


def test_partial_line_is_P(make_case):
    case = make_case(sh("printf abc"))
    assert case.run().exit_code == 0
    records = parse_log(case.log)
    assert [(r.stream, r.tag, r.text) for r in records] == [("stdout", "P", b"abc")]


def test_long_line_is_split_into_P_pieces_then_F(make_case):
    case = make_case(sh("head -c 40000 /dev/zero | tr '\\0' x; echo; echo next"))
    assert case.run().exit_code == 0
    records = [r for r in parse_log(case.log) if r.stream == "stdout"]
    assert len(records) >= 4
    assert all(r.tag == "P" for r in records[:-2]) and records[-2].tag == "F"
    assert all(len(r.text) <= READ_BUF for r in records)
    assert joined(records, "stdout") == [b"x" * 40000, b"next"]


def test_no_log_path_discards_output(make_case):
    case = make_case(sh("head -c 100000 /dev/zero; echo done"))
    assert case.run(log_path=None).exit_code == 0
    assert not os.path.exists(case.log)


def test_log_max_size_starts_a_new_file(make_case):
    script = "i=0; while [ $i -lt 60 ]; do echo line-$i-......................................; i=$((i+1)); done"
    case = make_case(sh(script))
    assert case.run(log_max_size=2000).exit_code == 0
    records = parse_log(case.log)
    size = os.path.getsize(case.log)
    assert records[-1].text.startswith(b"line-59-")
    assert size < 60 * 100, "nothing was dropped"
    assert os.listdir(case.base).count("ctr.log.tmp") == 0


# --- exit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("script", "code"), [("true", 0), ("exit 3", 3)])
def test_exit_code(make_case, script, code):
    case = make_case(sh(script))
    status = case.run()
    assert (status.exit_code, status.signal, status.oom_killed) == (code, 0, False)


def test_killed_by_sigkill_is_137(make_case):
    case = make_case(["sleep", "60"])
    case.spawn()
    case.start()
    case.bundle.runc("kill", case.id, "KILL")
    status = case.wait_exit()
    assert (status.exit_code, status.signal) == (137, 9)


def test_exit_file_is_atomic_and_complete(make_case):
    case = make_case(sh("echo x; exit 5"))
    started = time.time_ns()
    pid = case.spawn()
    mon = psutil.Process(pid).parent()
    case.start()
    status = case.wait_exit()
    assert os.listdir(case.exits_dir) == [case.id], "a temporary file was left"
    with open(case.exit_file) as f:
        obj = json.load(f)
    assert set(obj) == {"exit_code", "signal", "finished_ns", "oom_killed"}
    assert status == ExitStatus(5, 0, obj["finished_ns"], False)
    assert started < status.finished_ns <= time.time_ns()
    mon.wait(5)
    assert not os.path.exists(case.ctl), "control socket not removed"


def test_exit_watcher_sees_each_monitor_exit_once(make_case):
    cases = [make_case(sh(f"exit {n}"), name=f"c{n}") for n in (4, 6)]
    exits_dir = cases[0].exits_dir
    seen: list[tuple[str, int]] = []

    async def main():
        with ExitWatcher(exits_dir, lambda cid, st: seen.append((cid, st.exit_code))):
            for case in cases:
                await monitor.spawn(case.id, **case.spawn_kwargs(exit_file=os.path.join(exits_dir, case.id)))
                case.start()
            deadline = time.monotonic() + 15
            while len(seen) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)

    asyncio.run(main())
    assert sorted(seen) == sorted([(cases[0].id, 4), (cases[1].id, 6)])


def test_read_exit_file_missing_and_malformed(tmp_path):
    assert monitor.read_exit_file(tmp_path / "nope") is None
    bad = tmp_path / "bad"
    for text in ["{", "[]", '{"exit_code": "1", "signal": 0, "finished_ns": 1, "oom_killed": false}', "{}"]:
        bad.write_text(text)
        with pytest.raises(monitor.ExitFileError, match=str(bad)):
            monitor.read_exit_file(bad)
    bad.write_text('{"exit_code": true, "signal": 0, "finished_ns": 1, "oom_killed": false}')
    with pytest.raises(monitor.ExitFileError, match="exit_code"):
        monitor.read_exit_file(bad)


# --- control socket --------------------------------------------------------------------------------


def test_reopen_after_rename(make_case):
    script = "i=0; while [ ! -e /tmp/stop ]; do echo line$i; i=$((i+1)); sleep 0.02; done; echo last"
    case = make_case(sh(script))
    case.spawn()
    case.start()
    case.wait_for(lambda: os.path.exists(case.log) and os.path.getsize(case.log) > 200, what="first lines")
    os.rename(case.log, case.log + ".1")
    asyncio.run(monitor.reopen_log(case.ctl))
    case.wait_for(lambda: os.path.exists(case.log) and os.path.getsize(case.log) > 200, what="new lines")
    open(os.path.join(case.bundle.rootfs, "tmp", "stop"), "w").close()
    assert case.wait_exit().exit_code == 0
    old = joined(parse_log(case.log + ".1"), "stdout")
    new = joined(parse_log(case.log), "stdout")
    assert new[-1] == b"last"
    numbers = [int(x[4:]) for x in old + new[:-1]]
    assert numbers == list(range(len(numbers))), "a line was lost or duplicated across the reopen"
    assert old and len(new) > 1


def test_control_errors(make_case):
    case = make_case(["sleep", "60"])
    case.spawn(log_path=None)
    with pytest.raises(FailedPrecondition, match="no log path"):
        asyncio.run(monitor.reopen_log(case.ctl))
    with pytest.raises(FailedPrecondition, match="no terminal"):
        asyncio.run(monitor.resize(case.ctl, 10, 10))
    with pytest.raises(FailedPrecondition, match="unknown command"):
        asyncio.run(monitor.control(case.ctl, "attach"))
    with pytest.raises(FailedPrecondition, match="usage: resize"):
        asyncio.run(monitor.control(case.ctl, "resize 1"))
    case.bundle.runc("kill", case.id, "KILL")
    case.wait_exit()
    with pytest.raises(FailedPrecondition, match="not running"):
        asyncio.run(monitor.reopen_log(case.ctl))


def test_terminal_output_and_resize(make_case):
    case = make_case(sh("echo tty-hello; while [ ! -e /tmp/go ]; do sleep 0.02; done; stty size"), terminal=True)
    case.spawn(terminal=True)
    case.start()
    asyncio.run(monitor.resize(case.ctl, 33, 120))
    open(os.path.join(case.bundle.rootfs, "tmp", "go"), "w").close()
    assert case.wait_exit().exit_code == 0
    records = parse_log(case.log)
    assert {r.stream for r in records} == {"stdout"}
    assert [line.rstrip(b"\r") for line in joined(records, "stdout")] == [b"tty-hello", b"33 120"]
    assert not os.path.exists(case.ctl + ".console")


def test_stdin_pipe_stays_open(make_case):
    case = make_case(["cat"])
    case.spawn(stdin=True)
    case.start()
    time.sleep(0.3)
    assert case.bundle.state()["status"] == "running", "cat saw EOF on an open stdin"
    case.bundle.runc("kill", case.id, "KILL")
    assert case.wait_exit().signal == 9


def test_without_stdin_the_container_reads_eof(make_case):
    case = make_case(["cat"])
    assert case.run().exit_code == 0


# --- OOM -----------------------------------------------------------------------------------------

V1_MEMORY = "/sys/fs/cgroup/memory/memory.oom_control"


@pytest.mark.skipif(not os.path.exists(V1_MEMORY), reason="no cgroup v1 memory controller on this host")
def test_oom_kill_cgroup_v1(make_case):
    case = make_case(sh("x=$(head -c 64m /dev/zero | tr '\\0' a); echo survived"), memory_limit=8 * 1024 * 1024)
    case.spawn(cgroup_oom_dir=case.bundle.cgroup_dir("memory"))
    case.start()
    status = case.wait_exit(30)
    assert status.oom_killed, case.monitor_text()
    assert (status.exit_code, status.signal) == (137, 9)


@pytest.mark.skipif(not os.path.exists(V1_MEMORY), reason="no cgroup v1 memory controller on this host")
def test_no_oom_cgroup_v1(make_case):
    case = make_case(sh("echo fine"), memory_limit=64 * 1024 * 1024)
    status = case.run(cgroup_oom_dir=case.bundle.cgroup_dir("memory"))
    assert (status.exit_code, status.oom_killed) == (0, False)


def _v2_memory() -> bool:
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            return "memory" in f.read().split()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _v2_memory(), reason="no unified cgroup v2 hierarchy with the memory controller")
def test_oom_kill_cgroup_v2(make_case):
    case = make_case(sh("x=$(head -c 64m /dev/zero | tr '\\0' a); echo survived"), memory_limit=8 * 1024 * 1024)
    case.spawn(cgroup_oom_dir=case.bundle.cgroup2_dir())
    case.start()
    status = case.wait_exit(30)
    assert status.oom_killed, case.monitor_text()
    assert (status.exit_code, status.signal) == (137, 9)


@pytest.mark.parametrize("bump", [True, False])
def test_oom_counter_cgroup_v2_style(make_case, bump):
    """A v2 memory.events file (a stand-in directory): the oom_kill counter compared at exit."""
    case = make_case(sh("while [ ! -e /tmp/go ]; do sleep 0.02; done"))
    fake = os.path.join(case.base, "cg")
    os.mkdir(fake)
    events = os.path.join(fake, "memory.events")
    with open(events, "w") as f:
        f.write("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    case.spawn(cgroup_oom_dir=fake)
    case.start()
    if bump:
        with open(events, "w") as f:
            f.write("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    open(os.path.join(case.bundle.rootfs, "tmp", "go"), "w").close()
    assert case.wait_exit().oom_killed is bump


def test_oom_dir_without_memory_files_is_a_warning(make_case):
    case = make_case(["true"])
    status = case.run(cgroup_oom_dir=case.base)
    assert status.oom_killed is False
    assert "OOM kills will not be reported" in case.monitor_text()
