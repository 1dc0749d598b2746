"""A programmable HTTP proxy in front of a registry: bearer-token auth and fault injection for client tests.

Runs http.server.ThreadingHTTPServer in a thread on 127.0.0.1. Every knob is
an attribute a test sets before making requests:

- bearer auth: `FaultProxy(upstream, bearer=True, token_credentials=("u", "p"))` issues tokens at its
  own `/token` realm (GET with optional basic credentials, or the OAuth2 POST with `refresh_token`)
  and demands `Authorization: Bearer` with the right scope on /v2/; `static_token` is accepted as is.
- `fail_status = (503, 2, "blobs")`: answer that status N times to manifest / blob / any GETs.
- `reset_after = N`: the next blob GET sends N bytes, then the connection is reset (once).
- `stall_after = N`: blob GETs send N bytes, then nothing until the proxy stops.
- `extra_bytes = N` / `short_bytes = N`: blob GETs send N bytes more / fewer than the blob has.
- `ignore_range = True`: answer a Range request with 200 and the whole blob.
- `redirect_blobs = True`: blob GETs are 307-redirected to a second server ("blob storage") on
  another port, which records in `storage_auth_headers` the Authorization headers it received.
- `tamper_blobs = True`: blob GETs send the blob with its last byte changed.
- `manifest_override = (content_type, body)`: serve that for every manifest GET.
- `tamper_manifests = "keep-digest" | "drop-digest"`: serve manifests with a byte changed,
  keeping or dropping the upstream Docker-Content-Digest.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import re
import secrets
import socket
import struct
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Token:
    scopes: set[str]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, handler, owner: FaultProxy):
        super().__init__(("127.0.0.1", 0), handler)
        self.owner = owner

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client hung up (expected when it refuses what it is sent) or we reset it
        super().handle_error(request, client_address)


@dataclass
class FaultProxy:
    upstream: str  # host:port of the real registry
    bearer: bool = False
    token_credentials: tuple[str, str] | None = None
    refresh_token: str | None = None
    static_token: str | None = None
    token_expires_in: int = 300
    service: str = "fault-proxy"

    # faults
    fail_status: tuple[int, int, str] | None = None
    reset_after: int | None = None
    stall_after: int | None = None
    extra_bytes: int = 0
    short_bytes: int = 0
    ignore_range: bool = False
    tamper_blobs: bool = False
    redirect_blobs: bool = False
    manifest_override: tuple[str, bytes] | None = None
    tamper_manifests: str | None = None

    # observations
    requests: list[Seen] = field(default_factory=list)
    token_requests: int = 0
    storage_auth_headers: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._tokens: dict[str, _Token] = {}
        self._blob_cache: dict[str, bytes] = {}
        self._server = _Server(_ProxyHandler, self)
        self._storage = _Server(_StorageHandler, self)
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in (self._server, self._storage)
        ]
        for t in self._threads:
            t.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage_host(self) -> str:
        return f"127.0.0.1:{self._storage.server_address[1]}"

    def stop(self) -> None:
        self.stopping.set()
        for server in (self._server, self._storage):
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def revoke_tokens(self) -> None:
        """Forget every token issued so far (as if they expired early)."""
        with self.lock:
            self._tokens.clear()

    def blob_gets(self) -> list[Seen]:
        return [r for r in self.requests if r.method == "GET" and "/blobs/sha256:" in r.path]

    # ------------------------------------------------------------ helpers for handlers

    def take_failure(self, kind: str) -> int | None:
        with self.lock:
            if self.fail_status is None:
                return None
            status, times, applies = self.fail_status
            if times <= 0 or applies not in (kind, "any"):
                return None
            self.fail_status = (status, times - 1, applies)
            return status

    def issue_token(self, scopes: set[str]) -> str:
        token = "tok-" + secrets.token_hex(8)
        with self.lock:
            self._tokens[token] = _Token(scopes)
            self.token_requests += 1
        return token

    def token_allows(self, token: str, repo: str | None) -> bool:
        if self.static_token and token == self.static_token:
            return True
        with self.lock:
            found = self._tokens.get(token)
        if found is None:
            return False
        if repo is None:
            return True
        return any(s.startswith(f"repository:{repo}:") and "pull" in s.split(":")[-1].split(",") for s in found.scopes)

    def blob(self, repo: str, digest: str) -> tuple[int, bytes]:
        """(status, body) of a blob from upstream, cached."""
        with self.lock:
            data = self._blob_cache.get(digest)
        if data is not None:
            return 200, data
        status, _, body = upstream_request(self.upstream, "GET", f"/v2/{repo}/blobs/{digest}", {}, b"")
        if status == 200:
            with self.lock:
                self._blob_cache[digest] = body
        return status, body


def upstream_request(upstream: str, method: str, path: str, headers: dict[str, str], body: bytes):
    conn = http.client.HTTPConnection(upstream, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


_REPO = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags)/")
_FORWARD_REQUEST = ("accept", "content-type", "content-length")
_FORWARD_RESPONSE = (
    "content-type",
    "docker-content-digest",
    "docker-distribution-api-version",
    "docker-upload-uuid",
    "location",
    "range",
    "content-range",
)


class _Base(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass

    @property
    def owner(self) -> FaultProxy:
        return self.server.owner

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reset(self) -> None:
        """Abort the connection with a TCP reset."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def send_blob(self, data: bytes) -> None:
        """Serve data honouring Range (unless told not to) and the blob faults."""
        owner = self.owner
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and not owner.ignore_range:
            start = int(m.group(1))
        if owner.tamper_blobs and data:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        body = data[start:]
        if owner.extra_bytes:
            body += b"X" * owner.extra_bytes
        if owner.short_bytes:
            body = body[: max(len(body) - owner.short_bytes, 0)]
        with owner.lock:
            reset_after, owner.reset_after = owner.reset_after, None
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if reset_after is not None:
            self.wfile.write(body[:reset_after])
            self.wfile.flush()
            owner.stopping.wait(0.2)  # let the client read what was sent: a reset drops unread data
            self.reset()
            return
        if owner.stall_after is not None:
            self.wfile.write(body[: owner.stall_after])
            self.wfile.flush()
            owner.stopping.wait(30)
            self.reset()
            return
        self.wfile.write(body)


class _ProxyHandler(_Base):
    def do_GET(self) -> None:
        self.handle_any()

    def do_HEAD(self) -> None:
        self.handle_any()

    def do_POST(self) -> None:
        self.handle_any()

    def do_PUT(self) -> None:
        self.handle_any()

    def do_PATCH(self) -> None:
        self.handle_any()

    def do_DELETE(self) -> None:
        self.handle_any()

    def handle_any(self) -> None:
        owner = self.owner
        owner.requests.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/token":
            self.token(url)
            return
        m = _REPO.match(url.path)
        repo = m.group(1) if m else None
        kind = m.group(2) if m else ""
        body = self.body()
        if owner.bearer and not self.authorized(repo):
            scope = f',scope="repository:{repo}:pull"' if repo else ""
            challenge = f'Bearer realm="{owner.url}/token",service="{owner.service}"{scope}'
            error = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}]}
            self.reply(401, json.dumps(error).encode(), {"WWW-Authenticate": challenge})
            return
        if self.command == "GET" and kind in ("manifests", "blobs"):
            status = owner.take_failure(kind)
            if status is not None:
                headers = {"Retry-After": "0"} if status == 429 else {}
                self.reply(status, b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}', headers)
                return
            if kind == "blobs" and repo:
                self.get_blob(repo, url.path.rsplit("/", 1)[1])
                return
            if kind == "manifests" and (owner.manifest_override or owner.tamper_manifests):
                self.get_manifest(url)
                return
        self.forward(url, body)

    def authorized(self, repo: str | None) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        return self.owner.token_allows(auth[len("Bearer ") :], repo)

    def token(self, url: urllib.parse.SplitResult) -> None:
        owner = self.owner
        if self.command == "POST":
            form = urllib.parse.parse_qs(self.body().decode())
            ok = (
                owner.refresh_token is not None
                and form.get("grant_type") == ["refresh_token"]
                and form.get("refresh_token") == [owner.refresh_token]
            )
            if not ok:
                self.reply(401, b'{"error":"invalid_grant"}', {"Content-Type": "application/json"})
                return
            scopes = set(" ".join(form.get("scope", [])).split())
            token = owner.issue_token(scopes)
            body = {"access_token": token, "expires_in": owner.token_expires_in, "scope": " ".join(scopes)}
            self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
            return
        query = urllib.parse.parse_qs(url.query)
        if owner.token_credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(owner.token_credentials).encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.reply(401, b'{"details":"incorrect username or password"}', {"Content-Type": "application/json"})
                return
        if query.get("service") != [owner.service]:
            self.reply(400, b'{"details":"wrong service"}', {"Content-Type": "application/json"})
            return
        token = owner.issue_token(set(query.get("scope", [])))
        body = {"token": token, "expires_in": owner.token_expires_in}
        self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def get_blob(self, repo: str, digest: str) -> None:
        owner = self.owner
        status, data = owner.blob(repo, digest)
        if status != 200:
            self.reply(status, data, {"Content-Type": "application/json"})
            return
        if owner.redirect_blobs:
            location = f"http://{owner.storage_host}/storage/{digest}?signature=abc"
            self.reply(307, b"", {"Location": location})
            return
        self.send_blob(data)

    def get_manifest(self, url: urllib.parse.SplitResult) -> None:
        owner = self.owner
        if owner.manifest_override is not None:
            content_type, body = owner.manifest_override
            self.reply(200, body, {"Content-Type": content_type})
            return
        headers = {"Accept": self.headers.get("Accept", "")}
        status, resp_headers, body = upstream_request(owner.upstream, "GET", url.path, headers, b"")
        out = {k: v for k, v in resp_headers if k.lower() in _FORWARD_RESPONSE}
        if status == 200:
            body = body + b"\n"
            if owner.tamper_manifests == "drop-digest":
                out = {k: v for k, v in out.items() if k.lower() != "docker-content-digest"}
        self.reply(status, body, out)

    def forward(self, url: urllib.parse.SplitResult, body: bytes) -> None:
        owner = self.owner
        headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARD_REQUEST}
        path = url.path + (f"?{url.query}" if url.query else "")
        status, resp_headers, data = upstream_request(owner.upstream, self.command, path, headers, body)
        out = {}
        length = str(len(data))
        for key, value in resp_headers:
            if key.lower() in _FORWARD_RESPONSE:
                out[key] = value.replace(f"http://{owner.upstream}", owner.url)
            elif key.lower() == "content-length" and self.command == "HEAD":
                length = value
        self.send_response(status)
        for key, value in out.items():
            self.send_header(key, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _StorageHandler(_Base):
    """The "blob storage" that redirected blob GETs land on: any path ending in a digest."""

    def do_GET(self) -> None:
        owner = self.owner
        with owner.lock:
            owner.storage_auth_headers.append(self.headers.get("Authorization"))
        digest = urllib.parse.urlsplit(self.path).path.rsplit("/", 1)[1]
        with owner.lock:
            data = owner._blob_cache.get(digest)
        if data is None:
            self.reply(404)
            return
        self.send_blob(data)
