"""The Azure backend: the tutorial's whole workflow, for any spec.

Stages: reach Batch and Storage with the configured credentials before anything is created
(check); create or reuse the pool (prepare); upload inputs and local files with MD5 skipping and
issue SAS URLs (stage inputs); for each wave, create or find the job and add only the tasks not
done, where done means the same fingerprint (:mod:`batchspec.plan.fingerprint`, inputs by MD5,
with the fingerprints of the tasks a task reads from) and outputs unchanged since, a task that
waits for others through Batch task dependencies (submit); poll task counts with backoff,
surfacing node problems and failed tasks' stderr (watch); download the outputs of tasks that
succeeded as planned and record them (collect); delete what the spec's cleanup says (clean up).
Built on azure-batch 15.x (``BatchClient``), azure-storage-blob 12.x and azure-identity.

Files reach tasks as Batch resource files: a blob or URL each (``httpUrl``), a storage folder as
``storageContainerUrl`` + ``blobPrefix`` (or ``autoStorageContainerName`` when the storage
account is the Batch account's auto-storage account). The outputs of a stage that later stages
read also go to that stage's work container, which those stages read directly (a merge reads
the whole container as one resource file): nothing is downloaded and uploaded again between
stages.
"""

from __future__ import annotations

import logging
import math
import posixpath
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
from ...plan.fingerprint import Fingerprinter
from ...redact import redact
from ...runner import last_lines, node_command_line
from ...spec.values import format_duration
from ..base import Backend, LogChunk, LogRef, RunContext, RunOptions, Wave, note_reruns
from .config import SAFE_TO_REPEAT, AzureConfig, batch_client_args
from .errors import error_code, translate_errors
from .records import job_record, node_log, task_log, with_file_sizes
from .storage import BlobInfo, Storage, blob_name_for, container_base, file_md5, work_container
from .tasks import (
    RECORDS_PREFIX,
    Submitter,
    Urls,
    failed_logs,
    fingerprint_of,
    gate_options,
    record_blob,
    resource_file,
    success_marker,
    success_markers,
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
        self.skipped = 0
        self.created_pool = False  # this run created the pool (an error then deletes it unless kept)
        self.changed = 0
        self.fingerprints: dict[str, str] = {}  # of every task handed over so far, by id
        self._content: dict[tuple[str | None, str], str] = {}  # (container, source) -> content identity
        self.job_ready = False  # the job exists (created or found by this run)
        self.job_was_complete = False
        self.uploaded: dict[str, str] = {}  # local path -> its blob name in the input container
        self._sas: dict[tuple[str, str], str] = {}  # (container, permissions) -> SAS token
        self._expiry: datetime | None = None
        self.wave: _WaveWatch | None = None
        self.registries: list[models.ContainerRegistryReference] = []  # the pool's logins, from the environment

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

    # --- check: before anything costs money ---------------------------------------------------

    def check(self, plan: Plan, ctx: RunContext) -> None:
        """Every credential and setting, and both services reached, before the pool exists."""
        with self._errors("checking access to Azure Storage"):
            self.storage.check(plan.outputs.container)
            # Entra ID signs SAS URLs with a user delegation key: get it now, not after the pool.
            expiry = datetime.now(timezone.utc) + timedelta(hours=1)
            self.storage.container_sas(plan.outputs.container, ContainerSasPermissions(read=True), expiry)
        self.registries = _registry_references(plan, self.options.env)  # their variables are set
        identities = [r.identity for r in (plan.pool.container.registries if plan.pool.container else ())
                      if r.identity]
        with self._errors("checking access to Azure Batch"):
            try:
                existing = self.client.get_pool(plan.pool.id, select=None if identities else ["id"])
            except ResourceNotFoundError:  # reached, and let in
                existing = None
        if identities:
            _check_identities(plan, existing, identities)
        ctx.info(f"Azure Batch account {self.config.batch_account} and storage account {self.storage.account_name} "
                 "reached")

    # --- prepare: the pool ---------------------------------------------------------------------

    def prepare(self, plan: Plan, ctx: RunContext) -> None:
        ctx.info(f"Azure Batch account {self.config.batch_account} at {self.config.batch_endpoint} "
                 f"({self.config.batch_auth})")
        pool = plan.pool
        if pool.start_task is not None and pool.start_task.files:
            self.stage_inputs(plan, ctx)  # the start task's files need their URLs before the pool exists
        with self._errors(f"creating pool '{pool.id}'"):
            options = pool_options(plan, self._urls(plan), self.registries)
            for _ in range(2):
                try:
                    self.client.create_pool(options, **SAFE_TO_REPEAT)
                except ResourceExistsError:
                    if self._reuse_pool(plan, ctx):
                        return
                    continue  # it was being deleted, and is gone now: create it anew
                self.created_pool = True
                size = (f"autoscale ({format_duration(pool.autoscale.interval_seconds)})" if pool.autoscale
                        else f"{pool.dedicated} dedicated + {pool.spot} spot")
                ctx.info(f"creating pool {pool.id}: {pool.vm_size}, {size} node(s)")
                return

    def _reuse_pool(self, plan: Plan, ctx: RunContext, limit: float = 900.0) -> bool:
        """Take the existing pool (True), or wait for one being deleted to go (False)."""
        existing = self.client.get_pool(plan.pool.id)
        if _text(existing.state) == "deleting":  # e.g. an earlier run that stopped on an error
            ctx.info(f"pool {plan.pool.id} is being deleted; waiting for it to go, to create it again")
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                try:
                    self.client.get_pool(plan.pool.id)
                except ResourceNotFoundError:
                    return False
                self.sleep(POLL_MIN)
            raise BackendError(f"pool '{plan.pool.id}' is still being deleted after {format_duration(limit)}",
                               "try again later")
        ctx.info(f"reusing existing pool {plan.pool.id} ({existing.current_dedicated_nodes or 0} dedicated + "
                 f"{existing.current_low_priority_nodes or 0} spot nodes now)")
        if (existing.vm_size or "").lower() != plan.pool.vm_size.lower():
            ctx.warn(f"pool {plan.pool.id} has VM size {existing.vm_size}, the spec asks for {plan.pool.vm_size}")
        vm = existing.virtual_machine_configuration
        _check_containers(plan, vm, ctx)
        image = vm.image_reference if vm else None
        wanted = plan.pool.image
        if image is not None and (
            (image.publisher or "").lower(), (image.offer or "").lower(), (image.sku or "").lower()
        ) != (wanted.publisher.lower(), wanted.offer.lower(), wanted.sku.lower()):
            ctx.warn(f"pool {plan.pool.id} runs image {image.publisher}/{image.offer}/{image.sku}, the spec asks for "
                     f"{wanted.publisher}/{wanted.offer}/{wanted.sku}")
        return True

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
            for name, sources in _by_container(plan).items():
                prefix = posixpath.commonprefix(sorted(sources))
                listed = self.storage.list_blobs(name, prefix)
                self._content.update({(name, source): listed[source].content_id if source in listed else "missing"
                                      for source in sources})
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
        self._content.update({(None, source): report.md5[name].hex() for source, name in new.items()})
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
        """Tasks an earlier run of this job finished with the same fingerprint (their command,
        environment, inputs by MD5, settings, and the fingerprints of the tasks they read from)
        and whose recorded outputs are unchanged since (the job itself may be gone)."""
        fingerprint = Fingerprinter(plan, self._content_of(plan))
        for task in tasks:  # producers come before the tasks that read their outputs
            self.fingerprints[task.id] = fingerprint(task, [self.fingerprints[u] for u in _upstream(task)
                                                             if u in self.fingerprints])
        with self._errors(f"reading container '{plan.outputs.container}'"):
            record = self._record(plan)
            homes = self._homes(plan, tasks)
        done: set[str] = set()
        changed = missing = 0
        for task in tasks:
            entry = record.get(task.id)
            if self.options.force or entry is None:
                continue
            fp = self.fingerprints[task.id]
            if entry.get("fingerprint") == fp and _intact(task, entry, homes[plan.stage_of(task).name]):
                done.add(task.id)
            elif entry.get("fingerprint") != fp:
                changed += 1
            else:
                missing += 1
        self.changed = changed  # of this wave's tasks: the engine adds up the waves
        note_reruns(ctx, changed, missing)
        return done

    def _content_of(self, plan: Plan) -> Callable[[InputFile], str]:
        """An input's content identity: a local file's MD5 (as uploaded, or read now for one of
        a later stage not uploaded yet), a blob's MD5 or ETag, a URL or storage folder by its
        address; an earlier stage's output by nothing here (its producer's fingerprint is
        part of the task's)."""
        def content(item: InputFile) -> str:
            if item.kind == "output":
                return ""
            if item.kind in ("url", "blobs"):
                return f"{item.kind}:{item.container or ''}/{item.source}"
            key = (item.container, item.source)
            if key not in self._content and item.kind == "local":
                path = plan.resolve(item.source)
                self._content[key] = file_md5(path).hex() if path.is_file() else "missing"
            return self._content.get(key, "missing")

        return content

    def _homes(self, plan: Plan, tasks: Sequence[PlannedTask]) -> dict[str, Mapping[str, BlobInfo]]:
        """Per stage of ``tasks``, the blobs of the container its outputs are recorded in: the
        output container for a published stage, its work container for one only later stages read."""
        outputs: Mapping[str, BlobInfo] | None = None
        homes: dict[str, Mapping[str, BlobInfo]] = {}
        for name in dict.fromkeys(plan.stage_of(t).name for t in tasks):
            if plan.stage(name).publish:
                if outputs is None:
                    outputs = self.storage.list_blobs(plan.outputs.container)
                homes[name] = outputs
            else:
                homes[name] = self.storage.list_blobs(work_container(plan, name))
        return homes

    def _record(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """The job's record: per task, the fingerprint and output ETags of its last success."""
        value = self.storage.read_json(plan.outputs.container, record_blob(plan.job_id))
        return value if isinstance(value, dict) else {}

    def _remember(self, plan: Plan, tasks: Sequence[PlannedTask], record: dict[str, dict[str, Any]]) -> None:
        """Record ``tasks`` as succeeded with their current fingerprints and their outputs as
        they are now (in the output container, or their stage's work container), and write the
        record."""
        homes = self._homes(plan, tasks)
        for name, blobs in homes.items():
            stage_tasks = [t for t in tasks if plan.stage_of(t).name == name]
            owners = OutputIndex(stage_tasks, succeeded=True)
            produced: dict[str, dict[str, str]] = {t.id: {} for t in stage_tasks}
            for blob in blobs.values():
                if not blob.name.startswith(RECORDS_PREFIX + "/") and (owner := owners.owner(blob.name)) is not None:
                    produced[owner.id][blob.name] = blob.etag
            for task_id, etags in produced.items():
                record[task_id] = {"fingerprint": self.fingerprints[task_id], "outputs": etags}
        self.storage.write_json(plan.outputs.container, record_blob(plan.job_id), record)

    def _clear(self, plan: Plan, tasks: Sequence[PlannedTask], record: dict[str, dict[str, Any]]) -> None:
        """Before ``tasks`` run (again): their earlier outputs (in the output container and their
        stage's work container) and success markers go, and in the download directory what
        batchspec put there unchanged since, so what a changed task leaves is never mixed with
        what it left before, and a later stage fans out over this run's files only."""
        if not tasks:
            return
        outputs = self.storage.list_blobs(plan.outputs.container)
        owners = OutputIndex(tasks)
        ids = {t.id for t in tasks}
        stale = [n for n in outputs if not n.startswith(RECORDS_PREFIX + "/") and (o := owners.owner(n)) is not None
                 and plan.stage_of(o).publish]
        stale += [n for n in outputs for t in ids if n.startswith(success_markers(plan.job_id, t))]
        if stale:
            self.storage.delete_blobs(plan.outputs.container, stale)
        for name in dict.fromkeys(plan.stage_of(t).name for t in tasks if plan.stage_of(t).consumed):
            container = work_container(plan, name)
            mine = OutputIndex([t for t in tasks if plan.stage_of(t).name == name], succeeded=True)
            self.storage.delete_blobs(container, [n for n in self.storage.list_blobs(container) if n in mine])
        ledger = self.options.ledger(plan)
        try:
            for task in tasks:
                entry = record.pop(task.id, None)
                if entry is not None:
                    for blob in entry.get("outputs", {}):
                        ledger.remove(blob, str(entry.get("fingerprint")))
        finally:
            ledger.close()

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
        with self._errors(f"reading container '{plan.outputs.container}'"):
            record = self._record(plan)
        ids = {t.id for t in wave.tasks}
        fps = self.fingerprints
        # A task the job has, added with the same fingerprint and not finished, or finished well
        # but not yet recorded, is followed (a killed runner's rerun); one that failed, or was
        # added as planned differently, is replaced.
        follow = {t.id for t in wave.tasks if t.id in in_job and in_job[t.id].fingerprint == fps[t.id]
                  and not in_job[t.id].failed and t.id not in record}
        replace = [t for t in wave.tasks if t.id in in_job and t.id not in follow]
        add = [t for t in wave.tasks if t.id not in in_job] + replace
        if add and self.job_was_complete:
            # A completed job takes no tasks. What it finished well is recorded (done lives in
            # storage, not in the job), then the job is made anew with only the tasks to run.
            finished = [t for t in wave.tasks if t.id in follow and in_job[t.id].completed]
            with self._errors(f"recording tasks of job '{plan.job_id}'"):
                self._remember(plan, finished, record)
            ctx.info(f"job {plan.job_id} has completed; {len(add)} task(s) must run again: replacing the job")
            with self._errors(f"replacing completed job '{plan.job_id}'"):
                self.client.begin_delete_job(plan.job_id)
                self._wait_until_deleted(plan.job_id, ctx)
                self._create_job(plan, ctx)
            done = {t.id for t in finished}
            follow, in_job, replace, self.job_was_complete = set(), {}, [], False
            add = [t for t in wave.tasks if t.id not in done]
            ids -= done
        with self._errors("replacing earlier outputs of these tasks in storage"):
            self._clear(plan, add, record)
        with self._errors(f"replacing tasks of job '{plan.job_id}'"):
            for task in replace:
                self.client.delete_task(plan.job_id, task.id)
                del in_job[task.id]
        missing = add
        levels, watch = self._dependencies(missing, ids, in_job)
        submitter = Submitter(self.client, plan.job_id)
        started = time.monotonic()
        with self._errors(f"adding tasks to job '{plan.job_id}'"):
            for level in levels:  # what a task waits for is added before it
                submitter.submit([self._options(plan, item) for item in level])
            if wave.final and not self.job_was_complete:
                self._complete_when_done(plan)
        others = [state for tid, state in in_job.items() if tid not in ids and tid not in watch.gates]
        watch.others = (sum(1 for s in others if s.completed), sum(1 for s in others if s.succeeded),
                        sum(1 for s in others if s.failed))
        self.wave = watch
        ctx.info(f"added {submitter.added} task(s) in {submitter.requests} request(s) "
                 f"({format_duration(time.monotonic() - started)}); {len(follow)} already in the job, "
                 f"{len(wave.kept)} done in an earlier run")
        return submitter.added

    def _complete_when_done(self, plan: Plan) -> None:
        """The job completes once its tasks have: set last, so it cannot complete before every
        task (of every stage) is in it."""
        terminate = models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob")
        self.client.update_job(plan.job_id, terminate, **SAFE_TO_REPEAT)

    def _options(self, plan: Plan, item: _Item) -> models.BatchTaskCreateOptions:
        assert self.urls is not None
        if isinstance(item, PlannedTask):
            return task_options(plan, item, self.urls, self.fingerprints[item.id])
        if isinstance(item, tuple):
            return task_options(plan, item[0], self.urls, self.fingerprints[item[0].id], item[1])
        # Gates wait for a merge's inputs; on a container pool they run in its image.
        return gate_options(item, next((s.container for s in reversed(plan.stages) if s.container), None))

    def _dependencies(self, missing: Sequence[PlannedTask], ids: set[str],
                      in_job: Mapping[str, _JobTask]) -> tuple[list[list[_Item]], _WaveWatch]:
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

    def _job_tasks(self, plan: Plan, ctx: RunContext) -> dict[str, _JobTask]:
        """The job's tasks by id; the job is created on first use."""
        if not self.job_ready:
            self.job_ready = True
            if self._create_job(plan, ctx):
                return {}
        tasks = {}
        for t in self.client.list_tasks(plan.job_id, select=["id", "displayName", "state", "executionInfo"]):
            result = _text(t.execution_info.result) if t.execution_info and t.execution_info.result else None
            tasks[t.id] = _JobTask(fingerprint_of(t.display_name), _text(t.state) == "completed",
                                   result == "failure", result == "success")
        return tasks

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
            self.client.create_job(job, **SAFE_TO_REPEAT)
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
            self.client.create_job(job, **SAFE_TO_REPEAT)
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
                           "try again later")

    # --- watch ---------------------------------------------------------------------------------

    def watch(self, plan: Plan, wave: Wave, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        with self._errors(f"following job '{plan.job_id}'"):
            yield from self._watch(plan, wave, ctx)

    def _watch(self, plan: Plan, wave: Wave, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        total, skipped = wave.total, len(wave.kept)
        watch = self.wave
        if watch is None or not wave.tasks:
            yield Progress(total, total, 0, 0, skipped, changed=self.changed)
            return
        size = len(watch.ids)
        done_before, ok_before, failed_before = watch.others
        delay = POLL_MIN
        reported: set[str] = set()
        blocked: set[str] = set()
        last: Progress | None = None
        polls = 0
        warned: set[str] = set()
        idle_since = time.monotonic()  # since when no task has run or finished
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
                                       blocked=len(blocked), changed=self.changed)
                        return
                detail = self._pool_status(plan, ctx, polls, warned)
            if counts.running or (last is not None and counts.completed + skipped != last.succeeded + last.failed):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > plan.pool.ready_timeout_seconds:
                raise self._never_ready(plan)
            succeeded = counts.succeeded - ok_before - gates_done + skipped
            progress = Progress(total, max(skipped, min(succeeded, total)), len(reported), counts.running, skipped,
                                detail, len(blocked), self.changed)
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
                                 blocked=len(blocked), changed=self.changed)
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
            reason = redact(_failure_text(failure)) if failure and failure.code else None
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
                                   "region")
            return f"pool {pool_id}: {_text(pool.allocation_state)}, {current}/{target} nodes"
        nodes = list(self.client.list_nodes(pool_id))
        states: dict[str, int] = {}
        for node in nodes:
            states[_text(node.state)] = states.get(_text(node.state), 0) + 1
            if node.state == "starttaskfailed" and f"node:{node.id}" not in warned:
                warned.add(f"node:{node.id}")
                ctx.warn(self._start_task_failure(pool_id, node))
            if node.state == "unusable" and node.errors and f"node:{node.id}" not in warned:
                warned.add(f"node:{node.id}")
                ctx.warn(f"node {node.id} is unusable: {_node_errors(node)}")
        broken = states.get("starttaskfailed", 0) + states.get("unusable", 0)
        unusable = [n for n in nodes if n.state == "unusable" and n.errors]
        if nodes and len(unusable) == len(nodes):
            raise BackendError(f"every node of pool {pool_id} is unusable: {_node_errors(unusable[0])}",
                               "for a container pool: check the images (pool.container, task.container) and the "
                               "registry logins; then delete the pool (batchspec cleanup SPEC) and run again",
                               exit_code=EXIT_FAILED)
        if nodes and broken == len(nodes):
            raise BackendError(f"the start task failed on every node of pool {pool_id}; no task can run",
                               "fix pool.start_task (its stderr is shown above), then delete the pool "
                               "(batchspec cleanup) and run again")
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no nodes yet"
        return f"waiting for nodes: {summary}"

    def _never_ready(self, plan: Plan) -> BackendError:
        """No task has run for pool.ready_timeout: what the pool looks like, and why that may be."""
        pool = self.client.get_pool(plan.pool.id)
        current = (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)
        target = (pool.target_dedicated_nodes or 0) + (pool.target_low_priority_nodes or 0)
        states: dict[str, int] = {}
        for node in self.client.list_nodes(plan.pool.id):
            states[_text(node.state)] = states.get(_text(node.state), 0) + 1
        nodes = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no nodes"
        errors = "; ".join(f"{e.code}: {redact(e.message or '')}" for e in pool.resize_errors or [])
        return BackendError(
            f"no task has run for {format_duration(plan.pool.ready_timeout_seconds)} (pool.ready_timeout): pool "
            f"{plan.pool.id} is {_text(pool.allocation_state)} with {current} of {target} nodes ({nodes})"
            + (f"; resize errors: {errors}" if errors else ""),
            "likely causes: the account's core quota for this VM size (another pool may hold the cores), no spot "
            "capacity in the region, a start task that does not finish, or an autoscale formula that asks for no "
            "nodes; raise pool.ready_timeout if the pool is just slow")

    def _start_task_failure(self, pool_id: str, node: models.BatchNode) -> str:
        info = node.start_task_info
        code = info.exit_code if info else None
        tail = _log_tail(lambda: self.client.download_node_file(pool_id, node.id, "startup/stderr.txt"))
        lines = [f"start task failed on node {node.id} (exit code {code})"]
        lines += [f"  | {line}" for line in tail]
        return "\n".join(lines)

    # --- collect and clean up ------------------------------------------------------------------

    def collect(self, plan: Plan, ctx: RunContext) -> None:
        """Record every task that succeeded as planned (its success marker for its fingerprint
        is there, or it was done before) for reruns, and download what the user gets: the
        published outputs of those tasks, and failed tasks' failure outputs."""
        container = plan.outputs.container
        with self._errors(f"downloading outputs from container '{container}'"):
            blobs = self.storage.list_blobs(container)
            record = self._record(plan)
            fps = self.fingerprints
            known = [t for t in plan.tasks if t.id in fps]
            succeeded = [t for t in known if success_marker(plan.job_id, t.id, fps[t.id]) in blobs
                         or record.get(t.id, {}).get("fingerprint") == fps[t.id]]
            self._remember(plan, succeeded, record)
            ok = {t.id for t in succeeded}
            published = OutputIndex([t for t in succeeded if plan.stage_of(t).publish], succeeded=True)
            failure = OutputIndex([t for t in known if t.id not in ok], succeeded=False)
            wanted: list[tuple[BlobInfo, str]] = []
            for blob in blobs.values():
                if blob.name.startswith(RECORDS_PREFIX + "/"):
                    continue
                owner = published.owner(blob.name) or failure.owner(blob.name)
                if owner is not None:
                    wanted.append((blob, fps[owner.id]))
            started = time.monotonic()
            ledger = self.options.ledger(plan)
            try:
                report = self.storage.download(container, wanted, ledger)
            finally:
                ledger.close()
        ctx.info(f"outputs: downloaded {report.transferred} file(s), {report.bytes / 1e6:.1f} MB in "
                 f"{format_duration(time.monotonic() - started)} to {plan.download_dir}; "
                 f"{report.skipped - len(report.failed)} unchanged")
        if report.refused:
            ctx.warn(f"{len(report.refused)} blob(s) in container '{container}' not downloaded: their names would "
                     f"land outside {plan.download_dir} ({_names(report.refused)}); the rest were downloaded")
        if report.failed:
            raise BackendError(f"{len(report.failed)} output(s) could not be downloaded; the rest were: "
                               + "; ".join(f"'{n}': {why}" for n, why in report.failed[:5])
                               + (f" and {len(report.failed) - 5} more" if len(report.failed) > 5 else ""),
                               "rerun the same command to try them again (what is in place stays)",
                               exit_code=EXIT_FAILED)

    def cleanup(self, plan: Plan, ctx: RunContext, *, succeeded: bool, error: bool = False) -> None:
        policy = plan.cleanup
        with self._errors("cleaning up"):
            if policy.job == "delete" and succeeded:
                self._delete_job(plan, ctx)
                self._delete_work(plan, ctx)
            if policy.pool == "delete":
                self._delete_pool(plan, ctx)
            elif error and self.created_pool and not policy.pool_given:
                ctx.warn(f"the run stopped on an error: deleting pool {plan.pool.id}, which it created (nodes cost "
                         "money); write cleanup.pool: keep in the spec to keep it")
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


def _registry_references(plan: Plan, env: Mapping[str, str]) -> list[models.ContainerRegistryReference]:
    """The pool's container registries, with logins read from the environment (BackendError when a
    variable the spec names is not set: before anything is created)."""
    if plan.pool.container is None or not plan.pool.container.registries:
        return []
    from ..registries import login  # only for specs with registries

    references = []
    for registry in plan.pool.container.registries:
        credentials = login(registry, env)
        identity = models.BatchNodeIdentityReference(resource_id=registry.identity) if registry.identity else None
        references.append(models.ContainerRegistryReference(
            registry_server=registry.server, identity_reference=identity,
            username=credentials.username if credentials else None,
            password=credentials.password if credentials else None))
    return references


def _check_identities(plan: Plan, existing: models.BatchPool | None, identities: Sequence[str]) -> None:
    """Registries that log in with a managed identity need a pool that has it: a pool gets one only
    when created through Azure Resource Manager (the Batch API cannot give it one), so it must
    exist, with the identity, before the run."""
    how = (f"create pool '{plan.pool.id}' through Azure Resource Manager (portal, az, Bicep) with that "
           "user-assigned identity and a container configuration; batchspec then reuses it")
    if existing is None:
        raise BackendError(f"registry login through managed identity {identities[0]} needs pool "
                           f"'{plan.pool.id}' to exist with it, and it does not exist", how)
    attached = {(i.resource_id or "").lower() for i in (existing.identity.user_assigned_identities or [])
                } if existing.identity else set()
    missing = [i for i in identities if i.lower() not in attached]
    if missing:
        raise BackendError(f"pool '{plan.pool.id}' does not have managed identity {missing[0]}, which "
                           "pool.container.registries logs in with", how)


def _check_containers(plan: Plan, vm: models.VirtualMachineConfiguration | None, ctx: RunContext) -> None:
    """A reused pool must run containers when the tasks do (a pool's container configuration is
    fixed when it is created); images it does not prefetch are pulled by the first task on each node."""
    configuration = vm.container_configuration if vm else None
    if plan.pool.container is None:
        if configuration is not None:
            ctx.warn(f"pool {plan.pool.id} is a container pool and the tasks run in no image: Batch expects "
                     "containerSettings on every task of a container pool (give task.container, or another pool.id)")
        return
    if configuration is None:
        raise BackendError(f"pool '{plan.pool.id}' exists without a container configuration, and the tasks run in "
                           "container images", "delete the pool (batchspec cleanup SPEC, with cleanup.pool: delete) "
                           "or give the spec another pool.id; batchspec then creates it for containers")
    missing = [i for i in plan.pool.container.images if i not in (configuration.container_image_names or [])]
    if missing:
        ctx.info(f"pool {plan.pool.id} does not prefetch {', '.join(missing)}: the first task on each node pulls it")


def pool_options(plan: Plan, urls: Urls,
                 registries: Sequence[models.ContainerRegistryReference] = ()) -> models.BatchPoolCreateOptions:
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
            container_configuration=models.BatchContainerConfiguration(
                type="dockerCompatible", container_image_names=list(pool.container.images) or None,
                container_registries=list(registries) or None,
            ) if pool.container is not None else None,
        ),
        target_dedicated_nodes=None if autoscale else pool.dedicated,
        target_low_priority_nodes=None if autoscale else pool.spot,
        enable_auto_scale=bool(autoscale),
        auto_scale_formula=autoscale.formula if autoscale else None,
        auto_scale_evaluation_interval=timedelta(seconds=autoscale.interval_seconds) if autoscale else None,
        task_slots_per_node=pool.task_slots_per_node,
        start_task=start,
    )


class _QuietFailsafe(logging.Filter):
    """The SDK logs a traceback (as a warning) when the error body of a streamed download, such
    as a task's stderr.txt that does not exist, cannot be read; the 404 itself is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Ran into a deserialization error")


logging.getLogger("azure.batch._utils.model_base").addFilter(_QuietFailsafe())


def _failure_text(failure: models.BatchTaskFailureInfo) -> str:
    """A task's failureInfo: code and message, and the details that say more (the image and the
    runtime's words for a container task, say)."""
    details = "; ".join(f"{d.name}: {d.value}" for d in failure.details or []
                        if d.name and d.value and d.value != failure.message)
    return f"{failure.code}: {failure.message}" + (f" ({details})" if details else "")


def _node_errors(node: models.BatchNode) -> str:
    """A node's errors as the service reports them: code, message and details."""
    texts = []
    for error in node.errors or []:
        details = "; ".join(f"{d.name}: {d.value}" for d in error.error_details or [] if d.name)
        texts.append(f"{error.code}: {error.message or ''}" + (f" ({details})" if details else ""))
    return redact("; ".join(texts))


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


@dataclass(frozen=True)
class _JobTask:
    """What a rerun needs to know of a task already in the job."""

    fingerprint: str | None  # the one it was added with (None: added by an older batchspec)
    completed: bool
    failed: bool
    succeeded: bool


def _intact(task: PlannedTask, entry: Mapping[str, Any], blobs: Mapping[str, BlobInfo]) -> bool:
    """Are the outputs a task's record lists all there with the same ETags, and every output
    it names literally among them?"""
    etags = entry.get("outputs")
    if not isinstance(etags, dict):
        return False
    if any(name not in blobs or blobs[name].etag != etag for name, etag in etags.items()):
        return False
    return all(dest in etags for o in task.outputs if o.applies(True) and (dest := o.destination) is not None)


def _upstream(task: PlannedTask) -> list[str]:
    """The tasks whose outputs ``task`` reads, or that it waits for: its result depends on theirs."""
    return sorted({*task.depends_on, *(f.task for f in task.inputs if f.task)})


def _by_container(plan: Plan) -> dict[str, set[str]]:
    """The blob inputs (``inputs.container``), by container."""
    found: dict[str, set[str]] = {}
    for task in plan.tasks:
        for item in task.inputs:
            if item.kind == "blob" and item.container:
                found.setdefault(item.container, set()).add(item.source)
    return found


def _with_sas(url: str, sas: str) -> str:
    return f"{url}?{sas}"


def _names(names: Sequence[str], shown: int = 5) -> str:
    """A few names, quoted, and how many more."""
    text = ", ".join(f"'{n}'" for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
