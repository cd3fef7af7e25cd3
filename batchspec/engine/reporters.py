"""Reporters turn run events into output: a live progress bar on a terminal
(:mod:`batchspec.engine.live`), plain log lines in CI, or one JSON object per line (``--json``)."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from ..display import json_safe, printable
from ..events import (
    BackendChosen,
    Event,
    Message,
    PlanReady,
    Progress,
    RunFinished,
    StagesStarted,
    StageStarted,
    TaskFinished,
)
from ..spec.values import format_duration

#: Plain reporters print every finished task for plans up to this size, else periodic lines.
EACH_TASK_LIMIT = 200
PLAIN_INTERVAL = 5.0


class Reporter:
    def __call__(self, event: Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonReporter(Reporter):
    """One JSON object per event and line, flushed at once (for other programs)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        self.out.write(json_safe(json.dumps(event.to_dict(), ensure_ascii=False)) + "\n")
        self.out.flush()


def eta(progress: Progress, started: float) -> str:
    done = progress.done - progress.skipped
    remaining = progress.total - progress.done
    elapsed = time.monotonic() - started
    if done <= 0 or remaining <= 0 or elapsed <= 0:
        return "--"
    return format_duration(elapsed / done * remaining)


def counts(p: Progress) -> str:
    text = f"{p.done}/{p.total} done, {p.failed} failed, {p.running} running"
    if p.blocked:
        text += f", {p.blocked} blocked"
    if p.skipped:
        text += f", {p.skipped} skipped (done earlier)"
    return text


class PlainReporter(Reporter):
    """Log lines without colour or cursor movement (CI, pipes). A progress line is printed only
    when something changed: a state the line has not shown since the counts last moved (a
    backend that alternates between two details prints each once), and for plans too large to
    print each task, count changes at most every PLAIN_INTERVAL seconds."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.total = 0
        self.last_line = 0.0
        self.shown: set[str] = set()  # progress texts printed since the counts last changed
        self.shown_counts: tuple[int, int, int, int] | None = None
        self.unshown: Progress | None = None  # a change held back by the interval

    def line(self, text: str) -> None:
        self.out.write(printable(text) + "\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, BackendChosen):
            self.line(f"backend: {event.backend} ({event.reason})")
        elif isinstance(event, PlanReady):
            self.total = event.tasks
            self.line(event.text())
        elif isinstance(event, StageStarted):
            if event.stage not in ("validate", "plan"):
                self.line(f"== {event.stage}")
        elif isinstance(event, StagesStarted):
            self.line(stages_line(event))
        elif isinstance(event, Message):
            self.line(f"{'warning: ' if event.level == 'warning' else ''}{event.text}")
        elif isinstance(event, TaskFinished):
            if event.state in ("failed", "blocked") or self.total <= EACH_TASK_LIMIT:
                self.line(task_line(event))
        elif isinstance(event, Progress):
            self.total = max(self.total, event.total)
            self._progress(event)
        elif isinstance(event, RunFinished):
            if self.unshown is not None:
                self._print_progress(self.unshown)
            self.out.write(printable(summary_text(event)))
            self.out.flush()


    def _progress(self, event: Progress) -> None:
        key = (event.succeeded, event.failed, event.running, event.skipped)
        counts_moved = key != self.shown_counts
        if not counts_moved and event.detail in self.shown:
            return  # nothing new
        if not event.detail and self.total <= EACH_TASK_LIMIT:
            return  # small plans print each finished task instead
        urgent = bool(event.detail) or (self.shown_counts is not None and event.failed != self.shown_counts[1])
        if not urgent and time.monotonic() - self.last_line < PLAIN_INTERVAL:
            self.unshown = event
            return
        self._print_progress(event)

    def _print_progress(self, event: Progress) -> None:
        key = (event.succeeded, event.failed, event.running, event.skipped)
        if key != self.shown_counts:
            self.shown.clear()
            self.shown_counts = key
        self.shown.add(event.detail)
        self.unshown = None
        self.last_line = time.monotonic()
        detail = f" ({event.detail})" if event.detail else ""
        self.line(f"progress: {counts(event)}, eta {eta(event, self.started)}{detail}")


def stages_line(event: StagesStarted) -> str:
    """``== stage encode, join: 24 tasks (3 done earlier)``."""
    kept = f" ({event.kept} done earlier)" if event.kept else ""
    detail = f": {event.detail}" if event.detail else ""
    return (f"== stage{'s' if len(event.stages) > 1 else ''} {', '.join(event.stages)}: {event.tasks} "
            f"task{'s' if event.tasks != 1 else ''} to run{kept}{detail}")


def task_line(event: TaskFinished) -> str:
    if event.state == "blocked":
        return f"blocked {event.task_id}" + (f" ({event.reason})" if event.reason else "")
    took = f" in {format_duration(event.seconds)}" if event.seconds is not None else ""
    tries = f" after {event.attempts} attempts" if event.attempts > 1 else ""
    if event.state == "failed":
        code = f"exit code {event.exit_code}" if event.exit_code is not None else "no exit code"
        why = f": {event.reason}" if event.reason else ""
        return f"failed {event.task_id} ({code}{tries}){why}"
    return f"{event.state} {event.task_id}{took}{tries}"


def summary_text(event: RunFinished) -> str:
    """The end-of-run summary: counts, time, outputs, and each failure with its stderr tail."""
    lines = [""]
    if event.interrupted:
        again = ("run it again without --force to resume (with --force it starts over)" if event.forced
                 else "rerun the same command to resume")
        lines.append(f"interrupted after {format_duration(event.seconds)}; {again}")
    verdict = "FAILED" if event.failed or event.blocked or event.not_run else (
        "INTERRUPTED" if event.interrupted else "OK")
    lines.append(
        f"{verdict}: {event.succeeded} succeeded, {event.failed} failed"
        + (f", {event.blocked} blocked" if event.blocked else "")
        + (f", {event.skipped} skipped (done earlier)" if event.skipped else "")
        + f" of {event.total} tasks in {format_duration(event.seconds)} [{event.backend}, job {event.job_id}]"
    )
    if event.not_run:
        lines.append(f"not run: stage{'s' if len(event.not_run) > 1 else ''} {', '.join(event.not_run)}")
    if event.changed:
        lines.append(f"{event.changed} task(s) ran again because their command, environment, inputs or settings "
                     "changed since they last succeeded; their outputs were replaced")
    if (event.succeeded or event.skipped) and event.outputs:
        lines.append(f"outputs: {event.outputs}")
    if event.usage:
        lines.append(event.usage)
    if event.logs:
        lines.append(f"logs: {event.logs} (batchspec logs SPEC [TASK])")
    if event.report:
        lines.append(f"report: {event.report}")
    for failure in event.failures:
        lines.append("")
        lines.append(task_line(failure))
        if failure.stderr_tail:
            lines.append(f"  last {len(failure.stderr_tail)} lines of stderr:")
            lines.extend(f"  | {line}" for line in failure.stderr_tail)
        if failure.logs:
            lines.append(f"  full stdout and stderr: {failure.logs}")
    return "\n".join(lines) + "\n"


def make_reporter(json_lines: bool, out: TextIO | None = None) -> Reporter:
    """JSON lines when asked, a live bar on a terminal, plain lines otherwise."""
    stream = out or sys.stdout
    if json_lines:
        return JsonReporter(stream)
    if stream.isatty():
        from .live import RichReporter  # rich loads only when there is a terminal to draw on

        return RichReporter(stream)
    return PlainReporter(stream)
