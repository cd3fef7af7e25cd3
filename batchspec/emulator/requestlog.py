"""The request log, one line per request as service emulators keep one (cf. Azurite's debug log):
time, method, path and query, status, time taken, request id and operation. Written to stderr
with ``batchspec emulator -v`` or to ``--log FILE``; signatures and keys are redacted."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from batchspec.redact import redact


class RequestLog:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._owned = False

    @classmethod
    def to_file(cls, path: Path) -> RequestLog:
        log = cls(path.open("a", encoding="utf-8", buffering=1))
        log._owned = True
        return log

    @classmethod
    def to_stderr(cls) -> RequestLog:
        return cls(sys.stderr)

    def write(self, method: str, target: str, status: int, seconds: float, request_id: str, operation: str) -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        shown = "-" if status == 0 else str(status)  # 0: the connection was dropped without an answer
        line = f"{when} {method} {target} {shown} {seconds * 1000:.1f}ms request-id={request_id} op={operation}"
        with self._lock:
            self._stream.write(redact(line, env={}) + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()
