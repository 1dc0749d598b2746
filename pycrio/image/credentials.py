"""Registry credentials: what a pull may authenticate with, from the CRI AuthConfig.

Kept apart from auth.py (the HTTP token flow) so that the daemon imports no HTTP
client until its first pull.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycrio.errors import InvalidArgument

if TYPE_CHECKING:
    from pycrio.cri import api_pb2
    from pycrio.image.registries_conf import Source

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a pull may authenticate with; repr never shows a secret."""

    username: str = ""
    password: str = ""
    identity_token: str = ""  # an OAuth2 refresh token for the registry's token service
    registry_token: str = ""  # a bearer token sent as is
    server_address: str = ""  # the registry these are for; "" means the origin of the pull

    @property
    def fingerprint(self) -> str:
        """A digest of every field: tells credentials apart without revealing them."""
        text = "\0".join((self.username, self.password, self.identity_token, self.registry_token, self.server_address))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        kinds = [k for k in ("password", "identity_token", "registry_token") if getattr(self, k)]
        return (
            f"Credentials(username={self.username!r}, server_address={self.server_address!r}, "
            f"secrets={'+'.join(kinds) or 'none'}, fingerprint={self.fingerprint})"
        )

    def applies_to(self, source: Source) -> bool:
        """Whether these credentials may be sent to source."""
        if self.server_address:
            return canonical_host(self.server_address) == canonical_host(source.host)
        return not source.mirror


def canonical_host(address: str) -> str:
    """host[:port] of a server address ("https://index.docker.io/v1/" -> "registry-1.docker.io")."""
    address = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", address.strip())
    host = address.split("/", 1)[0].lower()
    return "registry-1.docker.io" if host in DOCKER_HUB_HOSTS else host


def credentials_from_cri(auth: api_pb2.AuthConfig | None) -> Credentials | None:
    """Credentials from a CRI AuthConfig; None when it carries none. `auth` is base64("user:password")."""
    if auth is None:
        return None
    username, password = auth.username, auth.password
    if auth.auth:
        try:
            decoded = base64.b64decode(auth.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument("auth.auth is not base64 of 'username:password'") from None
        user, colon, secret = decoded.partition(":")
        if not colon:
            raise InvalidArgument("auth.auth does not decode to 'username:password'")
        username, password = user, secret
    creds = Credentials(
        username=username,
        password=password,
        identity_token=auth.identity_token,
        registry_token=auth.registry_token,
        server_address=auth.server_address,
    )
    if not (creds.username or creds.password or creds.identity_token or creds.registry_token):
        return None
    return creds
