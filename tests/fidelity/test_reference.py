"""Wire shapes the recordings do not cover, held against the Batch REST reference.

``taskcounts`` (``taskCounts`` and ``taskSlotCounts`` with active/running/completed/succeeded/
failed), task lists under ``$filter``/``$select``, and a failed entry of an ``addtaskcollection``
result (``status``, ``taskId``, ``error{code, message{lang, value}}``). Answers are read raw
(through the SDK's signed pipeline) so headers and key order are visible.
"""

from __future__ import annotations

import json
import re
from typing import Any

from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest, HttpResponse

from batchspec.emulator import Emulator
from batchspec.emulator.wire import format_duration, parse_duration
from tests.emulator.helpers import create_job, create_pool, sh, wait_completed

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


def _raw(client: BatchClient, method: str, url: str, body: object | None = None) -> HttpResponse:
    request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
    response = client.send_request(request)
    response.read()
    return response


def test_enums_come_back_in_the_services_casing(emulator: Emulator, batch_client: BatchClient) -> None:
    """Whatever casing a client sends (old SDKs send camelCase), the service answers its own."""
    base = emulator.endpoint
    pool = {
        "id": "casing", "vmSize": "STANDARD_D2S_V3",
        "virtualMachineConfiguration": {
            "imageReference": {"publisher": "canonical", "offer": "ubuntu", "sku": "22"},
            "nodeAgentSKUId": "batch.node.ubuntu 22.04",
            "dataDisks": [{"lun": 0, "diskSizeGB": 8, "caching": "ReadOnly", "storageAccountType": "Premium_LRS"}],
        },
        "taskSchedulingPolicy": {"nodeFillType": "PACK"},
        "userAccounts": [{"name": "u", "password": "p", "elevationLevel": "Admin"}],
        "startTask": {"commandLine": "/bin/true",
                      "userIdentity": {"autoUser": {"scope": "Task", "elevationLevel": "Admin"}}},
    }
    assert _raw(batch_client, "POST", f"{base}/pools?{API}", pool).status_code == 201
    job = {"id": "casing", "poolInfo": {"poolId": "casing"}, "onAllTasksComplete": "TerminateJob",
           "onTaskFailure": "PerformExitOptionsJobAction", "usesTaskDependencies": True}
    assert _raw(batch_client, "POST", f"{base}/jobs?{API}", job).status_code == 201
    destination = {"container": {"containerUrl": "http://127.0.0.1:9/c"}}
    task = {
        "id": "t", "commandLine": "/bin/true",
        "outputFiles": [{"filePattern": "x", "destination": destination,
                         "uploadOptions": {"uploadCondition": "TaskCompletion"}}],
        "exitConditions": {"default": {"jobAction": "Terminate", "dependencyAction": "Block"}},
    }
    assert _raw(batch_client, "POST", f"{base}/jobs/casing/tasks?{API}", task).status_code == 201

    got_pool = json.loads(_raw(batch_client, "GET", f"{base}/pools/casing?{API}").text())
    got_job = json.loads(_raw(batch_client, "GET", f"{base}/jobs/casing?{API}").text())
    got_task = json.loads(_raw(batch_client, "GET", f"{base}/jobs/casing/tasks/t?{API}").text())
    assert got_pool["vmSize"] == "standard_d2s_v3"
    assert got_pool["taskSchedulingPolicy"] == {"nodeFillType": "Pack"}  # PascalCase, as recorded
    assert got_pool["virtualMachineConfiguration"]["dataDisks"][0] == {
        "lun": 0, "caching": "readonly", "diskSizeGB": 8, "storageAccountType": "premium_lrs"}
    assert got_pool["userAccounts"][0]["elevationLevel"] == "admin"
    assert got_pool["startTask"]["userIdentity"] == {"autoUser": {"scope": "task", "elevationLevel": "admin"}}
    assert (got_job["onAllTasksComplete"], got_job["onTaskFailure"]) == ("terminatejob", "performexitoptionsjobaction")
    assert got_task["outputFiles"][0]["uploadOptions"] == {"uploadCondition": "taskcompletion"}
    assert got_task["exitConditions"] == {"default": {"jobAction": "terminate", "dependencyAction": "block"}}


def test_file_apis_answer_as_the_pools_os(emulator: Emulator, batch_client: BatchClient) -> None:
    """A Linux node reports file modes and keeps certs in a task directory; a Windows node names
    files with backslashes and reports no mode (as the recordings of Windows nodes show)."""
    create_pool(batch_client, "win", windows=True)
    create_pool(batch_client, "linux", dedicated=1)
    for pool in ("win", "linux"):
        create_job(batch_client, pool, pool)
        batch_client.create_task(pool, m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    wait_completed(batch_client, "win", 1)
    wait_completed(batch_client, "linux", 1)

    def listing(job: str) -> dict[str, Any]:
        body = json.loads(_raw(batch_client, "GET", f"{emulator.endpoint}/jobs/{job}/tasks/t/files?{API}&"
                                                     "recursive=true").text())
        return {entry["name"]: entry for entry in body["value"]}

    linux, win = listing("linux"), listing("win")
    assert {"certs", "stdout.txt", "stderr.txt", "wd"} <= set(linux) and "certs" not in win
    assert "fileMode" in linux["stdout.txt"]["properties"] and "fileMode" not in win["stdout.txt"]["properties"]
    linux_head = _raw(batch_client, "HEAD", f"{emulator.endpoint}/jobs/linux/tasks/t/files/stdout.txt?{API}")
    win_head = _raw(batch_client, "HEAD", f"{emulator.endpoint}/jobs/win/tasks/t/files/stdout.txt?{API}")
    assert "ocp-batch-file-mode" in linux_head.headers and "ocp-batch-file-mode" not in win_head.headers
    assert batch_client.get_task("win", "t").as_dict()["nodeInfo"]["taskRootDirectory"] == "workitems\\win\\job-1\\t"
    assert batch_client.get_task("linux", "t").as_dict()["nodeInfo"]["taskRootDirectory"] == "workitems/linux/job-1/t"
    create_job(batch_client, "nested", "win")
    batch_client.create_task("nested", m.BatchTaskCreateOptions(id="t", command_line=sh("mkdir -p a/b; echo > a/b/c")))
    wait_completed(batch_client, "nested", 1)
    assert "wd\\a\\b\\c" in listing("nested")


def test_errors_are_worded_as_the_service_words_them(emulator: Emulator, batch_client: BatchClient) -> None:
    cases = [
        ("GET", "pools/none", None, 404, "PoolNotFound", "The specified pool does not exist."),
        ("GET", "jobs/none", None, 404, "JobNotFound", "The specified job does not exist."),
        ("POST", "pools", {"id": "bad id!", "vmSize": "x"}, 400, "InvalidPropertyValue",
         "The value provided for one of the properties in the request body is invalid."),
        ("POST", "jobs", {"id": "j"}, 400, "MissingRequiredProperty",
         "A required property was not specified in the request body."),
        ("DELETE", "nodecounts", None, 405, "UnsupportedHttpVerb",
         "The resource doesn't support the specified HTTP verb."),
        ("GET", "jobschedules", None, 400, "InvalidUri",
         "The requested URI does not represent any resource on the server."),
    ]
    for method, path, body, status, code, message in cases:
        try:
            response = _raw(batch_client, method, f"{emulator.endpoint}/{path}?{API}", body)
        except HttpResponseError as exc:
            assert exc.response is not None
            response = exc.response  # type: ignore[assignment]
        error = json.loads(response.text())
        assert (response.status_code, error["code"]) == (status, code), path
        assert error["message"]["value"].split("\n")[0].startswith(message)
