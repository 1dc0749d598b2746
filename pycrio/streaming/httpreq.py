"""The one HTTP/1.1 request a streaming connection starts with, and plain responses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0

REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 503: "Service Unavailable", 101: "Switching Protocols"}  # fmt: skip


class BadRequest(Exception):
    pass


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]  # lowercase names
    raw: bytes

    def header(self, name: str) -> str:
        return ", ".join(self.headers.get(name.lower(), []))

    def header_tokens(self, name: str) -> list[str]:
        """A header's comma-separated values over all its lines, stripped."""
        return [t.strip() for v in self.headers.get(name.lower(), []) for t in v.split(",") if t.strip()]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The request head; None when the client closed first; BadRequest when it is not HTTP/1.1."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise BadRequest("incomplete request head") from e
    except asyncio.LimitOverrunError as e:
        raise BadRequest("request head too large") from e
    except TimeoutError as e:
        raise BadRequest("request head not received in time") from e
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    method, target, _ = parts
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        headers.setdefault(name.lower(), []).append(value.strip())
    url = urlsplit(target)
    return Request(method, unquote(url.path), parse_qs(url.query, keep_blank_values=True), headers, raw)


def response(
    status: int,
    body: str = "",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    data = body.encode()
    if status != 101:
        items += [("Content-Type", content_type), ("Content-Length", str(len(data))), ("Connection", "close")]
    head = f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items)
    return head.encode("latin-1") + b"\r\n" + data
