"""The one interface every backend implements, and what the engine hands to it.

The engine (:mod:`batchspec.engine`) calls these methods in order and knows nothing else about
a backend: ``prepare`` and ``stage_inputs`` once, then for each :class:`Wave` of tasks
``completed``, ``submit`` and ``watch`` (and ``stage_outputs`` when a later stage fans out over
what a finished one produced), then ``collect`` and ``cleanup``. A backend reports through
``ctx.emit`` and raises :class:`~batchspec.errors.BatchspecError` (usually ``BackendError``) for
problems a user can fix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..events import Emit, Event, Message, Progress, TaskFinished
from ..plan import BlobLister, Plan, PlannedTask, StagePlan


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for on the command line, for any backend to read what it needs."""

    env: Mapping[str, str] = field(default_factory=dict)  # environment, with CLI overrides applied
    slots: int | None = None  # parallel task slots (local)
    run_dir: Path | None = None  # where task directories and run state live (local)
    force: bool = False  # rerun tasks that already succeeded


@dataclass
class RunContext:
    options: RunOptions
    emit: Emit

    def info(self, text: str) -> None:
        self.emit(Message(text))

    def warn(self, text: str) -> None:
        self.emit(Message(text, "warning"))


@dataclass(frozen=True)
class Wave:
    """Tasks handed over together: every known task of ``stages`` that must run now.

    A task's ``depends_on`` names tasks it waits for; those not in ``tasks`` have already
    succeeded (in an earlier wave or run), so a backend waits only for the ones in ``tasks``.
    ``kept`` are the stages' tasks an earlier run finished (not run again); ``final`` says no
    stage follows, so the job may complete when these tasks have.
    """

    stages: tuple[str, ...]
    tasks: tuple[PlannedTask, ...]
    kept: frozenset[str]
    final: bool

    @property
    def total(self) -> int:
        return len(self.tasks) + len(self.kept)


class Backend(ABC):
    """Runs a plan somewhere. One instance serves one run (or one ``cleanup``)."""

    name: str = ""

    def blob_lister(self) -> BlobLister | None:
        """Lists input blobs for ``inputs.container`` specs; None when this backend has no storage."""
        return None

    @abstractmethod
    def prepare(self, plan: Plan, ctx: RunContext) -> None:
        """Get compute ready: the pool and its nodes (or local slots), required tools."""

    @abstractmethod
    def stage_inputs(self, plan: Plan, ctx: RunContext) -> None:
        """Make every task's input files reachable where the tasks run."""

    @abstractmethod
    def completed(self, plan: Plan, tasks: Sequence[PlannedTask], ctx: RunContext) -> set[str]:
        """Ids of ``tasks`` an earlier run finished whose outputs are still where later stages
        and the user find them (none when ``ctx.options.force``)."""

    @abstractmethod
    def submit(self, plan: Plan, wave: Wave, ctx: RunContext) -> int:
        """Start the wave's tasks, each once the tasks it depends on have succeeded. Returns how
        many tasks were submitted."""

    @abstractmethod
    def watch(self, plan: Plan, wave: Wave, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        """Follow the wave until every task has finished or cannot run (a task it depends on
        failed: reported as ``blocked``); yield progress over the wave (``skipped`` being the
        kept tasks) and each finished task worth reporting (every one locally, failed and
        blocked ones at least)."""

    @abstractmethod
    def stage_outputs(self, plan: Plan, stage: StagePlan, ctx: RunContext) -> list[str]:
        """The names of the outputs a finished stage left for later stages, as the backend
        holds them (files locally, blobs in storage): later stages read them from there."""

    @abstractmethod
    def collect(self, plan: Plan, ctx: RunContext) -> None:
        """Bring outputs to ``plan.download_dir``."""

    @abstractmethod
    def cleanup(self, plan: Plan, ctx: RunContext, *, succeeded: bool) -> None:
        """Delete what ``plan.cleanup`` asks for (the job only when every task ``succeeded``)."""

    @abstractmethod
    def remove(self, plan: Plan, ctx: RunContext) -> None:
        """Delete everything runs of this plan left behind (``batchspec cleanup``)."""

    def interrupt(self, plan: Plan, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """The user pressed Ctrl-C: stop what runs here and record state."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, threads and locks."""
