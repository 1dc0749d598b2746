"""csrc/pause_spawn.c: pycrio-pause started as PID 1 of a new PID namespace without runc (pycrio_pause_spawn)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from pycrio import native
from pycrio.paths import helper_binary

PAUSE = helper_binary("pycrio-pause")
ALL = native.NS_NET | native.NS_IPC | native.NS_UTS


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return data[data.rindex(b")") + 2 :].split()[0].decode()


def _ns_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def _kill(pid: int) -> None:
    """SIGKILL the pause and wait until it is gone or a zombie (PID 1 here may never reap it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _state(pid) not in (None, "Z", "X"):
        assert time.monotonic() < deadline, f"pause {pid} survived SIGKILL"
        time.sleep(0.005)


def _pauses() -> set[int]:
    """Live (not zombie) pycrio-pause processes on the host."""
    found = set()
    for p in psutil.process_iter(["name", "status"]):
        if p.info["name"] == "pycrio-pause" and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.add(p.pid)
    return found


@pytest.fixture
def spawn() -> Iterator[Callable[..., int]]:
    """spawn(**kwargs) -> native.pause_spawn(PAUSE, ...); every pause is killed afterwards."""
    made: list[int] = []

    def run(path: str = PAUSE, **kwargs) -> int:
        pid = native.pause_spawn(path, **kwargs)
        made.append(pid)
        return pid

    yield run
    for pid in made:
        _kill(pid)


@pytest.fixture
def pins(tmpdir_short: str) -> Iterator[dict[str, str]]:
    paths = native.ns_pin(tmpdir_short, ALL, hostname="pause-test")
    yield paths
    for path in paths.values():
        native.ns_unpin(path)


def test_runs_pause_as_pid1_of_a_new_pid_namespace(spawn):
    pid = spawn()
    assert os.readlink(f"/proc/{pid}/exe") == os.path.realpath(PAUSE)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read() == b"/pause\0"
    status = _status(pid)
    assert status["NSpid"].split()[-1] == "1"
    assert status["NSpid"].split()[0] == str(pid)
    assert _ns_inode(pid, "pid") != _ns_inode(os.getpid(), "pid")
    assert _state(pid) in ("S", "R")


def test_joins_the_pinned_namespaces(spawn, pins):
    pid = spawn(netns=pins["net"], ipcns=pins["ipc"], utsns=pins["uts"])
    for kind, path in pins.items():
        assert _ns_inode(pid, kind) == os.stat(path).st_ino, kind
        assert _ns_inode(pid, kind) != _ns_inode(os.getpid(), kind), kind


def test_stays_in_the_callers_namespaces_when_none_given(spawn, pins):
    pid = spawn(netns=pins["net"])
    assert _ns_inode(pid, "net") == os.stat(pins["net"]).st_ino
    for kind in ("ipc", "uts"):
        assert _ns_inode(pid, kind) == _ns_inode(os.getpid(), kind), kind


def test_has_no_privileges(spawn):
    status = _status(spawn())
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, field
    assert status["NoNewPrivs"] == "1"
    assert status["NSsid"].split()[-1] == "1", "not a session leader"


def test_has_only_devnull_stdio_an_empty_environment_and_root(spawn):
    pid = spawn()
    assert sorted(os.listdir(f"/proc/{pid}/fd"), key=int) == ["0", "1", "2"]
    for fd in range(3):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert f.read() == b""
    # Its own mount namespace whose root is an empty tmpfs: /proc/1/root seen from a container
    # sharing its PID namespace must not be the host's root.
    assert _ns_inode(pid, "mnt") != _ns_inode(os.getpid(), "mnt")
    assert os.listdir(f"/proc/{pid}/root") == []
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    with open(f"/proc/{pid}/mountinfo") as f:
        (root,) = [line.split() for line in f]
    assert root[4] == "/" and root[root.index("-") + 1] == "tmpfs"


def test_is_not_our_child_and_the_intermediate_is_reaped(spawn):
    pid = spawn()
    me = psutil.Process()
    assert pid not in [c.pid for c in me.children(recursive=True)]
    assert psutil.Process(pid).ppid() != os.getpid()
    assert not [c for c in me.children() if c.status() == psutil.STATUS_ZOMBIE]


def test_oom_score_adj_as_asked(spawn):
    with open("/proc/self/oom_score_adj") as f:
        current = int(f.read())
    for value in {current, min(current + 5, 1000)}:
        pid = spawn(oom_score_adj=value)
        with open(f"/proc/{pid}/oom_score_adj") as f:
            assert int(f.read()) == value


def test_oom_score_adj_out_of_range_is_refused():
    with pytest.raises(native.NativeError) as info:
        native.pause_spawn(PAUSE, oom_score_adj=1001)
    assert info.value.errno == errno.EINVAL


def test_lowering_oom_score_adj_without_the_capability_is_reported(spawn):
    with open("/proc/self/oom_score_adj") as f:
        current = int(f.read())
    before = _pauses()
    if current <= -1000:
        pytest.skip("oom_score_adj is already the lowest")
    try:
        pid = spawn(oom_score_adj=-1000)
    except native.NativeError as e:
        assert e.errno in (errno.EACCES, errno.EPERM)
        assert "oom_score_adj" in str(e)
        assert _pauses() == before
        return
    with open(f"/proc/{pid}/oom_score_adj") as f:  # CAP_SYS_RESOURCE: it may lower it
        assert int(f.read()) == -1000


def test_missing_binary_is_enoent_and_leaves_no_process(tmpdir_short):
    before = _pauses()
    missing = os.path.join(tmpdir_short, "no-such-pause")
    with pytest.raises(FileNotFoundError) as info:
        native.pause_spawn(missing)
    assert info.value.filename == missing
    assert _pauses() == before


def test_a_binary_that_cannot_run_fails_at_exec(tmpdir_short):
    before = _pauses()
    script = os.path.join(tmpdir_short, "not-elf")
    with open(script, "w") as f:
        f.write("garbage\n")
    os.chmod(script, 0o755)
    with pytest.raises(native.NativeError) as info:
        native.pause_spawn(script)
    assert info.value.step == "execveat"
    assert _pauses() == before


def test_bad_namespace_path_is_named(tmpdir_short):
    before = _pauses()
    missing = os.path.join(tmpdir_short, "no-such-net")
    with pytest.raises(FileNotFoundError) as info:
        native.pause_spawn(PAUSE, netns=missing)
    assert info.value.filename == missing and "net" in str(info.value)
    not_ns = os.path.join(tmpdir_short, "plain-file")
    open(not_ns, "w").close()
    with pytest.raises(native.NativeError) as info:
        native.pause_spawn(PAUSE, utsns=not_ns)
    assert info.value.errno == errno.EINVAL and info.value.step == "setns"
    assert info.value.filename == not_ns and "uts" in str(info.value)
    assert _pauses() == before


def test_wrong_kind_of_namespace_is_refused(pins):
    with pytest.raises(native.NativeError) as info:
        native.pause_spawn(PAUSE, netns=pins["ipc"])
    assert info.value.errno == errno.EINVAL and info.value.filename == pins["ipc"]


def test_sigterm_stops_it(spawn):
    pid = spawn()
    # Until pause has blocked SIGTERM the kernel drops it (SIG_DFL, sent to a namespace's
    # init), and SigBlk does not show it during sigwait: resend until it ends.
    deadline = time.monotonic() + 2
    while _state(pid) not in (None, "Z", "X"):
        assert time.monotonic() < deadline
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.005)


def test_many_concurrent_spawns(spawn):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(lambda _: spawn(), range(32)))
    assert len(set(pids)) == 32
    assert all(_status(pid)["NSpid"].split()[-1] == "1" for pid in pids)


def _hierarchies() -> list[str]:
    from pycrio import sandbox

    if sandbox.cgroup_version() == 2:
        return [sandbox.CGROUP_ROOT]
    return sandbox._v1_hierarchies()


def test_joins_the_cgroups_given(spawn):
    from pycrio import sandbox

    cgroup = f"/pycrio-tests/pause-spawn-{os.getpid()}"
    dirs = sandbox._make_cgroups(cgroup)
    join = "cgroup.procs" if sandbox.cgroup_version() == 2 else "tasks"
    try:
        pid = spawn(cgroup_files=[os.path.join(d, join) for d in dirs])
        with open(f"/proc/{pid}/cgroup") as f:
            paths = {line.rstrip("\n").split(":", 2)[2] for line in f}
        assert cgroup in paths
        for d in dirs:
            with open(os.path.join(d, "cgroup.procs")) as f:
                assert str(pid) in f.read().split(), d
        _kill(pid)
    finally:
        sandbox._remove_cgroups(dirs)
    assert not [d for d in dirs if os.path.exists(d)]


def test_a_cgroup_it_cannot_join_is_named(tmpdir_short):
    before = _pauses()
    missing = os.path.join(_hierarchies()[0], "pycrio-no-such-cgroup", "tasks")
    with pytest.raises(FileNotFoundError) as info:
        native.pause_spawn(PAUSE, cgroup_files=[missing])
    assert info.value.filename == missing
    assert _pauses() == before


def _ids(status: dict[str, str]) -> tuple[list[int], list[int], list[int]]:
    """(Uid, Gid, Groups) of a /proc/<pid>/status: real, effective, saved, fs ids; the groups."""
    return (
        [int(v) for v in status["Uid"].split()],
        [int(v) for v in status["Gid"].split()],
        [int(v) for v in status["Groups"].split()],
    )


def _assert_unprivileged(status: dict[str, str]) -> None:
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, field
    assert status["NoNewPrivs"] == "1"


def test_runs_as_65535_with_no_groups_by_default(spawn):
    status = _status(spawn())
    assert _ids(status) == ([65535] * 4, [65535] * 4, [])
    _assert_unprivileged(status)


@pytest.mark.parametrize(
    "uid,gid,groups",
    [
        (1234, 5678, [42]),
        (1234, 5678, [9, 42, 7]),
        (0, 0, []),
        (0, 5678, [0, 1]),
        (4294967294, 4294967294, [4294967294]),
    ],
    ids=["user-group-one", "several-groups", "root", "root-other-gid", "largest"],
)
def test_runs_as_the_user_given(spawn, uid, gid, groups):
    status = _status(spawn(uid=uid, gid=gid, groups=groups))
    assert _ids(status) == ([uid] * 4, [gid] * 4, sorted(groups))  # the kernel sorts the groups
    _assert_unprivileged(status)  # uid 0 too: capset(0) after setresuid
    assert status["NSpid"].split()[-1] == "1"


def test_the_calling_process_stays_dumpable(spawn):
    """The uid change marks the memory the child shares with the caller non-dumpable; the caller's flag is put back."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_get_dumpable = 3
    before = prctl(pr_get_dumpable, 0, 0, 0, 0)
    spawn(uid=1234, gid=5678, groups=[42])
    assert prctl(pr_get_dumpable, 0, 0, 0, 0) == before


@pytest.mark.parametrize(
    "kwargs",
    [{"uid": -1}, {"gid": -1}, {"uid": 2**32 - 1}, {"gid": 2**32}, {"groups": [42, -5]}, {"groups": [2**32 - 1]}],
    ids=["uid-negative", "gid-negative", "uid-minus-one", "gid-too-big", "group-negative", "group-minus-one"],
)
def test_invalid_ids_are_refused_before_anything_starts(kwargs):
    before = _pauses()
    with pytest.raises(ValueError, match="out of range"):
        native.pause_spawn(PAUSE, **kwargs)
    assert _pauses() == before


def test_the_c_function_refuses_minus_one_and_too_many_groups():
    """The C side checks too: (uid_t)-1 means "no change" to setresuid(2), and setgroups takes 65536 at most."""
    from pycrio._native import ffi, lib

    path = PAUSE.encode()
    cases = [
        (2**32 - 1, 0, ffi.NULL, 0),
        (0, 2**32 - 1, ffi.NULL, 0),
        (0, 0, ffi.new("unsigned int[]", [1, 2**32 - 1]), 2),
        (0, 0, ffi.new("unsigned int[]", 65537), 65537),
        (0, 0, ffi.NULL, -1),
        (0, 0, ffi.NULL, 1),
    ]
    for uid, gid, groups, n in cases:
        err = native.new_err()
        rc = lib.pycrio_pause_spawn(path, ffi.NULL, ffi.NULL, ffi.NULL, 0, ffi.NULL, uid, gid, groups, n, err)
        assert rc == -errno.EINVAL, (uid, gid, n)
        assert ffi.string(err.step) == b"pause_spawn"


_WITHOUT_CAP = """
import ctypes, json, sys
from pycrio import native
from pycrio.paths import helper_binary

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

libc = ctypes.CDLL(None, use_errno=True)
header, data = Header(0x20080522, 0), (Data * 2)()
assert libc.capget(ctypes.byref(header), data) == 0
cap = int(sys.argv[1])
data[cap // 32].effective &= ~(1 << (cap % 32))
data[cap // 32].permitted &= ~(1 << (cap % 32))
assert libc.capset(ctypes.byref(header), data) == 0
try:
    pid = native.pause_spawn(helper_binary("pycrio-pause"), uid=1234, gid=5678, groups=[42])
except native.NativeError as e:
    print(json.dumps({"errno": e.errno, "step": e.step, "message": str(e)}))
else:
    print(json.dumps({"pid": pid}))
"""


@pytest.mark.parametrize(
    "cap,step,named",
    [(6, "setgroups", "1 supplementary groups, the first 42"), (7, "setresuid", "setresuid(1234)")],
    ids=["no-CAP_SETGID", "no-CAP_SETUID"],
)
def test_a_failing_id_change_is_named_and_leaves_no_pause(cap, step, named):
    """A caller without CAP_SETGID / CAP_SETUID: the pause cannot change ids, and the step and ids are named."""
    import json
    import subprocess
    import sys

    before = _pauses()
    out = subprocess.run([sys.executable, "-c", _WITHOUT_CAP, str(cap)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if "pid" in result:
        _kill(result["pid"])
        pytest.fail(f"the pause started without capability {cap}")
    assert result["errno"] == errno.EPERM and result["step"] == step
    assert named in result["message"], result["message"]
    assert _pauses() == before
