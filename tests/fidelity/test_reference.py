"""Wire shapes the recordings do not cover, held against the Batch REST reference.

``taskcounts`` (``taskCounts`` and ``taskSlotCounts`` with active/running/completed/succeeded/
failed), task lists under ``$filter``/``$select``, and a failed entry of an ``addtaskcollection``
result (``status``, ``taskId``, ``error{code, message{lang, value}}``). Answers are read raw
(through the SDK's signed pipeline) so headers and key order are visible.
"""

from __future__ import annotations

import json
import re

from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.rest import HttpRequest, HttpResponse

from batchspec.emulator import Emulator
from batchspec.emulator.wire import format_duration, parse_duration
from tests.emulator.helpers import create_job, create_pool, wait_completed

API = "api-version=2025-06-01"


def _get(client: BatchClient, url: str) -> HttpResponse:
    response = client.send_request(HttpRequest("GET", url))
    response.read()
    return response


def _common_headers(response: HttpResponse) -> None:
    assert response.headers["DataServiceVersion"] == "3.0"
    assert response.headers["Content-Type"] == "application/json; odata=minimalmetadata"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert re.match(r"^[0-9a-f-]{36}$", response.headers["request-id"])


def test_task_counts_shape(emulator: Emulator, batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=2)
    create_job(batch_client)
    batch_client.create_tasks(
        "job",
        [
            m.BatchTaskCreateOptions(id="ok", command_line="/bin/true"),
            m.BatchTaskCreateOptions(id="bad", command_line="/bin/false"),
            m.BatchTaskCreateOptions(id="big", command_line="/bin/true", required_slots=2),
        ],
    )
    wait_completed(batch_client, "job", 3)

    response = _get(batch_client, f"{emulator.endpoint}/jobs/job/taskcounts?{API}")

    _common_headers(response)
    body = json.loads(response.text())
    assert list(body) == ["odata.metadata", "taskCounts", "taskSlotCounts"]
    assert body["taskCounts"] == {"active": 0, "running": 0, "completed": 3, "succeeded": 2, "failed": 1}
    assert list(body["taskSlotCounts"]) == ["active", "running", "completed", "succeeded", "failed"]
    assert body["taskSlotCounts"]["completed"] == 4  # requiredSlots weigh the slot counts
    assert body["taskSlotCounts"]["succeeded"] == 3


def test_task_list_with_filter_and_select(emulator: Emulator, batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=0)
    create_job(batch_client)
    batch_client.create_tasks("job", [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(3)])
    url = f"{emulator.endpoint}/jobs/job/tasks?{API}&$filter=state%20eq%20'active'&$select=id,state,executionInfo"

    response = _get(batch_client, url)

    _common_headers(response)
    assert "ETag" not in response.headers  # lists carry no ETag
    body = json.loads(response.text())
    assert list(body) == ["odata.metadata", "value"]
    assert body["odata.metadata"] == f"{emulator.endpoint}/$metadata#tasks"
    assert [list(t) for t in body["value"]] == [["id", "state", "executionInfo"]] * 3
    assert body["value"][0]["executionInfo"] == {"retryCount": 0, "requeueCount": 0}
    none = _get(batch_client, f"{emulator.endpoint}/jobs/job/tasks?{API}&$filter=state%20eq%20'completed'")
    assert json.loads(none.text())["value"] == []


def test_failed_entry_of_a_task_collection(emulator: Emulator, batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=0)
    create_job(batch_client)
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="taken", command_line="/bin/true"))
    body = json.dumps(
        {"value": [{"id": "taken", "commandLine": "/bin/true"}, {"id": "free", "commandLine": "/bin/true"}]}
    )
    request = HttpRequest(
        "POST",
        f"{emulator.endpoint}/jobs/job/addtaskcollection?{API}",
        content=body.encode(),
        headers={"Content-Type": "application/json; odata=minimalmetadata"},
    )

    response = batch_client.send_request(request)
    response.read()

    assert response.status_code == 200  # 200 with a body, not 201
    _common_headers(response)
    result = json.loads(response.text())
    assert result["odata.metadata"] == f"{emulator.endpoint}/$metadata#taskaddresult"
    failed, added = result["value"]
    assert list(failed) == ["status", "taskId", "error"]
    assert failed["status"] == "ClientError" and failed["taskId"] == "taken"
    assert list(failed["error"]) == ["code", "message"]
    assert failed["error"]["code"] == "TaskExists"
    assert failed["error"]["message"]["lang"] == "en-US"
    assert failed["error"]["message"]["value"].startswith("The specified task already exists.\nRequestId:")
    assert list(added) == ["status", "taskId", "eTag", "lastModified", "location"]
    assert added["status"] == "Success"
    assert re.match(r"^0x[0-9A-F]{15}$", added["eTag"])


def test_durations_are_written_as_the_service_does() -> None:
    assert format_duration(parse_duration("PT06M00S")) == "PT6M"
    assert format_duration(parse_duration("P10675199DT2H48M5.4775807S")) == "P10675199DT2H48M5.4775807S"
    assert format_duration(parse_duration("PT7M9.497S")) == "PT7M9.497S"
    assert format_duration(parse_duration("P7D")) == "P7D"
    assert format_duration(parse_duration("P0DT0H0M1.000000S")) == "PT1S"  # as azure-batch sends timedelta
