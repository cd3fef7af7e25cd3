"""Headless Chromium for tests, driven over the DevTools protocol on a pipe.

Chromium started with ``--remote-debugging-pipe`` reads protocol messages (JSON, each ended by
a NUL byte) on fd 3 and writes answers and events on fd 4: no port, no extra package. A page is
loaded with the Runtime, Log and Page domains enabled, so console errors, uncaught exceptions
and browser log errors (a blocked or failed load, a Content-Security-Policy violation) are
collected; the rendered DOM is then queried with ``Runtime.evaluate``.

The browser is Debian's ``chromium`` (``scripts/test`` installs it), or ``$BATCHSPEC_CHROMIUM``.
A missing browser fails the test: CI must not skip the browser check.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 30.0
_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str:
    env = os.environ.get("BATCHSPEC_CHROMIUM")
    for candidate in ((env,) if env else _CANDIDATES):
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail("headless Chromium is needed (apt-get install chromium; scripts/test installs it)")


class Chromium:
    """One headless browser; ``call`` sends a command and returns its result, keeping events."""

    def __init__(self) -> None:
        # Chromium's helper processes may still write to the profile for a moment after it exits.
        self.profile = tempfile.TemporaryDirectory(prefix="batchspec-chromium-", ignore_cleanup_errors=True)
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends go to fd 3 and 4 through bash redirections (no preexec_fn: tests run
        # threads, e.g. the in-process emulator); moved above 9 first so they cannot be 3 or 4.
        read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        wiring = f'exec "$0" "$@" 3<&{read_end} 4>&{write_end} {read_end}<&- {write_end}>&-'
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", wiring, find_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", "--disable-background-networking", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(read_end, write_end),
        )
        os.close(read_end)
        os.close(write_end)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            data = os.read(self._from_browser, 1 << 16)
            if not data:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += data
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self.events.append(answer)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(deadline))

    def open(self, url: str) -> str:
        """Load ``url`` in a new tab; returns the tab's session once the page has loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session: str = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=session)
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired")
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluating {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif event.get("method") == "Runtime.exceptionThrown":
                found.append(str(params.get("exceptionDetails", {}).get("text", "exception")))
            elif event.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(str(params["entry"].get("text", "")))
        return found

    def close(self) -> None:
        try:
            self.call("Browser.close")  # an orderly exit takes its helper processes along
            self.process.wait(timeout=10)
        except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self.profile.cleanup()


@dataclass
class RenderedReport:
    bars: int  # timeline bars the browser laid out with a width
    badges: list[str]  # "+N" marks of attempts that could not be placed
    histogram_bins: int
    console_errors: list[str]
    texts: dict[str, str] = field(default_factory=dict)  # innerText of each section, by selector

    def text_of(self, selector: str) -> str:
        return self.texts[selector]


_SECTIONS = ("body", "#failed", "#slowest", "#nodes", ".cards")


def render_report(path: Path) -> RenderedReport:
    """Load a report in headless Chromium and read what it rendered."""
    browser = Chromium()
    try:
        session = browser.open(path.resolve().as_uri())
        bars = browser.evaluate(session, "[...document.querySelectorAll('#timeline rect.attempt')]"
                                          ".filter(r => r.getBoundingClientRect().width > 0).length")
        badges = browser.evaluate(session, "[...document.querySelectorAll('#timeline text.badge')]"
                                            ".map(t => t.firstChild.textContent)")
        bins = browser.evaluate(session, "document.querySelectorAll('#histogram rect.bin').length")
        texts = {s: browser.evaluate(session, f"(document.querySelector({json.dumps(s)}) || {{}}).innerText || ''")
                 for s in _SECTIONS}
        return RenderedReport(int(bars), list(badges), int(bins), browser.errors(), texts)
    finally:
        browser.close()
