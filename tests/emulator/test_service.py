"""Service-level behaviour: bearer tokens, injected faults and request counts, persistence."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ServiceResponseError

from batchspec.emulator import Emulator
from batchspec.emulator.testing import batch_client, running_emulator
from tests.emulator.helpers import create_job, create_pool, execution, wait_for, wait_pool_steady, wait_task


class _StaticToken:
    """A TokenCredential that always returns one token (stands in for Entra ID)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, 2_000_000_000)


def test_bearer_token_accepted_only_when_configured() -> None:
    with running_emulator(token="let-me-in") as emu:
        client = BatchClient(emu.endpoint, _StaticToken("let-me-in"))
        # azure-core refuses bearer tokens over plain HTTP unless told otherwise, per call.
        assert list(client.list_pools(enforce_https=False)) == []
        wrong = BatchClient(emu.endpoint, _StaticToken("guess"))
        with pytest.raises(HttpResponseError) as raised:
            list(wrong.list_pools(enforce_https=False))
        assert raised.value.status_code == 403
        assert raised.value.error is not None
        assert raised.value.error.code == "AuthenticationFailed"
    with running_emulator() as emu:
        client = BatchClient(emu.endpoint, _StaticToken("let-me-in"))
        with pytest.raises(HttpResponseError) as refused:
            list(client.list_pools(enforce_https=False))
        assert refused.value.status_code == 403


def _resend(call: Callable[[], object]) -> None:
    """What a client must do itself: azure-core does not resend a POST whose connection dropped."""
    for _ in range(20):
        try:
            call()
            return
        except ServiceResponseError:
            continue
    raise AssertionError("too many dropped connections")


def _run_workload(emu: Emulator) -> dict[str, Any]:
    client = batch_client(emu, retry_backoff_factor=0.01, retry_total=20)
    _resend(lambda: create_pool(client, dedicated=0))
    _resend(lambda: create_job(client))
    for i in range(15):
        task = m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true")
        _resend(lambda task=task: client.create_task("job", task))  # type: ignore[misc]
    for _ in range(15):
        client.get_job_task_counts("job")  # GETs are retried by the SDK, resets included
    return emu.stats()


def test_http_faults_are_retried_counted_and_reproducible() -> None:
    spec = "http503=0.15,http429=0.03,reset=0.05"
    with running_emulator(faults=spec, seed=11) as first:
        stats = _run_workload(first)
    with running_emulator(faults=spec, seed=11) as second:
        again = _run_workload(second)

    faults = stats["faults"]
    assert faults["http503"] + faults["http429"] + faults["reset"] > 0
    assert stats == again  # same seed, same sequential requests: same faults, same counts
    requests = stats["requests"]
    injected = faults["http503"] + faults["http429"] + faults["reset"]
    served = (
        requests["create_pool"] + requests["create_job"] + requests["create_task"] + requests["get_job_task_counts"]
    )
    assert served == 1 + 1 + 15 + 15 + injected  # every retry is a request the emulator counted


def test_stats_endpoint_for_a_separately_started_emulator(emulator: Emulator) -> None:
    client = batch_client(emulator)
    list(client.list_pools())
    url = urlparse(emulator.endpoint)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    conn.request("GET", "/batchspec/stats")
    unsigned = conn.getresponse()
    unsigned.read()
    assert unsigned.status == 403  # authenticated like every other request
    from azure.core.rest import HttpRequest

    response = client.send_request(HttpRequest("GET", f"{emulator.endpoint}/batchspec/stats"))
    stats = response.json()
    assert stats["requests"]["list_pools"] == 1
    assert set(stats["faults"]) == {"http503", "http429", "reset", "commit-drop", "commit-reset", "preempt"}


def test_state_survives_a_restart(tmp_path: Path) -> None:
    key = None
    with running_emulator(data_dir=tmp_path) as emu:
        key = emu.key
        client = batch_client(emu)
        create_pool(client, dedicated=1)
        create_job(client)
        client.create_task("job", m.BatchTaskCreateOptions(id="quick", command_line="/bin/echo hi"))
        wait_task(client, "job", "quick")
        client.create_task("job", m.BatchTaskCreateOptions(id="slow", command_line="/bin/sleep 2"))
        wait_for(lambda: client.get_task("job", "slow").state == m.BatchTaskState.RUNNING)
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 1

    with running_emulator(data_dir=tmp_path, key=key) as emu:
        client = batch_client(emu)
        assert client.get_pool("pool").id == "pool"
        quick = client.get_task("job", "quick")
        assert quick.state == m.BatchTaskState.COMPLETED
        assert (quick.url or "").startswith(emu.endpoint)  # URLs follow the new port
        assert b"".join(client.download_task_file("job", "quick", "stdout.txt")) == b"hi\n"
        slow = client.get_task("job", "slow")
        assert execution(slow).requeue_count == 1  # it was running: requeued as after a reboot
        done = wait_task(client, "job", "slow", timeout=30)
        assert execution(done).result == m.BatchTaskExecutionResult.SUCCESS
        assert client.get_job_task_counts("job").task_counts.succeeded == 2


def test_a_client_that_disconnects_leaves_no_traceback(emulator: Emulator, capfd: pytest.CaptureFixture[str]) -> None:
    import socket
    import struct

    url = urlparse(emulator.endpoint)
    for _ in range(3):
        sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 0))
        sock.sendall(b"GET /pools?api-version=2025-06-01 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # reset mid-request
    assert list(batch_client(emulator).list_pools()) == []  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ConnectionResetError" not in err


def test_a_pool_beyond_the_node_quota_gets_the_services_resize_error() -> None:
    with running_emulator(nodes=2) as emu:
        client = batch_client(emu)
        create_pool(client, "kept", dedicated=2)  # a kept pool holding every node
        wait_for(lambda: client.get_pool("kept").current_dedicated_nodes == 2)
        create_pool(client, "spot", dedicated=0, low_priority=3)
        create_pool(client, "more", dedicated=1)

        spot = wait_pool_steady(client, "spot")
        more = wait_pool_steady(client, "more")

        assert (spot.current_low_priority_nodes, spot.target_low_priority_nodes) == (0, 3)
        assert [(e.code, e.message) for e in spot.resize_errors or []] == [
            ("AccountLowPriorityCoreQuotaReached", "The specified account has reached VM low priority core quota limit")
        ]
        assert [e.code for e in more.resize_errors or []] == ["AccountCoreQuotaReached"]
        client.begin_delete_pool("kept", polling_interval=0).result()
        # As on the service, freed quota is not taken up until the pool is resized again.
        assert client.get_pool("more").current_dedicated_nodes == 0
        resize = m.BatchPoolResizeOptions(target_dedicated_nodes=1)
        client.begin_resize_pool("more", resize, polling_interval=0).result()
        assert client.get_pool("more").current_dedicated_nodes == 1
        assert client.get_pool("more").resize_errors is None


def test_tasks_get_a_clean_environment_and_state_keeps_no_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_KEY", "c2VjcmV0LXN0b3JhZ2Uta2V5")
    monkeypatch.setenv("AZURE_BATCH_ACCESS_KEY", "c2VjcmV0LWJhdGNoLWtleQ==")
    monkeypatch.setenv("SOME_TOKEN", "not-for-tasks")
    sas = "sv=2025-01-05&sr=c&sp=r&sig=c2lnbmF0dXJlLXZhbHVl"
    with running_emulator(data_dir=tmp_path) as emu:
        client = batch_client(emu)
        create_pool(client, dedicated=1)
        create_job(client, common_environment_settings=[m.EnvironmentSetting(name="JOB_SETTING", value="j")])
        client.create_task("job", m.BatchTaskCreateOptions(
            id="env", command_line="/usr/bin/env",
            output_files=[m.OutputFile(
                file_pattern="none", destination=m.OutputFileDestination(container=m.OutputFileBlobContainerDestination(
                    container_url=f"http://127.0.0.1:9/c?{sas}")),
                upload_options=m.OutputFileUploadConfiguration(upload_condition="taskfailure"))],
        ))
        wait_task(client, "job", "env")
        env = dict(
            line.split("=", 1)
            for line in b"".join(client.download_task_file("job", "env", "stdout.txt")).decode().splitlines()
        )
        assert sas in json.dumps(client.get_task("job", "env").as_dict())  # the service returns what it was given
    assert (env["JOB_SETTING"], env["AZ_BATCH_TASK_ID"], env["AZ_BATCH_NODE_IS_DEDICATED"]) == ("j", "env", "true")
    assert env["PATH"] == os.environ["PATH"]
    assert not {"AZURE_STORAGE_KEY", "AZURE_BATCH_ACCESS_KEY", "SOME_TOKEN"} & set(env)
    saved = (tmp_path / "state.json").read_text()
    assert "c2lnbmF0dXJlLXZhbHVl" not in saved and "sig=REDACTED" in saved
