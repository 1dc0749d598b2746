"""RegistryClient's Retry-After: seconds, an HTTP-date, garbage; always within [0, max_retry_after]."""

from __future__ import annotations

import email.utils
import time
from types import SimpleNamespace

import pytest

from pycrio.image.http import Headers
from pycrio.image.registry import RegistryClient


def delay(value: str, **options) -> float:
    client = RegistryClient(backoff=0.2, max_retry_after=10.0, **options)
    return client._retry_after(SimpleNamespace(headers=Headers([("retry-after", value)])))


def test_seconds():
    assert delay("3") == 3.0
    assert delay("3600") == 10.0  # capped


def test_http_date():
    soon = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.0 <= delay(soon) <= 5.5
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert delay(past) == 0.0


@pytest.mark.parametrize("value", ["", "soon", "-3", "Tue, 99 Foo 2026 25:61:00 GMT"])
def test_unusable_values_fall_back_to_the_backoff(value):
    assert delay(value) == 0.2
