"""Exec, attach and port-forward through the streaming server: real daemon, runc, busybox, SPDY and WebSocket."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import aiohttp
import grpc
import psutil
import pytest

from pycrio.cri import api_pb2
from tests.e2e import test_pods
from tests.support.spdy_client import SpdyClient, UpgradeRefused, http_upgrade, spdy_exec

node = test_pods.node  # the fixture
SLEEPER = ["sh", "-c", "while true; do sleep 1; done"]


def exec_url(node, cid, cmd, stdin=False, stdout=True, stderr=True, tty=False) -> str:
    req = api_pb2.ExecRequest(container_id=cid, cmd=cmd, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    return node.rt.Exec(req, timeout=10).url


def pf_url(node, pod, ports=()) -> str:
    return node.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod, port=list(ports)), timeout=10).url


def status_of(raw: bytes) -> dict:
    return json.loads(raw) if raw else {}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def daemon_fds(node) -> int:
    return len(os.listdir(f"/proc/{node.d.proc.pid}/fd"))


def daemon_children(node) -> list[str]:
    """The daemon's live descendants; a zombie counts until the daemon has reaped it."""
    out = []
    for p in psutil.Process(node.d.proc.pid).children(recursive=True):
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.ZombieProcess:
            out.append(f"<zombie {p.pid}>")
        except psutil.NoSuchProcess:
            pass
    return out


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def running(node):
    pod = node.pod()
    cid = node.run(pod, SLEEPER)
    return node, pod, cid


# ---------------------------------------------------------------- exec over SPDY


def test_exec_spdy_output_and_exit_codes(running):
    node, _, cid = running
    url = exec_url(node, cid, ["sh", "-c", "echo out; echo err >&2"])
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url
    out, err, status = run(spdy_exec(url))
    assert (out, err) == (b"out\n", b"err\n")
    assert status_of(status) == {"metadata": {}, "status": "Success"}
    out, err, status = run(spdy_exec(exec_url(node, cid, ["sh", "-c", "echo bye; exit 7"])))
    doc = status_of(status)
    assert out == b"bye\n" and doc["status"] == "Failure" and doc["reason"] == "NonZeroExitCode"
    assert doc["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    assert doc["metadata"] == {} and "exit code" in doc["message"]
    # v1-v3: the failure as plain text, nothing on success
    _, _, status = run(spdy_exec(exec_url(node, cid, ["sh", "-c", "exit 3"]), protocol="v2.channel.k8s.io"))
    assert b"non-zero exit code" in status and b"3" in status
    _, _, status = run(spdy_exec(exec_url(node, cid, ["true"]), protocol="v3.channel.k8s.io"))
    assert status == b""
    # a command that does not exist: runc fails, the client hears a failure
    _, err, status = run(spdy_exec(exec_url(node, cid, ["/no/such/binary"])))
    assert status_of(status)["status"] == "Failure"


def test_exec_spdy_stdin_pipe_and_large_output(running):
    node, _, cid = running
    data = os.urandom(3 << 20)
    url = exec_url(node, cid, ["sh", "-c", "cat; echo done >&2"], stdin=True)
    out, err, status = run(spdy_exec(url, stdin=data))
    assert out == data and err == b"done\n" and status_of(status)["status"] == "Success"
    url = exec_url(node, cid, ["sh", "-c", "wc -c"], stdin=True, stderr=False)
    out, _, status = run(spdy_exec(url, stdin=b"x" * 100000, stderr=False))
    assert out.strip() == b"100000"


def test_exec_spdy_tty_and_resize(running):
    node, _, cid = running
    url = exec_url(node, cid, ["sh", "-c", "stty size"], tty=True, stderr=False)
    out, _, status = run(spdy_exec(url, tty=True, stderr=False, resize=(123, 45)))
    assert status_of(status)["status"] == "Success", (out, status)
    assert out.strip() == b"45 123", out

    async def interactive():
        url = exec_url(node, cid, ["sh"], stdin=True, tty=True, stderr=False)
        client = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        error = await client.open_stream({"streamtype": "error"})
        stdin = await client.open_stream({"streamtype": "stdin"})
        stdout = await client.open_stream({"streamtype": "stdout"})
        resize = await client.open_stream({"streamtype": "resize"})
        await resize.write(b'{"Width":80,"Height":24}')
        await stdin.write(b"stty size\n")
        seen = b""
        while b"24 80" not in seen:
            seen += await asyncio.wait_for(stdout.read(), 10)
        await resize.write(b'{"Width":100,"Height":30}\n')
        await asyncio.sleep(0.3)
        await stdin.write(b"stty size; exit 5\n")
        rest = await stdout.read_all()
        status = status_of(await error.read_all())
        await client.close()
        return seen + rest, status

    out, status = run(interactive())
    assert b"30 100" in out and status["details"]["causes"][0]["message"] == "5"


def test_exec_validation(running):
    node, pod, cid = running
    for kwargs, code in (
        ({"container_id": "0" * 64, "cmd": ["true"], "stdout": True}, grpc.StatusCode.NOT_FOUND),
        ({"container_id": cid, "cmd": ["true"]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"container_id": cid, "cmd": ["true"], "tty": True, "stderr": True}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"container_id": cid, "stdout": True}, grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as info:
            node.rt.Exec(api_pb2.ExecRequest(**kwargs), timeout=10)
        assert info.value.code() == code, kwargs
    with pytest.raises(grpc.RpcError) as info:
        node.rt.Attach(api_pb2.AttachRequest(container_id=cid, tty=True, stderr=True), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stopped = node.container(pod, ["true"], name="never-started")
    for call in (
        lambda: node.rt.Exec(api_pb2.ExecRequest(container_id=stopped, cmd=["true"], stdout=True), timeout=10),
        lambda: node.rt.Attach(api_pb2.AttachRequest(container_id=stopped, stdout=True), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as info:
        node.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id="f" * 64), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        node.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod, port=[70000]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_requests_get_clean_errors(running):
    node, _, cid = running

    async def scenario():
        url = exec_url(node, cid, ["true"])
        base, token = url.rsplit("/exec/", 1)
        # unknown token, wrong kind, other paths, wrong method
        for path in (f"/exec/{'x' * 20}", f"/attach/{token}", "/", "/exec/", f"/exec/{token}/more"):
            _, w, status, _ = await http_upgrade(base + path, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")])
            w.close()
            assert status == 404, path
        # the token was consumed by the /attach try: it is gone now
        with pytest.raises(UpgradeRefused) as info:
            await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        assert info.value.status == 404
        url = exec_url(node, cid, ["true"])
        _, w, status, _ = await http_upgrade(url, [], method="DELETE")
        w.close()
        assert status == 405
        # missing and unknown protocol versions
        with pytest.raises(UpgradeRefused) as info:
            await SpdyClient.connect(exec_url(node, cid, ["true"]), None)
        assert info.value.status == 400 and b"X-Stream-Protocol-Version" in info.value.body
        with pytest.raises(UpgradeRefused) as info:
            await SpdyClient.connect(exec_url(node, cid, ["true"]), ["v9.channel.k8s.io"])
        assert info.value.status == 403
        assert "v4.channel.k8s.io" in info.value.headers["x-accepted-stream-protocol-versions"]
        # no upgrade at all
        _, w, status, _ = await http_upgrade(exec_url(node, cid, ["true"]), [])
        w.close()
        assert status == 400
        # a reused token
        url = exec_url(node, cid, ["true"])
        await spdy_exec(url)
        with pytest.raises(UpgradeRefused) as info:
            await spdy_exec(url)
        assert info.value.status == 404
        # garbage instead of SPDY frames after the upgrade: GOAWAY(protocol error) and the end
        bad_version = b"\x80\x02\x00\x01\x00\x00\x00\x00"
        too_long = b"\x80\x03\x00\x01\x01\xff\xff\xff" + b"x" * 64
        bad_headers = b"\x80\x03\x00\x01\x00\x00\x00\x0c" + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00zz"
        for garbage in (bad_version, too_long, bad_headers):
            client = await SpdyClient.connect(exec_url(node, cid, ["true"]), ["v4.channel.k8s.io"])
            client.send(garbage)
            await asyncio.wait_for(client.closed.wait(), 10)
            assert client.goaway is not None and client.goaway.status == 1
            await client.close()
        # a ping is answered
        client = await SpdyClient.connect(exec_url(node, cid, ["true"]), ["v4.channel.k8s.io"])
        await client.ping(7)
        await client.close()

    run(scenario())
    assert node.d.proc.poll() is None
    assert node.exec(cid, ["true"]).exit_code == 0


def test_client_vanishing_leaks_nothing(running):
    node, _, cid = running
    run(spdy_exec(exec_url(node, cid, ["true"])))  # warm up: the first session's lazy imports and tasks
    fds_before = daemon_fds(node)

    async def vanish(tty: bool):
        url = exec_url(node, cid, ["sh", "-c", "sleep 1000"], stdin=True, tty=tty, stderr=not tty)
        client = await SpdyClient.connect(url, ["v4.channel.k8s.io"])
        await client.open_stream({"streamtype": "error"})
        await client.open_stream({"streamtype": "stdin"})
        await client.open_stream({"streamtype": "stdout"})
        if not tty:
            await client.open_stream({"streamtype": "stderr"})
        else:
            await client.open_stream({"streamtype": "resize"})
        await asyncio.sleep(0.5)
        assert any("sleep 1000" in c or " exec " in c for c in daemon_children(node))
        await client.close()

    run(vanish(False))
    run(vanish(True))
    assert wait_for(lambda: not daemon_children(node)), daemon_children(node)
    ps = node.exec(cid, ["sh", "-c", "ps -o args"]).stdout
    assert b"sleep 1000" not in ps, ps
    assert wait_for(lambda: daemon_fds(node) <= fds_before), (daemon_fds(node), fds_before)


def test_container_exit_ends_exec_sessions(node):
    pod = node.pod()
    cid = node.run(pod, ["sh", "-c", "sleep 2"])

    async def scenario():
        return await spdy_exec(exec_url(node, cid, ["sleep", "1000"]))

    started = time.monotonic()
    _, _, status = run(scenario())
    assert time.monotonic() - started < 15
    assert status_of(status)["status"] == "Failure"


def test_many_concurrent_exec_sessions(running):
    node, _, cid = running

    async def scenario():
        urls = [exec_url(node, cid, ["sh", "-c", f"echo {i}; exit {i % 4}"]) for i in range(30)]
        return await asyncio.gather(*(spdy_exec(u) for u in urls))

    results = run(scenario())
    for i, (out, _, status) in enumerate(results):
        assert out == f"{i}\n".encode()
        doc = status_of(status)
        if i % 4:
            assert doc["details"]["causes"][0]["message"] == str(i % 4)
        else:
            assert doc["status"] == "Success"


# ---------------------------------------------------------------- exec over WebSocket


async def ws_exec(url: str, protocol: str, stdin: bytes | None = None, close_stdin: bool = True, resize=None):
    """(stdout, stderr, error channel) of an exec over WebSocket."""
    out, err, error = bytearray(), bytearray(), bytearray()
    binary = "base64" not in protocol
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url.replace("http://", "ws://"), protocols=[protocol]) as ws,
    ):
        assert ws.protocol == protocol

        def pack(channel: int, data: bytes):
            if binary:
                return ws.send_bytes(bytes([channel]) + data)
            import base64

            return ws.send_str(str(channel) + base64.b64encode(data).decode())

        if resize:
            await pack(4, json.dumps({"Width": resize[0], "Height": resize[1]}).encode())
        if stdin is not None:
            await pack(0, stdin)
            if close_stdin:
                await ws.send_bytes(bytes([255, 0]))
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                channel, data = msg.data[0], msg.data[1:]
            elif msg.type == aiohttp.WSMsgType.TEXT:
                import base64

                channel, data = int(msg.data[0]), base64.b64decode(msg.data[1:])
            else:
                break
            {1: out, 2: err, 3: error}[channel].extend(data)
    return bytes(out), bytes(err), bytes(error)


def test_exec_websocket_protocols(running):
    node, _, cid = running
    for protocol in ("v4.channel.k8s.io", "v4.base64.channel.k8s.io", "v5.channel.k8s.io"):
        url = exec_url(node, cid, ["sh", "-c", "echo o; echo e >&2; exit 2"])
        out, err, error = run(ws_exec(url, protocol))
        assert (out, err) == (b"o\n", b"e\n"), protocol
        assert status_of(error)["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    out, _, error = run(ws_exec(exec_url(node, cid, ["echo", "hi"]), "channel.k8s.io"))
    assert out == b"hi\n" and error == b""
    out, _, error = run(ws_exec(exec_url(node, cid, ["sh", "-c", "exit 1"]), "base64.channel.k8s.io"))
    assert b"non-zero exit code" in error
    # v5: stdin with its close signal
    url = exec_url(node, cid, ["sh", "-c", "wc -c"], stdin=True)
    out, _, error = run(ws_exec(url, "v5.channel.k8s.io", stdin=b"y" * 5000))
    assert out.strip() == b"5000" and status_of(error)["status"] == "Success"
    # tty and resize
    url = exec_url(node, cid, ["sh", "-c", "stty size"], tty=True, stderr=False)
    out, _, error = run(ws_exec(url, "v5.channel.k8s.io", resize=(77, 22)))
    assert out.strip() == b"22 77", out

    async def bad_protocol():
        async with aiohttp.ClientSession() as session:
            url = exec_url(node, cid, ["true"]).replace("http://", "ws://")
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(url, protocols=["nope.k8s.io"])
            assert info.value.status == 400

    run(bad_protocol())


# ---------------------------------------------------------------- port-forward


async def spdy_forward(url: str, port: int, payload: bytes, request_id: int = 0, client=None):
    """One connection through port-forward: send payload, half-close, read the answer; (data, error)."""
    own = client is None
    if own:
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
    try:
        error = await client.open_stream({"streamtype": "error", "port": str(port), "requestid": str(request_id)})
        data = await client.open_stream({"streamtype": "data", "port": str(port), "requestid": str(request_id)})
        reading = asyncio.ensure_future(data.read_all())
        errors = asyncio.ensure_future(error.read_all())
        await data.write(payload)
        await data.close()
        return await reading, await errors
    finally:
        if own:
            await client.close()


def test_port_forward_spdy(running):
    node, pod, cid = running
    node.run(pod, ["sh", "-c", "while true; do nc -l -p 7000 -e cat; done"], name="echo")
    node.run(pod, ["sh", "-c", "while true; do nc -l -p 7001 -e sh -c 'md5sum | cut -c1-32'; done"], name="sum")
    many = " ".join(f"(while true; do nc -l -p {7100 + i} -e cat; done) &" for i in range(8))
    node.run(pod, ["sh", "-c", many + " wait"], name="many")
    url = pf_url(node, pod)
    time.sleep(0.5)

    async def scenario():
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        assert client.protocol == "portforward.k8s.io"
        data, err = await spdy_forward(url, 7000, b"hello", 1, client)
        assert (data, err) == (b"hello", b"")
        # nothing listening: the error stream says so, the session goes on
        data, err = await spdy_forward(url, 7999, b"x", 3, client)
        assert data == b"" and b"7999" in err and b"refused" in err.lower()
        # 100 MB with a checksum
        blob = os.urandom(1 << 20) * 100
        started = time.monotonic()
        data, err = await spdy_forward(url, 7001, blob, 5, client)
        elapsed = time.monotonic() - started
        assert data.strip() == hashlib.md5(blob).hexdigest().encode(), (data, err)
        print(f"port-forward 100 MB in {elapsed:.2f} s: {100 / elapsed:.0f} MB/s")
        # several connections at once on one session
        results = await asyncio.gather(*(spdy_forward(url, 7100 + i, b"n%d" % i, 7 + 2 * i, client) for i in range(8)))
        await client.close()
        return results

    results = run(scenario())
    assert sorted(r[0] for r in results) == sorted(b"n%d" % i for i in range(8))


def test_port_forward_websocket(running):
    node, pod, _ = running
    node.run(pod, ["sh", "-c", "while true; do nc -l -p 7000 -e cat; done"], name="echo")
    time.sleep(0.5)

    async def scenario():
        url = pf_url(node, pod, [7000]).replace("http://", "ws://")
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url + "?port=7000&port=7999", protocols=["v4.channel.k8s.io"]) as ws,
        ):
            firsts = [await ws.receive_bytes() for _ in range(4)]
            expected = [
                bytes([ch]) + port.to_bytes(2, "little") for ch, port in ((0, 7000), (1, 7000), (2, 7999), (3, 7999))
            ]
            assert sorted(firsts) == sorted(expected)
            await ws.send_bytes(b"\x00ping")
            got, error = b"", b""
            while got != b"ping" or not error:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                if msg.data[0] == 0:
                    got += msg.data[1:]
                elif msg.data[0] == 3:
                    error += msg.data[1:]
            return got, error

    got, error = run(scenario())
    assert got == b"ping" and b"7999" in error


# ---------------------------------------------------------------- attach


def attach_url(node, cid, stdin=True, stdout=True, stderr=True, tty=False) -> str:
    req = api_pb2.AttachRequest(container_id=cid, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    return node.rt.Attach(req, timeout=10).url


async def read_until(stream, needle: bytes, timeout: float = 10) -> bytes:
    seen = b""
    while needle not in seen:
        chunk = await asyncio.wait_for(stream.read(), timeout)
        assert chunk, f"stream ended before {needle!r}: {seen!r}"
        seen += chunk
    return seen


def test_attach_spdy_pipes_and_tty(node):
    pod = node.pod()
    piped = node.run(
        pod, ["sh", "-c", "while read l; do echo got:$l; echo err:$l >&2; done; echo bye"], name="piped", stdin=True
    )
    shell = node.run(pod, ["sh"], name="shell", stdin=True, tty=True)

    once = node.run(pod, ["sh", "-c", "while read l; do echo got:$l; done; echo bye"], name="once", stdin=True,
                    stdin_once=True)  # fmt: skip

    async def session(cid, line: bytes, end_stdin: bool):
        client = await SpdyClient.connect(attach_url(node, cid), ["v4.channel.k8s.io"])
        error = await client.open_stream({"streamtype": "error"})
        stdin = await client.open_stream({"streamtype": "stdin"})
        stdout = await client.open_stream({"streamtype": "stdout"})
        stderr = await client.open_stream({"streamtype": "stderr"})
        await stdin.write(line + b"\n")
        seen = await read_until(stdout, b"got:" + line)
        if cid == piped:
            await read_until(stderr, b"err:" + line)
        if not end_stdin:
            await client.close()  # detach: the container goes on
            return seen, None
        await stdin.close()  # stdin_once: the container's stdin ends, it exits, the session ends
        seen += await stdout.read_all()
        status = status_of(await asyncio.wait_for(error.read_all(), 10))
        await client.close()
        return seen, status

    run(session(piped, b"hello", False))
    run(session(piped, b"again", False))
    assert node.status(piped).state == api_pb2.CONTAINER_RUNNING
    seen, status = run(session(once, b"last", True))
    assert b"bye" in seen and status == {"metadata": {}, "status": "Success"}
    assert node.wait_exit(once).exit_code == 0

    async def tty():
        client = await SpdyClient.connect(attach_url(node, shell, stderr=False, tty=True), ["v4.channel.k8s.io"])
        error = await client.open_stream({"streamtype": "error"})
        stdin = await client.open_stream({"streamtype": "stdin"})
        stdout = await client.open_stream({"streamtype": "stdout"})
        resize = await client.open_stream({"streamtype": "resize"})
        await resize.write(b'{"Width":91,"Height":19}')
        await asyncio.sleep(0.3)
        await stdin.write(b"stty size\n")
        seen = await read_until(stdout, b"19 91")
        await stdin.write(b"exit 0\n")
        await stdout.read_all()
        status = status_of(await asyncio.wait_for(error.read_all(), 10))
        await client.close()
        return seen, status

    seen, status = run(tty())
    assert status["status"] == "Success"
    assert node.wait_exit(shell).exit_code == 0


def test_attach_websocket(node):
    pod = node.pod()
    cid = node.run(pod, ["sh", "-c", "read l; echo got:$l"], name="once", stdin=True, stdin_once=True)
    out, _, error = run(ws_exec(attach_url(node, cid), "v5.channel.k8s.io", stdin=b"ws\n", close_stdin=False))
    assert out == b"got:ws\n" and status_of(error)["status"] == "Success"
