"""Batch task definitions from planned tasks, and submitting them in parallel chunks.

``create_tasks`` in azure-batch 15.1 compares result statuses case-sensitively and so misses the
service's ``"ClientError"``/``"Success"``; we call ``create_task_collection`` ourselves and read
every per-task result without regard to case.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

from azure.batch import BatchClient, models
from azure.core.exceptions import HttpResponseError

from ...errors import BackendError
from ...plan import InputFile, Plan, PlannedContainer, PlannedTask
from ...plan.deps import GATE_COMMAND, Dependencies, Gate
from ...redact import redact
from ...runner import node_command_line
from .config import RETRY, SAFE_TO_REPEAT, backoff

#: The service's limits for one addtaskcollection request.
MAX_TASKS_PER_REQUEST = 100
SUBMIT_CONCURRENCY = 4
#: Per-job records in the output container: ``<prefix>/<job>/succeeded/<task>/<fingerprint>/stdout.txt``
#: (uploaded by the node) marks a task that succeeded as planned with that fingerprint;
#: ``<prefix>/<job>/record.json`` (written by batchspec when it collects) holds, per task, the
#: fingerprint and the ETags of the outputs it produced, so a rerun skips exactly the tasks whose
#: fingerprint and outputs are unchanged, even after the job was deleted; ``.../failed/<task>/``
#: keeps a failed task's logs.
RECORDS_PREFIX = ".batchspec/jobs"


def success_marker(job_id: str, task_id: str, fingerprint: str) -> str:
    return f"{success_markers(job_id, task_id)}{fingerprint}/stdout.txt"


def success_markers(job_id: str, task_id: str) -> str:
    """The prefix of every success marker of a task (whatever its fingerprint)."""
    return f"{RECORDS_PREFIX}/{job_id}/succeeded/{task_id}/"


def record_blob(job_id: str) -> str:
    return f"{RECORDS_PREFIX}/{job_id}/record.json"


def display_name(task_id: str, fingerprint: str) -> str:
    """The Batch task's display name, which carries the fingerprint it was added with."""
    return f"{task_id} [{fingerprint}]"


def fingerprint_of(name: str | None) -> str | None:
    """The fingerprint a display name from :func:`display_name` carries."""
    if not name or not name.endswith("]") or " [" not in name:
        return None
    return name[name.rindex(" [") + 2 : -1]


def failed_logs(job_id: str, task_id: str) -> str:
    """Where a failed task's stdout.txt and stderr.txt are kept in the output container."""
    return f"{RECORDS_PREFIX}/{job_id}/failed/{task_id}"


@dataclass(frozen=True)
class Urls:
    """Where a task's files come from and go to (SAS URLs; never printed)."""

    input_blob: Callable[[InputFile], str]  # a file in storage -> its blob's read-only SAS URL
    container: Callable[[str], str]  # a container name -> its URL with a read/list SAS
    output_container: str  # the output container's URL with a create/write SAS
    stage_container: Callable[[str], str]  # a stage -> its work container's URL with a SAS
    auto_storage: bool = False  # the storage account is the Batch account's auto-storage account


_CONDITIONS = {"success": "tasksuccess", "failure": "taskfailure", "always": "taskcompletion"}


def resource_file(f: InputFile, urls: Urls) -> models.ResourceFile:
    """The Batch resource file that puts ``f`` at its path in the working directory."""
    mode = f.mode
    if f.kind == "url":
        return models.ResourceFile(http_url=f.source, file_path=f.path, file_mode=mode)
    if f.kind == "blobs":
        assert f.container is not None
        auto = urls.auto_storage
        return models.ResourceFile(auto_storage_container_name=f.container if auto else None,
                                   storage_container_url=None if auto else urls.container(f.container),
                                   blob_prefix=f.source or None, file_path=f.path or None, file_mode=mode)
    return models.ResourceFile(http_url=urls.input_blob(f), file_path=f.path, file_mode=mode)


def task_resource_files(plan: Plan, task: PlannedTask, urls: Urls) -> list[models.ResourceFile]:
    """The job's shared files and the task's own. A task over every output of a stage (a merge)
    gets that stage's work container whole, one resource file however many files it holds."""
    stage = plan.stage_of(task)
    inputs: tuple[InputFile, ...] = task.inputs
    files = [resource_file(f, urls) for f in plan.files]
    if stage.group == "all" and not stage.match and stage.source is not None:
        inputs = tuple(f for f in inputs if f.kind != "output")
        files.append(models.ResourceFile(storage_container_url=urls.stage_container(stage.source)))
    return files + [resource_file(f, urls) for f in inputs]


def task_output_files(plan: Plan, task: PlannedTask, urls: Urls, fingerprint: str) -> list[models.OutputFile]:
    """Where each output rule's files go: a later stage's inputs to the stage's work container,
    published ones to the output container (failure outputs always there, for the user); and
    the task's logs, to mark its success or keep its failure."""
    stage = plan.stage_of(task)
    out: list[models.OutputFile] = []
    for rule in task.outputs:
        path = rule.upload_path or None
        if stage.consumed and rule.applies(True):
            condition = "tasksuccess" if rule.when != "always" else "taskcompletion"
            out.append(_output_file(rule.pattern, urls.stage_container(stage.name), path, condition))
        if stage.publish or rule.when != "success":
            condition = _CONDITIONS[rule.when] if stage.publish else "taskfailure"
            out.append(_output_file(rule.pattern, urls.output_container, path, condition))
    marker = success_marker(plan.job_id, task.id, fingerprint)
    out += [
        _output_file("../stdout.txt", urls.output_container, marker, "tasksuccess"),
        _output_file("../std*.txt", urls.output_container, failed_logs(plan.job_id, task.id), "taskfailure"),
    ]
    return out


_WORKDIRS = {"task": "taskWorkingDirectory", "image": "containerImageDefault"}


def container_settings(container: PlannedContainer | None) -> models.BatchTaskContainerSettings | None:
    """Batch ``containerSettings`` for a task that runs in an image (its registry's login is the
    pool's: see ``pool_options``)."""
    if container is None:
        return None
    return models.BatchTaskContainerSettings(image_name=container.image,
                                             container_run_options=container.options or None,
                                             working_directory=_WORKDIRS[container.workdir])


def task_options(plan: Plan, task: PlannedTask, urls: Urls, fingerprint: str,
                 depends: Dependencies | None = None) -> models.BatchTaskCreateOptions:
    """The Batch task for a planned task: the same command line the local backend runs."""
    constraints = models.BatchTaskConstraints(
        max_task_retry_count=task.retries,
        max_wall_clock_time=timedelta(seconds=task.timeout_seconds) if task.timeout_seconds else None,
    )
    return models.BatchTaskCreateOptions(
        id=task.id,
        display_name=display_name(task.id, fingerprint),
        command_line=node_command_line(task.command),
        resource_files=task_resource_files(plan, task, urls) or None,
        output_files=task_output_files(plan, task, urls, fingerprint),
        environment_settings=[models.EnvironmentSetting(name=k, value=v) for k, v in task.env] or None,
        constraints=constraints,
        depends_on=depends_on(depends) if depends is not None else None,
        container_settings=container_settings(plan.stage_of(task).container),
    )


def depends_on(depends: Dependencies) -> models.BatchTaskDependencies:
    return models.BatchTaskDependencies(
        task_ids=list(depends.task_ids) or None,
        task_id_ranges=[models.BatchTaskIdRange(start=a, end=b) for a, b in depends.ranges] or None,
    )


def gate_options(gate: Gate, container: PlannedContainer | None = None) -> models.BatchTaskCreateOptions:
    """A gate: it waits for its slice of a long dependency list, and does nothing (on a container
    pool in a container too, as every task there must: ``container``, the image of what waits)."""
    return models.BatchTaskCreateOptions(
        id=gate.id, command_line=node_command_line(GATE_COMMAND),
        depends_on=models.BatchTaskDependencies(task_ids=list(gate.task_ids)),
        container_settings=container_settings(container),
    )


def _output_file(pattern: str, container_url: str, path: str | None, condition: str) -> models.OutputFile:
    return models.OutputFile(
        file_pattern=pattern,
        destination=models.OutputFileDestination(
            container=models.OutputFileBlobContainerDestination(container_url=container_url, path=path)
        ),
        upload_options=models.OutputFileUploadConfiguration(upload_condition=condition),
    )


class Submitter:
    """Adds tasks with ``create_task_collection`` in chunks of 100, several requests in flight.

    A chunk the service finds too large (413 RequestBodyTooLarge) is split in half and retried;
    per-task ``ServerError`` results are sent again with the same cap and backoff as every
    request (:data:`~.config.RETRY`); ``TaskExists`` counts as added; any other per-task client
    error stops the run naming the task and the service's message. Whole requests are retried
    by azure-core alone (POST included: a repeat is harmless), never by a loop of ours on top.
    """

    def __init__(self, client: BatchClient, job_id: str, concurrency: int = SUBMIT_CONCURRENCY,
                 progress: Callable[[int], None] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.sleep = sleep
        self.tries: dict[str, int] = {}  # task id -> how often the service answered ServerError for it
        self.job_id = job_id
        self.concurrency = concurrency
        self.progress = progress
        self.added = 0
        self.existed = 0
        self.requests = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._in_flight = 0

    def submit(self, tasks: Sequence[models.BatchTaskCreateOptions]) -> None:
        chunks = [list(tasks[i : i + MAX_TASKS_PER_REQUEST]) for i in range(0, len(tasks), MAX_TASKS_PER_REQUEST)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            pending: set[Future[list[list[models.BatchTaskCreateOptions]]]] = {
                pool.submit(self._send, chunk) for chunk in chunks
            }
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    for retry in future.result():  # raises the first fatal error
                        pending.add(pool.submit(self._send, retry))

    def _send(self, chunk: list[models.BatchTaskCreateOptions]) -> list[list[models.BatchTaskCreateOptions]]:
        """Send one chunk; returns chunks to send again."""
        with self._lock:
            self.requests += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            group = models.BatchTaskGroup(task_values=chunk)
            result = self.client.create_task_collection(self.job_id, group, **SAFE_TO_REPEAT)
        except HttpResponseError as exc:
            code = getattr(exc.error, "code", None) if exc.error else None
            if exc.status_code == 413 or code == "RequestBodyTooLarge":
                if len(chunk) == 1:
                    raise BackendError(f"task '{chunk[0].id}' is too large for Azure Batch (RequestBodyTooLarge)",
                                       "shorten its command line, environment or number of inputs") from None
                half = len(chunk) // 2
                return [chunk[:half], chunk[half:]]
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
        by_id = {t.id: t for t in chunk}
        retry: list[models.BatchTaskCreateOptions] = []
        added = existed = 0
        for entry in result.result_values or []:
            # An SDK enum member or the raw string ("Success" is not one of 15.1's enum values).
            status = str(getattr(entry.status, "value", entry.status)).lower()
            error_code = entry.error.code if entry.error else None
            if status == "success":
                added += 1
            elif status == "clienterror" and error_code == "TaskExists":
                existed += 1
            elif status == "servererror" and entry.task_id in by_id:
                with self._lock:
                    tries = self.tries[entry.task_id] = self.tries.get(entry.task_id, 0) + 1
                if tries > RETRY["retry_total"]:
                    raise BackendError(f"Azure Batch kept failing to add task '{entry.task_id}' ({tries} tries): "
                                       f"{error_code}: {_error_text(entry.error)}", "run again later to add the rest")
                retry.append(by_id[entry.task_id])
            else:
                message = _error_text(entry.error)
                raise BackendError(f"Azure Batch refused task '{entry.task_id}': {error_code}: {message}")
        with self._lock:
            self.added += added
            self.existed += existed
            if self.progress:
                self.progress(self.added + self.existed)
        if retry:  # the same policy as azure-core's for whole requests: capped, backing off
            self.sleep(backoff(max(self.tries[t.id] for t in retry)))
        return [retry] if retry else []


def _error_text(error: models.BatchError | None) -> str:
    if error is None:
        return "no details"
    text = error.message.value if error.message and error.message.value else ""
    details = "; ".join(f"{v.key}: {v.value}" for v in (error.error_values or []) if v.key)
    return redact((text.split("\nRequestId:")[0] + (f" ({details})" if details else "")).strip())
