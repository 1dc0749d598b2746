"""pytest fixtures for registry tests: a real docker-registry (plain and htpasswd), fault proxies, pushed images."""

from __future__ import annotations

import shutil

import pytest

from tests.support.images import Image, build_image
from tests.support.proxy import FaultProxy
from tests.support.push import push_image
from tests.support.registry import RegistryServer, start_registry

AUTH_USER, AUTH_PASSWORD = "pycrio", "s3cret-pass"


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> RegistryServer:
    """An anonymous docker-registry on 127.0.0.1 for the whole session (plain http)."""
    base = tmp_path_factory.mktemp("registry")
    server = start_registry(str(base))
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory) -> RegistryServer:
    """A docker-registry with htpasswd basic auth (user AUTH_USER, password AUTH_PASSWORD)."""
    base = tmp_path_factory.mktemp("auth-registry")
    server = start_registry(str(base), AUTH_USER, AUTH_PASSWORD)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_image(registry) -> Image:
    """The busybox image, pushed to `registry` as test/busybox:latest."""
    image = build_image()
    push_image(registry.host, "test/busybox", "latest", image)
    return image


@pytest.fixture
def fault_proxy(registry):
    """make(**options) -> a FaultProxy in front of `registry`; all stopped after the test."""
    made: list[FaultProxy] = []

    def make(**options) -> FaultProxy:
        proxy = FaultProxy(registry.host, **options)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()
