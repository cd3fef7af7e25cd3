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
from typing import TYPE_CHECKING

from ..errors import BackendError, BatchspecError

if TYPE_CHECKING:  # `batchspec plan` reads RunOptions: it needs neither events nor records
    from ..events import Emit, Event, Progress, TaskFinished
    from ..observe.records import RunRecord
    from ..plan import BlobLister, Plan, PlannedTask, StagePlan
    from .download import Ledger


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for on the command line, for any backend to read what it needs."""

    env: Mapping[str, str] = field(default_factory=dict)  # environment, with CLI overrides applied
    slots: int | None = None  # parallel task slots (local)
    run_dir: Path | None = None  # where task directories and run state live (local)
    force: bool = False  # rerun tasks that already succeeded
    overwrite: bool = False  # outputs may replace files in the download directory batchspec did not write

    def workspace(self, plan: Plan) -> Path:
        """Where batchspec keeps what it writes for a spec on this machine (run records,
        reports; the local backend's task directories; every backend's record of the files it
        placed in the download directory): ``--run-dir`` or ``.batchspec/``."""
        return (self.run_dir or plan.resolve(".batchspec")).absolute()

    def ledger(self, plan: Plan) -> Ledger:
        """The record of what batchspec placed in ``plan``'s download directory."""
        from .download import Ledger, ledger_file

        return Ledger(plan.download_dir, ledger_file(self.workspace(plan), plan.download_dir),
                      overwrite=self.overwrite)


@dataclass(frozen=True)
class LogRef:
    """Which log to read: a task's (``task_id``) or a node's start task's (``node_id``)."""

    name: str = "stderr"  # stdout | stderr
    task_id: str | None = None
    node_id: str | None = None
    attempt: int | None = None  # None: the task's last attempt


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    offset: int  # where the next read of the same log continues
    live: bool  # the task is still queued or running: more may come
    source: str  # where it was read from, for people
    attempt: int | None = None  # which attempt's output this is, when known
    attempts: int = 0  # how many attempts the task has had


def note_reruns(ctx: RunContext, changed: int, missing: int) -> None:
    """Say why tasks done before run again: what produced them changed, or their outputs did."""
    if changed:
        ctx.info(f"{changed} task(s) changed since they last succeeded (command, environment, inputs or "
                 "settings): running them again, replacing their outputs")
    if missing:
        ctx.info(f"{missing} task(s) succeeded before but their outputs are missing or were modified since: "
                 "running them again")


@dataclass
class RunContext:
    options: RunOptions
    emit: Emit

    def info(self, text: str) -> None:
        from ..events import Message

        self.emit(Message(text))

    def warn(self, text: str) -> None:
        from ..events import Message

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

    def check(self, plan: Plan, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """Check everything that can fail (credentials, settings, reaching services) before
        anything that costs money exists; raise :class:`~batchspec.errors.BatchspecError`."""

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
    def cleanup(self, plan: Plan, ctx: RunContext, *, succeeded: bool, error: bool = False) -> None:
        """Delete what ``plan.cleanup`` asks for (the job only when every task ``succeeded``).
        After an ``error`` that stopped the run, a pool this run created is deleted too, unless
        the spec says ``cleanup.pool: keep`` itself."""

    @abstractmethod
    def remove(self, plan: Plan, ctx: RunContext) -> None:
        """Delete everything runs of this plan left behind (``batchspec cleanup``)."""

    def record(self, plan: Plan, ctx: RunContext, *, files: bool = False) -> RunRecord | None:
        """The plan's jobs, tasks and attempts as they stand now (a run may be going on in
        another process); None when there is no trace of a run of this plan. ``files``: also
        each task's input and output bytes, where that costs extra requests."""
        raise BackendError(f"the {self.name} backend keeps no record of its runs")

    def read_log(self, plan: Plan, ref: LogRef, offset: int = 0) -> LogChunk:
        """A task's (or node start task's) stdout or stderr from byte ``offset`` on.
        Raises BackendError when there is no such task, node or attempt."""
        raise BackendError(f"the {self.name} backend cannot show task logs")

    def stderr_tails(self, plan: Plan, task_ids: Sequence[str], lines: int) -> dict[str, tuple[str, ...]]:
        """The last ``lines`` lines of stderr of finished tasks (their last attempt), for the
        report; a task whose stderr cannot be read is left out."""
        from ..runner import last_lines

        tails = {}
        for task_id in task_ids:
            try:
                chunk = self.read_log(plan, LogRef("stderr", task_id=task_id))
            except BatchspecError:
                continue
            tails[task_id] = last_lines(chunk.data, lines)
        return tails

    def interrupt(self, plan: Plan, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """The user pressed Ctrl-C: stop what runs here and record state."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, threads and locks."""
