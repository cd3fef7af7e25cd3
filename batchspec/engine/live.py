"""The live progress bar for terminals (rich), kept apart so plain and JSON output never load it."""

from __future__ import annotations

import time
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar

from ..display import printable
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
from .reporters import Reporter, counts, eta, stages_line, summary_text, task_line


class RichReporter(Reporter):
    """A live progress bar (done, failed, running, ETA) with messages printed above it."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream)
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
        (self.bar.console if self.bar else self.console).print(printable(text), highlight=False)

    def __call__(self, event: Event) -> None:
        if isinstance(event, BackendChosen):
            self.print(f"backend: [bold]{event.backend}[/] ({escape(event.reason)})")
        elif isinstance(event, PlanReady):
            self.total = event.tasks
            self.print(escape(event.text()))
        elif isinstance(event, StageStarted):
            if event.stage in ("collect", "clean up"):
                self.close()  # the tasks are done: leave the bar's final state on screen
            if event.stage not in ("validate", "plan", "watch"):
                self.print(f"[dim]== {event.stage}[/]")
        elif isinstance(event, StagesStarted):
            self.print(f"[dim]{escape(stages_line(event))}[/]")
        elif isinstance(event, Message):
            style = "yellow" if event.level == "warning" else ""
            prefix = "warning: " if event.level == "warning" else ""
            self.print(f"[{style}]{prefix}{escape(event.text)}[/]" if style else escape(event.text))
        elif isinstance(event, TaskFinished):
            if event.state in ("failed", "blocked"):
                self.print(f"[red]{escape(task_line(event))}[/]")
        elif isinstance(event, Progress):
            bar = self._ensure_bar()
            assert self.task is not None
            text = counts(event) + (f" - {event.detail}" if event.detail else "")
            bar.update(self.task, completed=event.done, total=event.total, counts=escape(text),
                       eta=eta(event, self.started))
        elif isinstance(event, RunFinished):
            self.close()
            text = summary_text(event)
            self.console.print(escape(printable(text)), end="", style="red" if event.failed else None,
                               highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
