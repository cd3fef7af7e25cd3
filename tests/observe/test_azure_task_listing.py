"""The Azure record's task listing, read as the service's JSON through the BatchClient's pipeline:
a page shaped as the real service answers (from recordings of it), paging by ``odata.nextLink``,
retries, and errors that read the same as through the SDK's own ``list_tasks``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from azure.batch import BatchClient
from azure.core.exceptions import ResourceNotFoundError
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse

from batchspec.backends.azure.config import AzureConfig, batch_client_args
from batchspec.backends.azure.errors import translate_errors
from batchspec.backends.azure.records import PAGE_SIZE, TASK_FIELDS, Counter, list_tasks, task_record
from batchspec.errors import BackendError

ENDPOINT = "https://acct.eastus2.batch.azure.com"
ACCOUNT = "https://batch4.eastus2.batch.azure.com"  # the service names itself so in its links
CONFIG = AzureConfig(batch_endpoint=ENDPOINT, batch_account="acct", batch_key="a2V5")

# Task bodies as the real service lists them (net/TaskUpdate: a queued task; python/files: a task
# that ran, as a list item), with one requeued and retried task that failed.
QUEUED = {
    "id": "Task1", "url": f"{ACCOUNT}/jobs/batchJob1/tasks/Task1", "eTag": "0x8DD843BB7EE5BA0",
    "creationTime": "2025-04-25T20:56:58.0266912Z", "lastModified": "2025-04-25T20:56:58.0266912Z",
    "state": "active", "stateTransitionTime": "2025-04-25T20:56:58.0266912Z",
    "commandLine": "cmd /c echo Hello World",
    "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
    "constraints": {"maxWallClockTime": "P10675199DT2H48M5.4775807S", "retentionTime": "P7D", "maxTaskRetryCount": 0},
    "requiredSlots": 1, "executionInfo": {"retryCount": 0, "requeueCount": 0},
}
RAN = {
    "id": "test_task", "url": f"{ACCOUNT}/jobs/batch/tasks/test_task", "eTag": "0x8DD7332727B5861",
    "creationTime": "2025-04-04T04:37:46.2723681Z", "lastModified": "2025-04-04T04:37:46.2723681Z",
    "state": "completed", "stateTransitionTime": "2025-04-04T04:37:50.097665Z", "previousState": "running",
    "executionInfo": {"startTime": "2025-04-04T04:37:49.425509Z", "endTime": "2025-04-04T04:37:50.097665Z",
                      "exitCode": 0, "result": "success", "retryCount": 0, "requeueCount": 0},
    "nodeInfo": {"affinityId": "TVM:tvmps_48aa_d", "nodeUrl": f"{ACCOUNT}/pools/2b751f41/nodes/tvmps_48aa_d",
                 "poolId": "2b751f41", "nodeId": "tvmps_48aa_d",
                 "taskRootDirectory": "workitems\\batch\\job-1\\test_task",
                 "taskRootDirectoryUrl": f"{ACCOUNT}/pools/2b751f41/nodes/tvmps_48aa_d/files/workitems/batch/job-1/t"},
}
FAILED = {
    "id": "f", "state": "completed", "creationTime": "2025-01-01T00:00:00Z",
    "executionInfo": {"startTime": "2025-01-01T00:01:00.1234567Z", "endTime": "2025-01-01T00:01:30Z", "exitCode": 1,
                      "result": "failure", "retryCount": 1, "requeueCount": 1,
                      "lastRequeueTime": "2025-01-01T00:00:30Z",
                      "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                                      "message": "https://a.blob.core.windows.net/c/x?sv=1&sig=SECRET"}},
    "nodeInfo": {"nodeId": "tvm-2", "poolId": "p"},
}
NEXT = (f"{ACCOUNT}/jobs/batchJob1/tasks?api-version=2024-07-01.20.0&maxresults={PAGE_SIZE}"
        f"&$select={','.join(TASK_FIELDS)}&$skiptoken=WATaskTokenX%3D%3D")


def page(tasks: list[dict[str, Any]], next_link: str | None = None) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"odata.metadata": f"{ACCOUNT}/$metadata#tasks", "value": tasks}
    if next_link:
        body["odata.nextLink"] = next_link
    return 200, body


def error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    """An error body as the service sends it (python/exception_policy)."""
    metadata = f"{ACCOUNT}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"
    text = f"{message}\nRequestId:r-1\nTime:2025-01-01T00:00:00.1234567Z"
    return status, {"odata.metadata": metadata, "code": code, "message": {"lang": "en-US", "value": text}}


class _Raw:
    """What RestHttpClientTransportResponse reads from (an http.client response)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.reason, self._body = status, "", body

    def getheaders(self) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json;odata=minimalmetadata"), ("Content-Length", str(len(self._body)))]

    def read(self) -> bytes:
        return self._body


class Replay(HttpTransport):  # type: ignore[type-arg]
    """Answers each request with the next recorded answer, keeping the requests sent."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers, self.sent = list(answers), []  # type: list[tuple[int, dict[str, Any]]], list[Any]

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.sent.append(request)
        status, body = self.answers.pop(0)
        raw = _Raw(status, json.dumps(body).encode())
        return RestHttpClientTransportResponse(request=request, internal_response=raw)  # type: ignore[no-untyped-call]

    def sleep(self, duration: float) -> None:  # no waiting between retries
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Replay:
        return self

    def __exit__(self, *args: object) -> None:
        pass


def client(answers: list[tuple[int, dict[str, Any]]]) -> tuple[BatchClient, Replay]:
    replay = Replay(answers)
    return BatchClient(**batch_client_args(CONFIG), transport=replay), replay


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query)


def test_a_recorded_page_and_its_next_link() -> None:
    batch, replay = client([page([QUEUED, RAN], NEXT), page([FAILED])])
    count = Counter()
    records = {t["id"]: task_record(t) for t in list_tasks(batch, "batch job/1", count)}
    assert count.requests == 2 and len(replay.sent) == 2
    first, second = (r.url for r in replay.sent)
    api = batch._config.api_version
    assert first.startswith(f"{ENDPOINT}/jobs/batch%20job%2F1/tasks?")
    assert query(first) == {"api-version": [api], "maxresults": [str(PAGE_SIZE)], "$select": [",".join(TASK_FIELDS)]}
    assert second.startswith(f"{ACCOUNT}/jobs/batchJob1/tasks?")  # the link as given, with the client's api-version
    assert query(second) == {"api-version": [api], "maxresults": [str(PAGE_SIZE)], "$select": [",".join(TASK_FIELDS)],
                             "$skiptoken": ["WATaskTokenX=="]}
    assert all(r.headers["Authorization"].startswith("SharedKey acct:") for r in replay.sent)

    queued, ran, failed = records["Task1"], records["test_task"], records["f"]
    assert queued.state == "waiting" and queued.attempts == () and queued.retries == queued.requeues == 0
    assert queued.queued == datetime(2025, 4, 25, 20, 56, 58, 26691, tzinfo=timezone.utc).timestamp()
    assert ran.state == "succeeded" and ran.exit_code == 0 and ran.reason is None
    (attempt,) = ran.attempts
    assert attempt.where == "tvmps_48aa_d" and attempt.outcome == "succeeded"
    assert attempt.start == datetime(2025, 4, 4, 4, 37, 49, 425509, tzinfo=timezone.utc).timestamp()
    assert attempt.end == datetime(2025, 4, 4, 4, 37, 50, 97665, tzinfo=timezone.utc).timestamp()
    assert failed.state == "failed" and failed.retries == 1 and failed.requeues == 1 and failed.exit_code == 1
    assert [a.outcome for a in failed.attempts] == ["requeued", "retried", "failed"]
    assert failed.attempts[0].end == datetime(2025, 1, 1, 0, 0, 30, tzinfo=timezone.utc).timestamp()
    assert failed.attempts[-1].start == datetime(2025, 1, 1, 0, 1, 0, 123456, tzinfo=timezone.utc).timestamp()
    assert failed.reason is not None and failed.reason.startswith("FailureExitCode: ") and "SECRET" not in failed.reason


def test_the_same_record_as_from_the_sdk_models() -> None:
    """A task model (what ``get_task`` gives ``batchspec logs``) maps to the same record as its JSON."""
    batch, _ = client([page([QUEUED, RAN, FAILED]), page([QUEUED, RAN, FAILED])])
    raw = [task_record(t) for t in list_tasks(batch, "job", Counter())]
    assert [task_record(t) for t in batch.list_tasks("job")] == raw


def test_a_throttled_page_is_retried_and_counted_once() -> None:
    batch, replay = client([error(503, "ServerBusy", "The server is busy."), page([QUEUED])])
    count = Counter()
    assert [t["id"] for t in list_tasks(batch, "job", count)] == ["Task1"]
    assert count.requests == 1 and len(replay.sent) == 2


@pytest.mark.parametrize("answer", [error(500, "InternalError", "Server failed."),
                                    error(400, "InvalidQueryParameterValue", "Bad $select.")])
def test_service_errors_read_as_through_the_sdk(answer: tuple[int, dict[str, Any]]) -> None:
    def message(read: Callable[[BatchClient], Iterator[Any]]) -> str:
        batch, _ = client([answer] * 9)
        with pytest.raises(BackendError) as caught, translate_errors(CONFIG, "reading job 'job'"):
            list(read(batch))
        return caught.value.message

    ours = message(lambda batch: list_tasks(batch, "job", Counter()))
    assert ours == message(lambda batch: iter(batch.list_tasks("job")))
    assert answer[1]["code"] in ours and "RequestId" not in ours


def test_a_missing_job_is_not_found() -> None:
    batch, _ = client([error(404, "JobNotFound", "The specified job does not exist.")])
    with pytest.raises(ResourceNotFoundError):
        list(list_tasks(batch, "gone", Counter()))


def test_request_shape_matches_the_sdk() -> None:
    """The first page asks what ``client.list_tasks(select=TASK_FIELDS, max_results=PAGE_SIZE)`` asks."""
    ours, theirs = client([page([])]), client([page([])])
    list(list_tasks(ours[0], "a/b c", Counter()))
    list(theirs[0].list_tasks("a/b c", select=TASK_FIELDS, max_results=PAGE_SIZE))
    mine, sdk = ours[1].sent[0], theirs[1].sent[0]
    assert mine.method == sdk.method == "GET"
    assert (urlparse(mine.url).path, query(mine.url)) == (urlparse(sdk.url).path, query(sdk.url))
    assert mine.headers["Accept"] == sdk.headers["Accept"]
