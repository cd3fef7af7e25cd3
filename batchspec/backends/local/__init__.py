"""The local backend: run a plan in parallel on this machine, laid out like a Batch node.

Each task gets ``<run dir>/<job id>/<task id>/`` with ``stdout.txt``, ``stderr.txt`` and a fresh
``wd/``; its input files are copied into ``wd/`` (reflinked where the filesystem can: never a
shared inode a task could write through); it runs through :mod:`batchspec.runner` exactly as a
node runs the Azure backend's command line, with the environment a node gives (``AZ_BATCH_*``,
the job's and the task's ``env``, none of the runner's secrets), watched so that it dies with the
runner and its exit status survives a runner killed at any moment. A task starts once the tasks it
depends on have succeeded, as Batch task dependencies do. A task with a container image runs in it
through :mod:`batchspec.containers` (podman or docker): its task directory and the node's shared
directory mounted at the same paths, its input files read-only, only the Batch variables and its
own settings in its environment.

Outputs of a stage that later stages read are kept in the job's store
(``<job dir>/stages/<stage>/``), where those stages take them from; published outputs go to the
download directory, never through a symbolic link out of ``wd/``, never over a file batchspec did
not write there (:mod:`..download`). Failed tasks' logs stay in their task directory. State lives
in SQLite (:mod:`.state`) with each task's fingerprint (:mod:`batchspec.plan.fingerprint`, which
includes the fingerprints of the tasks whose outputs it reads), so a rerun skips exactly the tasks
whose fingerprint and outputs are unchanged, and keeps what a killed run finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import BackendError, BatchspecError
from ...events import Event, Progress, TaskFinished
from ...globs import compile_glob, glob_files, normalize
from ...observe.records import RunRecord
from ...plan import InputFile, Output, Plan, PlannedTask, StagePlan
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
from ...spec.model import Registry
from ...spec.values import format_duration
from ...supervisor import wait_for_lock
from ..base import Backend, LogChunk, LogRef, RunContext, RunOptions, Wave, note_reruns
from ..download import Ledger, copy_file
from .records import AttemptEvent, AttemptLog, file_bytes, log_sizes, log_slice, read_record, run_in_progress
from .state import RunState
from .tools import resolve_tools

if TYPE_CHECKING:
    from ...containers import ContainerProcess, Runtime

NODE_ID = "local"
URL_TIMEOUT = 120.0


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
        self.work: queue.SimpleQueue[PlannedTask | None] = queue.SimpleQueue()
        self.attempt_log: AttemptLog | None = None
        self.stop_event = threading.Event()
        self.expired = threading.Event()  # the job's wall-clock limit passed
        self.running: dict[str, TaskProcess | ContainerProcess] = {}
        self.running_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.changed = 0
        self.fingerprints: dict[str, str] = {}  # of every task handed over so far, by id
        self.ledger: Ledger | None = None
        self.supervisor: Supervisor | None = None
        self.task_path = os.environ.get("PATH", os.defpath)
        self.deadline: float | None = None
        self.previous: dict[str, tuple[str, ...]] = {}  # task id -> what an earlier run of it left in the store
        self.urls: dict[str, Path] = {}
        self.urls_lock = threading.Lock()
        self.forced = False  # --force has cleared earlier runs' records
        self.waiting: dict[str, set[str]] = {}  # task id -> tasks of the wave it still waits for
        self.dependents: dict[str, list[PlannedTask]] = {}
        self.runtime: Runtime | None = None  # the container runtime, when tasks run in images
        self.image_ids: dict[str, str] = {}  # image reference -> its id here (part of fingerprints)

    # --- paths ---------------------------------------------------------------------------------

    def run_dir(self, plan: Plan) -> Path:
        return self.options.workspace(plan)

    def job_dir(self, plan: Plan) -> Path:
        return self.run_dir(plan) / plan.job_id

    def store(self, plan: Plan, stage: str) -> Path:
        """Where a stage's outputs wait for the later stages that read them."""
        return self.job_dir(plan) / "stages" / stage

    # --- before the tasks ----------------------------------------------------------------------

    def check(self, plan: Plan, ctx: RunContext) -> None:
        """Tasks in images: a container runtime here, every image present (pulled when missing)
        and starting, with the tools the spec requires."""
        images = list(dict.fromkeys(s.container.image for s in plan.stages if s.container is not None))
        if not images:
            return
        # Container code is imported only by runs whose tasks use images.
        from ...containers import ContainerError, find_runtime
        from ..registries import login, registry_for

        try:
            self.runtime = runtime = find_runtime(self.options.env)
        except ContainerError as exc:
            raise BackendError(f"the tasks run in container images, and {exc.message}",
                               "install podman (Debian/Ubuntu: apt-get install podman) or docker, or name one with "
                               "BATCHSPEC_CONTAINER_RUNTIME") from None
        ctx.info(f"container runtime: {runtime.describe()}")
        registries = plan.pool.container.registries if plan.pool.container else ()
        for image in images:
            registry = registry_for(image, registries)
            try:
                found = runtime.image_id(image)
                if found is None:
                    ctx.info(f"pulling {image} (it is not on this machine)")
                    credentials = login(registry, self.options.env) if registry is not None else None
                    found = runtime.ensure_image(image, pull=True, credentials=credentials)
                missing = runtime.probe(image, plan.requires)
            except ContainerError as exc:
                raise BackendError(f"image {image}: {exc.message}", _image_hint(exc.code, image, registry)) from None
            if missing:
                raise BackendError(f"image {image} has no {', '.join(missing)} (the spec lists "
                                   f"{'them' if len(missing) > 1 else 'it'} under requires:)",
                                   "use an image that has the tools, or build one (see README: container images)")
            self.image_ids[image] = found

    def prepare(self, plan: Plan, ctx: RunContext) -> None:
        start = plan.pool.start_task
        if start is not None:
            ctx.info(f"the pool's start task is not run on this machine (it prepares Azure nodes): {start.command}")
        blobs = sorted({f"{f.container}/{f.source}" for f in (*plan.files, *(f for t in plan.tasks for f in t.inputs))
                        if f.kind in ("blob", "blobs")})
        if blobs:
            raise BackendError(f"files from a storage container need the azure backend: {', '.join(blobs[:3])}",
                               "run with --backend azure, or use local paths or URLs in `files`")
        if self.runtime is None:  # tasks in images have their tools there (checked by check())
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
        if plan.timeout_seconds is not None:
            self.deadline = time.monotonic() + plan.timeout_seconds

    def stage_inputs(self, plan: Plan, ctx: RunContext) -> None:
        """Fetch files from URLs once (into the job's cache) now, so a bad URL stops the run
        before any task starts; each task links its own files into its working directory."""
        urls = sorted({f.source for f in (*plan.files, *(f for t in plan.tasks for f in t.inputs)) if f.kind == "url"})
        for url in urls:
            self._fetch(plan, url)
        if urls:
            ctx.info(f"downloaded {len(urls)} file(s) from URLs into {self.job_dir(plan) / 'files'}")

    def _fetch(self, plan: Plan, url: str) -> Path:
        with self.urls_lock:
            if url in self.urls:
                return self.urls[url]
            digest = hashlib.sha256(url.encode()).hexdigest()[:16]
            target = self.job_dir(plan) / "files" / digest
            if not target.is_file():
                import urllib.error  # only specs with URL files pay for the HTTP client's import
                import urllib.request

                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(".part")
                try:
                    with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as response, partial.open("wb") as out:
                        shutil.copyfileobj(response, out)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    partial.unlink(missing_ok=True)
                    raise BackendError(f"cannot download {url}: {getattr(exc, 'reason', None) or exc}",
                                       "check the URL in `files`") from None
                os.replace(partial, target)
            self.urls[url] = target
            return target

    # --- waves ---------------------------------------------------------------------------------

    def completed(self, plan: Plan, tasks: Sequence[PlannedTask], ctx: RunContext) -> set[str]:
        """Tasks that succeeded in an earlier run with the same fingerprint (their command,
        environment, inputs and settings, and the fingerprints of the tasks they read from) and
        their outputs unchanged where later stages and the user find them; what a killed run
        finished is adopted."""
        assert self.state is not None
        if self.options.force and not self.forced:  # once: later waves keep what this run did
            self.forced = True
            self.state.reset()
            shutil.rmtree(self.job_dir(plan) / "stages", ignore_errors=True)
        if self.ledger is None:
            self.ledger = self.options.ledger(plan)
        ledger = self.ledger
        fingerprint = Fingerprinter(plan, _local_content(plan), lambda image: self.image_ids.get(image, ""))
        for task in tasks:  # producers come before the tasks that read their outputs
            self.fingerprints[task.id] = fingerprint(task, [self.fingerprints[u] for u in _upstream(task)
                                                             if u in self.fingerprints])
        records = {r.id: r for r in self.state.records()}
        done: set[str] = set()
        changed = missing = adopted = 0
        for task in tasks:
            fp = self.fingerprints[task.id]
            stage = plan.stage_of(task)
            store = self.store(plan, stage.name)
            record = records.get(task.id)
            if record is not None:
                self.previous[task.id] = record.outputs
            if record is not None and record.state == "succeeded":
                if record.fingerprint == fp and all(
                        (not stage.publish or ledger.produced(o, fp)) and (not stage.consumed or (store / o).is_file())
                        for o in record.outputs):
                    done.add(task.id)  # same fingerprint, its outputs exactly as it left them
                    continue
                if record.fingerprint != fp:
                    changed += 1
                    for name in record.outputs:  # replaced, never mixed with the new ones
                        ledger.remove(name, record.fingerprint or "")
                else:
                    missing += 1
            if not self.options.force and self._adopt(plan, task, fp):
                adopted += 1
                done.add(task.id)
        self.state.commit()
        self.changed = changed  # of this wave's tasks: the engine adds up the waves
        if len(done) - adopted:
            ctx.info(f"{len(done) - adopted} task(s) already succeeded in an earlier run with the same command, "
                     "inputs and settings, and their outputs unchanged: skipping them (--force reruns everything)")
        if adopted:
            ctx.info(f"{adopted} task(s) finished in an earlier run that was killed: their outputs are kept")
        note_reruns(ctx, changed, missing)
        return done

    def submit(self, plan: Plan, wave: Wave, ctx: RunContext) -> int:
        assert self.state is not None
        if self.attempt_log is None:
            self.attempt_log = AttemptLog(self.state, time.time(), self.slots)
        ids = {t.id for t in wave.tasks}
        self.waiting, self.dependents = {}, {}
        for task in wave.tasks:
            deps = {d for d in task.depends_on if d in ids}
            if deps:
                self.waiting[task.id] = deps
                for dep in deps:
                    self.dependents.setdefault(dep, []).append(task)
            else:
                self.work.put(task)
        self.threads = []
        for n in range(min(self.slots, len(wave.tasks))):
            thread = threading.Thread(target=self._worker, args=(plan,), name=f"slot-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return len(wave.tasks)

    def _adopt(self, plan: Plan, task: PlannedTask, fp: str) -> bool:
        """Keep what an attempt of ``task`` left by a killed run finished, if it succeeded (it has
        ended: see prepare): place its outputs, some of which may be placed already."""
        assert self.state is not None and self.ledger is not None
        paths = TaskPaths(self.job_dir(plan) / task.id)
        if read_status(paths.status) != (fp, 0):
            return False
        try:
            outputs = self._keep(plan, task, paths.wd, True, fp, adopting=True)
        except (_MissingOutput, BatchspecError, OSError):
            return False
        self.state.finished(task.id, "succeeded", 0, 1, 0.0, None, outputs, fp)
        return True

    def watch(self, plan: Plan, wave: Wave, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        assert self.state is not None
        kept = len(wave.kept)
        total, succeeded, failed, blocked = wave.total, kept, 0, 0
        running: set[str] = set()
        yield Progress(total, succeeded, failed, 0, kept, changed=self.changed)
        remaining = {t.id for t in wave.tasks}
        job_dir = self.job_dir(plan)
        while remaining:
            try:
                message = self.queue.get_nowait()
            except queue.Empty:
                self.state.commit()  # group commit: durable before waiting, one commit per burst
                message = self._next(plan, ctx)
            if isinstance(message, AttemptEvent):
                self._save_attempt(message)
                continue
            if isinstance(message, _Started):
                running.add(message.task_id)
                self.state.started(message.task_id, message.pgid, message.pgid_ticks)
                yield Progress(total, succeeded, failed, len(running), kept, blocked=blocked, changed=self.changed)
                continue
            if message.task_id not in remaining:  # already reported as blocked
                self._record(message)
                continue
            self._record(message)
            remaining.discard(message.task_id)
            running.discard(message.task_id)
            if message.state == "succeeded":
                succeeded += 1
                yield TaskFinished(message.task_id, "succeeded", message.exit_code, round(message.seconds, 3),
                                   message.attempts)
                for task in self.dependents.get(message.task_id, ()):
                    waiting = self.waiting[task.id]
                    waiting.discard(message.task_id)
                    if not waiting and not self.expired.is_set():
                        self.work.put(task)
            else:
                failed += 1
                paths = TaskPaths(job_dir / message.task_id)
                last = log_slice(job_dir, message.task_id, "stderr", None)  # each retry appends to stderr.txt
                yield TaskFinished(message.task_id, "failed", message.exit_code, round(message.seconds, 3),
                                   message.attempts, message.reason,
                                   tail_lines(paths.stderr, start=last.start if last else 0), logs=str(paths.root))
                for task_id in self._blocked_by(message.task_id, remaining):
                    remaining.discard(task_id)
                    blocked += 1
                    yield TaskFinished(task_id, "blocked", reason=f"not run: task {message.task_id} failed")
            yield Progress(total, succeeded, failed, len(running), kept, blocked=blocked, changed=self.changed)
        self._stop_workers()

    def _next(self, plan: Plan, ctx: RunContext) -> _Started | _Done | AttemptEvent:
        """The next task event; when the job's wall-clock limit passes, stop everything."""
        while True:
            wait = None if self.deadline is None or self.expired.is_set() else self.deadline - time.monotonic()
            try:
                return self.queue.get(timeout=max(0.0, wait) if wait is not None else None)
            except queue.Empty:
                assert plan.timeout_seconds is not None
                ctx.warn(f"the job's wall-clock limit ({format_duration(plan.timeout_seconds)}, job.timeout) has "
                         "passed: stopping its tasks")
                self.expired.set()
                self._stop_running()
                while True:  # tasks that have not started are not run
                    try:
                        task = self.work.get_nowait()
                    except queue.Empty:
                        break
                    if task is not None:
                        self.queue.put(_Done(task.id, "failed", None, 0, 0.0,
                                             "not run: the job's wall-clock limit (job.timeout) passed"))
                for task_id in list(self.waiting):
                    if self.waiting[task_id]:
                        self.waiting[task_id] = set()
                        self.queue.put(_Done(task_id, "failed", None, 0, 0.0,
                                             "not run: the job's wall-clock limit (job.timeout) passed"))

    def _blocked_by(self, failed: str, remaining: set[str]) -> list[str]:
        """Tasks of the wave that can no longer run because ``failed`` failed (transitively)."""
        found: list[str] = []
        todo = [failed]
        while todo:
            for task in self.dependents.get(todo.pop(), ()):
                if task.id in remaining and task.id not in found:
                    found.append(task.id)
                    todo.append(task.id)
        return found

    def stage_outputs(self, plan: Plan, stage: StagePlan, ctx: RunContext) -> list[str]:
        return sorted(glob_files(self.store(plan, stage.name), "**"))

    # --- after the tasks -----------------------------------------------------------------------

    def collect(self, plan: Plan, ctx: RunContext) -> None:
        # Outputs were moved into the download directory as each task finished.
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
            ctx.info(f"deleted {job_dir} (task directories, stage outputs and run record)")
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
        self._stop_running()
        self._stop_workers()
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

    def _stop_running(self) -> None:
        with self.running_lock:
            processes = list(self.running.values())
        for process in processes:
            process.stop()

    def _stop_workers(self) -> None:
        for _ in self.threads:
            self.work.put(None)
        for thread in self.threads:
            thread.join()
        self.threads = []

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

    def _worker(self, plan: Plan) -> None:
        while not self.stop_event.is_set():
            task = self.work.get()
            if task is None or self.stop_event.is_set():
                return
            try:
                self.queue.put(self._run_task(plan, task))
            except Exception as exc:  # a bug or a disk problem must fail the task, not hang the run
                self.queue.put(_Done(task.id, "failed", None, 0, 0.0, f"batchspec could not run the task: {exc}"))

    def _source(self, plan: Plan, item: InputFile) -> Path:
        if item.kind == "url":
            return self._fetch(plan, item.source)
        if item.kind == "output":
            assert item.stage is not None
            return self.store(plan, item.stage) / item.source
        return plan.resolve(item.source)

    def _run_task(self, plan: Plan, task: PlannedTask) -> _Done:
        job_dir = self.job_dir(plan)
        fp = self.fingerprints[task.id]
        stage = plan.stage_of(task)
        for old in self.previous.pop(task.id, ()):  # what an earlier run of it left for later stages
            (self.store(plan, stage.name) / old).unlink(missing_ok=True)
        paths = TaskPaths(job_dir / task.id)
        if paths.wd.exists():  # what an earlier attempt left must not be collected as this one's
            shutil.rmtree(paths.wd)
        paths.create()
        staged = (*plan.files, *task.inputs)
        for item in staged:
            _stage(self._source(plan, item), paths.wd / item.path, item.mode)
        env = batch_environment(
            paths=paths,
            job_id=plan.job_id,
            task_id=task.id,
            pool_id=plan.pool.id,
            node_id=NODE_ID,
            node_root=self.run_dir(plan),
            extra={**dict(plan.env), **dict(task.env)},  # the task's own settings win over the job's
            path=self.task_path,
        )
        argv = split_command_line(node_command_line(task.command))
        assert self.supervisor is not None
        watch = Watch(self.supervisor, paths.status, fp)
        new_process = self._launcher(plan, task, argv, paths, env, watch)
        began = time.monotonic()
        attempts = 0
        result: ProcessResult | None = None
        slot = threading.current_thread().name  # the worker threads are named slot-N
        in_bytes = file_bytes(paths.wd / item.path for item in staged)
        while attempts <= task.retries and not self.stop_event.is_set() and not self.expired.is_set():
            attempts += 1
            timeout = None
            if task.timeout_seconds is not None:  # measured from the task's first start, as on Batch
                timeout = max(0.0, task.timeout_seconds - (time.monotonic() - began))
            process = new_process()
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
            self.queue.put(_attempt_end(start, result, paths, attempts <= task.retries, task.timeout_seconds))
            if result.succeeded or result.timed_out or result.stopped or result.error:
                break
        seconds = time.monotonic() - began
        if self.expired.is_set() and (result is None or result.stopped):
            self._keep_quietly(plan, task, paths.wd, fp)
            return _Done(task.id, "failed", None, attempts, seconds,
                         "stopped: the job's wall-clock limit (job.timeout) passed")
        if result is None or result.stopped:
            return _Done(task.id, "interrupted", None, attempts, seconds, "interrupted")
        if result.error:
            return _Done(task.id, "failed", None, attempts, seconds, f"could not start: {result.error}")
        if not result.succeeded:
            self._keep_quietly(plan, task, paths.wd, fp)
            reason = (f"timed out after {task.timeout_seconds}s (task.timeout) and was killed" if result.timed_out
                      else None)
            return _Done(task.id, "failed", result.exit_code, attempts, seconds, reason)
        try:
            outputs = self._keep(plan, task, paths.wd, True, fp)
        except (_MissingOutput, BatchspecError) as exc:
            return _Done(task.id, "failed", result.exit_code, attempts, seconds, str(exc))
        first = self.store(plan, stage.name) if stage.consumed else plan.download_dir
        return _Done(task.id, "succeeded", result.exit_code, attempts, seconds, outputs=outputs,
                     output_bytes=file_bytes(first / o for o in outputs), fingerprint=fp)

    def _launcher(self, plan: Plan, task: PlannedTask, argv: list[str], paths: TaskPaths, env: dict[str, str],
                  watch: Watch) -> Callable[[], TaskProcess | ContainerProcess]:
        """What starts an attempt of ``task``: a process, or a container of its stage's image
        (the task directory and the shared directory at the same paths, inputs read-only, only
        the Batch variables and the spec's own settings inside)."""
        container = plan.stage_of(task).container
        if container is None:
            return lambda: TaskProcess(argv, paths, env, watch)
        from ...containers import ContainerProcess, Mount, container_environment

        assert self.runtime is not None
        runtime = self.runtime
        mounts = [Mount(paths.root), Mount(self.run_dir(plan) / "shared")]
        mounts += [Mount(paths.wd / item.path, read_only=True) for item in (*plan.files, *task.inputs)]
        inside = container_environment(env, [*(k for k, _ in plan.env), *(k for k, _ in task.env)])
        workdir = str(paths.wd) if container.workdir == "task" else None
        return lambda: ContainerProcess(runtime, image=container.image, argv=argv, paths=paths, env=inside,
                                        mounts=mounts, workdir=workdir, run_options=container.options, watch=watch)

    def _keep(self, plan: Plan, task: PlannedTask, wd: Path, succeeded: bool, fp: str, *,
              adopting: bool = False) -> list[str]:
        """Keep the task's outputs for this outcome: for later stages in the stage's store, for
        the user in the download directory (published ones, and failure outputs)."""
        assert self.ledger is not None
        stage = plan.stage_of(task)
        store = self.store(plan, stage.name) if stage.consumed and succeeded else None
        publish = stage.publish or not succeeded
        return _collect_outputs(self.ledger, wd, task.outputs, fp, succeeded=succeeded, store=store, publish=publish,
                                adopting=adopting)

    def _keep_quietly(self, plan: Plan, task: PlannedTask, wd: Path, fp: str) -> None:
        """A failed task's failure outputs, as far as they can be kept (the task has failed anyway)."""
        if any(o.applies(False) for o in task.outputs):
            with contextlib.suppress(_MissingOutput, BatchspecError, OSError):
                self._keep(plan, task, wd, False, fp)


def _image_hint(code: str, image: str, registry: Registry | None) -> str:
    from ...containers import INVALID_REGISTRY, MISC_ERROR, NO_RUNTIME, PROGRAM_NOT_FOUND

    if code == PROGRAM_NOT_FOUND:
        return "batchspec runs task commands with /bin/bash -c: use an image that has bash"
    if code == NO_RUNTIME:
        return ("start the runtime's daemon (e.g. systemctl start docker), or use podman: "
                "BATCHSPEC_CONTAINER_RUNTIME=podman")
    if code == MISC_ERROR:
        return ("the runtime could not start a container; where a sandbox refuses its defaults, set options for "
                "every container, e.g. BATCHSPEC_CONTAINER_OPTIONS='--runtime runc --ulimit nofile=1024:1024 "
                "--ulimit nproc=1024:1024'")
    if registry is not None and registry.identity is not None:
        return (f"registry {registry.server} logs in with a managed identity, which only Azure nodes have: log in here "
                f"first (az acr login --name {registry.server.split('.')[0]}, or podman login / docker login)")
    if code == INVALID_REGISTRY or registry is not None:
        return "check the registry login (pool.container.registries) or log in with `podman login` / `docker login`"
    return f"build it here, or pull it first (podman pull {image}); a private registry needs pool.container.registries"


def _upstream(task: PlannedTask) -> list[str]:
    """The tasks whose outputs ``task`` reads, or that it waits for: its result depends on theirs."""
    return sorted({*task.depends_on, *(f.task for f in task.inputs if f.task)})


def _local_content(plan: Plan) -> Callable[[InputFile], str]:
    """An input's content identity on this machine: a local file's size and modification time
    (cached: a matrix reads the same file many times); a URL or storage folder by its address;
    an earlier stage's output by nothing here (the fingerprint of the task that wrote it stands
    for it)."""
    seen: dict[str, str] = {}

    def content(item: InputFile) -> str:
        if item.kind != "local":
            return "" if item.kind == "output" else f"{item.kind}:{item.container or ''}/{item.source}"
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


def _stage(source: Path, dest: Path, mode: str | None = None) -> None:
    """Put a file into a working directory: a copy (a reflink where the filesystem shares
    blocks), so a task that writes to its input never changes the user's file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    copy_file(source, dest)
    if mode is not None:
        os.chmod(dest, int(mode, 8))


class _MissingOutput(Exception):
    pass


def _collect_outputs(ledger: Ledger, wd: Path, rules: tuple[Output, ...], fingerprint: str, *, succeeded: bool = True,
                     store: Path | None = None, publish: bool = True, adopting: bool = False) -> list[str]:
    """Keep the files the rules keep for this outcome under their destination names: copied to
    ``store`` (for later stages) and placed in the download directory when ``publish``; returns
    the names.

    Symbolic links are never followed out of ``wd``: a directory reached through one is not
    searched, and a matching link to a file outside ``wd`` fails the task. A file with other
    hard links is copied, not moved. ``adopting`` (what a killed run's attempt left): outputs
    it placed already, still unchanged, count as found.
    """
    placed = ledger.produced_names(fingerprint) if adopting and publish else []
    kept: dict[str, str] = {}  # wd name -> destination; ordered, and a file two rules match is kept once
    for rule in rules:
        if not rule.applies(succeeded):
            continue
        found = sorted(glob_files(wd, rule.pattern, follow_links=False))
        if placed:  # by the killed run: named by their destination
            rx = compile_glob(normalize(rule.destination_pattern))
            found += [name for name in placed if rx.match(name) and name not in kept.values() and name not in found]
        if not found and succeeded and (rule.when == "success" or rule.name is not None):
            raise _MissingOutput(f"output '{rule.name or rule.pattern}' was not produced (no file in wd/ matches it)")
        for name in found:
            kept.setdefault(name, name if name in placed else rule.target(name))
    real_wd = wd.resolve()
    for name, target in kept.items():
        source = wd / name
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            continue  # placed by the killed run (it is in ``placed``)
        if stat.S_ISLNK(st.st_mode):
            resolved = source.resolve()
            if not resolved.is_relative_to(real_wd):
                raise _MissingOutput(f"output '{name}' is a symbolic link to {resolved}, outside the task's "
                                     "working directory: batchspec does not follow it")
            if not resolved.is_file():
                raise _MissingOutput(f"output '{name}' is a symbolic link to something that is not a file")
            source, shared = resolved, True
        elif not stat.S_ISREG(st.st_mode):
            raise _MissingOutput(f"output '{name}' is not a regular file")
        else:  # a file with other hard links is shared with something the task did not create
            shared = st.st_nlink > 1
        if store is not None:
            kept_copy = store / target
            kept_copy.parent.mkdir(parents=True, exist_ok=True)
            copy_file(source, kept_copy)
        if publish:
            ledger.place(source, target, fingerprint, copy=shared)
    return list(kept.values())
