"""A small asyncio HTTP/1.1 client on h11 for the registry client: keep-alive pool, TLS, timeouts, one error type.

What it does, and no more, because the registry client needs no more:

- GET, HEAD and POST (bytes or an application/x-www-form-urlencoded form); no
  redirects followed (registry.py follows them itself), no decompression, no
  cookies, no proxies or ~/.netrc (the daemon never read HTTP(S)_PROXY).
- Connections are pooled per (scheme, host, port, TLS setting): at most 16 in use
  per key and 64 in all; one goes back to the pool only when its response was read
  to the end and h11 says both sides are DONE; an idle one is closed after 15 s.
- TLS through the stdlib `ssl`; its contexts (the system CAs) are made at the first
  https URL: ssl=True verifies with the system CAs, ssl=False does not verify, or
  an SSLContext.
- Every failure is an HttpError (an OSError): ConnectError (no connection),
  ConnectionBroken (closed or reset during the exchange), ProtocolError (not
  HTTP/1.1), HttpTimeout (also a TimeoutError). Messages name host and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import SplitResult, urlencode, urlsplit

import h11

if TYPE_CHECKING:
    import ssl as ssl_module

__all__ = [
    "ConnectError",
    "ConnectionBroken",
    "Headers",
    "HttpClient",
    "HttpError",
    "HttpTimeout",
    "ProtocolError",
    "Response",
    "Timeout",
    "extend_query",
    "origin",
]

READ_SIZE = 256 * 1024
KEEPALIVE = 15.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpError(OSError):
    """Any failure of an HTTP exchange; the message names host and port."""


class ConnectError(HttpError):
    """No connection could be made (DNS, refused, unreachable, TLS handshake or certificate)."""


class ConnectionBroken(HttpError):
    """The connection was closed or reset before the response was complete."""


class ProtocolError(HttpError):
    """The peer does not speak HTTP/1.1 as h11 understands it."""


class HttpTimeout(HttpError, TimeoutError):
    """No connection, or no byte, within the timeout."""


@dataclass(frozen=True)
class Timeout:
    """connect: to open the connection (TCP and TLS); read: between two reads from the socket (None: forever)."""

    connect: float | None = None
    read: float | None = None


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL; the port defaults by scheme."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)


def extend_query(url: str, pairs: list[tuple[str, str]]) -> str:
    """url with pairs appended to its query string."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(pairs)) if q)
    return parts._replace(query=query).geturl()


class Headers:
    """Response headers: case-insensitive, repeatable (WWW-Authenticate)."""

    def __init__(self, items: list[tuple[str, str]]):
        self._items = items  # (lower-case name, value)

    @classmethod
    def from_h11(cls, raw: Any) -> Headers:
        return cls([(k.decode("ascii").lower(), v.decode("latin-1")) for k, v in raw])

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        return next((v for k, v in self._items if k == name), default)

    def getall(self, name: str, default: list[str] | None = None) -> list[str]:
        name = name.lower()
        found = [v for k, v in self._items if k == name]
        return found if found or default is None else default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class _Connection:
    """One socket and its h11 state machine."""

    def __init__(self, key: tuple[Any, ...], reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.key, self.reader, self.writer = key, reader, writer
        self.where = f"{key[1]}:{key[2]}"
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False
        self.received = 0  # bytes read from the socket for this request
        self.eof = False
        self.idle_since = 0.0
        self.expiry: asyncio.TimerHandle | None = None

    def usable(self) -> bool:
        return (
            self.h11.our_state is h11.IDLE
            and not self.reader.at_eof()
            and not getattr(self.reader, "_buffer", b"")  # bytes nobody asked for: not safe to reuse
            and not self.writer.is_closing()
        )

    async def send(self, *events: Any) -> None:
        try:
            for event in events:
                data = self.h11.send(event)
                if data:
                    self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise ConnectionBroken(f"{self.where}: connection broke while sending the request: {e}") from e

    async def next_event(self, timeout: float | None) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                if self.eof:
                    raise ConnectionBroken(f"{self.where}: connection closed early: {e}") from None
                raise ProtocolError(f"{self.where}: malformed HTTP response: {e}") from None
            if event is not h11.NEED_DATA:
                return event
            try:
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                raise HttpTimeout(f"{self.where}: no data for {timeout:g} s") from None
            except (ConnectionError, OSError) as e:
                raise ConnectionBroken(f"{self.where}: connection broke: {e}") from e
            self.received += len(data)
            self.eof = not data
            self.h11.receive_data(data)

    def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.writer.close()


class Response:
    """A response whose body is read with read(); release() (or leaving `async with`) frees the connection."""

    def __init__(self, client: HttpClient, conn: _Connection, url: str, event: h11.Response, timeout: Timeout):
        self._client, self._conn, self._timeout = client, conn, timeout
        self.url = url
        self.status: int = event.status_code
        self.reason: str = event.reason.decode("latin-1")
        self.headers = Headers.from_h11(event.headers)
        self._pending = b""
        self._done = False
        self._released = False

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return None
        try:
            return int(value)
        except ValueError:
            return None

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes of the body (all of it when n < 0); b"" at its end."""
        if n < 0:
            whole = bytearray()
            while chunk := await self.read(READ_SIZE):
                whole += chunk
            return bytes(whole)
        if not self._pending and not self._done:
            if self._released:
                raise ConnectionBroken(f"{self._conn.where}: read after release()")
            while True:
                event = await self._conn.next_event(self._timeout.read)
                if isinstance(event, h11.Data):
                    if event.data:
                        self._pending = bytes(event.data)
                        break
                elif isinstance(event, h11.EndOfMessage):
                    self._done = True
                    break
                else:
                    raise ProtocolError(f"{self._conn.where}: unexpected {type(event).__name__} in the body")
        if len(self._pending) <= n:
            out, self._pending = self._pending, b""
            return out
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def release(self) -> None:
        """Pool the connection if the response was read to the end, otherwise close it; idempotent."""
        if self._released:
            return
        self._released = True
        self._client._give_back(self._conn, reusable=self._done and not self._pending)

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class _Slots:
    """Connections in use: at most per_host per pool key and total in all."""

    def __init__(self, total: int, per_host: int):
        self.total = asyncio.Semaphore(total)
        self.per_host = per_host
        self.hosts: dict[tuple[Any, ...], asyncio.Semaphore] = {}

    async def acquire(self, key: tuple[Any, ...]) -> None:
        host = self.hosts.setdefault(key, asyncio.Semaphore(self.per_host))
        await host.acquire()
        try:
            await self.total.acquire()
        except BaseException:
            host.release()
            raise

    def release(self, key: tuple[Any, ...]) -> None:
        self.total.release()
        self.hosts[key].release()


class HttpClient:
    """A keep-alive connection pool and the requests made through it. One per daemon; close() at shutdown."""

    def __init__(self, *, headers: dict[str, str] | None = None, limit: int = 64, limit_per_host: int = 16) -> None:
        self.headers = dict(headers or {})
        self._slots = _Slots(limit, limit_per_host)
        self._idle: dict[tuple[Any, ...], deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._contexts: dict[bool, ssl_module.SSLContext] = {}
        self.closed = False

    async def get(self, url: str, **kwargs: Any) -> Response:
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> Response:
        return await self.request("HEAD", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> Response:
        return await self.request("POST", url, **kwargs)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | dict[str, str] | None = None,
        ssl: bool | ssl_module.SSLContext = True,
        timeout: Timeout = Timeout(),
    ) -> Response:
        """Send the request and read the response's head; the caller reads the body and releases it."""
        if self.closed:
            raise HttpError(f"{url}: the HTTP client is closed")
        parts = urlsplit(url)
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except (KeyError, ValueError):
            port = 0
        if not port or not parts.hostname:
            raise HttpError(f"{url}: not an absolute http(s) URL")
        tls = ssl if parts.scheme == "https" else None
        key = (parts.scheme, parts.hostname, port, tls)
        body = urlencode(data).encode() if isinstance(data, dict) else data
        try:
            request, end = self._request_events(method, parts, headers, data, body)
        except h11.LocalProtocolError as e:  # a header value with a newline, say
            raise HttpError(f"{parts.hostname}:{port}: cannot send this request: {e}") from None
        await self._slots.acquire(key)
        try:
            while True:
                conn = await self._lease(key, tls, timeout)
                try:
                    await conn.send(request, *([h11.Data(data=body)] if body else []), end)
                    event = await conn.next_event(timeout.read)
                    while isinstance(event, h11.InformationalResponse):
                        event = await conn.next_event(timeout.read)
                except ConnectionBroken:
                    conn.close()
                    self._open.discard(conn)
                    if conn.reused and not conn.received:
                        continue  # a kept-alive connection the server had closed: once more on a new one
                    raise
                except BaseException:
                    conn.close()
                    self._open.discard(conn)
                    raise
                if not isinstance(event, h11.Response):
                    conn.close()
                    self._open.discard(conn)
                    raise ProtocolError(f"{conn.where}: expected a response, got {type(event).__name__}")
                return Response(self, conn, url, event, timeout)
        except BaseException:
            self._slots.release(key)
            raise

    def _request_events(
        self,
        method: str,
        parts: SplitResult,
        headers: dict[str, str] | None,
        data: bytes | dict[str, str] | None,
        body: bytes | None,
    ) -> tuple[h11.Request, h11.EndOfMessage]:
        merged = {k.lower(): (k, v) for k, v in self.headers.items()}
        if isinstance(data, dict):
            merged["content-type"] = ("Content-Type", "application/x-www-form-urlencoded")
        merged.update({k.lower(): (k, v) for k, v in (headers or {}).items()})
        if body is not None or method == "POST":
            merged["content-length"] = ("Content-Length", str(len(body or b"")))
        host = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = [("Host", host), *merged.values()]
        return h11.Request(method=method, target=target, headers=fields), h11.EndOfMessage()

    async def _lease(self, key: tuple[Any, ...], tls: Any, timeout: Timeout) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.expiry is not None:
                conn.expiry.cancel()
                conn.expiry = None
            if conn.usable() and time.monotonic() - conn.idle_since < KEEPALIVE:
                conn.reused = True
                return conn
            conn.close()
            self._open.discard(conn)
        return await self._connect(key, tls, timeout)

    async def _connect(self, key: tuple[Any, ...], tls: Any, timeout: Timeout) -> _Connection:
        _, host, port, _ = key
        context = None if tls is None else self._context(tls)
        try:
            async with asyncio.timeout(timeout.connect):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None, limit=READ_SIZE
                )
        except TimeoutError:
            raise HttpTimeout(f"{host}:{port}: no connection within {timeout.connect:g} s") from None
        except OSError as e:  # ssl.SSLError and its certificate errors are OSErrors too
            raise ConnectError(f"{host}:{port}: cannot connect: {e}") from e
        conn = _Connection(key, reader, writer)
        self._open.add(conn)
        return conn

    def _context(self, tls: bool | ssl_module.SSLContext) -> ssl_module.SSLContext:
        if not isinstance(tls, bool):
            return tls
        context = self._contexts.get(tls)
        if context is None:
            import ssl  # here: only https needs it (asyncio has loaded it already, though)

            context = ssl.create_default_context()
            if not tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._contexts[tls] = context
        return context

    def _give_back(self, conn: _Connection, reusable: bool) -> None:
        self._slots.release(conn.key)
        if reusable and not self.closed and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            conn.received = 0
            conn.idle_since = time.monotonic()
            conn.expiry = asyncio.get_running_loop().call_later(KEEPALIVE, self._expire, conn)
            self._idle.setdefault(conn.key, deque()).append(conn)
            return
        conn.close()
        self._open.discard(conn)

    def _expire(self, conn: _Connection) -> None:
        conn.expiry = None
        with contextlib.suppress(ValueError):
            self._idle[conn.key].remove(conn)
        conn.close()
        self._open.discard(conn)

    async def close(self) -> None:
        """Close every connection, idle or in use; later requests fail."""
        self.closed = True
        conns, self._open, self._idle = self._open, set(), {}
        for conn in conns:
            conn.close()
        if conns:  # a TLS close waits for the peer's close_notify: not for long
            await asyncio.wait([asyncio.ensure_future(self._wait_closed(c)) for c in conns], timeout=1.0)

    @staticmethod
    async def _wait_closed(conn: _Connection) -> None:
        with contextlib.suppress(Exception):
            await conn.writer.wait_closed()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
