"""Reporters: the same events as a live bar, plain lines and JSON lines."""

from __future__ import annotations

import io
import json

from batchspec.engine.live import RichReporter
from batchspec.engine.reporters import JsonReporter, PlainReporter
from batchspec.events import (
    BackendChosen,
    Event,
    Message,
    PlanReady,
    Progress,
    RunFinished,
    StageStarted,
    TaskFinished,
)

FAILED = TaskFinished("b-1", "failed", 3, 1.5, 2, None, ("boom [red]not markup[/]",))
EVENTS: list[Event] = [
    BackendChosen("local", "no Azure Batch account configured"),
    PlanReady("job-1", 2, "spec.yaml"),
    StageStarted("prepare"),
    Message("2 parallel slot(s)"),
    Message("careful [bold]", "warning"),
    StageStarted("watch"),
    Progress(2, 0, 0, 2),
    TaskFinished("a-1", "succeeded", 0, 0.5),
    Progress(2, 1, 0, 1),
    FAILED,
    Progress(2, 1, 1, 0),
    StageStarted("collect"),
    RunFinished("job-1", "local", 2, 1, 1, 0, 2.0, "out", 1, failures=(FAILED,)),
]


def test_plain_lines() -> None:
    out = io.StringIO()
    reporter = PlainReporter(out)
    for event in EVENTS:
        reporter(event)
    text = out.getvalue()
    assert text.splitlines()[0] == "backend: local (no Azure Batch account configured)"
    assert "succeeded a-1 in 0.5s" in text
    assert "failed b-1 (exit code 3 after 2 attempts)" in text
    assert "FAILED: 1 succeeded, 1 failed of 2 tasks" in text
    assert "  | boom [red]not markup[/]" in text


def test_json_lines() -> None:
    out = io.StringIO()
    reporter = JsonReporter(out)
    for event in EVENTS:
        reporter(event)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events][:3] == ["backend", "plan", "stage"]
    assert events[-1]["failures"][0]["stderr_tail"] == ["boom [red]not markup[/]"]


def test_live_bar_shows_text_verbatim() -> None:
    out = io.StringIO()
    reporter = RichReporter(out)
    for event in EVENTS:
        reporter(event)
    reporter.close()
    text = out.getvalue()
    assert "backend: local" in text
    assert "warning: careful [bold]" in text  # user text is never read as markup
    assert "| boom [red]not markup[/]" in text
    assert "FAILED: 1 succeeded, 1 failed of 2 tasks" in text
