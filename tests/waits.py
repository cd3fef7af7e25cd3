"""Shorter waits for the Azure path in tests: the SDKs' retry backoff and ``Retry-After`` waits,
batchspec's own resends, and the Azure backend's polling, at a fifth of their length.

The requests, retries, answers and their order are what they are in production; only the time
spent sleeping between them shrinks (these waits were most of the suite's time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

SCALE = 0.2


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from azure.core.pipeline.transport import HttpTransport

    from batchspec.backends import azure
    from batchspec.backends.azure import errors

    sleep = HttpTransport.sleep  # every azure-core client (Batch, Blob) sleeps through its transport
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, seconds: sleep(self, seconds * SCALE))
    monkeypatch.setattr(errors, "time", SimpleNamespace(sleep=lambda seconds: time.sleep(seconds * SCALE)))
    monkeypatch.setattr(azure, "POLL_MIN", azure.POLL_MIN * SCALE)
    monkeypatch.setattr(azure, "POLL_MAX", azure.POLL_MAX * SCALE)
    yield
