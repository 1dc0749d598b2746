"""pycrio/image/http.py against small asyncio servers started here: bodies, keep-alive, errors, timeouts, TLS."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from collections.abc import Awaitable, Callable

import pytest

from pycrio.image import http
from pycrio.image.http import HttpClient, Timeout

QUICK = Timeout(connect=2.0, read=2.0)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """(method, target, lower-case headers, body) of the next request, or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, target, headers, body


class Server:
    """A TCP (or TLS) server on 127.0.0.1 that counts connections and records requests."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None):
        self.handler, self.tls = handler, tls
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


def responder(*responses: bytes, close: bool = False) -> Handler:
    """Answers each request on a connection with the next response (the last one repeats)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        n = 0
        while (req := await read_request(reader)) is not None:
            server.requests.append(req)
            writer.write(responses[min(n, len(responses) - 1)])
            await writer.drain()
            n += 1
            if close:
                return

    return handler


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def chunked(*chunks: bytes) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for c in chunks:
        out += b"%x\r\n%s\r\n" % (len(c), c)
    return out + b"0\r\n\r\n"


def run(coro):
    return asyncio.run(coro)


async def get_all(client: HttpClient, url: str, **kw) -> tuple[http.Response, bytes]:
    resp = await client.get(url, timeout=QUICK, **kw)
    try:
        return resp, await resp.read()
    finally:
        resp.release()


# ---------------------------------------------------------------- bodies and headers


def test_content_length_body_headers_and_request():
    async def main():
        answer = ok(
            b"hello world",
            'WWW-Authenticate: Bearer realm="https://auth/token",service="reg"',
            'www-authenticate: Basic realm="reg"',
            "Docker-Content-Digest: sha256:abc",
        )
        async with Server(responder(answer)) as server, HttpClient(headers={"User-Agent": "pycrio/test"}) as client:
            resp, body = await get_all(client, server.url("/v2/x?a=1"), headers={"Accept": "a/b"})
            assert body == b"hello world"
            assert (resp.status, resp.reason, resp.content_length) == (200, "OK", 11)
            assert resp.url == server.url("/v2/x?a=1")
            assert resp.headers.get("docker-content-digest") == "sha256:abc"
            assert resp.headers.get("Missing") is None and resp.headers.get("Missing", "x") == "x"
            assert resp.headers.getall("WWW-Authenticate") == [
                'Bearer realm="https://auth/token",service="reg"',
                'Basic realm="reg"',
            ]
            assert resp.headers.getall("Missing", []) == []
            method, target, headers, _ = server.requests[0]
            assert (method, target) == ("GET", "/v2/x?a=1")
            assert headers["host"] == f"127.0.0.1:{server.port}"
            assert headers["user-agent"] == "pycrio/test" and headers["accept"] == "a/b"

    run(main())


def test_chunked_body_in_small_reads():
    async def main():
        async with Server(responder(chunked(b"abc", b"defgh", b"i" * 100_000))) as server, HttpClient() as client:
            resp = await client.get(server.url(), timeout=QUICK)
            assert resp.content_length is None
            parts = []
            while part := await resp.read(4):
                assert len(part) <= 4
                parts.append(part)
                if len(parts) > 10:
                    parts.append(await resp.read())
            assert b"".join(parts) == b"abcdefgh" + b"i" * 100_000
            assert await resp.read(10) == b""  # stays at the end
            resp.release()
            resp.release()  # twice is fine

    run(main())


def test_post_form_and_head():
    async def main():
        async with Server(responder(ok(b'{"token": "t"}'))) as server, HttpClient() as client:
            async with await client.post(server.url("/token"), data={"scope": "a b", "x": "1&2"}, timeout=QUICK) as r:
                assert await r.read() == b'{"token": "t"}'
            method, _, headers, body = server.requests[0]
            assert method == "POST" and body == b"scope=a+b&x=1%262"
            assert headers["content-type"] == "application/x-www-form-urlencoded"
            assert headers["content-length"] == str(len(body))

    run(main())


def test_head_response_has_no_body():
    async def main():
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        async with Server(responder(head, ok(b"x"))) as server, HttpClient() as client:
            resp = await client.head(server.url(), timeout=QUICK)
            assert resp.content_length == 1234 and await resp.read() == b""
            resp.release()
            assert (await get_all(client, server.url()))[1] == b"x"  # the same connection: it was pooled
            assert server.connections == 1

    run(main())


# ---------------------------------------------------------------- the pool


def test_keep_alive_reuses_the_connection():
    async def main():
        async with Server(responder(ok(b"one"), chunked(b"two"))) as server, HttpClient() as client:
            assert (await get_all(client, server.url()))[1] == b"one"
            assert (await get_all(client, server.url()))[1] == b"two"
            assert server.connections == 1

    run(main())


def test_a_body_not_read_to_the_end_closes_the_connection():
    async def main():
        async with Server(responder(ok(b"x" * 1000))) as server, HttpClient() as client:
            resp = await client.get(server.url(), timeout=QUICK)
            assert len(await resp.read(10)) == 10
            resp.release()
            assert (await get_all(client, server.url()))[1] == b"x" * 1000
            assert server.connections == 2

    run(main())


def test_connection_close_is_not_pooled():
    async def main():
        async with Server(responder(ok(b"a", "Connection: close"))) as server, HttpClient() as client:
            await get_all(client, server.url())
            await get_all(client, server.url())
            assert server.connections == 2

    run(main())


def test_a_kept_connection_the_server_closed_is_replaced():
    async def main():
        async with Server(responder(ok(b"a"), close=True)) as server, HttpClient() as client:
            await get_all(client, server.url())
            await asyncio.sleep(0.05)  # the server closes after each answer, the client pooled it
            assert (await get_all(client, server.url()))[1] == b"a"
            assert server.connections == 2

    run(main())


def test_a_kept_connection_closed_without_an_answer_is_retried_once_on_a_new_one():
    async def main():
        async def one_answer_then_hang_up(reader, writer, server):
            server.requests.append(await read_request(reader))
            writer.write(ok(b"a"))
            await read_request(reader)  # the next request on this connection: hang up without a word

        async with Server(one_answer_then_hang_up) as server, HttpClient() as client:
            await get_all(client, server.url())
            assert (await get_all(client, server.url()))[1] == b"a"
            assert server.connections == 2

    run(main())


def test_per_host_limit_queues_requests():
    async def main():
        async with Server(responder(ok(b"a"))) as server, HttpClient(limit_per_host=2) as client:
            first = [await client.get(server.url(), timeout=QUICK) for _ in range(2)]
            third = asyncio.ensure_future(client.get(server.url(), timeout=QUICK))
            await asyncio.sleep(0.1)
            assert not third.done()
            await first[0].read()
            first[0].release()
            resp = await asyncio.wait_for(third, 2)
            assert await resp.read() == b"a"
            for r in (first[1], resp):
                r.release()
            assert server.connections == 2

    run(main())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("answer", [ok(b"x" * 1000)[:-500], chunked(b"x" * 1000)[:-600]])
def test_server_closing_mid_body_is_connection_broken(answer):
    async def main():
        async with Server(responder(answer, close=True)) as server, HttpClient() as client:
            resp = await client.get(server.url(), timeout=QUICK)
            with pytest.raises(http.ConnectionBroken, match=f"127.0.0.1:{server.port}"):
                while await resp.read(100):
                    pass
            resp.release()

    run(main())


def test_malformed_status_line_is_a_protocol_error():
    async def main():
        async with Server(responder(b"HTTP/1.1 two hundred OK\r\n\r\n")) as server, HttpClient() as client:
            with pytest.raises(http.ProtocolError, match=f"127.0.0.1:{server.port}: malformed HTTP response"):
                await client.get(server.url(), timeout=QUICK)

    run(main())


def test_no_answer_at_all_is_connection_broken():
    async def main():
        async def hang_up(reader, writer, server):
            await read_request(reader)

        async with Server(hang_up) as server, HttpClient() as client:
            with pytest.raises(http.ConnectionBroken):
                await client.get(server.url(), timeout=QUICK)

    run(main())


def test_refused_connection_is_connect_error():
    async def main():
        async with Server(responder(ok(b""))) as server:
            url = server.url()
        async with HttpClient() as client:
            with pytest.raises(http.ConnectError, match="cannot connect") as info:
                await client.get(url, timeout=QUICK)
            assert isinstance(info.value, OSError)

    run(main())


def test_stalls_time_out():
    async def main():
        async def stall_head(reader, writer, server):
            await read_request(reader)
            await asyncio.sleep(5)

        async def stall_body(reader, writer, server):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await asyncio.sleep(5)

        short = Timeout(connect=1.0, read=0.2)
        async with HttpClient() as client:
            async with Server(stall_head) as server:
                with pytest.raises(http.HttpTimeout, match="no data for 0.2 s"):
                    await client.get(server.url(), timeout=short)
            async with Server(stall_body) as server:
                resp = await client.get(server.url(), timeout=short)
                assert await resp.read(3) == b"abc"
                with pytest.raises(TimeoutError):
                    await resp.read(3)
                resp.release()

    run(main())


def test_bad_urls_and_headers_are_http_errors():
    async def main():
        async with HttpClient() as client:
            for url in ("ftp://h/x", "/relative", "http://h:port/"):
                with pytest.raises(http.HttpError, match="not an absolute http"):
                    await client.get(url)
            with pytest.raises(http.HttpError, match="cannot send this request"):
                await client.get("http://127.0.0.1:1/", headers={"Authorization": "Bearer a\r\nX: y"})

    run(main())


def test_closed_client_refuses_requests():
    async def main():
        client = HttpClient()
        await client.close()
        with pytest.raises(http.HttpError, match="closed"):
            await client.get("http://127.0.0.1:1/")

    run(main())


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    crt, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", crt],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


def test_tls_verified_unverified_and_refused(cert):
    crt, key = cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)
    trusting = ssl.create_default_context(cafile=crt)

    async def main():
        async with Server(responder(ok(b"secret")), tls=server_ctx) as server, HttpClient() as client:
            url = server.url("/v2/", scheme="https")
            assert (await get_all(client, url, ssl=trusting))[1] == b"secret"
            assert (await get_all(client, url, ssl=trusting))[1] == b"secret"
            assert server.connections == 1
            assert (await get_all(client, url, ssl=False))[1] == b"secret"
            assert server.connections == 2  # another TLS setting, another pooled connection
            with pytest.raises(http.ConnectError, match="certificate verify failed"):
                await client.get(url, ssl=True, timeout=QUICK)
            # plain http to a TLS port: the server's TLS alert is not HTTP
            with pytest.raises(http.HttpError):
                await client.get(server.url("/v2/"), timeout=QUICK)

    run(main())


# ---------------------------------------------------------------- URLs


def test_url_helpers():
    assert http.origin("https://Reg.Example:443/v2/") == ("https", "reg.example", 443)
    assert http.origin("http://127.0.0.1:5000/x") == ("http", "127.0.0.1", 5000)
    assert http.origin("http://h/") == ("http", "h", 80)
    assert http.extend_query("https://auth/token", [("service", "s"), ("scope", "repository:a/b:pull")]) == (
        "https://auth/token?service=s&scope=repository%3Aa%2Fb%3Apull"
    )
    assert http.extend_query("https://auth/token?x=1", [("a", "b")]) == "https://auth/token?x=1&a=b"
