"""Records of an Azure Batch job from the service, with as few requests as its listing allows,
and reading task and start-task logs.

One record costs: the job (1 request), its tasks listed with ``$select`` of only what a record
needs, 1,000 per page (``ceil(tasks / 1000)`` requests), the pool (1) and its nodes (1 per
1,000 nodes): 13 requests for a 10,000-task job, where asking for each task would take 10,000.

The task listing is read as the service's JSON, not as azure-batch models: at 10,000 tasks the
models' deserialization took 4 s of the record's CPU. It still goes through the client's own
pipeline (auth, retry, the SDK's error policy), so errors are the same exceptions.

Batch keeps, per task, the times and node of its last attempt only (``executionInfo`` holds
``retryCount`` and ``requeueCount`` for the others, and ``lastRequeueTime``); earlier attempts
are recorded with their cause but without times or node.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urljoin, urlparse

import isodate
from azure.batch import BatchClient, models
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest

from ...errors import BackendError
from ...globs import compile_glob, has_magic, literal_head, normalize
from ...observe.pricing import is_windows
from ...observe.records import Attempt, JobRecord, NodeRecord, PoolRecord, RunRecord, TaskRecord
from ...plan import Plan
from ...redact import redact
from ..base import LogChunk, LogRef
from .storage import BlobInfo, Storage, blob_name_for, work_container
from .tasks import RECORDS_PREFIX, success_markers

PAGE_SIZE = 1000  # the most a Batch list request returns
TASK_FIELDS = ["id", "state", "creationTime", "executionInfo", "nodeInfo"]
JOB_FIELDS = ["id", "state", "creationTime", "executionInfo"]
POOL_FIELDS = ["id", "vmSize", "allocationState", "currentDedicatedNodes", "currentLowPriorityNodes",
               "targetDedicatedNodes", "targetLowPriorityNodes", "taskSlotsPerNode"]
NODE_FIELDS = ["id", "state", "isDedicated", "allocationTime", "totalTasksRun", "startTaskInfo"]
EARLIER_ATTEMPTS_NOTE = ("Azure Batch reports the times and node of a task's last attempt only; earlier attempts "
                         "(retries, requeues after preemption) are counted but cannot be placed on the timeline")

T = TypeVar("T")


def _text(value: Any) -> str:
    return str(getattr(value, "value", value)) if value is not None else ""


def _ts(value: datetime | str | None) -> float | None:
    """Seconds since the epoch of a model's datetime or of the service's ISO 8601 text."""
    if isinstance(value, str):
        value = _datetime(value) if value else None
    return value.timestamp() if value is not None else None


def _datetime(text: str) -> datetime:
    try:  # Python 3.11+ reads the service's form ("...35.5592851Z") directly, 50 times faster than isodate
        return datetime.fromisoformat(text)
    except ValueError:  # as azure-batch parses it: the fraction cut to microseconds, then isodate
        head, dot, tail = text.upper().partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        parsed: datetime = isodate.parse_datetime(head + dot + tail[:min(digits, 6)] + tail[digits:])
        return parsed


class Counter:
    """Requests made for a record (each page of a listing is one)."""

    def __init__(self) -> None:
        self.requests = 0

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return fn(*args, **kwargs)

    def pages(self, paged: Any) -> Iterator[Any]:
        for page in paged.by_page():
            self.requests += 1
            yield from page


def task_record(task: Mapping[str, Any]) -> TaskRecord:
    """A task as the service reports it (its JSON, or an azure-batch model, which maps the same
    names): its last attempt with times and node, earlier ones counted."""
    info: Mapping[str, Any] = task.get("executionInfo") or {}
    state = _text(task.get("state"))
    retries = info.get("retryCount") or 0
    requeues = info.get("requeueCount") or 0
    attempts: list[Attempt] = []
    # Order unknown: requeues are listed first, the last of them ending at lastRequeueTime.
    for i in range(requeues):
        end = _ts(info.get("lastRequeueTime")) if i == requeues - 1 else None
        attempts.append(Attempt(len(attempts) + 1, "requeued", end=end, reason="node preempted or removed"))
    for _ in range(retries):
        attempts.append(Attempt(len(attempts) + 1, "retried"))
    node = (task.get("nodeInfo") or {}).get("nodeId")
    exit_code = info.get("exitCode")
    failure = info.get("failureInfo") or {}
    reason = redact(f"{failure.get('code')}: {failure.get('message')}") if failure.get("code") else None
    if state == "completed":
        task_state = "succeeded" if _text(info.get("result")) == "success" else "failed"
        attempts.append(Attempt(len(attempts) + 1, task_state, node, _ts(info.get("startTime")),
                                _ts(info.get("endTime")), exit_code, reason))
    elif state in ("running", "preparing"):
        task_state = "running"
        attempts.append(Attempt(len(attempts) + 1, "running", node, _ts(info.get("startTime"))))
    else:
        task_state = "waiting"
    return TaskRecord(id=task["id"], state=task_state, attempts=tuple(attempts), queued=_ts(task.get("creationTime")),
                      exit_code=exit_code, reason=reason, retries=retries, requeues=requeues)


def list_tasks(client: BatchClient, job_id: str, count: Counter) -> Iterator[Mapping[str, Any]]:
    """The job's tasks as JSON, ``TASK_FIELDS`` only, a page of ``PAGE_SIZE`` per request: the
    request ``client.list_tasks`` makes, through the same pipeline, without building models."""
    api_version = client._config.api_version  # the SDK's own, as its list operations send
    headers = {"Accept": "application/json"}
    request = HttpRequest("GET", f"/jobs/{quote(job_id, safe='')}/tasks", headers=headers, params={
        "api-version": api_version, "maxresults": PAGE_SIZE, "$select": ",".join(TASK_FIELDS)})
    while True:
        # The client's error policy raises azure-core's errors (ResourceNotFoundError, ...) for non-2xx.
        response = count.call(client.send_request, request)
        response.raise_for_status()
        page = response.json()
        yield from page.get("value") or ()
        link = page.get("odata.nextLink")
        if not link:
            return
        # As the SDK follows it: the link's own query (re-quoted, as HttpRequest does not) with our api-version.
        parsed = urlparse(link)
        params: dict[str, Any] = {k: [quote(v) for v in vs] for k, vs in parse_qs(parsed.query).items()}
        params["api-version"] = api_version
        request = HttpRequest("GET", urljoin(link, parsed.path), headers=headers, params=params)


def job_record(client: BatchClient, plan: Plan, logs: str) -> RunRecord | None:
    """The plan's job from the service; None when the job does not exist."""
    count = Counter()
    try:
        job = count.call(client.get_job, plan.job_id, select=JOB_FIELDS)
    except ResourceNotFoundError:
        return None
    listed = {t["id"]: t for t in list_tasks(client, plan.job_id, count)}
    tasks = []
    for planned in plan.tasks:
        found = listed.pop(planned.id, None)
        tasks.append(task_record(found) if found is not None else TaskRecord(planned.id, "waiting"))
    tasks.extend(task_record(t) for t in listed.values())  # in the job, not in this plan (added by hand)
    pool, nodes = _pool(client, plan.pool.id, count)
    job_state = _text(job.state)
    active = job_state not in ("completed", "deleting") and any(t.state in ("waiting", "running") for t in tasks)
    notes = (EARLIER_ATTEMPTS_NOTE,) if any(a.start is None for t in tasks for a in t.attempts) else ()
    job_rec = JobRecord(plan.job_id, job_state, len(plan.tasks), tuple(tasks), _ts(job.creation_time))
    return RunRecord(spec=plan.spec_path, name=plan.name, backend="azure", jobs=(job_rec,), active=active,
                     observed=time.time(), logs=logs, pool=pool, nodes=nodes, notes=notes, requests=count.requests,
                     windows=is_windows(plan), billed=True)


def _pool(client: BatchClient, pool_id: str, count: Counter) -> tuple[PoolRecord | None, tuple[NodeRecord, ...]]:
    try:
        pool = count.call(client.get_pool, pool_id, select=POOL_FIELDS)
    except ResourceNotFoundError:
        return None, ()
    record = PoolRecord(
        id=pool.id, vm_size=pool.vm_size or "", state=_text(pool.allocation_state),
        dedicated=pool.current_dedicated_nodes or 0, spot=pool.current_low_priority_nodes or 0,
        target_dedicated=pool.target_dedicated_nodes or 0, target_spot=pool.target_low_priority_nodes or 0,
        slots_per_node=pool.task_slots_per_node or 1,
    )
    nodes = tuple(_node(n) for n in count.pages(client.list_nodes(pool_id, select=NODE_FIELDS, max_results=PAGE_SIZE)))
    return record, nodes


def _node(node: models.BatchNode) -> NodeRecord:
    start = node.start_task_info
    start_text = None
    if start is not None:
        start_text = _text(start.state)
        if start.exit_code is not None:
            start_text = "succeeded" if start.exit_code == 0 else f"failed (exit code {start.exit_code})"
    return NodeRecord(id=node.id, state=_text(node.state), spot=node.is_dedicated is False,
                      allocated=_ts(node.allocation_time), tasks_run=node.total_tasks_run, start_task=start_text)


# --- bytes in and out, from storage listings ---------------------------------------------------


def with_file_sizes(record: RunRecord, plan: Plan, storage: Storage, input_container: str) -> RunRecord:
    """The record with each task's input and output bytes, from one listing of each container
    (its inputs' and the output container): not per task. A blob counts for one task only."""
    listings: dict[str, Mapping[str, BlobInfo]] = {}

    def blobs(container: str) -> Mapping[str, BlobInfo]:
        if container not in listings:
            listings[container] = storage.list_blobs(container)
        return listings[container]

    outputs = blobs(plan.outputs.container)
    names = sorted(outputs)
    claimed: set[str] = set()
    sizes: dict[str, tuple[int, int]] = {}
    for task in plan.tasks:
        in_bytes = 0
        for f in task.inputs:
            if f.kind in ("url", "blobs"):
                continue  # fetched by the node from the web, or a whole folder: not sized here
            if f.kind == "output":
                container, name = work_container(plan, f.stage or ""), f.source
            else:
                container, name = (f.container, f.source) if f.container else (input_container, blob_name_for(f.source))
            info = blobs(container).get(name)
            in_bytes += info.size if info else 0
        out_bytes = 0
        for rule in task.outputs:
            norm = normalize(rule.destination_pattern)
            if not has_magic(norm):
                matched = [norm] if norm in outputs else []
            else:
                head, rx = literal_head(norm), compile_glob(norm)
                start = bisect.bisect_left(names, head)
                matched = []
                for name in names[start:]:
                    if not name.startswith(head):
                        break
                    if rx.match(name):
                        matched.append(name)
            for name in matched:
                if name not in claimed:
                    claimed.add(name)
                    out_bytes += outputs[name].size
        sizes[task.id] = (in_bytes, out_bytes)
    jobs = tuple(
        replace(job, tasks=tuple(
            replace(t, input_bytes=sizes[t.id][0], output_bytes=sizes[t.id][1] if t.state == "succeeded" else None)
            if t.id in sizes else t for t in job.tasks))
        for job in record.jobs
    )
    return replace(record, jobs=jobs)


# --- logs -----------------------------------------------------------------------------------------


def _download(chunks: Iterable[bytes]) -> bytes:
    return b"".join(chunks)


def _range(offset: int) -> str | None:
    return f"bytes={offset}-" if offset else None


def _read(fetch: Any, offset: int) -> bytes | None:
    """A file from a node from ``offset``; None when absent, empty past its end."""
    try:
        return _download(fetch(ocp_range=_range(offset)))
    except ResourceNotFoundError:
        return None
    except HttpResponseError as exc:
        if exc.status_code == 416:  # asked past the end: nothing new yet
            return b""
        raise


def task_log(client: BatchClient, storage: Storage | None, plan: Plan, ref: LogRef, offset: int) -> LogChunk:
    assert ref.task_id is not None
    job_id, task_id, name = plan.job_id, ref.task_id, f"{ref.name}.txt"
    try:
        task = client.get_task(job_id, task_id, select=TASK_FIELDS)
    except ResourceNotFoundError:
        return _kept_log(storage, plan, ref, offset)
    record = task_record(task)
    attempts = len(record.attempts)
    if ref.attempt is not None and ref.attempt != attempts:
        raise BackendError(f"Azure Batch keeps the output of a task's last attempt only (attempt {attempts} of "
                           f"task {task_id})", "omit --attempt to see it")
    live = record.state in ("waiting", "running")
    if task.node_info is None or record.state == "waiting":
        return LogChunk(b"", offset, live, f"task {task_id} (queued)", None, attempts)
    source = f"node {task.node_info.node_id}: {task.node_info.task_root_directory or task_id}/{name}"
    data = _read(lambda **kw: client.download_task_file(job_id, task_id, name, **kw), offset)
    if data is None and not live:
        return _kept_log(storage, plan, ref, offset)
    data = data or b""
    return LogChunk(data, offset + len(data), live, source, attempts, attempts)


def _kept_log(storage: Storage | None, plan: Plan, ref: LogRef, offset: int) -> LogChunk:
    """The copy a finished task left in the output container (failed tasks: stdout and stderr;
    succeeded: stdout), for when the job or its node is gone."""
    assert ref.task_id is not None
    container = plan.outputs.container
    names = [f"{RECORDS_PREFIX}/{plan.job_id}/failed/{ref.task_id}/{ref.name}.txt"]
    if ref.name == "stdout" and storage is not None:  # the success marker, under the task's fingerprint
        names += sorted(storage.list_blobs(container, success_markers(plan.job_id, ref.task_id)))
    for blob in names:
        data = storage.read(container, blob, offset) if storage is not None else None
        if data is not None:
            return LogChunk(data, offset + len(data), False, f"container {container}: {blob}")
    raise BackendError(f"no {ref.name} of task {ref.task_id}: job {plan.job_id} has no such task now and "
                       f"container {container} keeps no copy of it",
                       "failed tasks' logs are kept in the output container; succeeded tasks keep stdout only")


def node_log(client: BatchClient, plan: Plan, ref: LogRef, offset: int) -> LogChunk:
    assert ref.node_id is not None
    pool_id, node_id, path = plan.pool.id, ref.node_id, f"startup/{ref.name}.txt"
    try:
        node = client.get_node(pool_id, node_id, select=["id", "state", "startTaskInfo"])
    except ResourceNotFoundError:
        raise BackendError(f"pool {pool_id} has no node '{node_id}'",
                           "batchspec status SPEC lists the pool's nodes") from None
    info = node.start_task_info
    live = info is not None and _text(info.state) == "running"
    data = _read(lambda **kw: client.download_node_file(pool_id, node_id, path, **kw), offset)
    if data is None:
        if live or _text(node.state) in ("creating", "starting", "waitingforstarttask"):
            return LogChunk(b"", offset, True, f"node {node_id}: {path}")
        raise BackendError(f"node {node_id} has no start task output ({path})",
                           "the pool has no start task, or the node was reimaged")
    return LogChunk(data, offset + len(data), live, f"node {node_id}: {path}")
