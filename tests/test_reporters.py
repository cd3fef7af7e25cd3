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


def progress_lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.startswith("progress:")]


def test_plain_progress_is_printed_only_when_something_changed() -> None:
    out = io.StringIO()
    reporter = PlainReporter(out)
    reporter(PlanReady("job-1", 500, "spec.yaml"))
    pool = Progress(500, 0, 0, 0, detail="pool p: resizing, 0/2 nodes")
    nodes = Progress(500, 0, 0, 0, detail="waiting for nodes: 2 starting")
    for _ in range(10):  # a backend that alternates between two details while nothing changes
        reporter(pool)
        reporter(nodes)
    assert len(progress_lines(out)) == 2
    reporter(Progress(500, 0, 0, 0, detail="waiting for nodes: 2 idle"))  # news: printed at once
    assert len(progress_lines(out)) == 3
    for done in range(1, 300):  # a big plan: count changes at most every few seconds
        reporter(Progress(500, done, 0, 10))
    assert len(progress_lines(out)) == 3
    reporter.last_line -= 60  # time passes
    reporter(Progress(500, 300, 0, 10))
    assert progress_lines(out)[-1].startswith("progress: 300/500 done, 0 failed, 10 running")
    reporter(Progress(500, 300, 1, 9))  # a failure is news
    assert progress_lines(out)[-1].startswith("progress: 301/500 done, 1 failed, 9 running")
    reporter(Progress(500, 450, 1, 9))  # held back by the interval ...
    reporter(RunFinished("job-1", "azure", 500, 450, 1, 0, 9.0, "out", 1))
    assert progress_lines(out)[-1].startswith("progress: 451/500 done")  # ... but shown before the summary


def test_plain_small_plans_print_tasks_not_counts() -> None:
    out = io.StringIO()
    reporter = PlainReporter(out)
    for event in EVENTS:
        reporter(event)
    assert progress_lines(out) == []


def test_summary_names_usage_logs_and_report() -> None:
    out = io.StringIO()
    PlainReporter(out)(RunFinished("job-1", "local", 1, 1, 0, 0, 1.0, "out", 0, usage="used: 1s of task time",
                                   logs="/runs/job-1/<task id>/stdout.txt", report="/runs/job-1/report.html"))
    text = out.getvalue()
    assert "\nused: 1s of task time\n" in text
    assert "\nlogs: /runs/job-1/<task id>/stdout.txt (batchspec logs SPEC [TASK])\n" in text
    assert "\nreport: /runs/job-1/report.html\n" in text
