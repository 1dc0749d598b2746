"""Single-use, short-lived tokens naming a pending Exec, Attach or PortForward request."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from pycrio.errors import ResourceExhausted

MAX_PENDING = 1000  # requests whose URL was handed out and not used yet


@dataclass(frozen=True)
class StreamRequest:
    kind: str  # "exec", "attach" or "portforward"
    container_id: str = ""
    pod_id: str = ""
    cmd: tuple[str, ...] = ()
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False
    ports: tuple[int, ...] = field(default=())


class Tokens:
    """token -> request; a token works once and only for lifetime seconds."""

    def __init__(self, lifetime: float):
        self.lifetime = lifetime
        self._pending: OrderedDict[str, tuple[float, StreamRequest]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._pending:
            token, (deadline, _) = next(iter(self._pending.items()))
            if deadline > now:
                break
            del self._pending[token]

    def issue(self, request: StreamRequest) -> str:
        now = time.monotonic()
        self._expire(now)
        if len(self._pending) >= MAX_PENDING:
            raise ResourceExhausted(f"{MAX_PENDING} streaming requests are pending already")
        token = secrets.token_urlsafe(24)
        self._pending[token] = (now + self.lifetime, request)
        return token

    def take(self, kind: str, token: str) -> StreamRequest | None:
        """The request for token, consumed; None when unknown, used, expired or of another kind."""
        self._expire(time.monotonic())
        entry = self._pending.pop(token, None)
        if entry is None or entry[1].kind != kind:
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._pending)
