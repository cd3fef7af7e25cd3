"""The generic engine: validate -> plan -> prepare -> stage inputs -> run the stages wave by wave
-> collect -> clean up, on whichever backend the registry gives. No backend-specific code here.

A wave is every stage whose tasks are known and not yet run: the first stage, with the later
stages whose inputs are named in advance (a merge: the backend makes it wait for the tasks it
depends on). A stage that fans out over files known only when an earlier stage has finished is
expanded then, from the outputs the backend holds for that stage, and starts the next wave.

Resume is per task and per stage: the backend says which tasks an earlier run finished; a task
runs again when it did not finish, or when a task it reads from or waits for runs again in this
run (so a changed input redoes exactly what depends on it: its tasks, the stages after them and
the merge).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import backends
from ..backends import Backend, RunContext, RunOptions, Wave
from ..backends.download import check_download
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, BackendError, BatchspecError
from ..events import (
    BackendChosen,
    Emit,
    Event,
    PlanReady,
    Progress,
    RunFinished,
    StagesStarted,
    StageStarted,
    TaskFinished,
)
from ..observe.records import RunRecord
from ..plan import Plan, PlannedTask, Planner, StagePlan, build_plan
from ..redact import redacting
from ..spec import load_spec


@dataclass
class _Tally:
    """What the run has seen, for the final summary: counts of finished waves plus the current."""

    earlier: Progress = field(default_factory=lambda: Progress(0, 0, 0, 0))
    progress: Progress | None = None
    failures: list[TaskFinished] = field(default_factory=list)
    record: RunRecord | None = None  # taken when the tasks are done, before cleanup

    def observe(self, event: Event) -> Event:
        """Record ``event``; a wave's progress comes back as progress over the whole run."""
        if isinstance(event, Progress):
            self.progress = event.plus(self.earlier)
            return self.progress
        if isinstance(event, TaskFinished) and event.state == "failed":
            self.failures.append(event)
        return event

    def next_wave(self) -> None:
        if self.progress is not None:
            self.earlier = self.progress
            self.progress = None

    @property
    def now(self) -> Progress:
        return self.progress or self.earlier

    @property
    def clean(self) -> bool:
        return self.now.failed == 0 and self.now.blocked == 0

    @property
    def changed(self) -> int:
        return self.now.changed


def run(spec_path: Path, overrides: Iterable[str], backend_name: str, options: RunOptions,
        emit: Emit) -> RunFinished:
    """Run a spec end to end; returns the summary (also emitted). User errors raise
    :class:`~batchspec.errors.BatchspecError`."""
    started = time.monotonic()
    emit = redacting(emit, options.env)
    name, reason = backends.choose(backend_name, options.env)
    emit(BackendChosen(name, reason))
    emit(StageStarted("validate"))
    spec = load_spec(spec_path)
    backend = backends.create(name, options)
    ctx = RunContext(options, emit)
    interrupted = False
    tally = _Tally()
    not_run: tuple[str, ...] = ()
    after: dict[str, str] = {}
    try:
        emit(StageStarted("plan"))
        planner = Planner(spec, overrides, backend.blob_lister())
        plan = planner.plan
        for warning in plan.warnings:
            ctx.warn(warning)
        emit(PlanReady(plan.job_id, len(plan.tasks), str(spec_path), tuple(s.name for s in plan.stages if not s.known)))
        try:
            if plan.tasks:
                plan, not_run = _run_plan(backend, planner, plan, ctx, tally)
            else:
                ctx.info("the plan has no tasks (inputs.allow_empty): nothing to run")
        except KeyboardInterrupt:
            interrupted = True
            ctx.warn("interrupted: stopping")
            backend.interrupt(plan, ctx)
        if tally.record is not None and not interrupted:
            from .observe import leave_record

            after = leave_record(tally.record, plan, options, ctx)
    finally:
        backend.close()
    counts = tally.now
    failed = counts.failed or counts.blocked or not_run
    exit_code = EXIT_INTERRUPTED if interrupted else EXIT_FAILED if failed else EXIT_OK
    summary = RunFinished(
        job_id=plan.job_id,
        backend=name,
        total=len(plan.tasks),
        succeeded=counts.succeeded,
        failed=counts.failed,
        skipped=counts.skipped,
        seconds=round(time.monotonic() - started, 3),
        outputs=str(plan.download_dir) if _produced(plan) else "",
        exit_code=exit_code,
        interrupted=interrupted,
        failures=tuple(tally.failures),
        blocked=counts.blocked,
        not_run=not_run,
        changed=tally.changed,
        forced=options.force,
        **after,
    )
    emit(summary)
    return summary


def _produced(plan: Plan) -> bool:
    """Did the run leave anything in the download directory (a spec may have no outputs)?"""
    if not any(t.outputs for t in plan.tasks):
        return False
    try:
        with os.scandir(plan.download_dir) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def remove(spec_path: Path, overrides: Iterable[str], backend_name: str, options: RunOptions, emit: Emit) -> None:
    """Delete what runs of a spec left behind on a backend (``batchspec cleanup``)."""
    emit = redacting(emit, options.env)
    name, reason = backends.choose(backend_name, options.env)
    emit(BackendChosen(name, reason))
    spec = load_spec(spec_path)
    backend = backends.create(name, options)
    try:
        plan = build_plan(spec, overrides, backend.blob_lister())
        backend.remove(plan, RunContext(options, emit))
    finally:
        backend.close()


def _run_plan(backend: Backend, planner: Planner, plan: Plan, ctx: RunContext,
              tally: _Tally) -> tuple[Plan, tuple[str, ...]]:
    """Run every stage; returns the plan as far as it was expanded and the stages never run."""
    emit = ctx.emit
    # Everything that can fail is checked before anything that costs money (a pool) exists.
    emit(StageStarted("check"))
    ledger = ctx.options.ledger(plan)
    try:
        # Where outputs land in the download directory: published ones, and failure outputs.
        check_download(ledger, (o.destination_pattern for t in plan.tasks for o in t.outputs
                                if plan.stage_of(t).publish or o.when != "success"))
    finally:
        ledger.close()
    backend.check(plan, ctx)
    emit(StageStarted("prepare"))
    backend.prepare(plan, ctx)
    try:
        return _run_prepared(backend, planner, plan, ctx, tally)
    except BatchspecError:
        # The run stops here: what it made that costs money goes as the spec's cleanup says.
        try:
            backend.cleanup(plan, ctx, succeeded=False, error=True)
        except BatchspecError as exc:
            ctx.warn(f"cleaning up after the error failed too: {exc.message}")
        raise


def _run_prepared(backend: Backend, planner: Planner, plan: Plan, ctx: RunContext,
                  tally: _Tally) -> tuple[Plan, tuple[str, ...]]:
    emit = ctx.emit
    emit(StageStarted("stage inputs"))
    # Planning found them; a slow prepare (a pool coming up) leaves time for them to go away.
    missing = [s for s in plan.local_inputs() if not plan.resolve(s).is_file()]
    if missing:
        raise BackendError(f"input files disappeared since planning: {', '.join(missing[:5])}")
    backend.stage_inputs(plan, ctx)
    done: list[str] = []  # stages run (or kept), in order
    ran: set[str] = set()  # tasks run in this run (not kept from an earlier one)
    while True:
        pending = [s for s in plan.stages if s.tasks is not None and s.name not in done]
        if not pending:
            break
        names = tuple(s.name for s in pending)
        tasks = [t for s in pending for t in s.tasks or ()]
        finished = backend.completed(plan, tasks, ctx) if tasks else set()
        todo, kept = to_run(tasks, finished, ran)
        final = len(done) + len(pending) == len(plan.stages)
        wave = Wave(names, tuple(todo), frozenset(kept), final)
        done.extend(names)
        if not tasks:
            plan = _expand(backend, planner, plan, pending, ctx)
            continue
        if len(plan.stages) > 1:
            emit(StagesStarted(names, len(todo), len(kept), _describe(plan, pending)))
        emit(StageStarted("submit"))
        backend.submit(plan, wave, ctx)
        emit(StageStarted("watch"))
        for event in backend.watch(plan, wave, ctx):
            emit(tally.observe(event))
        ran.update(t.id for t in todo)
        tally.next_wave()
        if not tally.clean:
            break
        plan = _expand(backend, planner, plan, pending, ctx)
    not_run = tuple(s.name for s in plan.stages if s.name not in done)
    if not_run:
        ctx.warn(f"not run: stage{'s' if len(not_run) > 1 else ''} {', '.join(not_run)}, because tasks of an "
                 "earlier stage failed; fix them and run again (finished tasks are kept)")
    from .observe import take_record  # what ran, before cleanup may delete the job

    tally.record = take_record(plan, backend, ctx)
    emit(StageStarted("collect"))
    backend.collect(plan, ctx)
    emit(StageStarted("clean up"))
    backend.cleanup(plan, ctx, succeeded=tally.clean and not not_run)
    return plan, not_run


def to_run(tasks: Sequence[PlannedTask], finished: set[str], ran: set[str]) -> tuple[list[PlannedTask], list[str]]:
    """Which of ``tasks`` (producers before their consumers) run now, and which are kept: a
    finished task is kept unless a task it waits for or reads from runs in this run."""
    now = set(ran)
    todo: list[PlannedTask] = []
    kept: list[str] = []
    for task in tasks:
        upstream_ran = bool(now) and (any(d in now for d in task.depends_on)
                                      or any(f.task in now for f in task.inputs if f.task))
        if task.id in finished and not upstream_ran:
            kept.append(task.id)
        else:
            todo.append(task)
            now.add(task.id)
    return todo, kept


def _expand(backend: Backend, planner: Planner, plan: Plan, finished: Sequence[StagePlan],
            ctx: RunContext) -> Plan:
    """Expand the stages that read what the just-finished stages produced."""
    waiting = {s.source for s in plan.stages if s.tasks is None}
    listings = {s.name: backend.stage_outputs(plan, s, ctx) for s in finished if s.name in waiting}
    return planner.expand(plan, listings) if listings else plan


def expand_held(planner: Planner, backend: Backend, ctx: RunContext) -> Plan:
    """The plan with its later stages expanded as far as the backend holds the outputs of the
    stages they read (for commands that look at a run: status, logs, report)."""
    plan = planner.plan
    while True:
        listings: dict[str, list[str]] = {}
        for stage in plan.stages:
            source = plan.stage(stage.source) if stage.source is not None and stage.tasks is None else None
            if source is not None and source.tasks is not None and stage.source not in listings:
                names = backend.stage_outputs(plan, source, ctx)
                if names:
                    listings[source.name] = names
        expanded = planner.expand(plan, listings) if listings else plan
        if expanded is plan:
            return plan
        plan = expanded


def _describe(plan: Plan, stages: Sequence[StagePlan]) -> str:
    names = {s.name for s in stages}
    parts = []
    for stage in plan.stages:
        if stage.name not in names or stage.source is None or stage.tasks is None:
            continue
        how = {"file": "one per file", "input": "one per input", "all": "one for all files"}[stage.group]
        parts.append(f"{stage.name}: {len(stage.tasks)} task(s) over the outputs of {stage.source} ({how})")
    return "; ".join(parts)
