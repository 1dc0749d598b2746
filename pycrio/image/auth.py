"""Registry credentials, auth challenges and bearer tokens (Docker token spec, OAuth2 refresh tokens).

Credentials go only to the registry they were given for: the host named by
`server_address` when the kubelet gave one, otherwise the origin (non-mirror)
source of the pull. A mirror on another host is asked anonymously.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pycrio.errors import DeadlineExceeded, PycrioError, Unauthenticated, Unavailable
from pycrio.image.credentials import Credentials
from pycrio.image.http import HttpClient, Response, Timeout, extend_query

if TYPE_CHECKING:
    from pycrio.image.registries_conf import Source

_ERROR_BODY_MAX = 64 * 1024
_TOKEN_BODY_MAX = 1024 * 1024


# ---------------------------------------------------------------- challenges

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?:,|$)')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|(?=,)|$)")


@dataclass(frozen=True)
class Challenge:
    """One WWW-Authenticate challenge: scheme ("basic", "bearer") and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(headers: list[str]) -> list[Challenge]:
    """Parse WWW-Authenticate header values (RFC 7235); unparseable parts are skipped."""
    out: list[Challenge] = []
    for header in headers:
        pos = 0
        while pos < len(header):
            if header[pos] in ", \t":
                pos += 1
                continue
            m = _SCHEME.match(header, pos)
            if not m:
                break
            scheme, pos = m.group(1).lower(), m.end()
            params: dict[str, str] = {}
            while pos < len(header):
                p = _PARAM.match(header, pos)
                if not p:
                    break
                value = p.group(2) if p.group(2) is not None else p.group(3)
                params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
                pos = p.end()
            out.append(Challenge(scheme, params))
    return out


@dataclass
class TokenCache:
    """Bearer tokens per (registry host, scope, credentials), kept until shortly before they expire."""

    margin: float = 5.0
    _tokens: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict)

    def get(self, key: tuple[str, str, str]) -> str | None:
        found = self._tokens.get(key)
        if found is None:
            return None
        token, expires = found
        if time.monotonic() >= expires:
            del self._tokens[key]
            return None
        return token

    def put(self, key: tuple[str, str, str], token: str, expires_in: float) -> None:
        self._tokens[key] = (token, time.monotonic() + max(expires_in - self.margin, 1.0))

    def drop(self, key: tuple[str, str, str]) -> None:
        self._tokens.pop(key, None)


# ---------------------------------------------------------------- HTTP helpers


def where_label(source: Source) -> str:
    """How messages name a source: "mirror host/repo" or "host/repo"."""
    return f"{'mirror ' if source.mirror else ''}{source.host}/{source.repository}"


def basic_header(creds: Credentials) -> dict[str, str]:
    value = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def status_text(resp: Response) -> str:
    return f"{resp.status} {resp.reason or ''}".strip()


async def read_limited(resp: Response, limit: int) -> bytes:
    """The body up to limit bytes (what is past the limit is left unread)."""
    body = bytearray()
    while len(body) < limit:
        chunk = await resp.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def error_detail(resp: Response) -> str:
    """' (CODE: message; …)' from a registry error body, or '' (reads at most 64 KiB)."""
    try:
        body = await read_limited(resp, _ERROR_BODY_MAX)
    except OSError:  # HttpError and TimeoutError are OSErrors
        return ""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip().splitlines()
        return f": {text[0][:200]}" if text else ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for err in errors[:5]:
        if isinstance(err, dict):
            code, message = err.get("code", ""), err.get("message", "")
            parts.append(f"{code}: {message}" if code and message else str(code or message))
    return f" ({'; '.join(parts)})" if parts else ""


async def fetch_token(
    http: HttpClient,
    source: Source,
    challenge: Challenge,
    creds: Credentials | None,
    timeout: Timeout,
) -> tuple[str, float]:
    """(token, seconds it lives) from the challenge's realm: OAuth2 refresh token or GET with basic auth."""
    realm = challenge.realm
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unauthenticated(f"{where_label(source)}: token realm {challenge.realm!r} is not an http(s) URL")
    scopes = [f"repository:{source.repository}:pull"]
    if challenge.params.get("scope") and challenge.params["scope"] not in scopes:
        scopes.append(challenge.params["scope"])
    service = challenge.params.get("service", "")
    ssl = not source.insecure
    where = f"{where_label(source)}: token service {parts._replace(query='', fragment='').geturl()}"
    try:
        resp = None
        if creds and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": service,
                "client_id": "pycrio",
                "scope": " ".join(scopes),
            }
            resp = await http.post(realm, data=form, ssl=ssl, timeout=timeout)
            if resp.status in (404, 405):
                resp.release()
                resp = None
        if resp is None:
            query: list[tuple[str, str]] = [("service", service)] if service else []
            query += [("scope", s) for s in scopes]
            headers = {}
            if creds and (creds.username or creds.password):
                headers = basic_header(creds)
                query.append(("account", creds.username))
            resp = await http.get(extend_query(realm, query), headers=headers, ssl=ssl, timeout=timeout)
        try:
            if resp.status in (401, 403):
                detail = await error_detail(resp)
                given = "refused the credentials" if creds else "requires credentials (none were given)"
                raise Unauthenticated(f"{where} {given}{detail}")
            if resp.status != 200:
                raise Unavailable(f"{where} answered {status_text(resp)}{await error_detail(resp)}")
            body = await read_limited(resp, _TOKEN_BODY_MAX)
        finally:
            resp.release()
    except PycrioError:
        raise
    except TimeoutError:
        raise DeadlineExceeded(f"{where}: no answer within {timeout.read:g} s") from None
    except OSError as e:
        raise Unavailable(f"{where}: unreachable: {e}") from e
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise Unavailable(f"{where}: answer has no token")
    expires_in = doc.get("expires_in") if isinstance(doc, dict) else None
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = 60
    return token, float(expires_in)
