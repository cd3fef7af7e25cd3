"""The Azure backend: the tutorial's whole workflow, for any spec.

Stages: create or reuse the pool (prepare); upload inputs and local files with MD5 skipping and
issue SAS URLs (stage inputs); create or find the job and add only the missing tasks of each
wave, a task that waits for others through Batch task dependencies (submit); poll task counts
with backoff, surfacing node problems and failed tasks' stderr (watch); download outputs
(collect); delete what the spec's cleanup says (clean up). Built on azure-batch 15.x
(``BatchClient``), azure-storage-blob 12.x and azure-identity.

Files reach tasks as Batch resource files: a blob or URL each (``httpUrl``), a storage folder as
``storageContainerUrl`` + ``blobPrefix`` (or ``autoStorageContainerName`` when the storage
account is the Batch account's auto-storage account). The outputs of a stage that later stages
read also go to that stage's work container, which those stages read directly (a merge reads
the whole container as one resource file): nothing is downloaded and uploaded again between
stages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from azure.batch import BatchClient, models
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerSasPermissions

from ...errors import EXIT_FAILED, BackendError
from ...events import Event, Progress, TaskFinished
from ...observe.records import RunRecord
from ...plan import BlobLister, InputFile, OutputIndex, Plan, PlannedTask, StagePlan
from ...plan.deps import Dependencies, Gate, express
from ...redact import redact
from ...runner import last_lines, node_command_line
from ...spec.values import format_duration
from ..base import Backend, LogChunk, LogRef, RunContext, RunOptions, Wave
from .config import AzureConfig, batch_client_args
from .errors import error_code, resend, translate_errors
from .records import job_record, node_log, task_log, with_file_sizes
from .storage import Storage, blob_name_for, container_base, work_container
from .tasks import (
    RECORDS_PREFIX,
    Submitter,
    Urls,
    failed_logs,
    gate_options,
    resource_file,
    success_marker,
    task_options,
)

POLL_MIN, POLL_MAX, POLL_GROWTH = 1.0, 10.0, 1.5
#: SAS lifetime bounds: a user delegation key lives at most 7 days.
SAS_MARGIN = timedelta(hours=2)
SAS_MAX = timedelta(days=7)
STDERR_TAIL = 20




#: What is added to a job: a task, a task with its dependencies, or a gate.
_Item = PlannedTask | tuple[PlannedTask, Dependencies] | Gate


@dataclass
class _WaveWatch:
    """What watching a wave needs: its tasks (and gates) among the job's, and what waits for what."""

    ids: set[str]  # the wave's tasks (not the gates)
    gates: set[str]
    gated: int  # how many of the wave's tasks wait for gates
    others: tuple[int, int, int]  # completed, succeeded, failed tasks in the job that are not the wave's
    dependents: dict[str, list[str]] = field(default_factory=dict)  # task or gate -> what waits for it


class AzureBackend(Backend):
    name = "azure"

    def __init__(self, options: RunOptions, *, client: BatchClient | None = None, storage: Storage | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.options = options
        self.config = AzureConfig.from_env(options.env)
        self.client = client or BatchClient(**batch_client_args(self.config))
        self._storage = storage
        self.sleep = sleep
        self.urls: Urls | None = None
        self.job_ready = False  # the job exists (created or found by this run)
        self.job_was_complete = False
        self.uploaded: dict[str, str] = {}  # local path -> its blob name in the input container
        self._sas: dict[tuple[str, str], str] = {}  # (container, permissions) -> SAS token
        self._expiry: datetime | None = None
        self.wave: _WaveWatch | None = None

    # --- helpers -------------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = Storage(self.config)
        return self._storage

    def blob_lister(self) -> BlobLister | None:
        def lister(container: str, prefix: str) -> list[str]:
            with translate_errors(self.config, "listing input blobs"):
                return self.storage.list_names(container, prefix)

        return lister

    @staticmethod
    def input_container(plan: Plan) -> str:
        return f"{container_base(plan.name)}-input"

    def _errors(self, doing: str) -> Any:
        return translate_errors(self.config, doing)

    # --- prepare: the pool ---------------------------------------------------------------------

    def prepare(self, plan: Plan, ctx: RunContext) -> None:
        ctx.info(f"Azure Batch account {self.config.batch_account} at {self.config.batch_endpoint} "
                 f"({self.config.batch_auth})")
        pool = plan.pool
        if pool.start_task is not None and pool.start_task.files:
            self.stage_inputs(plan, ctx)  # the start task's files need their URLs before the pool exists
        with self._errors(f"creating pool '{pool.id}'"):
            try:
                options = pool_options(plan, self._urls(plan))
                resend(lambda: self.client.create_pool(options))
                size = (f"autoscale ({format_duration(pool.autoscale.interval_seconds)})" if pool.autoscale
                        else f"{pool.dedicated} dedicated + {pool.spot} spot")
                ctx.info(f"creating pool {pool.id}: {pool.vm_size}, {size} node(s)")
            except ResourceExistsError:
                self._reuse_pool(plan, ctx)

    def _reuse_pool(self, plan: Plan, ctx: RunContext) -> None:
        existing = self.client.get_pool(plan.pool.id)
        if _text(existing.state) == "deleting":
            raise BackendError(f"pool '{plan.pool.id}' is being deleted", "wait until it is gone, then run again")
        ctx.info(f"reusing existing pool {plan.pool.id} ({existing.current_dedicated_nodes or 0} dedicated + "
                 f"{existing.current_low_priority_nodes or 0} spot nodes now)")
        if (existing.vm_size or "").lower() != plan.pool.vm_size.lower():
            ctx.warn(f"pool {plan.pool.id} has VM size {existing.vm_size}, the spec asks for {plan.pool.vm_size}")
        vm = existing.virtual_machine_configuration
        image = vm.image_reference if vm else None
        wanted = plan.pool.image
        if image is not None and (
            (image.publisher or "").lower(), (image.offer or "").lower(), (image.sku or "").lower()
        ) != (wanted.publisher.lower(), wanted.offer.lower(), wanted.sku.lower()):
            ctx.warn(f"pool {plan.pool.id} runs image {image.publisher}/{image.offer}/{image.sku}, the spec asks for "
                     f"{wanted.publisher}/{wanted.offer}/{wanted.sku}")

    # --- stage inputs --------------------------------------------------------------------------

    def stage_inputs(self, plan: Plan, ctx: RunContext) -> None:
        if self.urls is not None:
            return  # done already, for the start task's files
        with self._errors("staging inputs in Azure Storage"):
            self.storage.ensure_container(plan.outputs.container)
            for stage in plan.stages:
                if stage.consumed:
                    self.storage.ensure_container(work_container(plan, stage.name))
            self._expiry = datetime.now(timezone.utc) + self._sas_lifetime(plan, ctx)
            self._upload(plan, plan.local_inputs(), ctx, "inputs")
        self.urls = self._urls(plan)

    def _upload(self, plan: Plan, sources: Sequence[str], ctx: RunContext, what: str) -> None:
        """Upload local files not uploaded yet by this run (blobs whose MD5 matches are skipped)."""
        new = {s: blob_name_for(s) for s in sources if s not in self.uploaded}
        if not new:
            return
        container = self.input_container(plan)
        self.storage.ensure_container(container)
        started = time.monotonic()
        report = self.storage.upload(container, [(plan.resolve(s), name) for s, name in new.items()])
        self.uploaded.update(new)
        ctx.info(f"{what}: uploaded {report.transferred} file(s), {report.bytes / 1e6:.1f} MB in "
                 f"{format_duration(time.monotonic() - started)}; {report.skipped} unchanged, not uploaded")

    def _sas_for(self, container: str, permission: ContainerSasPermissions) -> str:
        key = (container, str(permission))
        if key not in self._sas:
            if self._expiry is None:
                self._expiry = datetime.now(timezone.utc) + SAS_MAX
            self._sas[key] = self.storage.container_sas(container, permission, self._expiry)
        return self._sas[key]

    def _urls(self, plan: Plan) -> Urls:
        """URLs with SAS tokens, issued for each container when first needed: tasks may read
        inputs; create and write outputs (never read, list or delete them); read, list and
        write their stage's work container."""
        read, listing = ContainerSasPermissions(read=True), ContainerSasPermissions(read=True, list=True)
        write = ContainerSasPermissions(create=True, write=True)
        work = ContainerSasPermissions(read=True, list=True, create=True, write=True)
        urls: dict[str, str] = {}

        def url(container: str) -> str:
            if container not in urls:
                urls[container] = self.storage.container_url(container)
            return urls[container]

        def input_url(item: InputFile) -> str:
            if item.kind == "local":
                where, name = self.input_container(plan), self.uploaded[item.source]
            elif item.kind == "output":
                assert item.stage is not None
                where, name = work_container(plan, item.stage), item.source
            else:
                assert item.container is not None
                where, name = item.container, item.source
            return f"{url(where)}/{quote(name, safe='~/')}?{self._sas_for(where, read)}"

        def stage_url(stage: str) -> str:
            name = work_container(plan, stage)
            return _with_sas(url(name), self._sas_for(name, work))

        return Urls(
            input_blob=input_url,
            container=lambda name: _with_sas(url(name), self._sas_for(name, listing)),
            output_container=_with_sas(url(plan.outputs.container), self._sas_for(plan.outputs.container, write)),
            stage_container=stage_url,
            auto_storage=self.config.auto_storage,
        )

    def _sas_lifetime(self, plan: Plan, ctx: RunContext) -> timedelta:
        """Long enough for the job's longest possible run: its wall-clock limit, or every task,
        retried to the limit and timing out each time, one after another on the pool's slots,
        plus a margin."""
        if plan.timeout_seconds is not None:
            longest = timedelta(seconds=plan.timeout_seconds) + SAS_MARGIN
        elif not plan.complete or any(t.timeout_seconds is None for t in plan.tasks):
            ctx.info("task.timeout is not set on every stage: SAS URLs for inputs and outputs expire in 7 days")
            return SAS_MAX
        else:
            waves = math.ceil(len(plan.tasks) / plan.pool.slots)
            worst = max(((t.timeout_seconds or 0) * (t.retries + 1) for t in plan.tasks), default=0)
            longest = timedelta(seconds=waves * worst) + SAS_MARGIN
        if longest > SAS_MAX:
            ctx.warn(f"the job could run for up to {format_duration(longest.total_seconds())}; SAS URLs are capped "
                     "at 7 days, so tasks starting after that cannot read inputs or write outputs")
            return SAS_MAX
        return longest

    # --- submit --------------------------------------------------------------------------------

    def completed(self, plan: Plan, tasks: Sequence[PlannedTask], ctx: RunContext) -> set[str]:
        """Tasks an earlier run of this job finished: their success record and every output
        they declare by name are in storage (the job itself may be gone)."""
        if self.options.force:
            return set()
        with self._errors(f"reading container '{plan.outputs.container}'"):
            blobs = self.storage.list_blobs(plan.outputs.container)
            stages = {plan.stage_of(t).name for t in tasks}
            work = {s.name: self.storage.list_blobs(work_container(plan, s.name)) for s in plan.stages
                    if s.consumed and s.name in stages}
        done = set()
        for task in tasks:
            if success_marker(plan.job_id, task.id) not in blobs:
                continue
            stage = plan.stage_of(task)
            names = [o.destination for o in task.outputs if o.applies(True)]
            places = ([blobs] if stage.publish else []) + ([work[stage.name]] if stage.consumed else [])
            if all(name is None or name in place for name in names for place in places):
                done.add(task.id)
        return done

    def submit(self, plan: Plan, wave: Wave, ctx: RunContext) -> int:
        assert self.urls is not None, "stage_inputs runs before submit"
        self.wave = None
        if not wave.tasks:
            ctx.info(f"all {wave.total} task(s) succeeded in an earlier run and their outputs are in storage: "
                     "nothing to add (--force runs them again)")
            if wave.final and self.job_ready and not self.job_was_complete:  # an earlier wave made the job
                with self._errors(f"updating job '{plan.job_id}'"):
                    self._complete_when_done(plan)
            return 0
        with self._errors("staging the wave's files in Azure Storage"):
            self._upload(plan, sorted({f.source for t in wave.tasks for f in t.inputs if f.kind == "local"}),
                         ctx, "files")
        with self._errors(f"creating job '{plan.job_id}'"):
            in_job = self._job_tasks(plan, ctx)
        ids = {t.id for t in wave.tasks}
        rerun = [t for t in wave.tasks if in_job.get(t.id, (None,))[0] == "completed"]
        if self.job_was_complete and (rerun or any(t.id not in in_job for t in wave.tasks)):
            # A completed job takes no tasks. What finished is kept in storage, not in the job,
            # so the job is made anew with only the tasks that run now.
            ctx.info(f"job {plan.job_id} has completed but {len(wave.tasks)} of its tasks must run (again): "
                     "deleting it and creating it anew (finished tasks stay done)")
            with self._errors(f"making job '{plan.job_id}' anew"):
                self.client.begin_delete_job(plan.job_id)
                self._wait_until_deleted(plan.job_id, ctx)
                self._create_job(plan, ctx)
            in_job, rerun, self.job_was_complete = {}, [], False
        if rerun:
            # Finished in an earlier run, but to run again (it failed, or what it reads changed).
            with self._errors(f"removing finished tasks from job '{plan.job_id}' to run them again"):
                for task in rerun:
                    self.client.delete_task(plan.job_id, task.id)
                    del in_job[task.id]
        missing = [t for t in wave.tasks if t.id not in in_job]
        with self._errors("removing outputs an earlier run of these tasks left for later stages"):
            self._clear_stale(plan, missing)
        levels, watch = self._dependencies(missing, ids, in_job)
        submitter = Submitter(self.client, plan.job_id)
        started = time.monotonic()
        with self._errors(f"adding tasks to job '{plan.job_id}'"):
            for level in levels:  # what a task waits for is added before it
                submitter.submit([self._options(plan, item) for item in level])
            if wave.final and not self.job_was_complete:
                self._complete_when_done(plan)
        others = [state for tid, state in in_job.items() if tid not in ids and tid not in watch.gates]
        watch.others = (sum(1 for s in others if s[0] == "completed"), sum(1 for s in others if s[1] == "success"),
                        sum(1 for s in others if s[1] == "failure"))
        self.wave = watch
        kept = len(in_job) - len(others) - sum(1 for g in watch.gates if g in in_job)
        ctx.info(f"added {submitter.added} task(s) in {submitter.requests} request(s) "
                 f"({format_duration(time.monotonic() - started)}); {kept} already in the job, "
                 f"{len(wave.kept)} done in an earlier run")
        return submitter.added

    def _complete_when_done(self, plan: Plan) -> None:
        """The job completes once its tasks have: set last, so it cannot complete before every
        task (of every stage) is in it."""
        terminate = models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob")
        resend(lambda: self.client.update_job(plan.job_id, terminate))

    def _options(self, plan: Plan, item: _Item) -> models.BatchTaskCreateOptions:
        assert self.urls is not None
        if isinstance(item, PlannedTask):
            return task_options(plan, item, self.urls)
        if isinstance(item, tuple):
            return task_options(plan, item[0], self.urls, item[1])
        return gate_options(item)

    def _dependencies(self, missing: Sequence[PlannedTask], ids: set[str],
                      in_job: Mapping[str, tuple[str, str | None]]) -> tuple[list[list[_Item]], _WaveWatch]:
        """The tasks to add in levels (each waits only for tasks of earlier levels or already
        in the job), with the gates long dependency lists need; and what waits for what."""
        watch = _WaveWatch(ids=set(ids), gates=set(), gated=0, others=(0, 0, 0))
        level_of: dict[str, int] = {}
        levels: list[list[_Item]] = []

        def place(item: _Item, level: int) -> None:
            while len(levels) <= level:
                levels.append([])
            levels[level].append(item)

        for task in missing:
            deps = [d for d in task.depends_on if d in ids]
            for dep in deps:
                watch.dependents.setdefault(dep, []).append(task.id)
            if not deps:
                level_of[task.id] = 0
                place(task, 0)
                continue
            express_deps = express(task.id, deps)
            gate_level = max(level_of.get(d, 0) for d in deps) + 1
            for gate in express_deps.gates:
                within = max((level_of.get(d, 0) for d in gate.task_ids), default=0) + 1
                level_of[gate.id] = within
                watch.gates.add(gate.id)
                for dep in gate.task_ids:
                    watch.dependents.setdefault(dep, []).append(gate.id)
                if gate.id not in in_job:
                    place(gate, within)
                gate_level = max(gate_level, within + 1)
            if express_deps.gates:
                watch.gated += 1
                for gate_id in express_deps.task_ids:
                    watch.dependents.setdefault(gate_id, []).append(task.id)
            level_of[task.id] = gate_level
            place((task, express_deps), gate_level)
        return [level for level in levels if level], watch

    def _clear_stale(self, plan: Plan, tasks: Sequence[PlannedTask]) -> None:
        """Delete what earlier runs of these tasks left in their stage's work container, so a
        later stage fans out over this run's files only."""
        by_stage: dict[str, list[PlannedTask]] = {}
        for task in tasks:
            stage = plan.stage_of(task)
            if stage.consumed:
                by_stage.setdefault(stage.name, []).append(task)
        for name, stage_tasks in by_stage.items():
            container = work_container(plan, name)
            index = OutputIndex(stage_tasks, succeeded=True)
            stale = [name for name in self.storage.list_blobs(container) if name in index]
            self.storage.delete_blobs(container, stale)

    def _job_tasks(self, plan: Plan, ctx: RunContext) -> dict[str, tuple[str, str | None]]:
        """The job's tasks (state, result) by id; the job is created on first use."""
        if not self.job_ready:
            self.job_ready = True
            if self._create_job(plan, ctx):
                return {}
        tasks = self.client.list_tasks(plan.job_id, select=["id", "state", "executionInfo"])
        return {t.id: (_text(t.state), _text(t.execution_info.result) if t.execution_info and
                       t.execution_info.result else None) for t in tasks}

    def _create_job(self, plan: Plan, ctx: RunContext) -> bool:
        """Create the plan's job (True), or find it from an earlier run (False)."""
        job = models.BatchJobCreateOptions(
            id=plan.job_id,
            pool_info=models.BatchPoolInfo(pool_id=plan.pool.id),
            uses_task_dependencies=len(plan.stages) > 1 or None,
            common_environment_settings=[models.EnvironmentSetting(name=k, value=v) for k, v in plan.env] or None,
            constraints=(models.BatchJobConstraints(max_wall_clock_time=timedelta(seconds=plan.timeout_seconds))
                         if plan.timeout_seconds else None),
        )
        try:
            resend(lambda: self.client.create_job(job))
            ctx.info(f"created job {plan.job_id}")
            return True
        except ResourceExistsError:
            pass
        current = self.client.get_job(plan.job_id)
        if self.options.force or current.state == "deleting":
            if current.state != "deleting":
                ctx.info(f"--force: deleting job {plan.job_id} from an earlier run")
                self.client.begin_delete_job(plan.job_id)
            self._wait_until_deleted(plan.job_id, ctx)
            resend(lambda: self.client.create_job(job))
            ctx.info(f"created job {plan.job_id}")
            return True
        state = _text(current.state)
        if state in ("disabled", "disabling"):
            raise BackendError(f"job '{plan.job_id}' is {state}", "enable it, or rerun with --force")
        self.job_was_complete = state in ("completed", "terminating")
        ctx.info(f"found job {plan.job_id} from an earlier run ({state})")
        return False

    def _wait_until_deleted(self, job_id: str, ctx: RunContext, limit: float = 600.0) -> None:
        ctx.info(f"waiting for job {job_id} to finish deleting")
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                self.client.get_job(job_id)
            except ResourceNotFoundError:
                return
            self.sleep(POLL_MIN)
        raise BackendError(f"job '{job_id}' is still being deleted after {format_duration(limit)}",
                           "try again later", exit_code=EXIT_FAILED)

    # --- watch ---------------------------------------------------------------------------------

    def watch(self, plan: Plan, wave: Wave, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        with self._errors(f"following job '{plan.job_id}'"):
            yield from self._watch(plan, wave, ctx)

    def _watch(self, plan: Plan, wave: Wave, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        total, skipped = wave.total, len(wave.kept)
        watch = self.wave
        if watch is None or not wave.tasks:
            yield Progress(total, total, 0, 0, skipped)
            return
        size = len(watch.ids)
        done_before, ok_before, failed_before = watch.others
        delay = POLL_MIN
        reported: set[str] = set()
        blocked: set[str] = set()
        last: Progress | None = None
        polls = 0
        warned: set[str] = set()
        while True:
            polls += 1
            counts = self.client.get_job_task_counts(plan.job_id).task_counts
            completed = counts.completed - done_before
            # Gates finish after every task they wait for and before what waits for them, so
            # completions beyond the tasks that wait for nothing gated are theirs first.
            gates_done = min(len(watch.gates), max(0, completed - (size - watch.gated)))
            failed = counts.failed - failed_before
            detail = ""
            if failed > len(reported):
                for event in self._failed_tasks(plan, reported, watch.ids):
                    yield event
                    for task_id in self._blocked_by(event.task_id, watch, blocked):
                        yield TaskFinished(task_id, "blocked", reason=f"not run: task {event.task_id} failed")
            elif counts.running == 0 and completed - gates_done + len(blocked) < size:
                if polls % 3 == 0 and plan.timeout_seconds is not None:
                    stopped = self._job_ended(plan, watch, reported, blocked)
                    if stopped is not None:
                        yield from stopped
                        yield Progress(total, total - len(reported) - len(blocked), len(reported), 0, skipped,
                                       blocked=len(blocked))
                        return
                detail = self._pool_status(plan, ctx, polls, warned)
            succeeded = counts.succeeded - ok_before - gates_done + skipped
            progress = Progress(total, max(skipped, min(succeeded, total)), len(reported), counts.running, skipped,
                                detail, len(blocked))
            if progress != last:
                yield progress
            # Poll quickly again only when tasks moved (the waiting detail alternates between pool and nodes).
            if last is None or (progress.succeeded, progress.failed, progress.running) != (
                    last.succeeded, last.failed, last.running):
                delay = POLL_MIN
            else:
                delay = min(POLL_MAX, delay * POLL_GROWTH)
            last = progress
            if completed - gates_done + len(blocked) >= size:
                final = Progress(total, total - len(reported) - len(blocked), len(reported), 0, skipped,
                                 blocked=len(blocked))
                if final != last:
                    yield final
                return
            self.sleep(delay)

    def _blocked_by(self, failed: str, watch: _WaveWatch, blocked: set[str]) -> list[str]:
        """The wave's tasks that can no longer run because ``failed`` failed (through gates too)."""
        found: list[str] = []
        todo = [failed]
        while todo:
            for waiting in watch.dependents.get(todo.pop(), ()):
                if waiting in blocked or waiting in found:
                    continue
                todo.append(waiting)
                if waiting in watch.ids:
                    found.append(waiting)
        blocked.update(found)
        return found

    def _job_ended(self, plan: Plan, watch: _WaveWatch, reported: set[str],
                   blocked: set[str]) -> list[TaskFinished] | None:
        """When the job was terminated (its wall-clock limit passed): its unfinished tasks as failed."""
        job = self.client.get_job(plan.job_id)
        if _text(job.state) not in ("completed", "terminating"):
            return None
        reason = _text(job.execution_info.termination_reason) if job.execution_info else "terminated"
        why = ("the job's wall-clock limit (job.timeout) passed" if reason == "MaxWallClockTimeExpiry"
               else f"the job was terminated ({reason})")
        events: list[TaskFinished] = []
        for task in self.client.list_tasks(plan.job_id, select=["id", "state", "executionInfo"]):
            if task.id not in watch.ids or task.id in reported or task.id in blocked:
                continue
            info = task.execution_info
            if _text(task.state) == "completed" and info is not None and _text(info.result) == "success":
                continue
            reported.add(task.id)
            events.append(TaskFinished(task.id, "failed", info.exit_code if info else None,
                                       reason=f"not finished: {why}"))
        return events

    def _failed_tasks(self, plan: Plan, reported: set[str], wave: set[str]) -> Iterator[TaskFinished]:
        """Report the wave's tasks that failed since the last poll, with the tail of their stderr."""
        failed = self.client.list_tasks(
            plan.job_id, filter="executionInfo/result eq 'failure'", select=["id", "executionInfo"]
        )
        for task in failed:
            if task.id in reported or task.id not in wave:
                continue
            reported.add(task.id)
            info = task.execution_info
            failure = info.failure_info if info else None
            reason = redact(f"{failure.code}: {failure.message}") if failure and failure.code else None
            yield TaskFinished(
                task.id, "failed", info.exit_code if info else None, None,
                (info.retry_count or 0) + 1 if info else 1, reason, self._tail(plan.job_id, task.id),
                logs=f"container {plan.outputs.container}, {failed_logs(plan.job_id, task.id)}/",
            )

    def stage_outputs(self, plan: Plan, stage: StagePlan, ctx: RunContext) -> list[str]:
        container = work_container(plan, stage.name)
        with self._errors(f"listing the outputs of stage {stage.name} in container '{container}'"):
            return sorted(self.storage.list_blobs(container))

    def _tail(self, job_id: str, task_id: str) -> tuple[str, ...]:
        return _log_tail(lambda: self.client.download_task_file(job_id, task_id, "stderr.txt"))

    def _pool_status(self, plan: Plan, ctx: RunContext, polls: int, warned: set[str]) -> str:
        """While no task runs: alternate between the pool (resize errors) and its nodes (start
        task failures), one request per poll. Raises when no node can ever run a task."""
        pool_id = plan.pool.id
        if polls % 2:
            pool = self.client.get_pool(pool_id)
            for error in pool.resize_errors or []:
                key = f"resize:{error.code}"
                if key not in warned:
                    warned.add(key)
                    ctx.warn(f"pool {pool_id} could not get all its nodes: {error.code}: {redact(error.message or '')}")
            current = (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)
            target = (pool.target_dedicated_nodes or 0) + (pool.target_low_priority_nodes or 0)
            if pool.allocation_state == "steady" and current == 0 and pool.resize_errors:
                first = pool.resize_errors[0]
                raise BackendError(f"pool {pool_id} has no nodes: {first.code}: {redact(first.message or '')}",
                                   "check the account's core quota for this VM size, or choose another size or "
                                   "region", exit_code=EXIT_FAILED)
            return f"pool {pool_id}: {_text(pool.allocation_state)}, {current}/{target} nodes"
        nodes = list(self.client.list_nodes(pool_id))
        states: dict[str, int] = {}
        for node in nodes:
            states[_text(node.state)] = states.get(_text(node.state), 0) + 1
            if node.state == "starttaskfailed" and f"node:{node.id}" not in warned:
                warned.add(f"node:{node.id}")
                ctx.warn(self._start_task_failure(pool_id, node))
        broken = states.get("starttaskfailed", 0) + states.get("unusable", 0)
        if nodes and broken == len(nodes):
            raise BackendError(f"the start task failed on every node of pool {pool_id}; no task can run",
                               "fix pool.start_task (its stderr is shown above), then delete the pool "
                               "(batchspec cleanup) and run again", exit_code=EXIT_FAILED)
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no nodes yet"
        return f"waiting for nodes: {summary}"

    def _start_task_failure(self, pool_id: str, node: models.BatchNode) -> str:
        info = node.start_task_info
        code = info.exit_code if info else None
        tail = _log_tail(lambda: self.client.download_node_file(pool_id, node.id, "startup/stderr.txt"))
        lines = [f"start task failed on node {node.id} (exit code {code})"]
        lines += [f"  | {line}" for line in tail]
        return "\n".join(lines)

    # --- collect and clean up ------------------------------------------------------------------

    def collect(self, plan: Plan, ctx: RunContext) -> None:
        with self._errors(f"downloading outputs from container '{plan.outputs.container}'"):
            blobs = self.storage.list_blobs(plan.outputs.container)
            index = OutputIndex(plan.tasks, keep=lambda t, o: plan.stage_of(t).publish or o.when != "success")
            wanted = [b for b in blobs.values() if not b.name.startswith(RECORDS_PREFIX + "/") and b.name in index]
            started = time.monotonic()
            report = self.storage.download(plan.outputs.container, wanted, plan.download_dir)
        ctx.info(f"outputs: downloaded {report.transferred} file(s), {report.bytes / 1e6:.1f} MB in "
                 f"{format_duration(time.monotonic() - started)} to {plan.download_dir}; "
                 f"{report.skipped} unchanged")

    def cleanup(self, plan: Plan, ctx: RunContext, *, succeeded: bool) -> None:
        policy = plan.cleanup
        with self._errors("cleaning up"):
            if policy.job == "delete" and succeeded:
                self._delete_job(plan, ctx)
                self._delete_work(plan, ctx)
            if policy.pool == "delete":
                self._delete_pool(plan, ctx)
            else:
                ctx.info(f"pool {plan.pool.id} is kept (cleanup.pool: keep): it costs money while it has nodes; "
                         "`batchspec cleanup SPEC` deletes it")
            if policy.inputs == "delete" and self.storage.delete_container(self.input_container(plan)):
                ctx.info(f"deleted input container {self.input_container(plan)}")

    def remove(self, plan: Plan, ctx: RunContext) -> None:
        with self._errors("deleting the job, pool and containers"):
            self._delete_job(plan, ctx)
            self._delete_pool(plan, ctx)
            for container in (self.input_container(plan), plan.outputs.container):
                if self.storage.delete_container(container):
                    ctx.info(f"deleted container {container}")
            self._delete_work(plan, ctx)

    def _delete_work(self, plan: Plan, ctx: RunContext) -> None:
        for stage in plan.stages:
            if stage.consumed and self.storage.delete_container(work_container(plan, stage.name)):
                ctx.info(f"deleted container {work_container(plan, stage.name)} (outputs of stage {stage.name})")

    def _delete_job(self, plan: Plan, ctx: RunContext) -> None:
        try:
            self.client.begin_delete_job(plan.job_id)
            ctx.info(f"deleting job {plan.job_id}")
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            if exc.status_code != 409 or error_code(exc) != "JobBeingDeleted":
                raise

    def _delete_pool(self, plan: Plan, ctx: RunContext) -> None:
        try:
            self.client.begin_delete_pool(plan.pool.id)
            ctx.info(f"deleting pool {plan.pool.id}")
        except ResourceNotFoundError:
            pass

    # --- what other commands read (status, logs, report) ---------------------------------------

    def logs_location(self, plan: Plan) -> str:
        return (f"on the nodes while job {plan.job_id} exists; failed tasks' stdout and stderr also in container "
                f"{plan.outputs.container} under {RECORDS_PREFIX}/{plan.job_id}/failed/")

    def record(self, plan: Plan, ctx: RunContext, *, files: bool = False) -> RunRecord | None:
        with self._errors(f"reading job '{plan.job_id}'"):
            record = job_record(self.client, plan, self.logs_location(plan))
        if record is None or not files:
            return record
        try:
            with self._errors("listing inputs and outputs in storage"):
                return with_file_sizes(record, plan, self.storage, self.input_container(plan))
        except BackendError as exc:  # sizes are a nicety: the record stands without them
            ctx.warn(f"no input and output sizes: {exc.message}")
            return record

    def read_log(self, plan: Plan, ref: LogRef, offset: int = 0) -> LogChunk:
        with self._errors("reading a log"):
            if ref.node_id is not None:
                return node_log(self.client, plan, ref, offset)
            try:
                storage: Storage | None = self.storage
            except BackendError:  # no storage configured: logs on the nodes only
                storage = None
            return task_log(self.client, storage, plan, ref, offset)

    def stderr_tails(self, plan: Plan, task_ids: Sequence[str], lines: int) -> dict[str, tuple[str, ...]]:
        """One download per task: the record already says they finished and where."""
        def tail(task_id: str) -> tuple[str, ...]:
            return _log_tail(lambda: self.client.download_task_file(plan.job_id, task_id, "stderr.txt"), lines)

        with self._errors("reading task logs"):
            return {task_id: tail(task_id) for task_id in task_ids}

    def interrupt(self, plan: Plan, ctx: RunContext) -> None:
        ctx.warn(f"job {plan.job_id} keeps running on Azure Batch: run the same command again to follow it, "
                 "or `batchspec cleanup SPEC` to delete it")

    def close(self) -> None:
        self.client.close()


def pool_options(plan: Plan, urls: Urls) -> models.BatchPoolCreateOptions:
    pool = plan.pool
    start = None
    if pool.start_task is not None:
        st = pool.start_task
        start = models.BatchStartTask(
            command_line=node_command_line(st.command),
            resource_files=[resource_file(f, urls) for f in st.files] or None,
            user_identity=models.UserIdentity(auto_user=models.AutoUserSpecification(
                scope="pool", elevation_level="admin" if st.elevated else "nonadmin")),
            wait_for_success=st.wait_for_success,
            max_task_retry_count=st.retries,
            environment_settings=[models.EnvironmentSetting(name=k, value=v) for k, v in st.env.items()] or None,
        )
    autoscale = pool.autoscale
    return models.BatchPoolCreateOptions(
        id=pool.id,
        vm_size=pool.vm_size,
        virtual_machine_configuration=models.VirtualMachineConfiguration(
            image_reference=models.BatchVmImageReference(
                publisher=pool.image.publisher, offer=pool.image.offer, sku=pool.image.sku, version=pool.image.version
            ),
            node_agent_sku_id=pool.node_agent_sku,
        ),
        target_dedicated_nodes=None if autoscale else pool.dedicated,
        target_low_priority_nodes=None if autoscale else pool.spot,
        enable_auto_scale=bool(autoscale),
        auto_scale_formula=autoscale.formula if autoscale else None,
        auto_scale_evaluation_interval=timedelta(seconds=autoscale.interval_seconds) if autoscale else None,
        task_slots_per_node=pool.task_slots_per_node,
        start_task=start,
    )


def _log_tail(download: Callable[[], Iterable[bytes]], lines: int = STDERR_TAIL) -> tuple[str, ...]:
    """The last lines of a task or node log file on the service, secrets redacted; none if absent."""
    try:
        data = b"".join(download())
    except ResourceNotFoundError:
        return ()
    return tuple(redact(line) for line in last_lines(data, lines))


def _text(value: Any) -> str:
    """An SDK enum (or plain string) as the service's string."""
    return str(getattr(value, "value", value))


def _with_sas(url: str, sas: str) -> str:
    return f"{url}?{sas}"
