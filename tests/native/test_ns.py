"""csrc/ns.c: creating namespaces in a child and pinning them to files (pycrio_ns_pin/unpin)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from pycrio import native

ALL = native.NS_NET | native.NS_IPC | native.NS_UTS
NSENTER_FLAG = {"net": "--net", "ipc": "--ipc", "uts": "--uts"}


def _ns_inode(link: str) -> int:
    """The inode in a /proc/<pid>/ns/<kind> link: "net:[4026531840]" -> 4026531840."""
    target = os.readlink(link)
    return int(target[target.index("[") + 1 : -1])


def _mountinfo(path: str) -> list[list[str]]:
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f if line.split()[4] == path]


def _all_threads_ns() -> dict[str, str]:
    """Every thread's net/ipc/uts/mnt namespace: the daemon process must keep its own."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        for kind in ("net", "ipc", "uts", "mnt"):
            with contextlib.suppress(FileNotFoundError):  # the thread ended meanwhile
                out[f"{tid}/{kind}"] = os.readlink(f"/proc/self/task/{tid}/ns/{kind}")
    return out


def _zombies() -> list[int]:
    return [p.pid for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE]


def _run_in(pins: dict[str, str], *cmd: str) -> str:
    """Run cmd with nsenter inside the pinned namespaces; its stdout."""
    flags = [f"{NSENTER_FLAG[name]}={path}" for name, path in pins.items()]
    return subprocess.run(["nsenter", *flags, *cmd], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def pin(tmpdir_short: str) -> Iterator[Callable[..., dict[str, str]]]:
    """pin(kinds, dir=..., **kwargs) -> native.ns_pin's result; every pin is undone afterwards."""
    made: list[str] = []

    def run(kinds: int = ALL, dir: str | None = None, **kwargs) -> dict[str, str]:
        paths = native.ns_pin(dir or tmpdir_short, kinds, **kwargs)
        made.extend(paths.values())
        return paths

    yield run
    for path in made:
        native.ns_unpin(path)


def test_pins_are_nsfs_mounts_of_new_namespaces(pin, tmpdir_short):
    pins = pin()
    assert pins == {name: os.path.join(tmpdir_short, name) for name in ("net", "ipc", "uts")}
    for name, path in pins.items():
        (fields,) = _mountinfo(path)
        sep = fields.index("-")
        assert fields[sep + 1] == "nsfs"
        st = os.stat(path)
        assert fields[3] == f"{name}:[{st.st_ino}]"
        assert st.st_ino != _ns_inode(f"/proc/self/ns/{name}"), f"{name} is the host's namespace"
        assert os.lstat(path).st_mode & 0o777 == 0o444


def test_inode_is_what_a_process_entered_with_nsenter_sees(pin):
    pins = pin()
    flags = [f"{NSENTER_FLAG[name]}={path}" for name, path in pins.items()]
    proc = subprocess.Popen(["nsenter", *flags, "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while psutil.Process(proc.pid).name() != "sleep":  # nsenter has joined and exec'd
            assert time.monotonic() < deadline, "nsenter did not exec sleep"
            time.sleep(0.005)
        for name, path in pins.items():
            assert _ns_inode(f"/proc/{proc.pid}/ns/{name}") == os.stat(path).st_ino
    finally:
        proc.kill()
        proc.wait()


def test_each_pin_gets_distinct_namespaces(pin, tmpdir_short):
    for sub in ("a", "b"):
        os.mkdir(os.path.join(tmpdir_short, sub))
    a = pin(dir=os.path.join(tmpdir_short, "a"))
    b = pin(dir=os.path.join(tmpdir_short, "b"))
    for name in a:
        assert os.stat(a[name]).st_ino != os.stat(b[name]).st_ino


def test_hostname_is_set_in_the_uts_namespace_only(pin):
    host_before = socket.gethostname()
    pins = pin(native.NS_UTS, hostname="pod-host-1")
    assert _run_in(pins, "hostname").strip() == "pod-host-1"
    assert socket.gethostname() == host_before


def test_loopback_is_up_in_the_net_namespace(pin):
    pins = pin(native.NS_NET)
    out = _run_in(pins, "ip", "-o", "link", "show", "lo")
    flags = out.split("<", 1)[1].split(">", 1)[0].split(",")
    assert "UP" in flags
    # And it is the only interface of a fresh namespace.
    assert len(_run_in(pins, "ip", "-o", "link", "show").splitlines()) == 1


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def test_sysctls_are_applied_inside_and_not_on_the_host(pin):
    port = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
    shmmni = "/proc/sys/kernel/shmmni"
    host = (_read(port), _read(shmmni))
    assert host != ("0", "8192"), "pick other values: the host already has these"
    pins = pin(sysctls=["net.ipv4.ip_unprivileged_port_start=0", "kernel.shmmni=8192"])
    assert _run_in({"net": pins["net"]}, "cat", port).strip() == "0"
    assert _run_in({"ipc": pins["ipc"]}, "cat", shmmni).strip() == "8192"
    assert (_read(port), _read(shmmni)) == host


def test_sysctls_as_a_mapping_with_spaces_in_values(pin):
    pins = pin(native.NS_NET, sysctls={"net.ipv4.ping_group_range": "0 2147483647"})
    assert _run_in(pins, "cat", "/proc/sys/net/ipv4/ping_group_range").split() == ["0", "2147483647"]


@pytest.mark.parametrize(
    ("sysctl", "words"),
    [
        ("../x=1", "'..'"),
        ("a/b=1", "'/'"),
        ("net..ipv4.x=1", "'..'"),
        ("Net.ipv4.ip_forward=1", "[a-z0-9_.-]"),
        ("net.ipv4.ip_forward", "key=value"),
        ("=1", "empty"),
        ("net.ipv4.ip_forward=", "value is empty"),
        (".net.ipv4=1", "starts or ends"),
        ("vm.swappiness=10", "not namespaced"),
        ("kernel.pid_max=4096", "not namespaced"),
        ("kernel.shmmni=8192", "needs a new ipc namespace"),
    ],
)
def test_bad_sysctls_are_refused_before_anything_is_created(tmpdir_short, sysctl, words):
    before = _all_threads_ns()
    with pytest.raises(native.NativeError) as info:
        native.ns_pin(tmpdir_short, native.NS_NET | native.NS_UTS, sysctls=[sysctl])
    assert info.value.errno == errno.EINVAL
    assert info.value.step == "sysctl"
    assert words in info.value.strerror
    assert os.listdir(tmpdir_short) == []
    assert _all_threads_ns() == before


def test_unknown_sysctl_is_enoent_naming_the_key_and_nothing_stays_pinned(tmpdir_short):
    with pytest.raises(native.NativeError) as info:
        native.ns_pin(tmpdir_short, ALL, sysctls=["kernel.shmmni=8192", "net.ipv4.no_such_knob=1"])
    e = info.value
    assert e.errno == errno.ENOENT and e.step == "sysctl"
    assert "net.ipv4.no_such_knob" in e.strerror
    assert e.filename == "/proc/sys/net/ipv4/no_such_knob"
    assert os.listdir(tmpdir_short) == []
    assert _zombies() == []


def test_the_daemon_keeps_its_own_namespaces(pin):
    before = _all_threads_ns()
    pin(hostname="elsewhere", sysctls=["net.ipv4.ip_unprivileged_port_start=0"])
    assert _all_threads_ns() == before


def test_unpin_is_idempotent_and_leaves_no_mount(tmpdir_short):
    pins = native.ns_pin(tmpdir_short, ALL)
    for path in pins.values():
        assert native.ns_unpin(path) is True
        assert _mountinfo(path) == []
        assert not os.path.exists(path)
        assert native.ns_unpin(path) is False
    assert native.ns_unpin(os.path.join(tmpdir_short, "no", "such")) is False


def test_unpin_of_an_unmounted_file_removes_it(tmpdir_short):
    path = os.path.join(tmpdir_short, "net")
    open(path, "w").close()
    assert native.ns_unpin(path) is True
    assert not os.path.exists(path)


def test_missing_dir_is_enoent_with_the_path(tmpdir_short):
    missing = os.path.join(tmpdir_short, "missing")
    with pytest.raises(native.NativeError) as info:
        native.ns_pin(missing, ALL)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == missing
    assert missing in info.value.strerror


def test_an_existing_pin_file_fails_and_rolls_back_the_others(tmpdir_short):
    taken = os.path.join(tmpdir_short, "uts")
    open(taken, "w").close()
    with pytest.raises(native.NativeError) as info:
        native.ns_pin(tmpdir_short, ALL)
    assert info.value.errno == errno.EEXIST
    assert info.value.filename == taken
    assert os.listdir(tmpdir_short) == ["uts"]  # net and ipc were pinned, then undone
    for name in ("net", "ipc"):
        assert _mountinfo(os.path.join(tmpdir_short, name)) == []


def test_only_the_asked_kinds_are_pinned(pin, tmpdir_short):
    assert set(pin(native.NS_IPC)) == {"ipc"}
    assert os.listdir(tmpdir_short) == ["ipc"]


@pytest.mark.parametrize(
    ("kinds", "kwargs", "words"),
    [
        (0, {}, "invalid namespace kinds"),
        (8, {}, "invalid namespace kinds"),
        (native.NS_NET, {"hostname": "h"}, "needs a new uts namespace"),
        (native.NS_UTS, {"hostname": "h" * 65}, "longer than 64"),
    ],
)
def test_invalid_arguments_are_einval(tmpdir_short, kinds, kwargs, words):
    with pytest.raises(native.NativeError) as info:
        native.ns_pin(tmpdir_short, kinds, **kwargs)
    assert info.value.errno == errno.EINVAL
    assert words in info.value.strerror
    assert os.listdir(tmpdir_short) == []


def test_concurrent_pins_from_several_threads(tmpdir_short):
    dirs = [os.path.join(tmpdir_short, str(i)) for i in range(8)]
    for d in dirs:
        os.mkdir(d)
    before = _all_threads_ns()
    barrier = threading.Barrier(len(dirs))

    def one(d: str) -> dict[str, str]:
        barrier.wait()
        return native.ns_pin(d, ALL, hostname=os.path.basename(d), sysctls=["kernel.shmmni=8192"])

    results: list[dict[str, str]] = []
    try:
        with ThreadPoolExecutor(len(dirs)) as pool:
            results = list(pool.map(one, dirs))
        inodes = {os.stat(p).st_ino for r in results for p in r.values()}
        assert len(inodes) == 3 * len(dirs)
        assert _run_in({"uts": results[3]["uts"]}, "hostname").strip() == "3"
        assert _zombies() == []
        after = _all_threads_ns()
        assert {k: v for k, v in after.items() if k in before} == before
    finally:
        for d in dirs:
            for name in ("net", "ipc", "uts"):
                native.ns_unpin(os.path.join(d, name))


def test_no_child_or_zombie_is_left(pin, tmpdir_short):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    for i in range(5):
        d = os.path.join(tmpdir_short, str(i))
        os.mkdir(d)
        pin(dir=d, hostname="h", sysctls=["net.ipv4.ip_forward=1"])
    with pytest.raises(native.NativeError):
        pin(sysctls=["net.ipv4.no_such_knob=1"])  # a failing child is reaped too
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


def test_repeated_pins_do_not_leak_descriptors(tmpdir_short):
    fds = sorted(os.listdir("/proc/self/fd"))
    for _ in range(20):
        for path in native.ns_pin(tmpdir_short, ALL, sysctls=["net.ipv4.ip_forward=1"]).values():
            native.ns_unpin(path)
        with pytest.raises(native.NativeError):
            native.ns_pin(tmpdir_short, ALL, sysctls=["net.ipv4.no_such_knob=1"])
    assert sorted(os.listdir("/proc/self/fd")) == fds
