"""Push images to a registry with the distribution API (synchronous, http.client): blobs, manifests, indexes.

Handles anonymous, basic and bearer-token registries (the token is asked for
`repository:<repo>:pull,push`, with basic credentials when given).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.parse
from dataclasses import dataclass, field

from tests.support.images import Blob, Image, Index


class PushError(RuntimeError):
    pass


@dataclass
class _Client:
    base: str  # http://host:port
    repo: str
    creds: tuple[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)  # the Authorization that worked

    def request(self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None):
        """(status, headers, body); answers a 401 challenge once."""
        for attempt in range(2):
            status, resp_headers, data = self._send(method, url, body, {**(headers or {}), **self.headers})
            if status != 401 or attempt:
                return status, resp_headers, data
            self._authenticate(resp_headers.get("www-authenticate", ""))
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, body: bytes, headers: dict[str, str]):
        full = urllib.parse.urljoin(self.base + "/", url)
        parts = urllib.parse.urlsplit(full)
        conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_class(parts.netloc, timeout=30)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path, body=body if method in ("PUT", "POST", "PATCH") else None, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def _authenticate(self, challenge: str) -> None:
        scheme, _, rest = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if scheme.lower() == "basic":
            if not self.creds:
                raise PushError(f"{self.base} wants basic auth and no credentials were given")
            self.headers = {"Authorization": _basic(*self.creds)}
            return
        if scheme.lower() != "bearer":
            raise PushError(f"{self.base}: unsupported challenge {challenge!r}")
        query = {"scope": f"repository:{self.repo}:pull,push"}
        if params.get("service"):
            query["service"] = params["service"]
        realm = params["realm"] + "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": _basic(*self.creds)} if self.creds else {}
        status, _, data = self._send("GET", realm, b"", headers)
        if status != 200:
            raise PushError(f"token service {params['realm']} answered {status}: {data[:200]!r}")
        doc = json.loads(data)
        self.headers = {"Authorization": f"Bearer {doc.get('token') or doc['access_token']}"}


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _base(registry: str) -> str:
    return registry.rstrip("/") if "://" in registry else f"http://{registry}"


def _client(registry: str, repo: str, creds: tuple[str, str] | None) -> _Client:
    return _Client(_base(registry), repo, creds)


def _push_blob(client: _Client, blob: Blob) -> None:
    status, _, _ = client.request("HEAD", f"/v2/{client.repo}/blobs/{blob.digest}")
    if status == 200:
        return
    status, headers, data = client.request("POST", f"/v2/{client.repo}/blobs/uploads/")
    if status != 202 or "location" not in headers:
        raise PushError(f"starting an upload of {blob.digest} to {client.repo}: {status} {data[:300]!r}")
    location = headers["location"]
    location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": blob.digest})
    upload_headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
    status, _, data = client.request("PUT", location, blob.data, upload_headers)
    if status != 201:
        raise PushError(f"uploading {blob.digest} to {client.repo}: {status} {data[:300]!r}")


def push_blob(registry: str, repo: str, blob: Blob, creds: tuple[str, str] | None = None) -> None:
    _push_blob(_client(registry, repo, creds), blob)


def push_manifest(
    registry: str, repo: str, reference: str, data: bytes, media_type: str, creds: tuple[str, str] | None = None
) -> None:
    """PUT raw manifest bytes under a tag or digest."""
    client = _client(registry, repo, creds)
    status, _, body = client.request("PUT", f"/v2/{repo}/manifests/{reference}", data, {"Content-Type": media_type})
    if status != 201:
        raise PushError(f"pushing manifest {repo}:{reference}: {status} {body[:500]!r}")


def _push_image(client: _Client, reference: str, image: Image) -> None:
    for blob in [*image.layers, image.config_blob]:
        _push_blob(client, blob)
    status, _, body = client.request(
        "PUT", f"/v2/{client.repo}/manifests/{reference}", image.manifest_bytes, {"Content-Type": image.media_type}
    )
    if status != 201:
        raise PushError(f"pushing manifest {client.repo}:{reference}: {status} {body[:500]!r}")


def push_image(registry: str, repo: str, tag: str | None, image: Image, creds: tuple[str, str] | None = None) -> str:
    """Push image's blobs and manifest (tagged tag, or by digest when tag is None); returns the manifest digest."""
    _push_image(_client(registry, repo, creds), tag or image.manifest_digest, image)
    return image.manifest_digest


def push_index(registry: str, repo: str, tag: str | None, index: Index, creds: tuple[str, str] | None = None) -> str:
    """Push every image of index by digest, then the index itself; returns the index digest."""
    client = _client(registry, repo, creds)
    for image in index.images:
        _push_image(client, image.manifest_digest, image)
    status, _, body = client.request(
        "PUT", f"/v2/{repo}/manifests/{tag or index.digest}", index.manifest_bytes, {"Content-Type": index.media_type}
    )
    if status != 201:
        raise PushError(f"pushing index {repo}:{tag}: {status} {body[:500]!r}")
    return index.digest
