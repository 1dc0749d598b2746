"""pycrio/image/registries_conf.py: containers-registries.conf(5) v2 loading, candidates and sources."""

from __future__ import annotations

import pytest

from pycrio.errors import FailedPrecondition
from pycrio.image.reference import parse
from pycrio.image.registries_conf import RegistriesConf, RegistriesConfError, Source

CRITEST = "/work/shared/critest/registries.conf"
D = "sha256:" + "cd" * 32


def conf(text: str) -> RegistriesConf:
    return RegistriesConf.loads(text, "/etc/containers/registries.conf")


def test_missing_file_is_empty(tmp_path):
    c = RegistriesConf.load(tmp_path / "none.conf")
    assert c.search_registries == [] and c.registries == [] and c.aliases == {}
    assert c.candidates("busybox") == [parse("docker.io/library/busybox:latest")]
    assert c.sources(parse("busybox")) == [Source("registry-1.docker.io", "library/busybox")]
    assert c.sources(parse("127.0.0.1:5000/x")) == [Source("127.0.0.1:5000", "x")]


def test_critest_file():
    import os

    if not os.path.exists(CRITEST):
        pytest.skip(f"{CRITEST} is not on this machine")
    c = RegistriesConf.load(CRITEST)
    assert c.search_registries == ["docker.io"]
    pause = parse("registry.k8s.io/pause:3.10.1")
    assert c.sources(pause) == [
        Source("127.0.0.1:5000", "pause", insecure=True, mirror=True),
        Source("registry.k8s.io", "pause", insecure=False, mirror=False),
    ]
    [busybox] = c.candidates("busybox")
    assert busybox == parse("docker.io/library/busybox:latest")
    assert c.sources(busybox)[0] == Source("127.0.0.1:5000", "library/busybox", insecure=True, mirror=True)
    assert c.sources(busybox)[1].host == "registry-1.docker.io"
    image = parse("gcr.io/k8s-staging-cri-tools/test-image-1")
    assert c.sources(image)[0].repository == "k8s-staging-cri-tools/test-image-1"
    assert c.sources(parse("127.0.0.1:5000/x")) == [Source("127.0.0.1:5000", "x", insecure=True, mirror=False)]


def test_candidates_for_short_names():
    c = conf(
        'unqualified-search-registries = ["quay.io", "docker.io"]\n'
        "[aliases]\n"
        '"pause" = "registry.k8s.io/pause"\n'
        '"tools/x" = "example.com:5000/team/x"\n'
    )
    assert [str(r) for r in c.candidates("busybox:1")] == ["quay.io/busybox:1", "docker.io/library/busybox:1"]
    assert [str(r) for r in c.candidates("pause:3.10")] == ["registry.k8s.io/pause:3.10"]
    assert [str(r) for r in c.candidates(f"pause@{D}")] == [f"registry.k8s.io/pause@{D}"]
    assert [str(r) for r in c.candidates("tools/x")] == ["example.com:5000/team/x:latest"]
    assert [str(r) for r in c.candidates("quay.io/pause")] == ["quay.io/pause:latest"]  # qualified: as written


def test_longest_prefix_and_location_rewrite():
    c = conf(
        "[[registry]]\n"
        'prefix = "example.com"\n'
        'location = "mirror-a.local"\n'
        "[[registry]]\n"
        'prefix = "example.com/foo"\n'
        'location = "internal.net:5000/bar"\n'
        "insecure = true\n"
        "[[registry.mirror]]\n"
        'location = "m0.local/mirror-for-foo"\n'
        "[[registry.mirror]]\n"
        'location = "m1.local/mirrors/foo"\n'
        "insecure = true\n"
    )
    assert c.sources(parse("example.com/foo/image:latest")) == [
        Source("m0.local", "mirror-for-foo/image", insecure=False, mirror=True),
        Source("m1.local", "mirrors/foo/image", insecure=True, mirror=True),
        Source("internal.net:5000", "bar/image", insecure=True, mirror=False),
    ]
    assert c.sources(parse("example.com/other")) == [Source("mirror-a.local", "other")]
    # "example.com/foo" does not match "example.com/foobar": the prefix must end at a separator
    assert c.sources(parse("example.com/foobar")) == [Source("mirror-a.local", "foobar")]
    # a host prefix does not match another port of the same host
    assert c.sources(parse("example.com:5000/foo/x")) == [Source("example.com:5000", "foo/x")]


def test_prefix_with_tag():
    c = conf('[[registry]]\nprefix = "a.io/x:1"\nlocation = "b.io/y"\n')
    assert c.sources(parse("a.io/x:1")) == [Source("b.io", "y")]
    assert c.sources(parse("a.io/x:2")) == [Source("a.io", "x")]


def test_wildcard_prefix():
    c = conf(
        "[[registry]]\n"
        'prefix = "*.example.com"\n'
        "insecure = true\n"
        "[[registry]]\n"
        'prefix = "*.sub.example.com"\n'
        'location = "rewritten.io"\n'
        "[[registry]]\n"
        'prefix = "exact.example.com"\n'
        "blocked = true\n"
    )
    assert c.sources(parse("a.example.com/x")) == [Source("a.example.com", "x", insecure=True)]
    assert c.sources(parse("a.b.example.com/x")) == [Source("a.b.example.com", "x", insecure=True)]
    assert c.sources(parse("deep.sub.example.com/x")) == [Source("rewritten.io", "x")]
    assert c.sources(parse("example.com/x")) == [Source("example.com", "x")]  # no subdomain: no match
    assert c.sources(parse("a.example.com:5000/x")) == [Source("a.example.com:5000", "x", insecure=True)]
    with pytest.raises(FailedPrecondition, match="blocked"):
        c.sources(parse("exact.example.com/x"))


def test_blocked():
    c = conf('[[registry]]\nprefix = "docker.io/library"\nblocked = true\n')
    with pytest.raises(FailedPrecondition) as info:
        c.sources(parse("busybox"))
    assert "pulling docker.io/library/busybox:latest is blocked" in str(info.value)
    assert "/etc/containers/registries.conf" in str(info.value)
    assert c.sources(parse("user/app"))[0].host == "registry-1.docker.io"


def test_location_only_table():
    c = conf('[[registry]]\nlocation = "r.io"\ninsecure = true\n[[registry.mirror]]\nlocation = "m.io"\n')
    assert c.sources(parse("r.io/x")) == [Source("m.io", "x", mirror=True), Source("r.io", "x", insecure=True)]


def test_digest_only_and_tag_only_mirrors():
    c = conf(
        '[[registry]]\nprefix = "r.io"\n'
        '[[registry.mirror]]\nlocation = "digests.io"\npull-from-mirror = "digest-only"\n'
        '[[registry.mirror]]\nlocation = "tags.io"\npull-from-mirror = "tag-only"\n'
        '[[registry.mirror]]\nlocation = "all.io"\n'
    )
    assert [s.host for s in c.sources(parse("r.io/x:1"))] == ["tags.io", "all.io", "r.io"]
    assert [s.host for s in c.sources(parse(f"r.io/x@{D}"))] == ["digests.io", "all.io", "r.io"]
    c = conf('[[registry]]\nprefix = "r.io"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m.io"\n')
    assert [s.host for s in c.sources(parse("r.io/x"))] == ["r.io"]
    assert [s.host for s in c.sources(parse(f"r.io/x@{D}"))] == ["m.io", "r.io"]


def test_ignored_and_unknown_keys(caplog):
    c = conf(
        'short-name-mode = "enforcing"\ncredential-helpers = ["containers-auth.json"]\nfuture-key = 1\n'
        '[[registry]]\nlocation = "r.io"\nnew-thing = true\n'
    )
    assert c.registries[0].location == "r.io"
    assert "future-key" in caplog.text and "new-thing" in caplog.text
    assert "short-name-mode" not in caplog.text


@pytest.mark.parametrize(
    "text,problem",
    [
        ("unqualified-search-registries = [", "invalid TOML"),
        ('unqualified-search-registries = "docker.io"', "unqualified-search-registries: expected an array"),
        ("unqualified-search-registries = [1]", "expected a string, got int 1"),
        ('unqualified-search-registries = ["docker.io/library"]', "is not host[:port]"),
        ('[registries.search]\nregistries = ["docker.io"]', "version 1 format"),
        ('[[registry]]\nprefix = "a.io"\ninsecure = "yes"', "[[registry]] table 1: insecure: expected true or false"),
        ('[[registry]]\nprefix = "a.io"\n[[registry]]\nprefix = "b.io"\nblocked = 1', "table 2: blocked"),
        ("[[registry]]\ninsecure = true", "has neither prefix nor location"),
        ('[[registry]]\nprefix = "*.a.io/x"', "wildcard prefix"),
        ('[[registry]]\nprefix = "a.*.io"', "must start with host[:port]"),
        ('[[registry]]\nprefix = "a.io/UPPER"', "lowercase"),
        ('[[registry]]\nprefix = "a.io"\n[[registry.mirror]]\ninsecure = true', "a mirror needs a location"),
        ('[[registry]]\nprefix = "a.io"\n[[registry.mirror]]\nlocation = "m.io"\npull-from-mirror = "x"', "all, "),
        ('[[registry]]\nprefix = "a.io"\n[[registry]]\nlocation = "a.io"', "is used by [[registry]] table 1"),
        ('short-name-mode = "loud"', "short-name-mode"),
        ('[aliases]\n"docker.io/x" = "quay.io/x"', "must be a short name"),
        ('[aliases]\n"x" = "y"', "must be a fully qualified name"),
        ('[aliases]\n"x" = "quay.io/x:1"', "must not include a tag or digest"),
        ("registry = 3", "registry: expected an array"),
    ],
)
def test_errors(text, problem):
    with pytest.raises(RegistriesConfError) as info:
        conf(text)
    message = str(info.value)
    assert message.startswith("/etc/containers/registries.conf")
    assert problem in message


def test_error_names_the_line():
    text = '[[registry]]\nprefix = "a.io"\n\n[[registry]]\nprefix = "b.io"\ninsecure = "no"\n'
    with pytest.raises(RegistriesConfError, match=r"^/x\.conf:6: \[\[registry\]\] table 2: insecure"):
        RegistriesConf.loads(text, "/x.conf")


def test_load_errors_name_the_file(tmp_path):
    path = tmp_path / "registries.conf"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(RegistriesConfError, match=f"{path}: not UTF-8"):
        RegistriesConf.load(path)
    path.write_text("[[registry]]\nprefix = 1\n")
    with pytest.raises(RegistriesConfError, match=f"{path}:2: "):
        RegistriesConf.load(path)
