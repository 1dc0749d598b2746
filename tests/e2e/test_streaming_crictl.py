"""crictl (client-go's remotecommand and port-forward, Go's SPDY) against pycrio's streaming server."""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import subprocess
import termios
import time

import pytest

from tests.e2e import test_pods

node = test_pods.node  # the fixture
CRICTL = os.environ.get("CRICTL", "/tmp/critools-bin/crictl")
pytestmark = pytest.mark.skipif(not os.access(CRICTL, os.X_OK), reason=f"no crictl at {CRICTL}")


def crictl(node, *args, stdin: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CRICTL, "--runtime-endpoint", f"unix://{node.d.socket}", "--timeout", "20s", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def crictl_on_tty(node, typed: bytes, *args: str) -> tuple[int, bytes]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    proc = subprocess.Popen(
        [CRICTL, "--runtime-endpoint", f"unix://{node.d.socket}", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    out = bytearray()
    try:
        time.sleep(1.0)
        os.write(master, typed)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(10), bytes(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_crictl_exec_and_port_forward(node):
    pod = node.pod()
    cid = node.run(pod, ["sh", "-c", "while true; do nc -l -p 7000 -e cat; done"])
    r = crictl(node, "exec", cid, "sh", "-c", "echo out; echo err >&2; exit 3")
    # client-go read the exit code from the Status on the error stream; crictl itself exits 1
    assert r.returncode == 1 and r.stdout == b"out\n" and b"err\n" in r.stderr, r
    assert b"command terminated with exit code 3" in r.stderr, r
    r = crictl(node, "exec", "-i", cid, "sh", "-c", "wc -c", stdin=b"z" * 300000)
    assert r.returncode == 0 and r.stdout.strip() == b"300000", r
    big = crictl(node, "exec", cid, "sh", "-c", "head -c 5000000 /dev/zero")
    assert big.returncode == 0 and len(big.stdout) == 5000000
    # -it on a terminal (a pty of ours, 33x111): crictl sends its size, puts it in raw mode, copies
    code, out = crictl_on_tty(node, b"stty size; tty; exit 4\n", "exec", "-it", cid, "sh")
    assert b"33 111" in out and b"/dev/pts/" in out, out
    assert code == 1 and b"exit code 4" in out, out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    fwd = subprocess.Popen(
        [CRICTL, "--runtime-endpoint", f"unix://{node.d.socket}", "port-forward", pod, f"{local}:7000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", local), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with conn:
            payload = os.urandom(1 << 20)
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := conn.recv(1 << 16):
                got += chunk
        assert bytes(got) == payload
    finally:
        fwd.terminate()
        fwd.wait(10)
