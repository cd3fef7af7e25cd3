"""Shorter waits for the Azure path in tests: the SDKs' retry backoff and ``Retry-After`` waits
and the task submitter's backoff (unless a test gives its own sleep) at a twentieth of their
length, the Azure backend's polling at a fifth.

The requests, retries, answers and their order are what they are in production; only the time
spent sleeping between them shrinks (these waits were most of the suite's time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

BACKOFF = 0.05  # the emulator's faults are drawn per operation: the same faults, however fast the retries
POLL = 0.2


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from azure.core.pipeline.transport import HttpTransport

    from batchspec.backends import azure
    from batchspec.backends.azure.tasks import Submitter

    sleep = HttpTransport.sleep  # every azure-core client (Batch, Blob) sleeps through its transport
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, seconds: sleep(self, seconds * BACKOFF))
    submitter = Submitter.__init__

    def quick_submitter(self: Submitter, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("sleep", lambda seconds: time.sleep(seconds * BACKOFF))
        submitter(self, *args, **kwargs)

    monkeypatch.setattr(Submitter, "__init__", quick_submitter)
    monkeypatch.setattr(azure, "POLL_MIN", azure.POLL_MIN * POLL)
    monkeypatch.setattr(azure, "POLL_MAX", azure.POLL_MAX * POLL)
    yield
