"""The local backend: run a plan in parallel on this machine, laid out like a Batch node.

Each task gets ``<run dir>/<job id>/<task id>/`` with ``stdout.txt``, ``stderr.txt`` and a fresh
``wd/``; its inputs are copied into ``wd/`` (reflinked where the filesystem can: never a shared
inode a task could write through); it runs through :mod:`batchspec.runner` exactly as a node runs
the Azure backend's command line, with the environment a node gives (``AZ_BATCH_*``, the spec's
``env``, none of the runner's secrets), watched so that it dies with the runner and its exit
status survives a runner killed at any moment. Outputs matching the task's patterns move to the
download directory when it succeeds, never through a symbolic link out of ``wd/``, never over a
file batchspec did not write there (:mod:`..download`). State lives in SQLite (:mod:`.state`)
with each task's fingerprint (:mod:`batchspec.plan.fingerprint`), so a rerun skips exactly the
tasks whose fingerprint and outputs are unchanged, and keeps what a killed run finished.
"""

from __future__ import annotations

import os
import queue
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BackendError, BatchspecError
from ...events import Event, Progress, TaskFinished
from ...globs import compile_glob, glob_files, normalize
from ...observe.records import RunRecord
from ...plan import InputFile, Plan, PlannedTask
from ...plan.fingerprint import Fingerprinter
from ...redact import redact
from ...runner import (
    ProcessResult,
    Supervisor,
    TaskPaths,
    TaskProcess,
    Watch,
    batch_environment,
    node_command_line,
    process_start_ticks,
    read_status,
    split_command_line,
    tail_lines,
)
from ...supervisor import wait_for_lock
from ..base import Backend, LogChunk, LogRef, RunContext, RunOptions, note_reruns
from ..download import Ledger, copy_file
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
    fingerprint: str | None = None


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
        self.changed = 0
        self.fingerprints: dict[str, str] = {}
        self.ledger: Ledger | None = None
        self.supervisor: Supervisor | None = None
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
        if left := self.state.mark_interrupted():
            ctx.warn(f"an earlier run of this job was killed while {left} task(s) ran: what they finished is kept, "
                     "the rest runs again")
        # What a killed run left is ending (its supervisor stops it within a grace period):
        # wait, so that what it finishes meanwhile is kept, and nothing writes into a new attempt.
        lock = self.job_dir(plan) / ".supervisor.lock"
        if lock.exists() and not wait_for_lock(lock, block=False):
            ctx.info("waiting for the tasks of an earlier, killed run to finish or stop")
            wait_for_lock(lock)
        self.supervisor = Supervisor(lock)
        ctx.info(f"{self.slots} parallel slot(s); task directories under {self.job_dir(plan)}")

    def stage_inputs(self, plan: Plan, ctx: RunContext) -> None:
        """Nothing to do up front: each task links its own inputs into its working directory."""

    def submit(self, plan: Plan, ctx: RunContext) -> int:
        assert self.state is not None
        if self.options.force:
            self.state.reset()
        self.ledger = ledger = self.options.ledger(plan)
        fingerprint = Fingerprinter(plan, _local_content(plan))
        self.fingerprints = {task.id: fingerprint(task) for task in plan.tasks}
        records = {r.id: r for r in self.state.records()}
        self.todo = []
        missing = adopted = 0
        for task in plan.tasks:
            fp = self.fingerprints[task.id]
            record = records.get(task.id)
            if record is not None and record.state == "succeeded":
                if record.fingerprint == fp and all(ledger.produced(o, fp) for o in record.outputs):
                    continue  # done: same fingerprint, its outputs exactly as it left them
                if record.fingerprint != fp:
                    self.changed += 1
                    for name in record.outputs:  # replaced, never mixed with the new ones
                        ledger.remove(name, record.fingerprint or "")
                else:
                    missing += 1
            if not self.options.force and self._adopt(plan, task, fp):
                adopted += 1
                continue
            self.todo.append(task)
        self.state.commit()
        self.attempt_log = AttemptLog(self.state, time.time(), self.slots)
        self.skipped = len(plan.tasks) - len(self.todo)
        if self.skipped - adopted:
            ctx.info(f"{self.skipped - adopted} task(s) already succeeded in an earlier run with the same command, "
                     "inputs and settings, and their outputs unchanged: skipping them (--force reruns everything)")
        if adopted:
            ctx.info(f"{adopted} task(s) finished in an earlier run that was killed: their outputs are kept")
        note_reruns(ctx, self.changed, missing)
        work: queue.SimpleQueue[PlannedTask] = queue.SimpleQueue()
        for task in self.todo:
            work.put(task)
        for n in range(min(self.slots, len(self.todo))):
            thread = threading.Thread(target=self._worker, args=(plan, work), name=f"slot-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return len(self.todo)

    def _adopt(self, plan: Plan, task: PlannedTask, fp: str) -> bool:
        """Keep what an attempt of ``task`` left by a killed run finished, if it succeeded (it has
        ended: see prepare): place its outputs, some of which may be placed already."""
        assert self.state is not None and self.ledger is not None
        paths = TaskPaths(self.job_dir(plan) / task.id)
        if read_status(paths.status) != (fp, 0):
            return False
        try:
            outputs = _collect_outputs(self.ledger, paths.wd, task.outputs, fp, adopting=True)
        except (_MissingOutput, BatchspecError, OSError):
            return False
        self.state.finished(task.id, "succeeded", 0, 1, 0.0, None, outputs, fp)
        return True

    def watch(self, plan: Plan, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        assert self.state is not None
        total, succeeded, failed = len(plan.tasks), self.skipped, 0
        running: set[str] = set()
        yield Progress(total, succeeded, failed, 0, self.skipped, changed=self.changed)
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
            yield Progress(total, succeeded, failed, len(running), self.skipped, changed=self.changed)

    def collect(self, plan: Plan, ctx: RunContext) -> None:
        # Outputs were moved into the download directory as each task succeeded.
        ctx.info(f"outputs are in {plan.download_dir}")

    def cleanup(self, plan: Plan, ctx: RunContext, *, succeeded: bool, error: bool = False) -> None:
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
        reason = redact(done.reason) if done.reason else None
        self.state.finished(done.task_id, done.state, done.exit_code, done.attempts, done.seconds, reason,
                            done.outputs, done.fingerprint)
        if self.attempt_log is not None:
            self.attempt_log.finish(done.task_id, done.state, reason, done.output_bytes)

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
        if self.supervisor is not None:
            self.supervisor.close()
            self.supervisor = None
        if self.state is not None:
            self.state.close()
            self.state = None
        if self.ledger is not None:
            self.ledger.close()

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
        assert self.ledger is not None
        job_dir = self.job_dir(plan)
        fp = self.fingerprints[task.id]
        paths = TaskPaths(job_dir / task.id)
        if paths.wd.exists():  # what an earlier attempt left must not be collected as this one's
            shutil.rmtree(paths.wd)
        paths.create()
        for item in task.inputs:
            _stage(plan.resolve(item.source), paths.wd / item.path)
        env = batch_environment(
            paths=paths,
            job_id=plan.job_id,
            task_id=task.id,
            pool_id=plan.pool.id,
            node_id=NODE_ID,
            node_root=self.run_dir(plan),
            extra=dict(task.env),
            path=self.task_path,
        )
        argv = split_command_line(node_command_line(task.command))
        assert self.supervisor is not None
        watch = Watch(self.supervisor, paths.status, fp)
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
            process = TaskProcess(argv, paths, env, watch)
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
            outputs = _collect_outputs(self.ledger, paths.wd, task.outputs, fp)
        except (_MissingOutput, BatchspecError) as exc:
            return _Done(task.id, "failed", result.exit_code, attempts, seconds, str(exc))
        return _Done(task.id, "succeeded", result.exit_code, attempts, seconds, outputs=outputs,
                     output_bytes=file_bytes(plan.download_dir / o for o in outputs), fingerprint=fp)


def _local_content(plan: Plan) -> Callable[[InputFile], str]:
    """An input's content identity on this machine: its size and modification time (cached:
    a matrix reads the same file many times)."""
    seen: dict[str, str] = {}

    def content(item: InputFile) -> str:
        identity = seen.get(item.source)
        if identity is None:
            try:
                st = os.stat(plan.resolve(item.source))
                identity = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                identity = "missing"
            seen[item.source] = identity
        return identity

    return content


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
    """Put an input into a working directory: a copy (a reflink where the filesystem shares
    blocks), so a task that writes to its input never changes the user's file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    copy_file(source, dest)


class _MissingOutput(Exception):
    pass


def _collect_outputs(ledger: Ledger, wd: Path, patterns: tuple[str, ...], fingerprint: str, *,
                     adopting: bool = False) -> list[str]:
    """Place the files matching ``patterns`` in ``wd`` in the download directory (relative
    names kept); returns their names.

    Symbolic links are never followed out of ``wd``: a directory reached through one is not
    searched, and a matching link to a file outside ``wd`` fails the task. A file with other
    hard links is copied, not moved. ``adopting`` (what a killed run's attempt left): outputs
    it placed already, still unchanged, count as found.
    """
    placed = ledger.produced_names(fingerprint) if adopting else []
    matched: dict[str, None] = {}  # ordered, and a file two patterns match is placed once
    for pattern in patterns:
        found = sorted(glob_files(wd, pattern, follow_links=False))
        if placed:
            rx = compile_glob(normalize(pattern))
            found += [name for name in placed if rx.match(name) and name not in found]
        if not found:
            raise _MissingOutput(f"output '{pattern}' was not produced (no file in wd/ matches it)")
        matched.update(dict.fromkeys(found))
    real_wd = wd.resolve()
    for name in matched:
        source = wd / name
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            continue  # placed by the killed run (it is in ``placed``)
        if stat.S_ISLNK(st.st_mode):
            target = source.resolve()
            if not target.is_relative_to(real_wd):
                raise _MissingOutput(f"output '{name}' is a symbolic link to {target}, outside the task's working "
                                     "directory: batchspec does not follow it")
            if not target.is_file():
                raise _MissingOutput(f"output '{name}' is a symbolic link to something that is not a file")
            ledger.place(target, name, fingerprint, copy=True)
        elif not stat.S_ISREG(st.st_mode):
            raise _MissingOutput(f"output '{name}' is not a regular file")
        else:  # a file with other hard links is shared with something the task did not create
            ledger.place(source, name, fingerprint, copy=st.st_nlink > 1)
    return list(matched)
