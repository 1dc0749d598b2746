"""csrc/monitor/attach.c: the attach socket, spoken raw, with real runc and busybox containers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

from pycrio import monitor
from pycrio.attach import open_attach
from pycrio.monitor import MonitorError
from tests.native.test_monitor import ENV, Case, joined, monitors_of, parse_log, sh
from tests.support.bundle import make_bundle

HEADER = struct.Struct(">BI")
HELLO, STDOUT, STDERR, ERROR = 0, 1, 2, 3
STDIN, CLOSE_STDIN = 1, 2
MAX_CLIENTS = 16


@pytest.fixture
def case(tmpdir_short) -> Iterator:
    """case(args, **bundle_options) -> Case, removed afterwards (container, monitor, runc state)."""
    made: list[Case] = []

    def make(args: list[str], name: str = "c", **options) -> Case:
        base = os.path.join(tmpdir_short, name)
        os.makedirs(os.path.join(base, "exits"))
        c = Case(base, make_bundle(base, f"att-{uuid.uuid4().hex[:10]}", args, **options))
        made.append(c)
        return c

    yield make
    for c in made:
        c.cleanup()
        assert c.bundle.state() is None, "runc state left"
        assert not monitors_of(c.id)
        text = c.monitor_text()
        assert "Sanitizer" not in text and "runtime error:" not in text, text


class Client:
    """A blocking attach client speaking the frames directly."""

    def __init__(self, case: Case, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(case.ctl + ".attach")  # blocking: waits while the listen backlog is full
        self.sock.settimeout(timeout)
        self.buf = b""

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            self.buf += chunk
        return True

    def frame(self) -> tuple[int, bytes] | None:
        """The next frame; None at EOF (a frame cut short included)."""
        if not self._fill(HEADER.size):
            return None
        kind, length = HEADER.unpack(self.buf[: HEADER.size])
        if not self._fill(HEADER.size + length):
            return None
        data = self.buf[HEADER.size : HEADER.size + length]
        self.buf = self.buf[HEADER.size + length :]
        return kind, data

    def hello(self) -> dict[str, str]:
        kind, data = self.frame() or (None, b"")
        assert kind == HELLO, (kind, data)
        words = data.decode().split()
        assert words[:2] == ["pycrio-attach", "1"]
        return dict(w.split("=") for w in words[2:])

    def send(self, kind: int, data: bytes = b"") -> None:
        self.sock.sendall(HEADER.pack(kind, len(data)) + data)

    def output(self, until: bytes | None = None, timeout: float = 10.0) -> dict[str, bytes]:
        """stdout and stderr until EOF (or until stdout contains `until`)."""
        got = {"stdout": b"", "stderr": b""}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.frame()
            if f is None:
                return got
            kind, data = f
            assert kind in (STDOUT, STDERR), f
            got["stdout" if kind == STDOUT else "stderr"] += data
            if until is not None and until in got["stdout"].replace(b"\r", b""):  # a pty's \r\n
                return got
        raise AssertionError(f"timed out; got {got!r}")

    def close(self) -> None:
        self.sock.close()


def go(case: Case, name: str = "go") -> None:
    open(os.path.join(case.bundle.rootfs, "tmp", name), "w").close()


def wait_file(name: str) -> str:
    return f"while [ ! -e /tmp/{name} ]; do sleep 0.02; done"


def monitor_fds(case: Case) -> list[str]:
    (mon,) = monitors_of(case.id)
    links = []
    for fd in os.listdir(f"/proc/{mon.pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            links.append(os.readlink(f"/proc/{mon.pid}/fd/{fd}"))
    return sorted(links)


def settled_fds(case: Case) -> list[str]:
    """The monitor's descriptors once the start is over: the same in two looks 100 ms apart.

    Right after `runc start` the monitor may still hold a descriptor of the start for a moment;
    a baseline taken then is never seen again (a rare CI flake)."""
    previous = monitor_fds(case)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = monitor_fds(case)
        if current == previous:
            return current
        previous = current
    return previous


def wait_fds(case: Case, expected: list[str], what: str) -> None:
    """Wait until the monitor holds exactly `expected`; on a timeout, show what differs."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if monitor_fds(case) == expected:
            return
        time.sleep(0.02)
    assert monitor_fds(case) == expected, what


def running(case: Case) -> bool:
    state = case.bundle.state()
    return state is not None and state["status"] == "running"


# --- socket --------------------------------------------------------------------------------------


def test_socket_beside_ctl_hello_and_removed_at_exit(case):
    c = case(sh(wait_file("go")))
    c.spawn()
    path = c.ctl + ".attach"
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o777 == 0o700  # owner only
    client = Client(c)
    assert client.hello() == {"stdin": "0", "tty": "0"}
    c.start()
    go(c)
    assert client.frame() is None, "no EOF at the container's exit"
    assert c.wait_exit().exit_code == 0
    assert not os.path.exists(path)


def test_ctl_path_too_long_for_the_attach_socket(case, tmpdir_short):
    c = case(["true"])
    ctl = os.path.join(tmpdir_short, "x" * (107 - len(tmpdir_short) - 1 - len(".attach") + 1))
    assert len(ctl + ".attach") == 108
    with pytest.raises(MonitorError, match=r"too long: PATH.attach must fit in 107 bytes"):
        c.spawn(ctl_socket=ctl)
    assert not monitors_of(c.id)


def test_stdin_once_needs_stdin(case):
    c = case(["true"])
    r, w = os.pipe()
    kwargs = c.spawn_kwargs()
    for name in ("monitor_log", "env", "timeout"):
        del kwargs[name]
    argv = monitor.command(c.id, sync_fd=w, **kwargs) + ["--stdin-once"]
    proc = subprocess.run(argv, pass_fds=(w,), env=ENV, capture_output=True, text=True)
    os.close(w)
    with os.fdopen(r) as f:
        sync = f.read()
    assert proc.returncode == 2
    assert "--stdin-once needs --stdin" in proc.stderr and '"exit_code": 2' in sync


# --- output --------------------------------------------------------------------------------------


def test_output_fan_out_to_two_clients_then_eof(case):
    script = wait_file("go") + "; echo out1; echo err1 >&2; head -c 50000 /dev/zero | tr '\\0' y; echo; echo err2 >&2"
    c = case(sh(script))
    c.spawn()
    clients = [Client(c), Client(c)]
    for client in clients:
        client.hello()
    c.start()
    go(c)
    outs = [client.output() for client in clients]  # to EOF
    for out in outs:
        assert out == {"stdout": b"out1\n" + b"y" * 50000 + b"\n", "stderr": b"err1\nerr2\n"}
    assert c.wait_exit().exit_code == 0
    records = parse_log(c.log)
    assert joined(records, "stdout") == [b"out1", b"y" * 50000]
    assert joined(records, "stderr") == [b"err1", b"err2"]


def test_output_from_the_moment_of_attach(case):
    c = case(sh("echo early; " + wait_file("go") + "; echo late"))
    c.spawn()
    c.start()
    c.wait_for(lambda: c.log_has(b"early"), what="early output")
    client = Client(c)
    client.hello()
    go(c)
    assert client.output() == {"stdout": b"late\n", "stderr": b""}


def test_stuck_client_is_disconnected_and_blocks_nothing(case):
    """A client that never reads: the container runs at full speed, the log gets everything."""
    size = 32 * 1024 * 1024
    c = case(sh(wait_file("go") + f"; head -c {size} /dev/zero | tr '\\0' z; echo; echo done"))
    c.spawn()
    stuck = Client(c)
    reader = Client(c)
    reader.hello()
    c.start()
    go(c)
    started = time.monotonic()
    got = {}
    t = threading.Thread(target=lambda: got.update(reader.output(timeout=60)))
    t.start()
    assert c.wait_exit(60).exit_code == 0
    t.join(60)
    assert time.monotonic() - started < 30
    records = parse_log(c.log)
    assert joined(records, "stdout") == [b"z" * size, b"done"]
    assert "cannot keep up with the output: disconnected" in c.monitor_text()
    # The stuck client: the greeting, whole frames, then EOF (never a frame with a hole after it).
    assert stuck.hello() is not None
    seen = 0
    while (f := stuck.frame()) is not None:
        assert f[0] == STDOUT
        seen += len(f[1])
    assert seen < size
    # The reading client got everything, unless it could not keep up either.
    assert got["stdout"] == b"z" * size + b"\ndone\n" or c.monitor_text().count("cannot keep up") == 2


# --- stdin ---------------------------------------------------------------------------------------


def round_trip(client: Client, data: bytes) -> bytes:
    """Send data to cat while reading its echo (both at once: the pipes are smaller than data)."""

    def send() -> None:
        for i in range(0, len(data), 65536):
            client.send(STDIN, data[i : i + 65536])

    sender = threading.Thread(target=send)
    sender.start()
    out = b""
    while len(out) < len(data):
        f = client.frame()
        assert f is not None, f"EOF after {len(out)} bytes"
        assert f[0] == STDOUT
        out += f[1]
    sender.join()
    return out


def test_stdin_round_trip_through_cat_and_stays_open(case):
    c = case(["cat"])
    c.spawn(stdin=True)
    c.start()
    fds_before = settled_fds(c)
    client = Client(c)
    assert client.hello() == {"stdin": "1", "tty": "0"}
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value: more than the pipes and in[] hold
    assert round_trip(client, data) == data
    client.sock.shutdown(socket.SHUT_WR)  # its input ends; without --stdin-once stdin stays open
    client.close()
    time.sleep(0.3)
    assert running(c), "cat saw EOF"
    again = Client(c)
    assert again.hello()["stdin"] == "1"
    assert round_trip(again, b"second\n") == b"second\n"
    again.close()
    wait_fds(c, fds_before, "the monitor to close the clients")
    c.bundle.runc("kill", c.id, "KILL")
    assert c.wait_exit().signal == 9


@pytest.mark.parametrize("end", ["close-stdin", "shutdown", "disconnect"])
def test_stdin_once_first_session_end_closes_stdin(case, end):
    c = case(["cat"])
    c.spawn(stdin=True, stdin_once=True)
    c.start()
    watcher = Client(c)  # output only: its end would not close stdin
    watcher.hello()
    client = Client(c)
    client.hello()
    client.send(STDIN, b"bye\n")
    if end == "close-stdin":
        client.send(CLOSE_STDIN)
    elif end == "shutdown":
        client.sock.shutdown(socket.SHUT_WR)
    else:
        client.close()
    assert watcher.output() == {"stdout": b"bye\n", "stderr": b""}  # then EOF: cat ended
    assert c.wait_exit().exit_code == 0


def test_output_only_session_does_not_close_stdin_once(case):
    c = case(["cat"])
    c.spawn(stdin=True, stdin_once=True)
    c.start()
    for _ in range(3):
        watcher = Client(c)
        watcher.hello()
        watcher.sock.shutdown(socket.SHUT_WR)
        watcher.close()
    time.sleep(0.3)
    assert running(c)
    client = Client(c)
    client.hello()
    client.send(STDIN)  # an empty stdin frame: an input session
    client.close()
    assert c.wait_exit().exit_code == 0


def test_stdin_after_stdin_once_closed_is_discarded(case):
    c = case(sh("cat; echo cat-done; " + wait_file("go")))
    c.spawn(stdin=True, stdin_once=True)
    c.start()
    first = Client(c)
    first.hello()
    first.send(STDIN, b"one\n")
    first.send(CLOSE_STDIN)
    assert first.output(until=b"cat-done")["stdout"] == b"one\ncat-done\n"
    second = Client(c)
    assert second.hello()["stdin"] == "0", "stdin is closed now"
    second.send(STDIN, b"lost\n")  # discarded, not an error
    go(c)
    assert second.output() == {"stdout": b"", "stderr": b""}
    assert c.wait_exit().exit_code == 0


def test_container_closing_its_stdin_closes_it_for_attach(case):
    c = case(sh("exec 0<&-; echo closed; " + wait_file("go")))
    c.spawn(stdin=True)
    c.start()
    c.wait_for(lambda: c.log_has(b"closed"), what="stdin closed")
    client = Client(c)
    assert client.hello()["stdin"] == "1"
    client.send(STDIN, b"into a closed pipe\n")  # EPIPE: the monitor closes stdin, quietly
    c.wait_for(lambda: Client(c).hello()["stdin"] == "0", what="stdin=0 for new clients")
    go(c)
    assert client.output() == {"stdout": b"", "stderr": b""}
    assert c.wait_exit().exit_code == 0
    assert "stdin" not in c.monitor_text()


def test_full_stdin_blocks_only_the_input(case):
    """A container that never reads stdin: input waits, the monitor goes on (ctl, output, exit)."""
    c = case(sh("echo ready; " + wait_file("go") + "; echo after"))
    c.spawn(stdin=True)
    c.start()
    client = Client(c, timeout=1.0)
    client.hello()
    sent = 0
    with pytest.raises(TimeoutError):
        while True:  # until the pipe, in[] and the socket buffers are full
            client.send(STDIN, b"x" * 65536)
            sent += 65536
    assert sent > 64 * 1024
    asyncio.run(monitor.reopen_log(c.ctl))
    watcher = Client(c)
    watcher.hello()
    go(c)
    assert watcher.output() == {"stdout": b"after\n", "stderr": b""}
    assert c.wait_exit().exit_code == 0


def test_input_split_across_reads(case):
    """Frames arrive byte by byte: headers and payloads straddle reads."""
    c = case(["cat"])
    c.spawn(stdin=True)
    c.start()
    client = Client(c)
    client.hello()
    wire = HEADER.pack(STDIN, 3) + b"ab\n" + HEADER.pack(STDIN, 0) + HEADER.pack(STDIN, 4) + b"cde\n"
    for byte in wire:
        client.sock.sendall(bytes([byte]))
        time.sleep(0.002)
    assert client.output(until=b"cde\n")["stdout"] == b"ab\ncde\n"


# --- terminal ------------------------------------------------------------------------------------


def test_tty_attach_round_trip_and_stdin_once_eof(case):
    c = case(["cat"], terminal=True)
    c.spawn(terminal=True, stdin=True, stdin_once=True)
    c.start()
    client = Client(c)
    assert client.hello() == {"stdin": "1", "tty": "1"}
    client.send(STDIN, b"hello\n")
    out = client.output(until=b"hello\nhello\n")["stdout"]  # the pty's echo, then cat's
    assert out.replace(b"\r", b"") == b"hello\nhello\n"
    client.send(CLOSE_STDIN)  # a pty cannot be closed: VEOF (^D) at a line start is EOF for cat
    client.output()
    assert c.wait_exit().exit_code == 0
    records = parse_log(c.log)
    assert {r.stream for r in records} == {"stdout"}


# --- limits and bad input ------------------------------------------------------------------------


def test_too_many_clients_refused_then_room_again(case):
    c = case(["sleep", "60"])
    c.spawn()
    clients = [Client(c) for _ in range(MAX_CLIENTS)]
    for client in clients:
        client.hello()
    extra = Client(c)
    assert extra.frame() == (ERROR, b"too many attach connections")
    assert extra.frame() is None
    clients.pop().close()
    c.wait_for(lambda: Client(c).frame()[0] == HELLO, what="a free slot")


@pytest.mark.parametrize(
    ("wire", "stdin", "error"),
    [
        (HEADER.pack(9, 0), True, b"bad frame"),
        (b"\x00garbage garbage", True, b"bad frame"),
        (HEADER.pack(CLOSE_STDIN, 3) + b"abc", True, b"bad frame"),
        (HEADER.pack(STDIN, 65537), True, b"stdin frame longer than 65536 bytes"),
        (HEADER.pack(STDIN, 2) + b"x\n", False, b"the container has no stdin"),
        (HEADER.pack(CLOSE_STDIN, 0) + HEADER.pack(STDIN, 1) + b"x", True, b"stdin data after close-stdin"),
    ],
)
def test_protocol_errors_drop_only_that_client(case, wire, stdin, error):
    c = case(sh("while :; do echo tick; sleep 0.05; done"))
    c.spawn(stdin=stdin)
    c.start()
    fds_before = settled_fds(c)
    good = Client(c)
    good.hello()
    bad = Client(c)
    bad.hello()
    bad.sock.sendall(wire)
    frames = []
    while (f := bad.frame()) is not None:
        frames.append(f)
    assert frames[-1] == (ERROR, error)
    assert good.output(until=b"tick\ntick\n")["stdout"].count(b"tick") >= 2
    assert running(c)
    good.close()
    bad.close()
    wait_fds(c, fds_before, "no descriptor left")


def test_no_fd_leak_over_many_sessions(case):
    c = case(["cat"])
    c.spawn(stdin=True)
    c.start()
    fds_before = settled_fds(c)
    for i in range(40):
        client = Client(c)
        client.hello()
        if i % 4 == 0:
            client.send(STDIN, b"%d\n" % i)
        elif i % 4 == 1:
            client.sock.shutdown(socket.SHUT_WR)
        elif i % 4 == 2:
            client.sock.sendall(b"\xff" * 5)
        client.close()
        # The monitor sees the close a moment later; without waiting, 16 quick sessions fill every
        # slot and the 17th is refused as too many (which is right: a slot is free once seen free).
        wait_fds(c, fds_before, f"session {i} closed")
    refused = [Client(c) for _ in range(MAX_CLIENTS + 4)]
    for client in refused:
        client.close()
    wait_fds(c, fds_before, "every attach descriptor closed")
    assert running(c)


def test_client_attached_before_start_gets_all_output(case):
    c = case(sh("echo started"))
    c.spawn()
    (mon,) = monitors_of(c.id)
    client = Client(c)
    client.hello()
    c.start()
    assert client.output() == {"stdout": b"started\n", "stderr": b""}
    psutil.Process(mon.pid).wait(5)


FAKE_TTY_RUNTIME = """#!{python}
# A stand-in for `runc create --console-socket`: a pty with cat on it, sent once {gate} exists.
import os, socket, sys, time
args = sys.argv[1:]
console, pid_file = args[args.index("--console-socket") + 1], args[args.index("--pid-file") + 1]
master, slave = os.openpty()
pid = os.fork()
if pid == 0:
    os.setsid()
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.closerange(3, 1024)
    os.execv("/bin/cat", ["cat"])
os.close(slave)
while not os.path.exists("{gate}"):
    time.sleep(0.02)
with open(pid_file, "w") as f:
    f.write(str(pid))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(console)
socket.send_fds(s, [b"pty"], [master])
"""


def test_tty_input_before_the_pty_arrives(case, tmpdir_short):
    """Input written while create runs waits in the monitor until the runtime sends the pty."""
    c = case(["true"])
    gate = os.path.join(tmpdir_short, "gate")
    fake = os.path.join(tmpdir_short, "fake-tty-runtime")
    with open(fake, "w") as f:
        f.write(FAKE_TTY_RUNTIME.format(python=sys.executable, gate=gate))
    os.chmod(fake, 0o755)

    async def main():
        spawning = asyncio.create_task(
            monitor.spawn(c.id, **c.spawn_kwargs(runtime=fake, terminal=True, stdin=True, stdin_once=True))
        )
        for _ in range(200):
            if os.path.exists(c.ctl + ".attach"):
                break
            await asyncio.sleep(0.01)
        session = await open_attach(c.ctl, stdin=True)
        assert session.tty and session.stdin
        await session.write(b"early\n")
        await asyncio.sleep(0.2)
        assert not spawning.done()
        open(gate, "w").close()
        await spawning
        got = b""
        async with asyncio.timeout(10):
            while got.replace(b"\r", b"").count(b"early\n") < 2:  # the pty's echo, then cat's
                stream, data = await session.read()
                got += data
        await session.close()  # stdin_once: VEOF, cat ends

    asyncio.run(main())
    assert c.wait_exit().exit_code == 0


@pytest.mark.skipif(os.environ.get("PYCRIO_SANITIZE") == "1", reason="a sanitized monitor's RSS is not the budget's")
def test_rss_budget_with_sixteen_clients(case):
    """docs/monitor.md, "Resources": 1 MiB of VmRSS, with every attach buffer in use."""
    c = case(["cat"])
    pid = c.spawn(stdin=True)
    c.start()
    mon = psutil.Process(pid).parent()
    data = os.urandom(4 << 20)

    async def main():
        sessions = [await open_attach(c.ctl, stdin=i == 0) for i in range(MAX_CLIENTS)]

        async def drain(session):
            got = 0
            while got < len(data):
                item = await session.read()
                assert item is not None, "a reading session was disconnected"
                got += len(item[1])

        async with asyncio.timeout(60):
            await asyncio.gather(sessions[0].write(data), *(drain(s) for s in sessions))
        for s in sessions:
            await s.close()

    asyncio.run(main())
    with open(f"/proc/{mon.pid}/status") as f:
        rss_kb = int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
    assert rss_kb <= 1024, f"VmRSS {rss_kb} kB"
