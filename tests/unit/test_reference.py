"""pycrio/image/reference.py: image names normalised as Kubernetes users expect, bad names refused clearly."""

from __future__ import annotations

import pytest

from pycrio.errors import InvalidArgument
from pycrio.image.reference import Reference, is_short_name, parse

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "name,registry,repository,tag,digest",
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/library/busybox:1", "docker.io", "library/busybox", "1", None),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("localhost/x", "localhost", "x", "latest", None),
        ("localhost:5000/x", "localhost:5000", "x", "latest", None),
        ("127.0.0.1:5000/x:1", "127.0.0.1:5000", "x", "1", None),
        ("[::1]:5000/x", "[::1]:5000", "x", "latest", None),
        ("registry.k8s.io/pause:3.10.1", "registry.k8s.io", "pause", "3.10.1", None),
        ("gcr.io/k8s-staging-cri-tools/test-image-1", "gcr.io", "k8s-staging-cri-tools/test-image-1", "latest", None),
        (f"x@{D}", "docker.io", "library/x", None, D),
        (f"x:tag@{D}", "docker.io", "library/x", "tag", D),
        (f"quay.io/a/b/c:v_1.0-rc@{D}", "quay.io", "a/b/c", "v_1.0-rc", D),
        ("Registry/x", "Registry", "x", "latest", None),  # an uppercase first component is a host
        ("a__b/c-d--e.f", "docker.io", "a__b/c-d--e.f", "latest", None),
        ("x:" + "t" * 128, "docker.io", "library/x", "t" * 128, None),
    ],
)
def test_parse(name, registry, repository, tag, digest):
    ref = parse(name)
    assert ref == Reference(registry, repository, tag, digest)


def test_str_and_properties():
    ref = parse(f"127.0.0.1:5000/a/b:1@{D}")
    assert str(ref) == f"127.0.0.1:5000/a/b:1@{D}"
    assert ref.name == "127.0.0.1:5000/a/b"
    assert ref.reference == D  # the digest wins for fetching
    assert str(parse("busybox")) == "docker.io/library/busybox:latest"
    assert parse("busybox").reference == "latest"
    assert parse(str(parse("user/app:2"))) == parse("user/app:2")


@pytest.mark.parametrize(
    "name,problem",
    [
        ("", "empty"),
        ("Busybox", "repository name must be lowercase"),
        ("docker.io/User/app", "repository name must be lowercase"),
        ("x:", "empty tag"),
        ("x@", "empty digest"),
        ("x:-bad", "tag '-bad' must match"),
        ("x:" + "t" * 129, "must match"),
        ("x@sha256:abc", "64 lowercase hexadecimal digits"),
        ("x@sha256:" + "AB" * 32, "64 lowercase hexadecimal digits"),
        ("x@sha512:" + "ab" * 64, "digest algorithm 'sha512' is not supported"),
        ("x@md5", "not a digest"),
        ("x@a@b", "more than one '@'"),
        ("a//b", "empty path component"),
        ("a/b/", "empty path component"),
        ("host.io/", "no repository after the registry"),
        ("-x", "path component '-x'"),
        ("a/b_", "path component 'b_'"),
        ("a b", "white space"),
        ("ab" * 32, "image ID"),
        ("bad_host.io/x", "registry 'bad_host.io' is not host[:port]"),
        ("host:port/x", "registry 'host:port' is not host[:port]"),
        ("a.io/" + "x" * 251, "longer than 255"),
        ("x" * 2000, "longer than 1024"),
    ],
)
def test_bad_names(name, problem):
    with pytest.raises(InvalidArgument, match="invalid image name") as info:
        parse(name)
    assert problem in str(info.value)


def test_not_a_string():
    with pytest.raises(InvalidArgument, match="must be a string"):
        parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name,short",
    [
        ("busybox", True),
        ("user/app:1", True),
        (f"x@{D}", True),
        ("docker.io/busybox", False),
        ("localhost/x", False),
        ("localhost:5000/x", False),
        ("quay.io/a/b", False),
        ("host:5000/x", False),
    ],
)
def test_is_short_name(name, short):
    assert is_short_name(name) is short
