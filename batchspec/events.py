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
    tasks: int  # known so far
    spec: str
    later: tuple[str, ...] = ()  # stages whose tasks are known only when an earlier stage has finished

    def text(self) -> str:
        """``job ID: 5 tasks`` (and the stages still to be expanded)."""
        more = f" (then stages {', '.join(self.later)}, once known)" if self.later else ""
        return f"job {self.job_id}: {self.tasks} task{'s' if self.tasks != 1 else ''}{more}"


@dataclass(frozen=True)
class StageStarted(Event):
    kind: ClassVar[str] = "stage"
    stage: str


@dataclass(frozen=True)
class StagesStarted(Event):
    """The engine hands over the tasks of one or more of the spec's stages (a wave)."""

    kind: ClassVar[str] = "stages"
    stages: tuple[str, ...]
    tasks: int  # to run now
    kept: int = 0  # finished by an earlier run
    detail: str = ""  # e.g. "over the 12 outputs of split"


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
    state: str  # succeeded | failed | blocked (not run: a task it depends on failed) | skipped
    exit_code: int | None = None
    seconds: float | None = None
    attempts: int = 1
    reason: str | None = None  # why a task failed, beyond its exit code
    stderr_tail: tuple[str, ...] = ()
    logs: str | None = None  # where the task's full stdout/stderr are kept, for a failed task


@dataclass(frozen=True)
class Progress(Event):
    """Counts over the tasks known so far (later stages add theirs when they are expanded);
    ``succeeded`` includes tasks skipped because they were done before."""

    kind: ClassVar[str] = "progress"
    total: int
    succeeded: int
    failed: int
    running: int
    skipped: int = 0
    detail: str = ""  # e.g. "waiting for nodes: 2/5 idle"
    blocked: int = 0  # not run: a task they depend on failed
    changed: int = 0  # tasks run again because what produced their earlier result changed

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.blocked

    def plus(self, earlier: Progress) -> Progress:
        """These counts (of one wave) on top of those of earlier waves."""
        return Progress(earlier.total + self.total, earlier.succeeded + self.succeeded, earlier.failed + self.failed,
                        self.running, earlier.skipped + self.skipped, self.detail, earlier.blocked + self.blocked,
                        earlier.changed + self.changed)


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
    blocked: int = 0
    not_run: tuple[str, ...] = ()  # stages that never ran (an earlier stage failed)
    usage: str = ""  # node time (and cost) the run used
    logs: str = ""  # where task logs live
    report: str = ""  # the HTML report's path
    changed: int = 0  # of the tasks run: those whose command, environment, inputs or settings changed
    forced: bool = False  # run with --force (a plain rerun resumes; the same command would start again)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["failures"] = [f.to_dict() for f in self.failures]
        return out


Emit = Callable[[Event], None]
