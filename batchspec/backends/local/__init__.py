"""The local backend: run a plan in parallel on this machine, laid out like a Batch node.

Each task gets ``<run dir>/<job id>/<task id>/`` with ``stdout.txt``, ``stderr.txt`` and
``wd/``; its inputs are hard-linked (or copied) into ``wd/``; it runs through
:mod:`batchspec.runner` exactly as a node runs the Azure backend's command line, with the same
``AZ_BATCH_*`` variables. Outputs matching the task's patterns move to the download directory
when it succeeds. State lives in SQLite (:mod:`.state`) so reruns resume.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BackendError
from ...events import Event, Progress, TaskFinished
from ...globs import glob_files
from ...observe.records import RunRecord
from ...plan import Plan, PlannedTask
from ...runner import (
    ProcessResult,
    TaskPaths,
    TaskProcess,
    batch_environment,
    node_command_line,
    process_start_ticks,
    split_command_line,
    tail_lines,
)
from ..base import Backend, LogChunk, LogRef, RunContext, RunOptions
from .records import AttemptEvent, AttemptLog, file_bytes, log_sizes, log_slice, read_record, run_in_progress
from .state import RunState
from .tools import resolve_tools

NODE_ID = "local"


@dataclass(frozen=True)
class _Started:
    task_id: str
    pgid: int
    pgid_ticks: int | None  # the process's start time, so a later run never kills a recycled pid


@dataclass(frozen=True)
class _Done:
    task_id: str
    state: str  # succeeded | failed | interrupted
    exit_code: int | None
    attempts: int
    seconds: float
    reason: str | None = None
    outputs: list[str] = field(default_factory=list)
    output_bytes: int | None = None


class LocalBackend(Backend):
    name = "local"

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.slots = options.slots or os.cpu_count() or 1
        self.state: RunState | None = None
        self.queue: queue.SimpleQueue[_Started | _Done | AttemptEvent] = queue.SimpleQueue()
        self.attempt_log: AttemptLog | None = None
        self.stop_event = threading.Event()
        self.running: dict[str, TaskProcess] = {}
        self.running_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.todo: list[PlannedTask] = []
        self.skipped = 0
        self.task_path = os.environ.get("PATH", os.defpath)

    # --- paths ---------------------------------------------------------------------------------

    def run_dir(self, plan: Plan) -> Path:
        return self.options.workspace(plan)

    def job_dir(self, plan: Plan) -> Path:
        return self.run_dir(plan) / plan.job_id

    # --- stages --------------------------------------------------------------------------------

    def prepare(self, plan: Plan, ctx: RunContext) -> None:
        start = plan.pool.start_task
        if start is not None:
            ctx.info(f"the pool's start task is not run on this machine (it prepares Azure nodes): {start.command}")
        self.task_path, notes = resolve_tools(plan.requires, self.task_path, self.run_dir(plan) / "bin")
        for note in notes:
            ctx.info(note)
        (self.run_dir(plan) / "shared").mkdir(parents=True, exist_ok=True)  # exists on every node
        self.state = RunState(self.job_dir(plan))
        if killed := self.state.kill_stale():
            ctx.warn(f"stopped {killed} task process group(s) left running by an earlier, killed run")
        ctx.info(f"{self.slots} parallel slot(s); task directories under {self.job_dir(plan)}")

    def stage_inputs(self, plan: Plan, ctx: RunContext) -> None:
        """Nothing to do up front: each task links its own inputs into its working directory."""

    def submit(self, plan: Plan, ctx: RunContext) -> int:
        assert self.state is not None
        if self.options.force:
            self.state.reset()
        download = plan.download_dir
        done = {
            r.id
            for r in self.state.records()
            if r.state == "succeeded" and all((download / o).is_file() for o in r.outputs)
        }
        self.todo = [t for t in plan.tasks if t.id not in done]
        self.attempt_log = AttemptLog(self.state, time.time(), self.slots)
        self.skipped = len(plan.tasks) - len(self.todo)
        if self.skipped:
            ctx.info(f"{self.skipped} task(s) already succeeded in an earlier run with their outputs present: "
                     "skipping them (--force reruns everything)")
        work: queue.SimpleQueue[PlannedTask] = queue.SimpleQueue()
        for task in self.todo:
            work.put(task)
        for n in range(min(self.slots, len(self.todo))):
            thread = threading.Thread(target=self._worker, args=(plan, work), name=f"slot-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return len(self.todo)

    def watch(self, plan: Plan, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        assert self.state is not None
        total, succeeded, failed = len(plan.tasks), self.skipped, 0
        running: set[str] = set()
        yield Progress(total, succeeded, failed, 0, self.skipped)
        remaining = len(self.todo)
        job_dir = self.job_dir(plan)
        while remaining:
            try:
                message = self.queue.get_nowait()
            except queue.Empty:
                self.state.commit()  # group commit: durable before waiting, one commit per burst
                message = self.queue.get()
            if isinstance(message, AttemptEvent):
                self._save_attempt(message)
                continue
            if isinstance(message, _Started):
                running.add(message.task_id)
                self.state.started(message.task_id, message.pgid, message.pgid_ticks)
            else:
                self._record(message)
                remaining -= 1
                running.discard(message.task_id)
                if message.state == "succeeded":
                    succeeded += 1
                    yield TaskFinished(message.task_id, "succeeded", message.exit_code, round(message.seconds, 3),
                                       message.attempts)
                else:
                    failed += 1
                    yield TaskFinished(message.task_id, "failed", message.exit_code, round(message.seconds, 3),
                                       message.attempts, message.reason,
                                       tail_lines(TaskPaths(job_dir / message.task_id).stderr))
            yield Progress(total, succeeded, failed, len(running), self.skipped)

    def collect(self, plan: Plan, ctx: RunContext) -> None:
        # Outputs were moved into the download directory as each task succeeded.
        ctx.info(f"outputs are in {plan.download_dir}")

    def cleanup(self, plan: Plan, ctx: RunContext, *, succeeded: bool) -> None:
        if plan.cleanup.job == "delete" and succeeded:
            for task in plan.tasks:
                shutil.rmtree(self.job_dir(plan) / task.id, ignore_errors=True)
            ctx.info("cleanup: removed the task directories (the run record stays, so a rerun skips the work)")

    def remove(self, plan: Plan, ctx: RunContext) -> None:
        job_dir = self.job_dir(plan)
        if job_dir.exists():
            state = RunState(job_dir)  # fails if a run of this job is in progress
            state.kill_stale()
            state.close()
            shutil.rmtree(job_dir)
            ctx.info(f"deleted {job_dir} (task directories and run record)")
        else:
            ctx.info(f"nothing to delete: {job_dir} does not exist")

    def _record(self, done: _Done) -> None:
        assert self.state is not None
        self.state.finished(done.task_id, done.state, done.exit_code, done.attempts, done.seconds, done.reason,
                            done.outputs)
        if self.attempt_log is not None:
            self.attempt_log.finish(done.task_id, done.state, done.reason, done.output_bytes)

    def _save_attempt(self, event: AttemptEvent) -> None:
        if self.attempt_log is not None:
            self.attempt_log.save(event)

    # --- what other commands read (status, logs, report) ---------------------------------------

    def logs_location(self, plan: Plan) -> str:
        return f"{self.job_dir(plan)}/<task id>/stdout.txt and stderr.txt"

    def record(self, plan: Plan, ctx: RunContext, *, files: bool = False) -> RunRecord | None:
        if self.state is not None:
            self.state.commit()  # this run's last results, for the reader's own connection
        return read_record(plan, self.job_dir(plan), self.logs_location(plan))

    def read_log(self, plan: Plan, ref: LogRef, offset: int = 0) -> LogChunk:
        if ref.task_id is None:
            raise BackendError("the local backend has no nodes and runs no start task",
                               "start-task logs exist on Azure Batch nodes only")
        job_dir = self.job_dir(plan)
        path = job_dir / ref.task_id / f"{ref.name}.txt"
        try:
            where = log_slice(job_dir, ref.task_id, ref.name, ref.attempt)
        except LookupError as exc:
            raise BackendError(str(exc)) from None
        if where is None:
            if run_in_progress(job_dir):  # queued in a run going on now: nothing yet
                return LogChunk(b"", offset, True, str(path))
            raise BackendError(f"task {ref.task_id} has not run here yet", "batchspec status SPEC shows the run")
        begin = where.start + offset
        try:
            with path.open("rb") as f:
                f.seek(begin)
                data = f.read() if where.end is None else f.read(max(0, where.end - begin))
        except FileNotFoundError:
            raise BackendError(f"{path} is gone (cleanup.job: delete removes task directories after a "
                               "successful run)") from None
        return LogChunk(data, offset + len(data), where.live, str(path), where.number, where.attempts)

    def interrupt(self, plan: Plan, ctx: RunContext) -> None:
        self.stop_event.set()
        with self.running_lock:
            processes = list(self.running.values())
        for process in processes:
            process.stop()
        for thread in self.threads:
            thread.join()
        assert self.state is not None
        while True:  # record what the workers reported while stopping
            try:
                message = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(message, _Done):
                self._record(message)
            elif isinstance(message, AttemptEvent):
                self._save_attempt(message)
        self.state.kill_stale()  # anything still marked running becomes interrupted

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
            self.state = None

    # --- one slot ------------------------------------------------------------------------------

    def _worker(self, plan: Plan, work: queue.SimpleQueue[PlannedTask]) -> None:
        while not self.stop_event.is_set():
            try:
                task = work.get_nowait()
            except queue.Empty:
                return
            try:
                self.queue.put(self._run_task(plan, task))
            except Exception as exc:  # a bug or a disk problem must fail the task, not hang the run
                self.queue.put(_Done(task.id, "failed", None, 0, 0.0, f"batchspec could not run the task: {exc}"))

    def _run_task(self, plan: Plan, task: PlannedTask) -> _Done:
        job_dir = self.job_dir(plan)
        paths = TaskPaths(job_dir / task.id).create()
        for item in task.inputs:
            _stage(plan.resolve(item.source), paths.wd / item.path)
        env = batch_environment(
            paths=paths,
            job_id=plan.job_id,
            task_id=task.id,
            pool_id=plan.pool.id,
            node_id=NODE_ID,
            node_root=self.run_dir(plan),
            extra={**dict(task.env), "PATH": self.task_path},
        )
        argv = split_command_line(node_command_line(task.command))
        began = time.monotonic()
        attempts = 0
        result: ProcessResult | None = None
        slot = threading.current_thread().name  # the worker threads are named slot-N
        in_bytes = file_bytes(plan.resolve(item.source) for item in task.inputs)
        while attempts <= plan.retries and not self.stop_event.is_set():
            attempts += 1
            timeout = None
            if plan.timeout_seconds is not None:  # measured from the task's first start, as on Batch
                timeout = max(0.0, plan.timeout_seconds - (time.monotonic() - began))
            process = TaskProcess(argv, paths, env)
            out_from, err_from = log_sizes(paths)
            start = AttemptEvent(task.id, attempts, slot, time.time(), out_from, err_from, in_bytes)

            def on_start(pid: int, start: AttemptEvent = start) -> None:
                self.queue.put(_Started(task.id, pid, process_start_ticks(pid)))
                self.queue.put(start)

            with self.running_lock:
                self.running[task.id] = process
            try:
                result = process.run(timeout, on_start=on_start)
            finally:
                with self.running_lock:
                    self.running.pop(task.id, None)
            self.queue.put(_attempt_end(start, result, paths, attempts <= plan.retries, plan.timeout_seconds))
            if result.succeeded or result.timed_out or result.stopped or result.error:
                break
        seconds = time.monotonic() - began
        if result is None or result.stopped:
            return _Done(task.id, "interrupted", None, attempts, seconds, "interrupted")
        if result.error:
            return _Done(task.id, "failed", None, attempts, seconds, f"could not start: {result.error}")
        if result.timed_out:
            return _Done(task.id, "failed", result.exit_code, attempts, seconds,
                         f"timed out after {plan.timeout_seconds}s (task.timeout) and was killed")
        if not result.succeeded:
            return _Done(task.id, "failed", result.exit_code, attempts, seconds)
        try:
            outputs = _collect_outputs(paths.wd, task.outputs, plan.download_dir)
        except _MissingOutput as exc:
            return _Done(task.id, "failed", result.exit_code, attempts, seconds, str(exc))
        return _Done(task.id, "succeeded", result.exit_code, attempts, seconds, outputs=outputs,
                     output_bytes=file_bytes(plan.download_dir / o for o in outputs))


def _attempt_end(start: AttemptEvent, result: ProcessResult, paths: TaskPaths, may_retry: bool,
                 timeout: int | None) -> AttemptEvent:
    """How an attempt ended, for the attempt log (the task's final outcome is set when it is
    recorded: a missing output still fails a task whose process succeeded)."""
    out_to, err_to = log_sizes(paths)
    reason = None
    if result.stopped:
        outcome, reason = "interrupted", "interrupted"
    elif result.error:
        outcome, reason = "failed", f"could not start: {result.error}"
    elif result.timed_out:
        outcome, reason = "failed", f"timed out after {timeout}s (task.timeout) and was killed"
    elif result.succeeded:
        outcome = "succeeded"
    else:
        outcome = "retried" if may_retry else "failed"
    return AttemptEvent(start.task_id, start.number, start.slot, start.started, start.stdout_from, start.stderr_from,
                        start.input_bytes, ended=result.end, outcome=outcome, exit_code=result.exit_code,
                        reason=reason, stdout_to=out_to, stderr_to=err_to)


def _stage(source: Path, dest: Path) -> None:
    """Put an input into a working directory: a hard link when possible, else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


class _MissingOutput(Exception):
    pass


def _collect_outputs(wd: Path, patterns: tuple[str, ...], download: Path) -> list[str]:
    """Move files matching ``patterns`` from ``wd`` into ``download`` (relative names kept)."""
    matched: dict[str, None] = {}  # ordered, and a file two patterns match is moved once
    for pattern in patterns:
        found = sorted(glob_files(wd, pattern))
        if not found:
            raise _MissingOutput(f"output '{pattern}' was not produced (no file in wd/ matches it)")
        matched.update(dict.fromkeys(found))
    for rel in matched:
        target = download / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(wd / rel), str(target))  # a rename when on the same filesystem
    return list(matched)
