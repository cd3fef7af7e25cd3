"""Pieces of the Azure backend: configuration, names, download safety, redaction, submission."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.batch import BatchClient, models

from batchspec.backends.azure import AzureBackend
from batchspec.backends.azure.config import AzureConfig
from batchspec.backends.azure.storage import blob_name_for, container_base
from batchspec.backends.azure.tasks import Submitter
from batchspec.backends.base import RunContext, RunOptions
from batchspec.backends.download import safe_destination
from batchspec.emulator import Emulator
from batchspec.errors import BackendError
from batchspec.plan import Output, Plan, build_plan
from batchspec.redact import redact
from batchspec.spec import load_spec


def test_config_from_environment() -> None:
    config = AzureConfig.from_env({"AZURE_BATCH_ENDPOINT": "myacct.westeurope.batch.azure.com",
                                   "AZURE_BATCH_ACCESS_KEY": "a2V5"})
    assert config.batch_endpoint == "https://myacct.westeurope.batch.azure.com"
    assert config.batch_account == "myacct"
    assert config.batch_auth == "Shared Key"
    assert "a2V5" not in repr(config)
    entra = AzureConfig.from_env({"AZURE_BATCH_ENDPOINT": "https://x.region.batch.azure.com"})
    assert entra.batch_auth.startswith("Entra ID")
    with pytest.raises(BackendError, match="AZURE_BATCH_ENDPOINT"):
        AzureConfig.from_env({"AZURE_BATCH_ACCOUNT": "x"})
    with pytest.raises(BackendError, match="AZURE_BATCH_ACCOUNT"):
        AzureConfig.from_env({"AZURE_BATCH_ENDPOINT": "http://127.0.0.1:8080"})


@pytest.mark.parametrize(("name", "safe"), [
    ("a.mp3", True), ("dir/sub/a.mp3", True), ("../escape.mp3", False), ("/etc/passwd", False),
    ("a/../../b", False), ("a//b", False), ("C:/x", False), ("a\\..\\b", True), ("./a", False), ("", False),
])
def test_downloads_never_leave_the_target_directory(tmp_path: Path, name: str, safe: bool) -> None:
    dest = safe_destination(tmp_path, name)
    assert (dest is not None) == safe
    if dest is not None:
        assert dest.resolve().is_relative_to(tmp_path.resolve())


def test_download_through_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert safe_destination(root, "link/x.mp3") is None


def test_names() -> None:
    assert container_base("MP4_to_MP3 job") == "mp4-to-mp3-job"
    assert blob_name_for("inputs/a.mp4") == "inputs/a.mp4"
    assert blob_name_for("../media/a.mp4") == "__up__/media/a.mp4"
    assert blob_name_for("/data/a.mp4") == "__root__/data/a.mp4"
    assert Output("res/x.mp3").upload_path == "res/x.mp3"
    assert Output("thumbs/a-*.jpg").upload_path == "thumbs"
    assert Output("*.jpg").upload_path == ""
    assert Output("Clip [[]1].mp3").upload_path == ""  # a name with escaped glob characters: a pattern to Batch
    assert Output("x.log", "failure", "logs/").upload_path == "logs/x.log"
    assert Output("thumbs/a-*.jpg", "always", "pics/").upload_path == "pics"
    assert Output("report.txt", "success", "reports/a.txt").upload_path == "reports/a.txt"


def test_redaction() -> None:
    text = ("GET https://acct.blob.core.windows.net/c/x?sv=2024&sig=abc%2Bdef&se=1 "
            "AccountKey=c2VjcmV0a2V5; Authorization: SharedKey acct:c2lnbmF0dXJl Bearer eyJ0eXAi.abc.def")
    clean = redact(text, {"AZURE_BATCH_ACCESS_KEY": "supersecretvalue"})
    for secret in ("abc%2Bdef", "c2VjcmV0a2V5", "c2lnbmF0dXJl", "eyJ0eXAi"):
        assert secret not in clean
    assert "sig=REDACTED" in clean and "sv=2024" in clean
    assert redact("key supersecretvalue here", {"AZURE_BATCH_ACCESS_KEY": "supersecretvalue"}) == "key REDACTED here"


def _job(client: BatchClient, job_id: str) -> None:
    client.create_pool(models.BatchPoolCreateOptions(
        id="p", vm_size="standard_a1_v2", target_dedicated_nodes=0,
        virtual_machine_configuration=models.VirtualMachineConfiguration(
            image_reference=models.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts", sku="server"),
            node_agent_sku_id="batch.node.ubuntu 24.04")))
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id="p")))


def _tasks(n: int, prefix: str = "t", command: str = "true") -> list[models.BatchTaskCreateOptions]:
    return [models.BatchTaskCreateOptions(id=f"{prefix}{i}", command_line=command) for i in range(n)]


def test_submitter_chunks_and_counts_existing_tasks(emulator: Emulator, batch_client: BatchClient) -> None:
    _job(batch_client, "j")
    submitter = Submitter(batch_client, "j")
    submitter.submit(_tasks(250))
    assert (submitter.added, submitter.existed, submitter.requests) == (250, 0, 3)
    again = Submitter(batch_client, "j")
    again.submit(_tasks(250))  # the service answers TaskExists for every one
    assert (again.added, again.existed) == (0, 250)
    assert emulator.request_counts()["create_task_collection"] == 6


class _Service:
    """Answers create_task_collection as the service does, with chosen per-task statuses."""

    def __init__(self, answers: dict[str, list[tuple[str, str | None]]]) -> None:
        self.answers = answers  # task id -> statuses (and error codes) for successive requests
        self.calls = 0
        self.options: list[dict[str, Any]] = []  # each request's keyword arguments (retry settings)

    def create_task_collection(self, job_id: str, group: models.BatchTaskGroup, **options: Any
                               ) -> models.BatchCreateTaskCollectionResult:
        self.calls += 1
        self.options.append(options)
        results = []
        for task in group.task_values:
            status, code = self.answers[task.id].pop(0)
            error = models.BatchError(code=code, message=models.BatchErrorMessage(lang="en-US", value=f"{code} text"),
                                      error_values=[models.BatchErrorDetail(key="PropertyName", value="id")])
            results.append(models.BatchTaskCreateResult(status=status, task_id=task.id,
                                                         error=error if code else None))
        return models.BatchCreateTaskCollectionResult(result_values=results)


def test_submitter_reads_every_result_without_regard_to_case() -> None:
    service = _Service({
        "t0": [("Success", None)],
        "t1": [("ClientError", "TaskExists")],
        "t2": [("ServerError", "ServerBusy"), ("success", None)],  # retried, then added
    })
    submitter = Submitter(service, "j")  # type: ignore[arg-type]
    submitter.submit(_tasks(3))
    assert (submitter.added, submitter.existed, service.calls) == (2, 1, 2)


def test_submitter_stops_on_a_refused_task() -> None:
    service = _Service({"t0": [("Success", None)], "t1": [("ClientError", "InvalidPropertyValue")]})
    with pytest.raises(BackendError, match=r"refused task 't1': InvalidPropertyValue: InvalidPropertyValue text "
                                           r"\(PropertyName: id\)"):
        Submitter(service, "j").submit(_tasks(2))  # type: ignore[arg-type]


def test_submitter_splits_a_chunk_the_service_finds_too_large(emulator: Emulator, batch_client: BatchClient) -> None:
    _job(batch_client, "j")
    big = "echo " + "x" * 30_000  # 100 of these are about 3 MB: over the 1 MB request limit
    submitter = Submitter(batch_client, "j")
    submitter.submit(_tasks(100, command=big))
    assert submitter.added == 100
    assert submitter.requests > 1


def test_one_retry_policy_capped_with_backoff() -> None:
    # Issue 10, item 8: per-task ServerError answers were sent again at once and forever, on top
    # of azure-core's retries and a resend loop. Now: azure-core retries whole requests (POST
    # too: ids make a repeat harmless), and a task the service keeps refusing is tried as often
    # as azure-core would, backing off the same way, then the run stops naming it.
    service = _Service({"t0": [("Success", None)], "t1": [("ServerError", "ServerBusy")] * 20})
    waits: list[float] = []
    with pytest.raises(BackendError, match=r"kept failing to add task 't1' \(9 tries\): ServerBusy"):
        Submitter(service, "j", sleep=waits.append).submit(_tasks(2))  # type: ignore[arg-type]
    assert service.calls == 9
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert all("POST" in o["retry_on_methods"] for o in service.options)


def _plan(tmp_path: Path, tasks: int, timeout: str | None, retries: int = 0, spot: int = 2) -> Plan:
    (tmp_path / "in").mkdir(parents=True, exist_ok=True)
    for i in range(tasks):
        (tmp_path / "in" / f"{i}.txt").write_text("x")
    spec = tmp_path / "spec.json"
    task: dict[str, object] = {"command": "true", "retries": retries}
    if timeout:
        task["timeout"] = timeout
    spec.write_text(json.dumps({
        "batchspec": 1, "name": "t", "inputs": {"path": "in/*.txt"}, "task": task,
        "pool": {"id": "p", "vm_size": "s", "image": {"publisher": "a", "offer": "b", "sku": "c"},
                 "node_agent_sku": "n", "nodes": {"spot": spot}, "task_slots_per_node": 2},
    }))
    return build_plan(load_spec(spec))


def _backend() -> AzureBackend:
    env = {"AZURE_BATCH_ENDPOINT": "https://acct.region.batch.azure.com", "AZURE_BATCH_ACCESS_KEY": "a2V5"}
    return AzureBackend(RunOptions(env=env), client=SimpleNamespace(close=lambda: None))  # type: ignore[arg-type]


def test_sas_lifetime_covers_the_longest_possible_run(tmp_path: Path) -> None:
    messages: list[object] = []
    ctx = RunContext(RunOptions(), messages.append)
    # 10 tasks on 2 nodes x 2 slots: 3 waves of up to 30 min, each tried 3 times, plus 2 h margin.
    lifetime = _backend()._sas_lifetime(_plan(tmp_path, 10, "30m", retries=2), ctx)
    assert lifetime == timedelta(hours=3 * 0.5 * 3 + 2)
    assert _backend()._sas_lifetime(_plan(tmp_path / "b", 10, None), ctx) == timedelta(days=7)
    capped = _backend()._sas_lifetime(_plan(tmp_path / "c", 400, "8h", retries=1, spot=1), ctx)
    assert capped == timedelta(days=7)
    assert any("capped at 7 days" in str(m) for m in messages)


def test_a_pool_without_nodes_because_of_quota_stops_the_run(tmp_path: Path) -> None:
    pool = SimpleNamespace(
        resize_errors=[SimpleNamespace(code="AccountCoreQuotaReached",
                                       message="The specified account has reached VM core quota.")],
        current_dedicated_nodes=0, current_low_priority_nodes=0, target_dedicated_nodes=0,
        target_low_priority_nodes=2, allocation_state="steady")
    backend = _backend()
    backend.client = SimpleNamespace(get_pool=lambda _id: pool)  # type: ignore[assignment]
    warnings: list[object] = []
    with pytest.raises(BackendError, match="AccountCoreQuotaReached") as caught:
        backend._pool_status(_plan(tmp_path, 1, None), RunContext(RunOptions(), warnings.append), 1, set())
    assert caught.value.exit_code == 2 and "quota" in (caught.value.hint or "")
    assert any("could not get all its nodes" in str(w) for w in warnings)
