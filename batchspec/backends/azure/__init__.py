"""The Azure backend: the tutorial's whole workflow, for any spec.

Stages: reach Batch and Storage with the configured credentials before anything is created
(check); create or reuse the pool (prepare); upload inputs with MD5 skipping and issue SAS URLs
(stage inputs); create or find the job and add only the tasks not done, where done means the
same fingerprint (:mod:`batchspec.plan.fingerprint`, inputs by MD5) and outputs unchanged since
(submit); poll task counts with backoff, surfacing node problems and failed tasks' stderr
(watch); download the outputs of tasks that succeeded as planned and record them (collect);
delete what the spec's cleanup says (clean up). Built on azure-batch 15.x (``BatchClient``),
azure-storage-blob 12.x and azure-identity.
"""

from __future__ import annotations

import contextlib
import math
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from azure.batch import BatchClient, models
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerSasPermissions

from ...errors import EXIT_FAILED, BackendError
from ...events import Event, Progress, TaskFinished
from ...globs import Glob, compile_glob, has_magic, literal_head, literal_path, normalize
from ...observe.records import RunRecord
from ...plan import BlobLister, InputFile, Plan, PlannedTask
from ...plan.fingerprint import Fingerprinter
from ...redact import redact
from ...runner import last_lines, node_command_line
from ...spec.values import format_duration
from ..base import Backend, LogChunk, LogRef, RunContext, RunOptions, note_reruns
from .config import AzureConfig, batch_client_args
from .errors import resend, translate_errors
from .records import job_record, node_log, task_log, with_file_sizes
from .storage import BlobInfo, Storage, blob_name_for
from .tasks import (
    RECORDS_PREFIX,
    Submitter,
    Urls,
    fingerprint_of,
    record_blob,
    success_marker,
    success_markers,
    task_options,
)

POLL_MIN, POLL_MAX, POLL_GROWTH = 1.0, 10.0, 1.5
#: SAS lifetime bounds: a user delegation key lives at most 7 days.
SAS_MARGIN = timedelta(hours=2)
SAS_MAX = timedelta(days=7)
STDERR_TAIL = 20


def container_base(name: str) -> str:
    """A storage-safe container name stem from a spec name."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (base or "batchspec")[:50].strip("-")


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
        self.job_was_complete = False
        self._sas: dict[str, str] = {}
        self._content: dict[tuple[str | None, str], str] = {}  # (container, source) -> content identity
        self.fingerprints: dict[str, str] = {}

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
        with self._errors("checking access to Azure Batch"), contextlib.suppress(ResourceNotFoundError):
            self.client.get_pool(plan.pool.id, select=["id"])  # not found is fine: reached, and let in
        ctx.info(f"Azure Batch account {self.config.batch_account} and storage account {self.storage.account_name} "
                 "reached")

    # --- prepare: the pool ---------------------------------------------------------------------

    def prepare(self, plan: Plan, ctx: RunContext) -> None:
        ctx.info(f"Azure Batch account {self.config.batch_account} at {self.config.batch_endpoint} "
                 f"({self.config.batch_auth})")
        pool = plan.pool
        with self._errors(f"creating pool '{pool.id}'"):
            try:
                options = pool_options(plan)
                resend(lambda: self.client.create_pool(options))
                self.created_pool = True
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
        container = self.input_container(plan)
        local = {source: blob_name_for(source) for source in plan.local_inputs()}  # path -> blob name
        with self._errors("staging inputs in Azure Storage"):
            self.storage.ensure_container(plan.outputs.container)
            if local:
                self.storage.ensure_container(container)
                files = [(plan.resolve(source), name) for source, name in local.items()]
                started = time.monotonic()
                report = self.storage.upload(container, files)
                ctx.info(f"inputs: uploaded {report.transferred} file(s), {report.bytes / 1e6:.1f} MB in "
                         f"{format_duration(time.monotonic() - started)}; {report.skipped} unchanged, not uploaded")
                self._content.update({(None, source): report.md5[name].hex() for source, name in local.items()})
            for name, sources in _by_container(plan).items():
                prefix = posixpath.commonprefix(sorted(sources))
                listed = self.storage.list_blobs(name, prefix)
                self._content.update({(name, source): listed[source].content_id if source in listed else "missing"
                                      for source in sources})
            expiry = datetime.now(timezone.utc) + self._sas_lifetime(plan, ctx)
            read = ContainerSasPermissions(read=True)
            blob_containers = {f.container for t in plan.tasks for f in t.inputs if f.container}
            for name in ({container} if local else set()) | blob_containers:
                self._sas[name] = self.storage.container_sas(name, read, expiry)
            # Tasks may create and write outputs, never read, list or delete.
            write = ContainerSasPermissions(create=True, write=True)
            out_sas = self.storage.container_sas(plan.outputs.container, write, expiry)
        container_urls = {name: self.storage.container_url(name) for name in self._sas}

        def input_url(item: InputFile) -> str:
            where = item.container or container
            name = item.source if item.container else local[item.source]
            return f"{container_urls[where]}/{quote(name, safe='~/')}?{self._sas[where]}"

        self.urls = Urls(input_url, _with_sas(self.storage.container_url(plan.outputs.container), out_sas))

    def _sas_lifetime(self, plan: Plan, ctx: RunContext) -> timedelta:
        """Long enough for the job's longest possible run: every task, retried to the limit and
        timing out each time, one after another on the pool's slots, plus a margin."""
        if plan.timeout_seconds is None:
            ctx.info("task.timeout is not set: SAS URLs for inputs and outputs expire in 7 days")
            return SAS_MAX
        pool = plan.pool
        slots = max(1, (pool.dedicated + pool.spot) * pool.task_slots_per_node)
        waves = math.ceil(len(plan.tasks) / slots)
        longest = timedelta(seconds=waves * plan.timeout_seconds * (plan.retries + 1)) + SAS_MARGIN
        if longest > SAS_MAX:
            ctx.warn(f"the job could run for up to {format_duration(longest.total_seconds())}; SAS URLs are capped "
                     "at 7 days, so tasks starting after that cannot read inputs or write outputs")
            return SAS_MAX
        return longest

    # --- submit --------------------------------------------------------------------------------

    def submit(self, plan: Plan, ctx: RunContext) -> int:
        assert self.urls is not None, "stage_inputs runs before submit"
        fingerprint = Fingerprinter(plan, lambda item: self._content.get((item.container, item.source), "missing"))
        self.fingerprints = fps = {t.id: fingerprint(t) for t in plan.tasks}
        container = plan.outputs.container
        with self._errors(f"reading container '{container}'"):
            blobs = self.storage.list_blobs(container)
            record = self._record(plan)
        done: set[str] = set()
        missing = 0
        for task in plan.tasks:
            entry = record.get(task.id)
            if self.options.force or entry is None:
                continue
            if entry.get("fingerprint") == fps[task.id] and _intact(task, entry, blobs):
                done.add(task.id)
            elif entry.get("fingerprint") != fps[task.id]:
                self.changed += 1
            else:
                missing += 1
        todo = [t for t in plan.tasks if t.id not in done]
        if not todo:
            ctx.info(f"all {len(plan.tasks)} task(s) succeeded in an earlier run and their outputs are in container "
                     f"{container}, unchanged: nothing to add (--force runs them again)")
            self.skipped = len(done)
            return 0
        note_reruns(ctx, self.changed, missing)
        with self._errors(f"creating job '{plan.job_id}'"):
            in_job = self._create_job(plan, ctx)
        # A task the job has, added with the same fingerprint and not yet recorded, is followed
        # (a killed runner's rerun); one that failed, or was added as planned differently, or
        # whose recorded outputs changed since, is replaced.
        follow = {t.id for t in todo if t.id in in_job and in_job[t.id].fingerprint == fps[t.id]
                  and not in_job[t.id].failed and t.id not in record}
        replace = [t for t in todo if t.id in in_job and t.id not in follow]
        add = [t for t in todo if t.id not in in_job] + replace
        if add and self.job_was_complete:
            # A completed job takes no new tasks: what it finished is recorded, then it starts over.
            finished = [t for t in plan.tasks if t.id in follow and in_job[t.id].completed]
            with self._errors(f"recording tasks of job '{plan.job_id}'"):
                self._remember(plan, finished, blobs, record)
            done |= {t.id for t in finished}
            with self._errors(f"replacing completed job '{plan.job_id}'"):
                ctx.info(f"job {plan.job_id} has completed; {len(add)} task(s) must run again: replacing the job")
                self.client.begin_delete_job(plan.job_id)
                self._wait_until_deleted(plan.job_id, ctx)
                resend(lambda: self.client.create_job(self._job(plan)))
            follow, in_job, replace, self.job_was_complete = set(), {}, [], False
            add = [t for t in todo if t.id not in done]
        self.skipped = len(done - set(in_job))
        with self._errors(f"replacing outputs in container '{container}'"):
            self._clear(plan, add, blobs, record)
        with self._errors(f"replacing tasks of job '{plan.job_id}'"):
            for task in replace:
                self.client.delete_task(plan.job_id, task.id)
        options = [task_options(plan, t, self.urls, fps[t.id]) for t in add]
        submitter = Submitter(self.client, plan.job_id)
        started = time.monotonic()
        with self._errors(f"adding tasks to job '{plan.job_id}'"):
            submitter.submit(options)
            if not self.job_was_complete:
                # Set last, so the job cannot complete before every task is in it.
                terminate = models.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob")
                resend(lambda: self.client.update_job(plan.job_id, terminate))
        ctx.info(f"added {submitter.added} task(s) in {submitter.requests} request(s) "
                 f"({format_duration(time.monotonic() - started)}); {len(follow)} already in the job, "
                 f"{self.skipped} done in an earlier run")
        return submitter.added

    def _record(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """The job's record: per task, the fingerprint and output ETags of its last success."""
        value = self.storage.read_json(plan.outputs.container, record_blob(plan.job_id))
        return value if isinstance(value, dict) else {}

    def _remember(self, plan: Plan, tasks: Iterable[PlannedTask], blobs: Mapping[str, BlobInfo],
                  record: dict[str, dict[str, Any]]) -> None:
        """Record ``tasks`` as succeeded with their current fingerprints and the outputs in
        ``blobs`` now, and write the record."""
        outputs = _Outputs(plan)
        produced: dict[str, dict[str, str]] = {t.id: {} for t in tasks}
        for name, blob in blobs.items():
            owner = outputs.owner(name)
            if owner in produced:
                produced[owner][name] = blob.etag
        for task_id, etags in produced.items():
            record[task_id] = {"fingerprint": self.fingerprints[task_id], "outputs": etags}
        self.storage.write_json(plan.outputs.container, record_blob(plan.job_id), record)

    def _clear(self, plan: Plan, tasks: list[PlannedTask], blobs: Mapping[str, BlobInfo],
               record: dict[str, dict[str, Any]]) -> None:
        """Before ``tasks`` run (again): their earlier outputs and success markers go, in the
        container and (if unchanged since batchspec put them there) in the download directory,
        so what a changed task leaves is never mixed with what it left before."""
        if not tasks:
            return
        ids = {t.id for t in tasks}
        outputs = _Outputs(plan)
        stale = [n for n in blobs if outputs.owner(n) in ids]
        stale += [n for t in tasks for n in _under(blobs, success_markers(plan.job_id, t.id))]
        if stale:
            self.storage.delete_blobs(plan.outputs.container, stale)
        ledger = self.options.ledger(plan)
        try:
            for task in tasks:
                entry = record.pop(task.id, None)
                if entry is not None:
                    for name in entry.get("outputs", {}):
                        ledger.remove(name, str(entry.get("fingerprint")))
        finally:
            ledger.close()

    @staticmethod
    def _job(plan: Plan) -> models.BatchJobCreateOptions:
        return models.BatchJobCreateOptions(id=plan.job_id, pool_info=models.BatchPoolInfo(pool_id=plan.pool.id))

    def _create_job(self, plan: Plan, ctx: RunContext) -> dict[str, _JobTask]:
        """Create the plan's job, or find it from an earlier run; returns the tasks it has."""
        job = self._job(plan)
        try:
            resend(lambda: self.client.create_job(job))
            ctx.info(f"created job {plan.job_id}")
            return {}
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
            return {}
        state = _text(current.state)
        if state in ("disabled", "disabling"):
            raise BackendError(f"job '{plan.job_id}' is {state}", "enable it, or rerun with --force")
        self.job_was_complete = state in ("completed", "terminating")
        tasks = {
            t.id: _JobTask(fingerprint_of(t.display_name), _text(t.state) == "completed",
                           _text(getattr(t.execution_info, "result", None)) == "failure")
            for t in self.client.list_tasks(plan.job_id, select=["id", "displayName", "state", "executionInfo"])
        }
        ctx.info(f"found job {plan.job_id} from an earlier run ({state}, {len(tasks)} task(s))")
        return tasks

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

    def watch(self, plan: Plan, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        with self._errors(f"following job '{plan.job_id}'"):
            yield from self._watch(plan, ctx)

    def _watch(self, plan: Plan, ctx: RunContext) -> Iterator[Progress | TaskFinished | Event]:
        total, skipped = len(plan.tasks), self.skipped
        if skipped == total:
            yield Progress(total, total, 0, 0, skipped, changed=self.changed)
            return
        delay = POLL_MIN
        reported: set[str] = set()
        last: Progress | None = None
        polls = 0
        warned: set[str] = set()
        idle_since = time.monotonic()  # since when no task has run or finished
        while True:
            polls += 1
            counts = self.client.get_job_task_counts(plan.job_id).task_counts
            detail = ""
            if counts.failed > len(reported):
                yield from self._failed_tasks(plan, reported)
            elif counts.running == 0 and counts.completed + skipped < total:
                detail = self._pool_status(plan, ctx, polls, warned)
            if counts.running or (last is not None and counts.completed + skipped != last.succeeded + last.failed):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > plan.pool.ready_timeout_seconds:
                raise self._never_ready(plan)
            progress = Progress(total, counts.succeeded + skipped, counts.failed, counts.running, skipped, detail,
                                self.changed)
            if progress != last:
                yield progress
            # Poll quickly again only when tasks moved (the waiting detail alternates between pool and nodes).
            if last is None or (progress.succeeded, progress.failed, progress.running) != (
                    last.succeeded, last.failed, last.running):
                delay = POLL_MIN
            else:
                delay = min(POLL_MAX, delay * POLL_GROWTH)
            last = progress
            if counts.completed + skipped >= total:
                return
            self.sleep(delay)

    def _failed_tasks(self, plan: Plan, reported: set[str]) -> Iterator[TaskFinished]:
        """Report tasks that failed since the last poll, with the tail of their stderr."""
        failed = self.client.list_tasks(
            plan.job_id, filter="executionInfo/result eq 'failure'", select=["id", "executionInfo"]
        )
        for task in failed:
            if task.id in reported:
                continue
            reported.add(task.id)
            info = task.execution_info
            failure = info.failure_info if info else None
            reason = redact(f"{failure.code}: {failure.message}") if failure and failure.code else None
            yield TaskFinished(
                task.id, "failed", info.exit_code if info else None, None,
                (info.retry_count or 0) + 1 if info else 1, reason, self._tail(plan.job_id, task.id),
            )

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
        """Download the outputs of every task that succeeded as planned (its success marker for
        its fingerprint is there, or it was done before), and record them for reruns."""
        container = plan.outputs.container
        with self._errors(f"downloading outputs from container '{container}'"):
            blobs = self.storage.list_blobs(container)
            record = self._record(plan)
            fps = self.fingerprints
            succeeded = [t for t in plan.tasks if success_marker(plan.job_id, t.id, fps[t.id]) in blobs
                         or record.get(t.id, {}).get("fingerprint") == fps[t.id]]
            self._remember(plan, succeeded, blobs, record)
            outputs = _Outputs(plan)
            ok = {t.id for t in succeeded}
            wanted = [(b, fps[owner]) for b in blobs.values() if (owner := outputs.owner(b.name)) in ok]
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

    def _delete_job(self, plan: Plan, ctx: RunContext) -> None:
        try:
            self.client.begin_delete_job(plan.job_id)
            ctx.info(f"deleting job {plan.job_id}")
        except ResourceNotFoundError:
            pass

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


def pool_options(plan: Plan) -> models.BatchPoolCreateOptions:
    pool = plan.pool
    start = None
    if pool.start_task is not None:
        st = pool.start_task
        start = models.BatchStartTask(
            command_line=node_command_line(st.command),
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


@dataclass(frozen=True)
class _JobTask:
    """What a rerun needs to know of a task already in the job."""

    fingerprint: str | None  # the one it was added with (None: added by an older batchspec)
    completed: bool
    failed: bool


def _intact(task: PlannedTask, entry: Mapping[str, Any], blobs: Mapping[str, BlobInfo]) -> bool:
    """Are the outputs a task's record lists all there with the same ETags, and every output
    it names literally among them?"""
    etags = entry.get("outputs")
    if not isinstance(etags, dict):
        return False
    if any(name not in blobs or blobs[name].etag != etag for name, etag in etags.items()):
        return False
    return all(path in etags for p in task.outputs if (path := literal_path(p)) is not None)


def _under(blobs: Mapping[str, object], prefix: str) -> list[str]:
    return [name for name in blobs if name.startswith(prefix)]


def _by_container(plan: Plan) -> dict[str, set[str]]:
    """The blob inputs (``inputs.container``), by container."""
    found: dict[str, set[str]] = {}
    for task in plan.tasks:
        for item in task.inputs:
            if item.container:
                found.setdefault(item.container, set()).add(item.source)
    return found


def _with_sas(url: str, sas: str) -> str:
    return f"{url}?{sas}"


def _names(names: Sequence[str], shown: int = 5) -> str:
    """A few names, quoted, and how many more."""
    text = ", ".join(f"'{n}'" for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


class _Outputs:
    """Which task of the plan a blob is an output of (None: a record, or a file another job put
    in the container). Wildcard patterns are indexed by their literal head, so each blob is
    checked against the few patterns that could match it, not all of them."""

    def __init__(self, plan: Plan) -> None:
        self.names: dict[str, str] = {}
        self.heads: dict[str, list[tuple[Glob, str]]] = {}
        for task in plan.tasks:
            for pattern in task.outputs:
                norm = normalize(pattern)
                if has_magic(norm):
                    self.heads.setdefault(literal_head(norm), []).append((compile_glob(norm), task.id))
                else:
                    self.names[norm] = task.id

    def owner(self, name: str) -> str | None:
        if name.startswith(RECORDS_PREFIX + "/"):
            return None
        if name in self.names:
            return self.names[name]
        for i in range(len(name) + 1):
            for rx, task_id in self.heads.get(name[:i], ()):
                if rx.match(name):
                    return task_id
        return None
