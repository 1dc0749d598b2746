"""pycrio/image/registry.py against a real docker-registry, directly and through the fault-injecting proxy."""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.parse

import pytest

from pycrio import errors
from pycrio.image import manifest as mf
from pycrio.image.reference import parse
from pycrio.image.registries_conf import RegistriesConf, Source
from pycrio.image.registry import Credentials, RegistryClient
from tests.support.fixtures import AUTH_PASSWORD, AUTH_USER
from tests.support.images import LayerBuilder, build_image, build_index
from tests.support.push import push_image, push_index
from tests.support.registry import closed_port

FAST = {"progress_timeout": 2.0, "backoff": 0.02, "max_backoff": 0.1}


def run(coro):
    return asyncio.run(coro)


def origin(host: str, repo: str) -> Source:
    return Source(host, repo, insecure=True, mirror=False)


def mirror(host: str, repo: str) -> Source:
    return Source(host, repo, insecure=True, mirror=True)


async def _blob(client: RegistryClient, source: Source, desc: mf.Descriptor, creds=None) -> tuple[bytes, list[int]]:
    data, sizes = bytearray(), []
    async for chunk in client.blob_chunks(source, desc, creds):
        sizes.append(len(chunk))
        data += chunk
    return bytes(data), sizes


async def _pull(sources, ref, creds=None, **options):
    """resolve + config + every layer; returns (resolved, config bytes, layer bytes)."""
    async with RegistryClient(**{**FAST, **options}) as client:
        resolved = await client.resolve(ref, sources, creds)
        config = await client.fetch_blob(resolved.source, resolved.manifest.config, creds, 1 << 20)
        layers = [(await _blob(client, resolved.source, d, creds))[0] for d in resolved.manifest.layers]
        return resolved, config, layers


# ---------------------------------------------------------------- anonymous pulls


def test_pull_by_tag(registry, busybox_image):
    ref = parse(f"{registry.host}/test/busybox:latest")
    resolved, config, layers = run(_pull([origin(registry.host, "test/busybox")], ref))
    assert resolved.manifest_digest == busybox_image.manifest_digest
    assert resolved.manifest_bytes == busybox_image.manifest_bytes
    assert resolved.index_digest is None and resolved.source.host == registry.host
    assert config == busybox_image.config_blob.data
    assert mf.parse_image_config(config).diff_ids == [busybox_image.layers[0].diff_id]
    assert [hashlib.sha256(b).hexdigest() for b in layers] == [b.digest[7:] for b in busybox_image.layers]


def test_blob_chunks_are_about_a_mebibyte(registry, busybox_image):
    async def go():
        async with RegistryClient(**FAST) as client:
            resolved = await client.resolve(
                parse(f"{registry.host}/test/busybox"), [origin(registry.host, "test/busybox")], None
            )
            return await _blob(client, resolved.source, resolved.manifest.layers[0])

    data, sizes = run(go())
    assert len(data) == busybox_image.layers[0].size
    assert all(s <= 1024 * 1024 for s in sizes) and sizes[0] == min(1024 * 1024, len(data))


def test_pull_by_digest(registry, busybox_image):
    ref = parse(f"{registry.host}/test/busybox@{busybox_image.manifest_digest}")
    resolved, _, _ = run(_pull([origin(registry.host, "test/busybox")], ref))
    assert resolved.manifest_digest == busybox_image.manifest_digest


def test_tag_and_digest_fetches_by_digest(registry, busybox_image):
    ref = parse(f"{registry.host}/test/busybox:no-such-tag@{busybox_image.manifest_digest}")
    resolved, _, _ = run(_pull([origin(registry.host, "test/busybox")], ref))
    assert resolved.manifest_digest == busybox_image.manifest_digest


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_index_selects_the_host_platform(registry, kind):
    host_arch = mf.host_platform().architecture
    other = "arm64" if host_arch != "arm64" else "amd64"
    mine = build_image(kind=kind, labels={"which": "host"})
    theirs = build_image(kind=kind, architecture=other, labels={"which": "other"})
    index = build_index([theirs, mine], kind=kind)
    push_index(registry.host, f"test/multi-{kind}", "latest", index)
    resolved, config, _ = run(
        _pull([origin(registry.host, f"test/multi-{kind}")], parse(f"{registry.host}/test/multi-{kind}"))
    )
    assert resolved.index_digest == index.digest and resolved.index_bytes == index.manifest_bytes
    assert resolved.manifest_digest == mine.manifest_digest
    assert resolved.manifest.media_type == mine.media_type
    assert mf.parse_image_config(config).config["Labels"] == {"which": "host"}


def test_index_without_the_host_platform(registry):
    index = build_index([build_image(architecture="s390x"), build_image(architecture="riscv64")])
    push_index(registry.host, "test/foreign-arch", "latest", index)
    with pytest.raises(mf.NoMatchingPlatform, match="linux/riscv64, linux/s390x"):
        run(_pull([origin(registry.host, "test/foreign-arch")], parse(f"{registry.host}/test/foreign-arch")))


def test_docker_schema2(registry):
    image = build_image(kind="docker")
    push_image(registry.host, "test/docker2", "v1", image)
    resolved, _, layers = run(_pull([origin(registry.host, "test/docker2")], parse(f"{registry.host}/test/docker2:v1")))
    assert resolved.manifest.media_type == mf.DOCKER_MANIFEST
    assert resolved.manifest.layers[0].compression == "gzip"
    assert layers[0] == image.layers[0].data


def test_zstd_and_uncompressed_layers(registry):
    zstd = LayerBuilder().file("a", b"zstd layer").build("zstd")
    plain = LayerBuilder().file("b", b"plain layer").build("none")
    image = build_image([zstd, plain])
    push_image(registry.host, "test/compressions", "v1", image)
    resolved, _, layers = run(
        _pull([origin(registry.host, "test/compressions")], parse(f"{registry.host}/test/compressions:v1"))
    )
    assert [d.compression for d in resolved.manifest.layers] == ["zstd", "none"]
    assert layers == [zstd.data, plain.data]


def test_missing_image_is_not_found(registry):
    with pytest.raises(errors.NotFound, match=f"{registry.host}/test/nothing-here: manifest latest: not found"):
        run(_pull([origin(registry.host, "test/nothing-here")], parse(f"{registry.host}/test/nothing-here")))


def test_schema1_refused(fault_proxy, busybox_image):
    proxy = fault_proxy(manifest_override=(mf.DOCKER_SCHEMA1_SIGNED, b'{"schemaVersion": 1, "name": "x"}'))
    with pytest.raises(errors.FailedPrecondition, match="schema 1 manifests are not supported"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))


def test_unknown_media_type_refused(fault_proxy, busybox_image):
    body = b'{"schemaVersion": 2, "mediaType": "application/vnd.example.thing+json"}'
    proxy = fault_proxy(manifest_override=("application/vnd.example.thing+json", body))
    with pytest.raises(errors.InvalidArgument, match="unsupported media type 'application/vnd.example.thing"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))


def test_huge_manifest_refused(fault_proxy, busybox_image):
    proxy = fault_proxy(manifest_override=(mf.OCI_MANIFEST, b" " * (5 * 1024 * 1024) + b"{}"))
    with pytest.raises(errors.ResourceExhausted, match="more than the 4194304-byte limit"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))


def test_manifest_digest_mismatch_refused(fault_proxy, busybox_image):
    proxy = fault_proxy(tamper_manifests="keep-digest")
    with pytest.raises(errors.FailedPrecondition, match="differs from Docker-Content-Digest"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))


def test_pull_by_digest_refuses_other_bytes(fault_proxy, busybox_image):
    proxy = fault_proxy(tamper_manifests="drop-digest")
    ref = parse(f"{proxy.host}/test/busybox@{busybox_image.manifest_digest}")
    with pytest.raises(errors.FailedPrecondition, match="the registry sent content whose digest is sha256:"):
        run(_pull([origin(proxy.host, "test/busybox")], ref))


def test_fetch_blob_verifies_the_digest(fault_proxy, busybox_image):
    proxy = fault_proxy(tamper_blobs=True)
    with pytest.raises(errors.FailedPrecondition, match="hashing to sha256:"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))


def test_fetch_blob_size_limit(registry, busybox_image):
    async def go():
        async with RegistryClient(**FAST) as client:
            source = origin(registry.host, "test/busybox")
            resolved = await client.resolve(parse(f"{registry.host}/test/busybox"), [source], None)
            await client.fetch_blob(source, resolved.manifest.layers[0], None, 1000)

    with pytest.raises(errors.ResourceExhausted, match="more than the 1000-byte limit"):
        run(go())


def test_secure_source_refuses_plain_http(registry, busybox_image):
    source = Source(registry.host, "test/busybox", insecure=False, mirror=False)
    with pytest.raises(errors.Unavailable, match="registry unreachable"):
        run(_pull([source], parse(f"{registry.host}/test/busybox"), tries=1))


# ---------------------------------------------------------------- basic auth


@pytest.fixture(scope="module")
def private_image(auth_registry):
    image = build_image(labels={"private": "yes"})
    push_image(auth_registry.host, "private/app", "v1", image, creds=(AUTH_USER, AUTH_PASSWORD))
    return image


def test_basic_auth(auth_registry, private_image):
    creds = Credentials(AUTH_USER, AUTH_PASSWORD)
    ref = parse(f"{auth_registry.host}/private/app:v1")
    resolved, config, _ = run(_pull([origin(auth_registry.host, "private/app")], ref, creds))
    assert resolved.manifest_digest == private_image.manifest_digest
    assert config == private_image.config_blob.data


def test_basic_auth_from_server_address(auth_registry, private_image):
    creds = Credentials(AUTH_USER, AUTH_PASSWORD, server_address=f"https://{auth_registry.host}/v2/")
    ref = parse(f"{auth_registry.host}/private/app:v1")
    resolved, _, _ = run(_pull([origin(auth_registry.host, "private/app")], ref, creds))
    assert resolved.manifest_digest == private_image.manifest_digest


def test_basic_auth_wrong_password(auth_registry, private_image):
    ref = parse(f"{auth_registry.host}/private/app:v1")
    with pytest.raises(errors.Unauthenticated, match="the credentials given were refused"):
        run(_pull([origin(auth_registry.host, "private/app")], ref, Credentials(AUTH_USER, "wrong")))


def test_basic_auth_without_credentials(auth_registry, private_image):
    ref = parse(f"{auth_registry.host}/private/app:v1")
    with pytest.raises(errors.Unauthenticated, match="no credentials were given"):
        run(_pull([origin(auth_registry.host, "private/app")], ref, None))


# ---------------------------------------------------------------- bearer tokens


def test_bearer_token_fetched_once_and_cached(fault_proxy, busybox_image):
    proxy = fault_proxy(bearer=True, token_credentials=("alice", "pw"))
    creds = Credentials("alice", "pw")
    source = origin(proxy.host, "test/busybox")

    async def go():
        async with RegistryClient(**FAST) as client:
            for _ in range(2):
                resolved = await client.resolve(parse(f"{proxy.host}/test/busybox"), [source], creds)
                await client.fetch_blob(source, resolved.manifest.config, creds, 1 << 20)
                await _blob(client, source, resolved.manifest.layers[0], creds)

    run(go())
    assert proxy.token_requests == 1
    token_gets = [r for r in proxy.requests if r.path.startswith("/token")]
    assert len(token_gets) == 1
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(token_gets[0].path).query)
    assert query["scope"] == ["repository:test/busybox:pull"] and query["service"] == ["fault-proxy"]
    assert token_gets[0].headers["authorization"].startswith("Basic ")
    # The scheme probe (GET /v2/) taught the challenge: every other request carried the token.
    v2 = [r for r in proxy.requests if r.path.startswith("/v2/") and r.path != "/v2/"]
    assert v2 and all(r.headers["authorization"].startswith("Bearer tok-") for r in v2)


def test_bearer_token_refetched_after_a_401(fault_proxy, busybox_image):
    proxy = fault_proxy(bearer=True)
    source = origin(proxy.host, "test/busybox")

    async def go():
        async with RegistryClient(**FAST) as client:
            await client.resolve(parse(f"{proxy.host}/test/busybox"), [source], None)
            proxy.revoke_tokens()
            return await client.resolve(parse(f"{proxy.host}/test/busybox"), [source], None)

    resolved = run(go())
    assert resolved.manifest_digest == busybox_image.manifest_digest
    assert proxy.token_requests == 2


def test_bearer_anonymous_token(fault_proxy, busybox_image):
    proxy = fault_proxy(bearer=True)
    resolved, _, _ = run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))
    assert resolved.manifest_digest == busybox_image.manifest_digest
    assert proxy.token_requests == 1


def test_bearer_token_service_refuses(fault_proxy, busybox_image):
    proxy = fault_proxy(bearer=True, token_credentials=("alice", "pw"))
    with pytest.raises(errors.Unauthenticated, match="token service .* refused the credentials"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox"), Credentials("alice", "x")))
    with pytest.raises(errors.Unauthenticated, match="requires credentials"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))


def test_registry_token_used_directly(fault_proxy, busybox_image):
    proxy = fault_proxy(bearer=True, static_token="cri-registry-token")
    creds = Credentials(registry_token="cri-registry-token")
    resolved, _, _ = run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox"), creds))
    assert resolved.manifest_digest == busybox_image.manifest_digest
    assert proxy.token_requests == 0
    v2 = [r for r in proxy.requests if r.path.startswith("/v2/") and r.path != "/v2/"]  # not the scheme probe
    assert v2 and all(r.headers.get("authorization") == "Bearer cri-registry-token" for r in v2)


def test_identity_token_is_an_oauth2_refresh_token(fault_proxy, busybox_image):
    proxy = fault_proxy(bearer=True, refresh_token="refresh-me")
    creds = Credentials(identity_token="refresh-me")
    resolved, _, _ = run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox"), creds))
    assert resolved.manifest_digest == busybox_image.manifest_digest
    posts = [r for r in proxy.requests if r.method == "POST" and r.path == "/token"]
    assert len(posts) == 1 and proxy.token_requests == 1


# ---------------------------------------------------------------- mirrors


def test_mirror_down_then_mirror_then_origin(registry, busybox_image):
    sources = [mirror(closed_port(), "test/busybox"), mirror(registry.host, "test/busybox"), origin(closed_port(), "x")]
    resolved, _, layers = run(_pull(sources, parse("example.com/test/busybox")))
    assert resolved.source == sources[1]
    assert layers[0] == busybox_image.layers[0].data


def test_mirror_down_and_mirror_404_fall_back_to_origin(registry, busybox_image):
    sources = [
        mirror(closed_port(), "test/busybox"),
        mirror(registry.host, "not/mirrored"),
        origin(registry.host, "test/busybox"),
    ]
    started = time.monotonic()
    resolved, _, _ = run(_pull(sources, parse("example.com/test/busybox")))
    assert resolved.source == sources[2]
    assert time.monotonic() - started < 1.5  # a mirror that is down is not retried


def test_every_source_missing_is_not_found(registry):
    sources = [mirror(registry.host, "not/mirrored"), origin(registry.host, "not/there")]
    with pytest.raises(errors.NotFound) as info:
        run(_pull(sources, parse("example.com/not/there")))
    message = str(info.value)
    assert message.startswith("image example.com/not/there:latest not found")
    assert f"mirror {registry.host}/not/mirrored" in message and f"{registry.host}/not/there" in message


def test_origin_down_is_unavailable_after_retries(registry):
    sources = [mirror(registry.host, "not/mirrored"), origin(closed_port(), "x")]
    started = time.monotonic()
    with pytest.raises(errors.Unavailable, match="failed from every source") as info:
        run(_pull(sources, parse("example.com/x")))
    assert "not found" in str(info.value)
    assert time.monotonic() - started < 1.5


def test_mirror_auth_failure_goes_to_origin(fault_proxy, registry, busybox_image):
    guarded = fault_proxy(bearer=True, token_credentials=("mirror-user", "pw"))
    creds = Credentials("someone", "secret")  # for the origin only
    sources = [mirror(guarded.host, "test/busybox"), origin(registry.host, "test/busybox")]
    resolved, _, _ = run(_pull(sources, parse("example.com/test/busybox"), creds))
    assert resolved.source == sources[1]
    token_gets = [r for r in guarded.requests if r.path.startswith("/token")]
    assert token_gets and all("authorization" not in r.headers for r in token_gets)


def test_credentials_stay_with_their_registry(fault_proxy, busybox_image):
    proxy = fault_proxy()
    sources = [mirror(proxy.host, "test/busybox")]
    run(_pull(sources, parse("example.com/test/busybox"), Credentials(registry_token="for-example.com")))
    assert proxy.requests and all("authorization" not in r.headers for r in proxy.requests)

    named = Credentials(registry_token="for-the-mirror", server_address=f"http://{proxy.host}")
    run(_pull(sources, parse("example.com/test/busybox"), named))
    assert proxy.requests[-1].headers.get("authorization") == "Bearer for-the-mirror"


def test_blocked_registry_refused(registry, tmp_path):
    conf = RegistriesConf.loads(f'[[registry]]\nprefix = "{registry.host}/test"\nblocked = true\n')
    with pytest.raises(errors.FailedPrecondition, match="blocked"):
        conf.sources(parse(f"{registry.host}/test/busybox"))
    assert conf.sources(parse(f"{registry.host}/other/busybox"))[0].host == registry.host


def test_registries_conf_mirror_end_to_end(registry, busybox_image):
    conf = RegistriesConf.loads(
        f'[[registry]]\nprefix = "quay.example"\n[[registry.mirror]]\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    ref = conf.candidates("quay.example/test/busybox")[0]
    resolved, _, _ = run(_pull(conf.sources(ref), ref, tries=1))
    assert resolved.source == Source(registry.host, "test/busybox", insecure=True, mirror=True)


# ---------------------------------------------------------------- faults


def _source_and_layer(proxy, image):
    source = origin(proxy.host, "test/busybox")
    layer = image.layers[0]
    return source, mf.Descriptor(mf.OCI_MANIFEST, layer.digest, layer.size)


def test_reset_mid_blob_resumes_with_range(fault_proxy, busybox_image):
    proxy = fault_proxy(reset_after=300_000)
    source, desc = _source_and_layer(proxy, busybox_image)

    async def go():
        async with RegistryClient(**FAST) as client:
            return await _blob(client, source, desc)

    data, _ = run(go())
    assert hashlib.sha256(data).hexdigest() == desc.digest[7:]
    gets = proxy.blob_gets()
    assert len(gets) == 2 and "range" not in gets[0].headers
    # What the client had read when the reset came (a reset drops data still in the socket buffer).
    resumed_at = int(gets[1].headers["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 300_000


def test_reset_resumes_when_the_server_ignores_range(fault_proxy, busybox_image):
    proxy = fault_proxy(reset_after=500_000, ignore_range=True)
    source, desc = _source_and_layer(proxy, busybox_image)

    async def go():
        async with RegistryClient(**FAST) as client:
            return await _blob(client, source, desc)

    data, _ = run(go())
    assert hashlib.sha256(data).hexdigest() == desc.digest[7:]
    assert len(proxy.blob_gets()) == 2


@pytest.mark.parametrize("kind", ["manifests", "blobs"])
@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_retried(fault_proxy, busybox_image, kind, status):
    proxy = fault_proxy(fail_status=(status, 2, kind))
    resolved, _, layers = run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))
    assert layers[0] == busybox_image.layers[0].data
    assert proxy.fail_status[1] == 0


def test_server_errors_give_up(fault_proxy, busybox_image):
    proxy = fault_proxy(fail_status=(503, 10, "manifests"))
    with pytest.raises(errors.Unavailable, match="answered 503"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))
    assert proxy.fail_status[1] == 7  # three tries


def test_client_errors_are_not_retried(fault_proxy, busybox_image):
    proxy = fault_proxy(fail_status=(400, 10, "manifests"))
    with pytest.raises(errors.InvalidArgument, match="400"):
        run(_pull([origin(proxy.host, "test/busybox")], parse(f"{proxy.host}/test/busybox")))
    assert proxy.fail_status[1] == 9


def test_stalled_blob_is_deadline_exceeded(fault_proxy, busybox_image):
    proxy = fault_proxy(stall_after=1000)
    source, desc = _source_and_layer(proxy, busybox_image)

    async def go():
        async with RegistryClient(**{**FAST, "progress_timeout": 0.5}) as client:
            return await _blob(client, source, desc)

    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded, match=f"pull of {desc.digest} .* made no progress for 0.5 s"):
        run(go())
    assert 0.4 < time.monotonic() - started < 1.5


def test_oversized_blob_refused(fault_proxy, busybox_image):
    proxy = fault_proxy(extra_bytes=10)
    source, desc = _source_and_layer(proxy, busybox_image)

    async def go():
        async with RegistryClient(**FAST) as client:
            return await _blob(client, source, desc)

    with pytest.raises(errors.FailedPrecondition, match="registry sent more than the manifest's size"):
        run(go())


def test_short_blob_refused(fault_proxy, busybox_image):
    proxy = fault_proxy(short_bytes=10)
    source, desc = _source_and_layer(proxy, busybox_image)

    async def go():
        async with RegistryClient(**FAST) as client:
            return await _blob(client, source, desc)

    with pytest.raises(errors.FailedPrecondition, match=f"sent {desc.size - 10} bytes, the manifest says {desc.size}"):
        run(go())


def test_redirect_does_not_leak_authorization(fault_proxy, busybox_image):
    proxy = fault_proxy(bearer=True, redirect_blobs=True)
    source, desc = _source_and_layer(proxy, busybox_image)
    resolved, _, layers = run(_pull([source], parse(f"{proxy.host}/test/busybox")))
    assert layers[0] == busybox_image.layers[0].data
    assert proxy.storage_auth_headers and all(h is None for h in proxy.storage_auth_headers)
    blob_gets = proxy.blob_gets()
    assert blob_gets and all(r.headers["authorization"].startswith("Bearer ") for r in blob_gets)


def test_push_and_pull_through_a_token_service(fault_proxy):
    proxy = fault_proxy(bearer=True, token_credentials=("alice", "pw"))
    image = build_image([LayerBuilder().file("hello", b"via the proxy").build()])
    push_image(proxy.host, "test/via-proxy", "v1", image, creds=("alice", "pw"))
    creds = Credentials("alice", "pw")
    resolved, _, layers = run(
        _pull([origin(proxy.host, "test/via-proxy")], parse(f"{proxy.host}/test/via-proxy:v1"), creds)
    )
    assert resolved.manifest_digest == image.manifest_digest and layers == [image.layers[0].data]
