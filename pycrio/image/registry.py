"""Registry client (OCI distribution / Docker registry API v2 over image/http.py): manifests, blobs, auth, mirrors.

Decisions, so that they are written down once:

- Sources are tried in order (mirrors, then the origin). A mirror that is
  down, lacks the image, fails, refuses us or serves bad content is skipped;
  when every source fails, the most telling error is raised with what each
  source said.
- TLS: https with the system CAs. An `insecure` source is probed once per
  client: plain http first (what a 127.0.0.1 registry speaks), then https
  without certificate checks; the scheme that answered is remembered. The
  probe (GET /v2/) never carries credentials and teaches the auth the host
  wants, so the first real request already carries it.
- Credentials go only where credentials.Credentials.applies_to allows; a redirect to
  another origin (blob storage) never carries the registry's Authorization.
- Retries: 5xx, 429 (Retry-After, capped) and, except on mirrors, connection
  failures, with exponential backoff (`tries`, `backoff` doubling up to
  `max_backoff`). Other 4xx are final. A blob stream that breaks resumes with
  `Range: bytes=N-`; no byte for `progress_timeout` seconds is
  DeadlineExceeded.
- Proxy variables (HTTPS_PROXY, NO_PROXY) and ~/.netrc are ignored (netrc
  credentials would go to any host).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin

from pycrio import __version__
from pycrio.digest import is_digest, sha256_digest
from pycrio.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PycrioError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from pycrio.image import manifest as mf
from pycrio.image.auth import (
    Challenge,
    TokenCache,
    basic_header,
    error_detail,
    fetch_token,
    parse_challenges,
    status_text,
)
from pycrio.image.auth import where_label as _where
from pycrio.image.credentials import Credentials, credentials_from_cri
from pycrio.image.http import HttpClient, HttpError, Response, Timeout, origin
from pycrio.image.reference import Reference
from pycrio.image.registries_conf import Source

__all__ = ["Credentials", "RegistryClient", "Resolved", "credentials_from_cri"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
_ACCEPT = ", ".join(mf.MANIFEST_TYPES)


@dataclass
class Resolved:
    """A manifest found for a reference, with where it came from and its exact bytes."""

    source: Source
    manifest: mf.ImageManifest
    manifest_digest: str
    manifest_bytes: bytes
    index_digest: str | None = None
    index_bytes: bytes | None = None


class _Broken(Exception):
    """A connection failed or broke (internal: becomes a retry or Unavailable)."""


class RegistryClient:
    """One per daemon: a pooled HTTP client, the token cache and what it learnt about each registry."""

    def __init__(
        self,
        *,
        progress_timeout: float = 60.0,
        max_manifest_size: int = mf.MAX_MANIFEST_SIZE,
        user_agent: str = f"pycrio/{__version__}",
        tries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 1.6,
        max_retry_after: float = 10.0,
        connect_timeout: float = 30.0,
        chunk_size: int = CHUNK_SIZE,
    ):
        self.progress_timeout = progress_timeout
        self.max_manifest_size = max_manifest_size
        self.user_agent = user_agent
        self.tries = max(1, tries)
        self.backoff, self.max_backoff, self.max_retry_after = backoff, max_backoff, max_retry_after
        self.connect_timeout = connect_timeout
        self.chunk_size = chunk_size
        self._client: HttpClient | None = None
        self._schemes: dict[str, str] = {}  # insecure host -> "http" | "https"
        self._challenges: dict[str, Challenge] = {}  # host -> the auth it asked for last
        self._tokens = TokenCache()
        self._token_locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> HttpClient:
        if self._client is None or self._client.closed:
            self._client = HttpClient(
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"}, limit=64, limit_per_host=16
            )
        return self._client

    def _timeout(self) -> Timeout:
        return Timeout(connect=min(self.connect_timeout, self.progress_timeout), read=self.progress_timeout)

    def _delay(self, attempt: int) -> float:
        return min(self.backoff * (2 ** (attempt - 1)), self.max_backoff)

    # ------------------------------------------------------------ manifests

    async def resolve(
        self,
        ref: Reference,
        sources: list[Source],
        creds: Credentials | None,
        platform: mf.Platform | None = None,
    ) -> Resolved:
        """The image manifest for ref (platform chosen from an index) from the first source that has it."""
        if not sources:
            raise InvalidArgument(f"no source to pull {ref} from")
        failures: list[tuple[Source, PycrioError]] = []
        for source in sources:
            try:
                return await self._resolve_from(ref, source, creds, platform)
            except PycrioError as e:
                log.info("pull %s: %s: %s", ref, _where(source), e)
                failures.append((source, e))
        raise _combine(ref, failures)

    async def _resolve_from(
        self, ref: Reference, source: Source, creds: Credentials | None, platform: mf.Platform | None
    ) -> Resolved:
        data, content_type = await self._manifest(source, ref.reference, creds, expected=ref.digest)
        digest = sha256_digest(data)
        parsed = mf.parse_manifest(data, content_type, self.max_manifest_size)
        if isinstance(parsed, mf.ImageManifest):
            return Resolved(source, parsed, digest, data)
        wanted = platform or mf.host_platform()
        desc = mf.select_platform(parsed, wanted.os, wanted.architecture, wanted.variant)
        child, child_type = await self._manifest(source, desc.digest, creds, expected=desc.digest)
        if len(child) != desc.size:
            raise FailedPrecondition(
                f"{_where(source)}: manifest {desc.digest} is {len(child)} bytes, the index says {desc.size}"
            )
        manifest = mf.parse_manifest(child, child_type, self.max_manifest_size)
        if not isinstance(manifest, mf.ImageManifest):
            raise InvalidArgument(f"{_where(source)}: index {digest} points at another index ({desc.digest})")
        return Resolved(source, manifest, desc.digest, child, digest, data)

    async def _manifest(
        self, source: Source, reference: str, creds: Credentials | None, expected: str | None
    ) -> tuple[bytes, str]:
        """(bytes, Content-Type) of a manifest; verified against expected (a digest) or Docker-Content-Digest."""
        what = f"manifest {reference}"
        path = f"/v2/{source.repository}/manifests/{reference}"
        resp = await self._request(source, path, creds, what, {"Accept": _ACCEPT})
        try:
            limit = self.max_manifest_size
            if resp.content_length is not None and resp.content_length > limit:
                raise ResourceExhausted(
                    f"{_where(source)}: {what} is {resp.content_length} bytes, more than the {limit}-byte limit"
                )
            data = bytearray()
            try:
                async with asyncio.timeout(self.progress_timeout):
                    while chunk := await resp.read(64 * 1024):
                        data += chunk
                        if len(data) > limit:
                            raise ResourceExhausted(f"{_where(source)}: {what} is more than the {limit}-byte limit")
            except TimeoutError:
                raise DeadlineExceeded(
                    f"{_where(source)}: {what} did not arrive within {self.progress_timeout:g} s"
                ) from None
            except OSError as e:
                raise Unavailable(f"{_where(source)}: {what}: connection broke: {e}") from e
            content_type = resp.headers.get("Content-Type", "")
            header_digest = resp.headers.get("Docker-Content-Digest", "")
        finally:
            resp.release()
        data_bytes = bytes(data)
        actual = sha256_digest(data_bytes)
        if expected is not None and actual != expected:
            raise FailedPrecondition(f"{_where(source)}: {what}: the registry sent content whose digest is {actual}")
        if is_digest(header_digest) and header_digest != actual:
            raise FailedPrecondition(
                f"{_where(source)}: {what}: content digest {actual} differs from Docker-Content-Digest {header_digest}"
            )
        return data_bytes, content_type

    # ------------------------------------------------------------ blobs

    async def fetch_blob(self, source: Source, desc: mf.Descriptor, creds: Credentials | None, max_size: int) -> bytes:
        """A small blob (an image config) in memory, its size and digest verified."""
        if desc.size > max_size:
            raise ResourceExhausted(f"blob {desc.digest} is {desc.size} bytes, more than the {max_size}-byte limit")
        data = bytearray()
        hasher = hashlib.sha256()
        async for chunk in self.blob_chunks(source, desc, creds):
            hasher.update(chunk)
            data += chunk
        actual = "sha256:" + hasher.hexdigest()
        if actual != desc.digest:
            raise FailedPrecondition(
                f"{_where(source)}: blob {desc.digest}: the registry sent content hashing to {actual}"
            )
        return bytes(data)

    async def blob_chunks(self, source: Source, desc: mf.Descriptor, creds: Credentials | None) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks of about chunk_size, exactly desc.size of them; resumes broken streams."""
        what = f"blob {desc.digest}"
        path = f"/v2/{source.repository}/blobs/{desc.digest}"
        received = 0
        breaks = 0
        while True:
            headers = {"Range": f"bytes={received}-"} if received else {}
            resp = await self._request(source, path, creds, what, headers)
            try:
                skip = self._resume_offset(source, what, resp, received)
                remaining = desc.size - received
                length = resp.content_length
                if length is not None and length - skip > remaining:
                    raise FailedPrecondition(
                        f"{_where(source)}: {what}: the registry sent more than the manifest's size "
                        f"({length - skip + received} bytes for {desc.size})"
                    )
                buf = bytearray()
                try:
                    while True:
                        try:
                            async with asyncio.timeout(self.progress_timeout):
                                data = await resp.read(self.chunk_size)
                        except TimeoutError:
                            raise DeadlineExceeded(
                                f"pull of {desc.digest} from {_where(source)} made no progress "
                                f"for {self.progress_timeout:g} s"
                            ) from None
                        if not data:
                            break
                        if skip:
                            cut = min(skip, len(data))
                            data, skip = data[cut:], skip - cut
                        if received + len(buf) + len(data) > desc.size:
                            raise FailedPrecondition(
                                f"{_where(source)}: {what}: the registry sent more than the manifest's size "
                                f"({desc.size} bytes)"
                            )
                        buf += data
                        if len(buf) >= self.chunk_size:
                            received += len(buf)
                            out, buf = bytes(buf), bytearray()
                            yield out
                except PycrioError:
                    raise
                except (HttpError, ConnectionError) as e:
                    if buf:
                        received += len(buf)
                        yield bytes(buf)
                    breaks += 1
                    if breaks >= self.tries:
                        raise Unavailable(
                            f"{_where(source)}: {what}: the connection broke {breaks} times, last after "
                            f"{received} of {desc.size} bytes: {e}"
                        ) from e
                    log.info("%s: %s: stream broke at %d of %d bytes (%s); resuming", _where(source), what,
                             received, desc.size, e)  # fmt: skip
                    await asyncio.sleep(self._delay(breaks))
                    continue
                if buf:
                    received += len(buf)
                    yield bytes(buf)
                if received < desc.size:
                    raise FailedPrecondition(
                        f"{_where(source)}: {what}: the registry sent {received} bytes, the manifest says {desc.size}"
                    )
                return
            finally:
                resp.release()

    @staticmethod
    def _resume_offset(source: Source, what: str, resp: Response, received: int) -> int:
        """Bytes to skip at the start of resp's body so that it continues at offset received."""
        if not received or resp.status == 200:
            return received
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
        if resp.status != 206 or not m or int(m.group(1)) != received:
            raise FailedPrecondition(
                f"{_where(source)}: {what}: asked to resume at byte {received}, the registry answered "
                f"{resp.status} with Content-Range {resp.headers.get('Content-Range')!r}"
            )
        return 0

    # ------------------------------------------------------------ HTTP

    async def _request(
        self, source: Source, path: str, creds: Credentials | None, what: str, headers: dict[str, str]
    ) -> Response:
        """A successful (2xx) GET response, after auth, retries and redirects; the caller releases it."""
        creds = creds if creds is not None and creds.applies_to(source) else None
        attempt = 0
        authenticated = False
        while True:
            attempt += 1
            try:
                base = await self._base(source)
                auth = await self._authorization(source, creds)
                resp = await self._get(source, base + path, {**headers, **auth})
            except PycrioError:
                raise
            except TimeoutError:
                raise DeadlineExceeded(
                    f"{_where(source)}: {what}: no answer within {self.progress_timeout:g} s"
                ) from None
            except _Broken as e:
                if source.mirror or attempt >= self.tries:
                    raise Unavailable(f"{_where(source)}: registry unreachable: {e}") from e.__cause__
                await asyncio.sleep(self._delay(attempt))
                continue
            if 200 <= resp.status < 300:
                return resp
            detail = await error_detail(resp)
            resp.release()
            if resp.status == 401 and not authenticated and origin(resp.url)[1] == origin(base)[1]:
                challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
                authenticated = True
                if await self._learn(source, challenges, creds, what):
                    attempt -= 1
                    continue
            if resp.status == 429 or resp.status >= 500:
                if attempt < self.tries:
                    await asyncio.sleep(self._retry_after(resp) if resp.status == 429 else self._delay(attempt))
                    continue
                raise Unavailable(f"{_where(source)}: {what}: the registry answered {status_text(resp)}{detail}")
            raise self._status_error(source, what, resp, detail, creds)

    def _status_error(
        self, source: Source, what: str, resp: Response, detail: str, creds: Credentials | None
    ) -> PycrioError:
        where = f"{_where(source)}: {what}"
        if resp.status == 401:
            given = "the credentials given were refused" if creds else "no credentials were given for this registry"
            return Unauthenticated(f"{where}: authentication required and {given}{detail}")
        if resp.status == 403:
            return PermissionDenied(f"{where}: access denied{detail}")
        if resp.status == 404:
            return NotFound(f"{where}: not found{detail}")
        if resp.status == 400:
            return InvalidArgument(f"{where}: the registry refused the request: {status_text(resp)}{detail}")
        return FailedPrecondition(f"{where}: the registry answered {status_text(resp)}{detail}")

    def _retry_after(self, resp: Response) -> float:
        value = resp.headers.get("Retry-After", "").strip()
        delay = self.backoff
        if value.isdigit():
            delay = float(value)
        elif value:
            import email.utils  # rare (an HTTP-date), and the email package costs ~1 MiB resident

            with contextlib.suppress(TypeError, ValueError):
                delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        return min(max(delay, 0.0), self.max_retry_after)

    async def _get(self, source: Source, url: str, headers: dict[str, str]) -> Response:
        """GET url following redirects; Authorization only goes to the first URL's origin."""
        current = url
        first = origin(url)
        for _ in range(_MAX_REDIRECTS + 1):
            same = origin(current) == first
            send = headers if same else {k: v for k, v in headers.items() if k.lower() != "authorization"}
            ssl = not (source.insecure and same)
            try:
                resp = await self._http().get(current, headers=send, ssl=ssl, timeout=self._timeout())
            except TimeoutError:
                raise
            except OSError as e:  # HttpError: its message names host and port
                raise _Broken(str(e)) from e
            if resp.status not in _REDIRECTS:
                return resp
            location = resp.headers.get("Location")
            resp.release()
            if not location:
                raise Unavailable(f"{_where(source)}: redirect {resp.status} without a Location")
            current = urljoin(current, location)
            if origin(current)[0] not in ("http", "https"):
                raise Unavailable(f"{_where(source)}: redirect to unsupported URL {current}")
        raise Unavailable(f"{_where(source)}: more than {_MAX_REDIRECTS} redirects")

    async def _base(self, source: Source) -> str:
        """scheme://host for source; an insecure host is probed once, http first then https unverified.

        The probe (GET /v2/, never with credentials) also teaches the auth the host asks for, which
        saves the first real request a 401.
        """
        host = source.host
        if not source.insecure:
            return f"https://{host}"
        scheme = self._schemes.get(host)
        if scheme:
            return f"{scheme}://{host}"
        http_error: BaseException | None = None
        try:
            resp = await self._http().get(f"http://{host}/v2/", timeout=self._timeout())
            resp.release()
            if resp.status != 400:
                return self._probed(host, "http", resp)
        except OSError as e:
            http_error = e
        try:
            url = f"https://{host}/v2/"
            resp = await self._http().get(url, ssl=False, timeout=self._timeout())
            resp.release()
        except OSError as e:
            raise _Broken(f"{host}: {http_error or e}") from (http_error or e)
        return self._probed(host, "https", resp)

    def _probed(self, host: str, scheme: str, resp: Response) -> str:
        self._schemes[host] = scheme
        if resp.status == 401 and host not in self._challenges:
            by_scheme = {c.scheme: c for c in parse_challenges(resp.headers.getall("WWW-Authenticate", []))}
            challenge = by_scheme.get("bearer") or by_scheme.get("basic")
            if challenge is not None and (challenge.scheme == "basic" or challenge.realm):
                self._challenges[host] = challenge
        return f"{scheme}://{host}"

    # ------------------------------------------------------------ auth

    def _token_key(self, source: Source, creds: Credentials | None) -> tuple[str, str, str]:
        return (source.host, f"repository:{source.repository}:pull", creds.fingerprint if creds else "")

    async def _authorization(self, source: Source, creds: Credentials | None) -> dict[str, str]:
        """The Authorization header to send up front, from what the host asked for before."""
        if creds and creds.registry_token:
            return {"Authorization": f"Bearer {creds.registry_token}"}
        challenge = self._challenges.get(source.host)
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            return basic_header(creds) if creds and (creds.username or creds.password) else {}
        token = self._tokens.get(self._token_key(source, creds))
        if token is None:
            token = await self._token(source, challenge, creds, cached_ok=True)
        return {"Authorization": f"Bearer {token}"}

    async def _learn(self, source: Source, challenges: list[Challenge], creds: Credentials | None, what: str) -> bool:
        """After a 401: remember the challenge and get what it asks for; False when there is nothing to retry with."""
        if creds and creds.registry_token:
            return False
        by_scheme = {c.scheme: c for c in challenges}
        challenge = by_scheme.get("bearer") or by_scheme.get("basic")
        if challenge is None:
            return False
        previous = self._challenges.get(source.host)
        self._challenges[source.host] = challenge
        if challenge.scheme == "basic":
            return bool(creds and (creds.username or creds.password)) and previous != challenge
        if not challenge.realm:
            raise Unauthenticated(f"{_where(source)}: {what}: Bearer challenge without a realm")
        self._tokens.drop(self._token_key(source, creds))
        await self._token(source, challenge, creds, cached_ok=False)
        return True

    async def _token(self, source: Source, challenge: Challenge, creds: Credentials | None, cached_ok: bool) -> str:
        key = self._token_key(source, creds)
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self._tokens.get(key) if cached_ok else None
            if token is None:
                token, expires_in = await fetch_token(self._http(), source, challenge, creds, self._timeout())
                self._tokens.put(key, token, expires_in)
            return token


# ---------------------------------------------------------------- helpers


# How telling an error is when several sources failed: bad content beats auth beats unreachable beats missing.
_RANK: list[type[PycrioError]] = [
    mf.NoMatchingPlatform,
    InvalidArgument,
    FailedPrecondition,
    ResourceExhausted,
    Unauthenticated,
    PermissionDenied,
    DeadlineExceeded,
    Unavailable,
    NotFound,
]


def _combine(ref: Reference, failures: list[tuple[Source, PycrioError]]) -> PycrioError:
    """One error for a pull every source failed, naming what each said."""
    if len(failures) == 1:
        return failures[0][1]

    def rank(error: PycrioError) -> int:
        return next((i for i, kind in enumerate(_RANK) if isinstance(error, kind)), len(_RANK))

    worst = min((e for _, e in failures), key=rank)
    said = "; ".join(str(e) for _, e in failures)
    if all(isinstance(e, NotFound) and not isinstance(e, mf.NoMatchingPlatform) for _, e in failures):
        combined: PycrioError = NotFound(f"image {ref} not found: {said}")
    else:
        try:
            combined = type(worst)(f"pull of {ref} failed from every source: {said}")
        except TypeError:
            return worst
    combined.__cause__ = worst
    return combined
