"""Shorter waits for the Azure path in tests: the SDKs' retry backoff and ``Retry-After`` waits,
the task submitter's backoff, and the Azure backend's polling, at a fifth of their length.

The requests, retries, answers and their order are what they are in production; only the time
spent sleeping between them shrinks (these waits were most of the suite's time).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

SCALE = 0.2


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from azure.core.pipeline.transport import HttpTransport

    from batchspec.backends import azure
    from batchspec.backends.azure import tasks

    sleep = HttpTransport.sleep  # every azure-core client (Batch, Blob) sleeps through its transport
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, seconds: sleep(self, seconds * SCALE))
    backoff = tasks.backoff  # type: ignore[attr-defined]  # busy tasks of a collection are sent again after it
    monkeypatch.setattr(tasks, "backoff", lambda attempt: backoff(attempt) * SCALE)
    monkeypatch.setattr(azure, "POLL_MIN", azure.POLL_MIN * SCALE)
    monkeypatch.setattr(azure, "POLL_MAX", azure.POLL_MAX * SCALE)
    yield
