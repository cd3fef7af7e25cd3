"""The emulator's view of HTTP: a parsed request, the answer to send, and per-operation counts.

The handlers know nothing of sockets; :mod:`batchspec.emulator.server` reads requests into a
:class:`Request` and writes a :class:`Response` (or drops the connection when told to).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Request:
    """One HTTP request, already read from the socket."""

    method: str
    raw_path: str  # percent-encoded, without the query
    raw_query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    """What to answer; ``reset`` and ``drop`` end the connection without an answer instead."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = True
    reset: bool = False  # reset the connection (RST)
    drop: bool = False  # close the connection (FIN)


@dataclass
class Stats:
    """Requests served, per operation (named as the azure-batch method that sends them)."""

    requests: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, operation: str) -> None:
        with self.lock:
            self.requests[operation] = self.requests.get(operation, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.requests)
