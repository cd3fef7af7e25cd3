"""Reporters turn run events into output: a live progress bar on a terminal, plain log lines
in CI, or one JSON object per line (``--json``)."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar

from ..events import (
    BackendChosen,
    Event,
    Message,
    PlanReady,
    Progress,
    RunFinished,
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
        self.out.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
        self.out.flush()


def _eta(progress: Progress, started: float) -> str:
    done = progress.done - progress.skipped
    remaining = progress.total - progress.done
    elapsed = time.monotonic() - started
    if done <= 0 or remaining <= 0 or elapsed <= 0:
        return "--"
    return format_duration(elapsed / done * remaining)


def _counts(p: Progress) -> str:
    text = f"{p.done}/{p.total} done, {p.failed} failed, {p.running} running"
    if p.skipped:
        text += f", {p.skipped} skipped (done earlier)"
    return text


class PlainReporter(Reporter):
    """Log lines without colour or cursor movement (CI, pipes)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.total = 0
        self.last_line = 0.0
        self.last: Progress | None = None

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, BackendChosen):
            self.line(f"backend: {event.backend} ({event.reason})")
        elif isinstance(event, PlanReady):
            self.total = event.tasks
            self.line(f"job {event.job_id}: {event.tasks} task{'s' if event.tasks != 1 else ''}")
        elif isinstance(event, StageStarted):
            if event.stage not in ("validate", "plan"):
                self.line(f"== {event.stage}")
        elif isinstance(event, Message):
            self.line(f"{'warning: ' if event.level == 'warning' else ''}{event.text}")
        elif isinstance(event, TaskFinished):
            if event.state == "failed" or self.total <= EACH_TASK_LIMIT:
                self.line(_task_line(event))
        elif isinstance(event, Progress):
            self.last = event
            now = time.monotonic()
            if event.detail or (self.total > EACH_TASK_LIMIT and now - self.last_line >= PLAIN_INTERVAL):
                self.last_line = now
                detail = f" ({event.detail})" if event.detail else ""
                self.line(f"progress: {_counts(event)}, eta {_eta(event, self.started)}{detail}")
        elif isinstance(event, RunFinished):
            self.out.write(summary_text(event))
            self.out.flush()


def _task_line(event: TaskFinished) -> str:
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
        lines.append(f"interrupted after {format_duration(event.seconds)}; rerun the same command to resume")
    verdict = "FAILED" if event.failed else ("INTERRUPTED" if event.interrupted else "OK")
    lines.append(
        f"{verdict}: {event.succeeded} succeeded, {event.failed} failed"
        + (f", {event.skipped} skipped (done earlier)" if event.skipped else "")
        + f" of {event.total} tasks in {format_duration(event.seconds)} [{event.backend}, job {event.job_id}]"
    )
    if event.succeeded or event.skipped:
        lines.append(f"outputs: {event.outputs}")
    for failure in event.failures:
        lines.append("")
        lines.append(_task_line(failure))
        if failure.stderr_tail:
            lines.append(f"  last {len(failure.stderr_tail)} lines of stderr:")
            lines.extend(f"  | {line}" for line in failure.stderr_tail)
    return "\n".join(lines) + "\n"


class RichReporter(Reporter):
    """A live progress bar (done, failed, running, ETA) with messages printed above it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()
        self.bar: Bar | None = None
        self.task: TaskID | None = None
        self.total = 0

    def _ensure_bar(self) -> Bar:
        if self.bar is None:
            self.bar = Bar(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[counts]}"),
                TextColumn("eta {task.fields[eta]}, elapsed"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("tasks", total=self.total, counts="", eta="--")
        return self.bar

    def print(self, text: str) -> None:
        (self.bar.console if self.bar else self.console).print(text, highlight=False)

    def __call__(self, event: Event) -> None:
        if isinstance(event, BackendChosen):
            self.print(f"backend: [bold]{event.backend}[/] ({escape(event.reason)})")
        elif isinstance(event, PlanReady):
            self.total = event.tasks
            self.print(f"job [bold]{escape(event.job_id)}[/]: {event.tasks} tasks")
        elif isinstance(event, StageStarted):
            if event.stage in ("collect", "clean up"):
                self.close()  # the tasks are done: leave the bar's final state on screen
            if event.stage not in ("validate", "plan", "watch"):
                self.print(f"[dim]== {event.stage}[/]")
        elif isinstance(event, Message):
            style = "yellow" if event.level == "warning" else ""
            prefix = "warning: " if event.level == "warning" else ""
            self.print(f"[{style}]{prefix}{escape(event.text)}[/]" if style else escape(event.text))
        elif isinstance(event, TaskFinished):
            if event.state == "failed":
                self.print(f"[red]{escape(_task_line(event))}[/]")
        elif isinstance(event, Progress):
            bar = self._ensure_bar()
            assert self.task is not None
            counts = _counts(event) + (f" - {event.detail}" if event.detail else "")
            bar.update(self.task, completed=event.done, total=event.total, counts=escape(counts),
                       eta=_eta(event, self.started))
        elif isinstance(event, RunFinished):
            self.close()
            text = summary_text(event)
            self.console.print(escape(text), end="", style="red" if event.failed else None, highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def make_reporter(json_lines: bool, out: TextIO | None = None) -> Reporter:
    """JSON lines when asked, a live bar on a terminal, plain lines otherwise."""
    stream = out or sys.stdout
    if json_lines:
        return JsonReporter(stream)
    if stream.isatty():
        return RichReporter(Console(file=stream))
    return PlainReporter(stream)
