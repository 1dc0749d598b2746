"""pycrio/image/auth.py: CRI credentials, where they may go, challenges, the token cache; new error codes."""

from __future__ import annotations

import base64
from unittest import mock

import grpc
import pytest

from pycrio import errors
from pycrio.cri import api_pb2
from pycrio.image.auth import Challenge, TokenCache, parse_challenges
from pycrio.image.credentials import Credentials, canonical_host, credentials_from_cri
from pycrio.image.registries_conf import Source
from pycrio.server.errors import status_for


def test_credentials_from_cri():
    assert credentials_from_cri(None) is None
    assert credentials_from_cri(api_pb2.AuthConfig()) is None
    assert credentials_from_cri(api_pb2.AuthConfig(server_address="quay.io")) is None
    c = credentials_from_cri(api_pb2.AuthConfig(username="u", password="p", server_address="quay.io"))
    assert c == Credentials("u", "p", server_address="quay.io")
    auth = base64.b64encode(b"user:pa:ss").decode()
    assert credentials_from_cri(api_pb2.AuthConfig(auth=auth)) == Credentials("user", "pa:ss")
    assert credentials_from_cri(api_pb2.AuthConfig(identity_token="rt")) == Credentials(identity_token="rt")
    assert credentials_from_cri(api_pb2.AuthConfig(registry_token="bt")) == Credentials(registry_token="bt")


@pytest.mark.parametrize(
    "auth", ["not base64!", base64.b64encode(b"no-colon").decode(), base64.b64encode(b"\xff:x").decode()]
)
def test_bad_auth_field(auth):
    with pytest.raises(errors.InvalidArgument, match="auth.auth"):
        credentials_from_cri(api_pb2.AuthConfig(auth=auth))


def test_repr_hides_secrets():
    c = Credentials("alice", "hunter2", identity_token="idtok", registry_token="regtok")
    text = repr(c) + str(c)
    assert "alice" in text and "password+identity_token+registry_token" in text
    for secret in ("hunter2", "idtok", "regtok"):
        assert secret not in text
    assert repr(Credentials("alice", "a")) != repr(Credentials("alice", "b"))  # fingerprints differ


@pytest.mark.parametrize(
    "address,host",
    [
        ("https://index.docker.io/v1/", "registry-1.docker.io"),
        ("docker.io", "registry-1.docker.io"),
        ("Quay.IO", "quay.io"),
        ("http://127.0.0.1:5000/some/path", "127.0.0.1:5000"),
        ("registry.example.com:443", "registry.example.com:443"),
    ],
)
def test_canonical_host(address, host):
    assert canonical_host(address) == host


def test_credentials_go_only_to_their_registry():
    origin = Source("registry-1.docker.io", "library/x", mirror=False)
    mirror = Source("mirror.local", "library/x", mirror=True)
    plain = Credentials("u", "p")
    assert plain.applies_to(origin) and not plain.applies_to(mirror)
    hub = Credentials("u", "p", server_address="https://index.docker.io/v1/")
    assert hub.applies_to(origin) and not hub.applies_to(mirror)
    for_mirror = Credentials("u", "p", server_address="mirror.local")
    assert for_mirror.applies_to(mirror) and not for_mirror.applies_to(origin)


def test_parse_challenges():
    got = parse_challenges(
        [
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:samalba/my-app:pull,push"',
            'Basic realm="a \\"quoted\\" realm", charset=UTF-8',
            "Negotiate, Bearer realm=x",
        ]
    )
    assert got == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:samalba/my-app:pull,push",
            },
        ),
        Challenge("basic", {"realm": 'a "quoted" realm', "charset": "UTF-8"}),
        Challenge("negotiate", {}),
        Challenge("bearer", {"realm": "x"}),
    ]
    assert got[0].realm == "https://auth.docker.io/token"
    assert parse_challenges(["", "   "]) == []


def test_token_cache_expiry():
    cache = TokenCache(margin=5)
    key = ("h", "repository:x:pull", "")
    with mock.patch("time.monotonic", return_value=100.0):
        cache.put(key, "t", 60)
        assert cache.get(key) == "t"
        assert cache.get(("h", "repository:x:pull", "other-creds")) is None
    with mock.patch("time.monotonic", return_value=154.0):
        assert cache.get(key) == "t"
    with mock.patch("time.monotonic", return_value=155.0):
        assert cache.get(key) is None
    cache.put(key, "t2", 60)
    cache.drop(key)
    assert cache.get(key) is None


@pytest.mark.parametrize(
    "exc,code",
    [
        (errors.Unauthenticated("who are you"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unavailable("down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_new_error_codes(exc, code):
    assert status_for(exc) == (code, str(exc))
    assert isinstance(exc, errors.PycrioError)
