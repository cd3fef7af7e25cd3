"""The generic engine: validate -> plan -> prepare -> stage inputs -> submit -> watch ->
collect -> clean up, on whichever backend the registry gives. No backend-specific code here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import backends
from ..backends import Backend, RunContext, RunOptions
from ..backends.download import check_download
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, BackendError, BatchspecError
from ..events import BackendChosen, Emit, Event, PlanReady, Progress, RunFinished, StageStarted, TaskFinished
from ..observe.records import RunRecord
from ..plan import Plan, build_plan
from ..redact import redacting
from ..spec import Spec, load_spec


def make_plan(spec_path: Path, overrides: Iterable[str] = (), backend: str = "auto",
              env: Mapping[str, str] | None = None) -> Plan:
    """The plan for a spec file, as ``batchspec plan`` shows it (no side effects)."""
    return plan_for(load_spec(spec_path), overrides, backend, env)


def plan_for(spec: Spec, overrides: Iterable[str] = (), backend: str = "auto",
             env: Mapping[str, str] | None = None) -> Plan:
    """The plan for a loaded spec (see :func:`make_plan`)."""
    environ = os.environ if env is None else env
    if spec.inputs.container is None:  # only blobs in storage need a backend to plan
        return build_plan(spec, overrides)
    lister_backend = backends.create(backends.choose(backend, environ)[0], RunOptions(env=environ))
    try:
        return build_plan(spec, overrides, lister_backend.blob_lister())
    finally:
        lister_backend.close()


@dataclass
class _Tally:
    """What the run has seen, for the final summary."""

    total: int
    progress: Progress | None = None
    failures: list[TaskFinished] = field(default_factory=list)
    record: RunRecord | None = None  # taken when the tasks are done, before cleanup

    def observe(self, event: Event) -> None:
        if isinstance(event, Progress):
            self.progress = event
        elif isinstance(event, TaskFinished) and event.state == "failed":
            self.failures.append(event)

    def counts(self) -> tuple[int, int, int]:
        p = self.progress
        return (p.succeeded, p.failed, p.skipped) if p else (0, 0, 0)

    @property
    def changed(self) -> int:
        return self.progress.changed if self.progress else 0


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
    after: dict[str, str] = {}
    try:
        emit(StageStarted("plan"))
        plan = build_plan(spec, overrides, backend.blob_lister())
        for warning in plan.warnings:
            ctx.warn(warning)
        emit(PlanReady(plan.job_id, len(plan.tasks), str(spec_path)))
        tally = _Tally(len(plan.tasks))
        try:
            if plan.tasks:
                _stages(backend, plan, ctx, tally)
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
    succeeded, failed, skipped = tally.counts()
    exit_code = EXIT_INTERRUPTED if interrupted else EXIT_FAILED if failed else EXIT_OK
    summary = RunFinished(
        job_id=plan.job_id,
        backend=name,
        total=len(plan.tasks),
        succeeded=succeeded,
        failed=failed,
        skipped=skipped,
        seconds=round(time.monotonic() - started, 3),
        outputs=str(plan.download_dir),
        exit_code=exit_code,
        interrupted=interrupted,
        failures=tuple(tally.failures),
        changed=tally.changed,
        **after,
    )
    emit(summary)
    return summary


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


def _stages(backend: Backend, plan: Plan, ctx: RunContext, tally: _Tally) -> None:
    emit = ctx.emit
    # Everything that can fail is checked before anything that costs money (a pool) exists.
    emit(StageStarted("check"))
    ledger = ctx.options.ledger(plan)
    try:
        check_download(ledger, (o for t in plan.tasks for o in t.outputs))
    finally:
        ledger.close()
    backend.check(plan, ctx)
    emit(StageStarted("prepare"))
    backend.prepare(plan, ctx)
    try:
        _run_prepared(backend, plan, ctx, tally)
    except BatchspecError:
        # The run stops here: what it made that costs money goes as the spec's cleanup says.
        try:
            backend.cleanup(plan, ctx, succeeded=False, error=True)
        except BatchspecError as exc:
            ctx.warn(f"cleaning up after the error failed too: {exc.message}")
        raise


def _run_prepared(backend: Backend, plan: Plan, ctx: RunContext, tally: _Tally) -> None:
    emit = ctx.emit
    emit(StageStarted("stage inputs"))
    # Planning found them; a slow prepare (a pool coming up) leaves time for them to go away.
    missing = [s for s in plan.local_inputs() if not plan.resolve(s).is_file()]
    if missing:
        raise BackendError(f"input files disappeared since planning: {', '.join(missing[:5])}")
    backend.stage_inputs(plan, ctx)
    emit(StageStarted("submit"))
    backend.submit(plan, ctx)
    emit(StageStarted("watch"))
    for event in backend.watch(plan, ctx):
        tally.observe(event)
        emit(event)
    from .observe import take_record  # what ran, before cleanup may delete the job

    tally.record = take_record(plan, backend, ctx)
    emit(StageStarted("collect"))
    backend.collect(plan, ctx)
    emit(StageStarted("clean up"))
    succeeded, failed, skipped = tally.counts()
    backend.cleanup(plan, ctx, succeeded=failed == 0 and succeeded + skipped == len(plan.tasks))
