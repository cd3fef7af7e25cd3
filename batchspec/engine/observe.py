"""The observing commands (``status``, ``logs``, ``report``, the estimate of ``plan``) and what
a run leaves when it ends: its record (``record.json``) and report (``report.html``) in
``<workspace>/<job id>/``.

Everything about a run comes from the backend through :meth:`Backend.record` and
:meth:`Backend.read_log`; when the backend no longer has the job (Azure, after
``cleanup.job: delete``), the record saved at the end of the run stands in.
"""

from __future__ import annotations

import difflib
import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .. import backends
from ..backends import Backend, LogRef, RunContext, RunOptions
from ..errors import BackendError, BatchspecError
from ..observe import pricing
from ..observe.records import RunRecord, TaskRecord, from_dict, to_dict, usage
from ..plan import Plan, Planner
from ..redact import redact
from ..spec import Spec, load_spec
from ..spec.values import format_duration
from .planning import plan_for

if TYPE_CHECKING:
    from ..events import Emit

RECORD_FILE = "record.json"
REPORT_FILE = "report.html"
TAIL_LINES = 20
FAILED_TAILS = 20  # stderr tails fetched for the report: the first failed tasks ...
SLOWEST_TAILS = 10  # ... and the slowest ones
POLL_SECONDS = 1.0


def _quiet(_event: object) -> None:
    pass


@contextmanager
def opened(spec_path: Path, overrides: Iterable[str], backend_name: str,
           options: RunOptions) -> Iterator[tuple[Plan, Backend, RunContext]]:
    """The plan of a spec and the backend it runs on, for a command that looks at a run."""
    from .run import expand_held

    name, _ = backends.choose(backend_name, options.env)
    spec = load_spec(spec_path)
    backend = backends.create(name, options)
    try:
        ctx = RunContext(options, _quiet)
        # Later stages' tasks as far as the backend holds what they read (a staged run's status).
        plan = expand_held(Planner(spec, overrides, backend.blob_lister()), backend, ctx)
        yield plan, backend, ctx
    finally:
        backend.close()


def job_dir(plan: Plan, options: RunOptions) -> Path:
    return options.workspace(plan) / plan.job_id


# --- records --------------------------------------------------------------------------------------


def save_record(record: RunRecord, plan: Plan, options: RunOptions) -> Path:
    """Keep the record beside the report, for ``status``/``report`` once the service has
    forgotten the job and for the next ``plan``'s estimate."""
    path = job_dir(plan, options) / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {"spec_path": str(Path(plan.spec_path).resolve()), "saved": time.time(), "record": to_dict(record)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, ensure_ascii=False))
    tmp.replace(path)
    return path


def _load_saved(path: Path) -> tuple[str, float, RunRecord] | None:
    try:
        saved = json.loads(path.read_text())
        return saved["spec_path"], float(saved["saved"]), from_dict(saved["record"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def current_record(plan: Plan, backend: Backend, ctx: RunContext, options: RunOptions, *,
                   files: bool = False) -> RunRecord | None:
    """The record from the backend, or the one saved at the end of the last run."""
    live = backend.record(plan, ctx, files=files)
    if live is not None:
        return live
    loaded = _load_saved(job_dir(plan, options) / RECORD_FILE)
    if loaded is None:
        return None
    _, saved_at, record = loaded
    return replace(record, active=False, source=f"saved at the end of the run, {_when(saved_at)}")


def status(spec_path: Path, overrides: Iterable[str], backend_name: str, options: RunOptions) -> RunRecord | None:
    with opened(spec_path, overrides, backend_name, options) as (plan, backend, ctx):
        return current_record(plan, backend, ctx, options)


# --- logs -----------------------------------------------------------------------------------------


def resolve_task(plan: Plan, given: str) -> str:
    """A task id from what the user typed: exact, or a unique prefix."""
    ids = [t.id for t in plan.tasks]
    if given in ids:
        return given
    matches = [i for i in ids if i.startswith(given)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise BatchspecError(f"'{given}' matches {len(matches)} tasks of job {plan.job_id}: {shown}",
                             "give more of the task id")
    close = difflib.get_close_matches(given, ids, n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else "batchspec status SPEC lists running and failed tasks"
    raise BatchspecError(f"job {plan.job_id} has no task '{given}'", hint)


@dataclass
class _Followed:
    ref: LogRef
    title: str
    offset: int = 0
    done: bool = False


def logs(spec_path: Path, overrides: Iterable[str], backend_name: str, options: RunOptions, emit: Emit,
         out: BinaryIO, *, task: str | None, stream: str, attempt: int | None, follow: bool,
         node: str | None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Write logs to ``out``: one task's, a node's start task's, or every failed task's.
    Returns how many logs were shown."""
    from ..events import Message

    streams = ("stdout", "stderr") if stream == "both" else (stream,)
    with opened(spec_path, overrides, backend_name, options) as (plan, backend, ctx):
        if node is not None:
            logs_ = [_Followed(LogRef(s, node_id=node), f"node {node} start task {s}") for s in streams]
        elif task is not None:
            task_id = resolve_task(plan, task)
            logs_ = [_Followed(LogRef(s, task_id=task_id, attempt=attempt), f"{task_id} {s}") for s in streams]
        else:
            logs_ = _failed_logs(plan, backend, ctx, options, emit, streams)
            follow = False  # failed tasks are finished
            if not logs_:
                return 0
        headers = len(logs_) > 1
        last_title = None
        while True:
            for item in logs_:
                if item.done:
                    continue
                chunk = backend.read_log(plan, item.ref, item.offset)
                item.offset = chunk.offset
                item.done = not (follow and chunk.live)
                if chunk.data or (not follow and headers):
                    if headers and last_title != item.title:
                        which = f"attempt {chunk.attempt} of {chunk.attempts}, " if chunk.attempt else ""
                        out.write(f"{'' if last_title is None else chr(10)}==> {item.title} ({which}"
                                  f"{chunk.source}) <==\n".encode())
                        last_title = item.title
                    out.write(_redacted(chunk.data, options.env))
                    out.flush()
                elif not follow and not headers:
                    emit(Message(f"{item.title} is empty ({chunk.source})"))
            if all(item.done for item in logs_):
                return len(logs_)
            sleep(POLL_SECONDS)


def _redacted(data: bytes, env: Mapping[str, str]) -> bytes:
    """Log bytes with secrets (SAS signatures, keys) replaced; other bytes kept as they are."""
    return redact(data.decode("utf-8", "surrogateescape"), env).encode("utf-8", "surrogateescape")


def _failed_logs(plan: Plan, backend: Backend, ctx: RunContext, options: RunOptions, emit: Emit,
                 streams: tuple[str, ...]) -> list[_Followed]:
    from ..events import Message

    record = current_record(plan, backend, ctx, options)
    if record is None:
        raise BatchspecError(f"no run of job {plan.job_id} found", "batchspec run SPEC starts one")
    failed = [t for t in record.tasks() if t.state == "failed"]
    broken = [n for n in record.nodes if n.start_task and n.start_task.startswith("failed")]
    if not failed and not broken:
        emit(Message(f"no failed tasks in job {record.job_ids}; batchspec logs SPEC TASK shows any task's logs"))
    items = [_Followed(LogRef(s, task_id=t.id), f"{t.id} {s}") for t in failed for s in streams]
    items += [_Followed(LogRef(s, node_id=n.id), f"node {n.id} start task {s}") for n in broken for s in streams]
    return items


# --- the report -----------------------------------------------------------------------------------


def with_tails(record: RunRecord, plan: Plan, backend: Backend, env: Mapping[str, str]) -> RunRecord:
    """The record with the stderr tails (of their last attempt) of its first failed and its
    slowest tasks, secrets redacted."""
    failed = [t.id for t in record.tasks() if t.state == "failed"][:FAILED_TAILS]
    slowest = sorted((t for t in record.tasks() if t.seconds is not None), key=_seconds, reverse=True)
    wanted = list(dict.fromkeys(failed + [t.id for t in slowest[:SLOWEST_TAILS]]))
    tails = backend.stderr_tails(plan, wanted, TAIL_LINES)
    return record.with_tails({t: tuple(redact(line, env) for line in tail) for t, tail in tails.items()})


def _seconds(task: TaskRecord) -> float:
    return task.seconds or 0.0


def price_of(record: RunRecord, plan: Plan, options: RunOptions, *, offline: bool = False,
             region: str | None = None) -> tuple[pricing.Cost | None, pricing.PriceLookup | None]:
    """What the record's node time cost; (None, None) when its backend bills no nodes."""
    if not record.billed:
        return None, None
    where, _ = pricing.region_for(options.env, region)
    vm_size = record.pool.vm_size if record.pool and record.pool.vm_size else plan.pool.vm_size
    lookup = pricing.lookup(vm_size, where, windows=record.windows, env=options.env, offline=offline)
    if not record.nodes:
        from ..observe.html import NO_NODES

        return pricing.Cost(None, "", f"unknown: {NO_NODES}"), lookup
    used = usage(record)
    return pricing.cost(used.dedicated_node_seconds / 3600, used.spot_node_seconds / 3600, lookup), lookup


def write_report(record: RunRecord, plan: Plan, options: RunOptions, output: Path | None = None, *,
                 offline: bool = False, region: str | None = None) -> tuple[Path, pricing.Cost | None]:
    spent, lookup = price_of(record, plan, options, offline=offline, region=region)
    path = output or job_dir(plan, options) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..observe import html

    path.write_text(html.render(record, cost=spent, price=lookup, generated=time.time()), encoding="utf-8")
    return path, spent


def report(spec_path: Path, overrides: Iterable[str], backend_name: str, options: RunOptions,
           output: Path | None, *, offline: bool = False, region: str | None = None) -> tuple[Path, RunRecord]:
    with opened(spec_path, overrides, backend_name, options) as (plan, backend, ctx):
        record = current_record(plan, backend, ctx, options, files=True)
        if record is None:
            raise BackendError(f"no run of job {plan.job_id} to report on", "batchspec run SPEC starts one")
        if record.source == "live":
            record = with_tails(record, plan, backend, options.env)
        path, _ = write_report(record, plan, options, output, offline=offline, region=region)
        return path, record


# --- the estimate -------------------------------------------------------------------------------


def measured_duration(plan: Plan, options: RunOptions) -> tuple[float, str] | None:
    """Mean run time of the succeeded tasks in the latest saved run of the same spec file."""
    spec_file = str(Path(plan.spec_path).resolve())
    root = options.workspace(plan)
    candidates = sorted(root.glob(f"*/{RECORD_FILE}"), key=_mtime, reverse=True) if root.is_dir() else []
    for path in candidates:
        loaded = _load_saved(path)
        if loaded is None or loaded[0] != spec_file:
            continue
        _, saved_at, record = loaded
        times = [t.seconds for t in record.tasks() if t.state == "succeeded" and t.seconds is not None]
        if times:
            return (statistics.fmean(times), f"mean of {len(times)} succeeded task(s) measured in the run of "
                                             f"{_when(saved_at)} ({record.backend} backend, job {record.job_ids})")
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class PlanView:
    plan: Plan
    estimate: pricing.Estimate
    price: pricing.PriceLookup | None


def plan_with_estimate(spec_path: Path, overrides: Iterable[str], backend: str, options: RunOptions, *,
                       offline: bool = False, region: str | None = None) -> PlanView:
    """``batchspec plan``: the plan, its node-hours and what they cost."""
    spec: Spec = load_spec(spec_path)
    plan = plan_for(spec, overrides, backend, options.env)
    if spec.expected_task_seconds is not None:
        seconds: float | None = spec.expected_task_seconds
        basis = f"task.expected_duration in the spec ({format_duration(spec.expected_task_seconds)})"
    elif measured := measured_duration(plan, options):
        seconds, basis = measured
    else:
        seconds, basis = None, "no task duration known: set task.expected_duration, or run the spec once"
    est = pricing.estimate(plan, seconds, basis)
    lookup = None
    if seconds is not None and plan.tasks:
        where, _ = pricing.region_for(options.env, region)
        lookup = pricing.lookup(plan.pool.vm_size, where, windows=pricing.is_windows(plan), env=options.env,
                                offline=offline)
    return PlanView(plan, est, lookup)


# --- what a run leaves ----------------------------------------------------------------------------


def take_record(plan: Plan, backend: Backend, ctx: RunContext) -> RunRecord | None:
    """The run's record once its tasks are done, with stderr tails for the report; a warning,
    not a failed run, when it cannot be had."""
    try:
        record = backend.record(plan, ctx, files=True)
        if record is None:
            return None
        # Every task has finished: what is left of the run (collect, clean up) is not the tasks'.
        return with_tails(replace(record, active=False), plan, backend, ctx.options.env)
    except BatchspecError as exc:
        ctx.warn(f"no run record for the report: {exc.message}")
        return None


def leave_record(record: RunRecord, plan: Plan, options: RunOptions, ctx: RunContext) -> dict[str, str]:
    """Save the record, write the report; the summary's usage, logs and report lines."""
    from ..observe.text import usage_line

    try:
        save_record(record, plan, options)
        path, spent = write_report(record, plan, options)
    except OSError as exc:
        ctx.warn(f"could not write the run's record and report: {exc}")
        return {"logs": record.logs}
    return {"usage": usage_line(record, spent), "logs": record.logs, "report": str(path)}
