"""Every error path, through the real SDK: the service's codes, statuses and error bodies."""

from __future__ import annotations

import json
from typing import cast

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest, HttpResponse

from batchspec.emulator import Emulator, generate_key
from tests.emulator.helpers import create_job, create_pool, wait_task


def _error(raised: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str, str]:
    exc = raised.value
    assert exc.error is not None
    return int(exc.status_code or 0), str(exc.error.code), str(exc.error.message)


def _values(raised: pytest.ExceptionInfo[HttpResponseError]) -> dict[str, str]:
    body = raised.value.response.json()  # type: ignore[union-attr]
    return {v["key"]: v["value"] for v in body.get("values", [])}


def test_exists_conflicts(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=0)
    with pytest.raises(ResourceExistsError) as pool:
        create_pool(batch_client, dedicated=0)
    assert _error(pool)[:2] == (409, "PoolExists")
    assert _error(pool)[2].startswith("The specified pool already exists.\nRequestId:")

    create_job(batch_client)
    with pytest.raises(ResourceExistsError) as job:
        create_job(batch_client, "JOB")  # ids are case-insensitive on the service
    assert _error(job)[:2] == (409, "JobExists")

    batch_client.create_task("job", m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    with pytest.raises(ResourceExistsError) as task:
        batch_client.create_task("job", m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    assert _error(task)[:2] == (409, "TaskExists")


def test_task_collection_reports_per_task_client_errors(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=0)
    create_job(batch_client)
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="dup", command_line="/bin/true"))
    group = m.BatchTaskGroup(
        task_values=[
            m.BatchTaskCreateOptions(id="new", command_line="/bin/true"),
            m.BatchTaskCreateOptions(id="dup", command_line="/bin/true"),
        ]
    )

    result = batch_client.create_task_collection("job", group)

    by_id = {r.task_id: r for r in result.result_values or []}
    assert by_id["new"].status == "Success"
    assert (by_id["new"].location or "").endswith("/jobs/job/tasks/new")
    failed = by_id["dup"]
    assert failed.status == "ClientError"
    assert failed.error is not None and failed.error.message is not None
    assert failed.error.code == "TaskExists"
    assert (failed.error.message.value or "").startswith("The specified task already exists.")
    assert failed.error.message.lang == "en-US"
    assert failed.etag is None and failed.location is None


def test_not_found(batch_client: BatchClient) -> None:
    with pytest.raises(ResourceNotFoundError) as pool:
        batch_client.get_pool("missing")
    assert _error(pool)[:2] == (404, "PoolNotFound")
    with pytest.raises(ResourceNotFoundError) as exists:
        batch_client.pool_exists("missing")  # azure-batch 15.1 raises on the service's 404 HEAD
    assert exists.value.status_code == 404
    with pytest.raises(ResourceNotFoundError) as job:
        batch_client.get_job("missing")
    assert _error(job)[:2] == (404, "JobNotFound")
    with pytest.raises(ResourceNotFoundError) as job_tasks:
        batch_client.create_task("missing", m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    assert _error(job_tasks)[:2] == (404, "JobNotFound")
    create_pool(batch_client, dedicated=0)
    create_job(batch_client)
    with pytest.raises(ResourceNotFoundError) as task:
        batch_client.get_task("job", "missing")
    assert _error(task)[:2] == (404, "TaskNotFound")
    with pytest.raises(ResourceNotFoundError) as node:
        batch_client.get_node("pool", "tvmps_missing_d")
    assert _error(node)[:2] == (404, "NodeNotFound")
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    with pytest.raises(ResourceNotFoundError) as file:
        b"".join(batch_client.download_task_file("job", "t", "stdout.txt"))  # never ran: no files yet
    response = cast(HttpResponse, file.value.response)
    assert response.status_code == 404
    response.read()  # a streamed download: the error body is read on demand
    assert json.loads(response.text())["code"] == "FileNotFound"
    with pytest.raises(ResourceNotFoundError) as head:
        batch_client.get_task_file_properties("job", "t", "stdout.txt")
    assert head.value.status_code == 404  # a HEAD error has no body


def test_invalid_and_missing_properties(batch_client: BatchClient) -> None:
    with pytest.raises(HttpResponseError) as bad_id:
        create_pool(batch_client, "no spaces allowed")
    assert _error(bad_id)[:2] == (400, "InvalidPropertyValue")
    assert _values(bad_id)["PropertyName"] == "id"
    assert _values(bad_id)["PropertyValue"] == "no spaces allowed"
    assert "Reason" in _values(bad_id)
    # The SDK's typed errors keep the key/value details too.
    assert bad_id.value.error is not None
    assert {d.code for d in bad_id.value.error.details} == {"PropertyName", "PropertyValue", "Reason"}

    with pytest.raises(HttpResponseError) as slots:
        create_pool(batch_client, "p", slots=0)
    assert _error(slots)[:2] == (400, "InvalidPropertyValue")
    assert _values(slots)["PropertyName"] == "taskSlotsPerNode"

    create_pool(batch_client, dedicated=0)
    create_job(batch_client)
    with pytest.raises(HttpResponseError) as missing:
        batch_client.create_task("job", m.BatchTaskCreateOptions({"id": "no-command"}))  # raw JSON
    assert _error(missing)[:2] == (400, "MissingRequiredProperty")
    assert _values(missing) == {"PropertyName": "commandLine"}

    with pytest.raises(HttpResponseError) as mode:
        batch_client.update_job("job", m.BatchJobUpdateOptions({"onAllTasksComplete": "sometimes"}))
    assert _error(mode)[:2] == (400, "InvalidPropertyValue")


def test_invalid_request_body(emulator: Emulator, batch_client: BatchClient) -> None:
    request = HttpRequest(
        "POST",
        f"{emulator.endpoint}/jobs?api-version=2025-06-01",
        content=b"{this is not json",
        headers={"Content-Type": "application/json; odata=minimalmetadata"},
    )
    with pytest.raises(HttpResponseError) as raised:
        batch_client.send_request(request)  # the SDK's pipeline: signed, then its error policy
    assert _error(raised)[:2] == (400, "InvalidRequestBody")


def test_authentication_failed(emulator: Emulator) -> None:
    wrong_key = BatchClient(emulator.endpoint, AzureNamedKeyCredential(emulator.account, generate_key()))
    with pytest.raises(HttpResponseError) as key:
        list(wrong_key.list_pools())
    assert _error(key)[:2] == (403, "AuthenticationFailed")
    wrong_account = BatchClient(emulator.endpoint, AzureNamedKeyCredential("other", emulator.key))
    with pytest.raises(HttpResponseError) as account:
        wrong_account.get_pool("p")
    assert _error(account)[:2] == (403, "AuthenticationFailed")


def test_request_body_too_large(emulator: Emulator, batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=0)
    create_job(batch_client)
    too_many = m.BatchTaskGroup(
        task_values=[m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(101)]
    )
    with pytest.raises(HttpResponseError) as count:
        batch_client.create_task_collection("job", too_many)
    assert _error(count)[:2] == (413, "RequestBodyTooLarge")

    big = "/bin/echo " + "x" * 12_000  # 100 of these exceed 1 MB
    too_big = m.BatchTaskGroup(task_values=[m.BatchTaskCreateOptions(id=f"b{i}", command_line=big) for i in range(100)])
    with pytest.raises(HttpResponseError) as size:
        batch_client.create_task_collection("job", too_big)
    assert _error(size)[:2] == (413, "RequestBodyTooLarge")

    # create_tasks reacts to RequestBodyTooLarge by halving its chunks, and then succeeds.
    before = emulator.request_counts().get("create_task_collection", 0)
    result = batch_client.create_tasks("job", too_big.task_values)
    assert len(result.result_values or []) == 100
    assert emulator.request_counts()["create_task_collection"] - before >= 3
    assert batch_client.get_job_task_counts("job").task_counts.active == 100


def test_state_conflicts(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(batch_client)
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    wait_task(batch_client, "job", "t")
    batch_client.update_job("job", m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    with pytest.raises(HttpResponseError) as off:
        batch_client.update_job("job", m.BatchJobUpdateOptions(all_tasks_complete_mode="noaction"))
    assert _error(off)[:2] in ((400, "InvalidPropertyValue"), (409, "JobCompleted"))

    batch_client.begin_delete_pool("pool", polling_interval=0)
    with pytest.raises(ResourceExistsError) as deleting:
        batch_client.begin_delete_pool("pool", polling_interval=0)
    assert _error(deleting)[:2] == (409, "PoolBeingDeleted")


def test_error_body_shape(emulator: Emulator, batch_client: BatchClient) -> None:
    with pytest.raises(ResourceNotFoundError) as raised:
        batch_client.get_job("nope")
    response = cast(HttpResponse, raised.value.response)
    body = json.loads(response.text())
    assert list(body) == ["odata.metadata", "code", "message"]
    assert body["odata.metadata"] == (
        f"{emulator.endpoint}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"
    )
    lang_value = body["message"]
    assert lang_value["lang"] == "en-US"
    text, request_id, when = lang_value["value"].split("\n")
    assert text == "The specified job does not exist."
    assert request_id == f"RequestId:{response.headers['request-id']}"
    assert when.startswith("Time:") and when.endswith("Z")
    assert "Content-Length" in response.headers and "Transfer-Encoding" not in response.headers
