"""Events a run emits, for reporters (progress bar, log lines, JSON lines) and tests.

Backends and the engine emit these through a :data:`Emit` callback; they never print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class BackendChosen(Event):
    kind: ClassVar[str] = "backend"
    backend: str
    reason: str


@dataclass(frozen=True)
class PlanReady(Event):
    kind: ClassVar[str] = "plan"
    job_id: str
    tasks: int
    spec: str


@dataclass(frozen=True)
class StageStarted(Event):
    kind: ClassVar[str] = "stage"
    stage: str


@dataclass(frozen=True)
class Message(Event):
    """Something the user should read: ``level`` is info or warning."""

    kind: ClassVar[str] = "message"
    text: str
    level: str = "info"


@dataclass(frozen=True)
class TaskFinished(Event):
    kind: ClassVar[str] = "task"
    task_id: str
    state: str  # succeeded | failed | skipped
    exit_code: int | None = None
    seconds: float | None = None
    attempts: int = 1
    reason: str | None = None  # why a task failed, beyond its exit code
    stderr_tail: tuple[str, ...] = ()


@dataclass(frozen=True)
class Progress(Event):
    """Counts over the whole plan; ``done`` includes tasks skipped because they were done before."""

    kind: ClassVar[str] = "progress"
    total: int
    succeeded: int
    failed: int
    running: int
    skipped: int = 0
    detail: str = ""  # e.g. "waiting for nodes: 2/5 idle"

    @property
    def done(self) -> int:
        return self.succeeded + self.failed


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "finished"
    job_id: str
    backend: str
    total: int
    succeeded: int
    failed: int
    skipped: int
    seconds: float
    outputs: str
    exit_code: int
    interrupted: bool = False
    failures: tuple[TaskFinished, ...] = field(default=())
    usage: str = ""  # node time (and cost) the run used
    logs: str = ""  # where task logs live
    report: str = ""  # the HTML report's path

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["failures"] = [f.to_dict() for f in self.failures]
        return out


Emit = Callable[[Event], None]
