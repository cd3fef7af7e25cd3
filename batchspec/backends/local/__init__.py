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

from ...events import Event, Progress, TaskFinished
from ...globs import glob_files
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
from ..base import Backend, RunContext, RunOptions
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


class LocalBackend(Backend):
    name = "local"

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.slots = options.slots or os.cpu_count() or 1
        self.state: RunState | None = None
        self.queue: queue.SimpleQueue[_Started | _Done] = queue.SimpleQueue()
        self.stop_event = threading.Event()
        self.running: dict[str, TaskProcess] = {}
        self.running_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.todo: list[PlannedTask] = []
        self.skipped = 0
        self.task_path = os.environ.get("PATH", os.defpath)

    # --- paths ---------------------------------------------------------------------------------

    def run_dir(self, plan: Plan) -> Path:
        return (self.options.run_dir or plan.resolve(".batchspec")).absolute()

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
        while attempts <= plan.retries and not self.stop_event.is_set():
            attempts += 1
            timeout = None
            if plan.timeout_seconds is not None:  # measured from the task's first start, as on Batch
                timeout = max(0.0, plan.timeout_seconds - (time.monotonic() - began))
            process = TaskProcess(argv, paths, env)
            with self.running_lock:
                self.running[task.id] = process
            try:
                result = process.run(timeout, on_start=lambda pid: self.queue.put(
                    _Started(task.id, pid, process_start_ticks(pid))))
            finally:
                with self.running_lock:
                    self.running.pop(task.id, None)
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
        return _Done(task.id, "succeeded", result.exit_code, attempts, seconds, outputs=outputs)


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
