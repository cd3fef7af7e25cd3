"""Tasks really run: files in and out of Azurite, environment, retries, limits, start tasks, slots."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.storage.blob import BlobServiceClient

from batchspec.emulator import Emulator
from batchspec.emulator.testing import batch_client as make_client
from tests.azurite import Azurite
from tests.emulator.helpers import (
    create_job,
    create_pool,
    execution,
    failure_code,
    node_info,
    read_task_file,
    sh,
    start_info,
    wait_for,
    wait_nodes,
    wait_task,
)


@pytest.fixture
def emulator_faults() -> Iterator[Emulator]:
    from batchspec.emulator.testing import running_emulator

    with running_emulator(faults="preempt=0.5", seed=3) as emu:
        yield emu


def _container(azurite: Azurite, name: str, blobs: dict[str, bytes] | None = None) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client(name)
    container.create_container()
    for blob, data in (blobs or {}).items():
        container.upload_blob(blob, data)


def _blobs(azurite: Azurite, name: str) -> dict[str, bytes]:
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(name)
    return {b.name: container.download_blob(b.name).readall() for b in container.list_blobs()}


def _output(pattern: str, url: str, path: str | None, condition: str) -> m.OutputFile:
    return m.OutputFile(
        file_pattern=pattern,
        destination=m.OutputFileDestination(
            container=m.OutputFileBlobContainerDestination(container_url=url, path=path)
        ),
        upload_options=m.OutputFileUploadConfiguration(upload_condition=condition),
    )


def test_resource_files_in_output_files_out(azurite: Azurite, batch_client: BatchClient) -> None:
    _container(azurite, "inputs", {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n", "other/c.txt": b"gamma\n"})
    _container(azurite, "outputs")
    out_url = azurite.container_sas_url("outputs", write=True)
    create_pool(batch_client, dedicated=1)
    create_job(batch_client)
    script = (
        "mkdir -p out/deep && cat in/a.txt data/sub/b.txt > out/result.txt && echo deep > out/deep/y.txt"
        " && env | grep ^AZ_BATCH_ | sort > env.txt && ls data > listing.txt && echo done"
    )
    batch_client.create_task(
        "job",
        m.BatchTaskCreateOptions(
            id="io",
            command_line=sh(script),
            resource_files=[
                m.ResourceFile(http_url=azurite.blob_sas_url("inputs", "a.txt"), file_path="in/a.txt"),
                m.ResourceFile(
                    storage_container_url=azurite.container_sas_url("inputs"), blob_prefix="sub/", file_path="data"
                ),
            ],
            environment_settings=[m.EnvironmentSetting(name="GREETING", value="hi")],
            output_files=[
                _output("out/**/*.txt", out_url, "results", "tasksuccess"),
                _output("../stdout.txt", out_url, "logs/stdout.txt", "taskcompletion"),
                _output("env.txt", out_url, None, "tasksuccess"),
                _output("listing.txt", out_url, "never.txt", "taskfailure"),
            ],
        ),
    )

    task = wait_task(batch_client, "job", "io")

    assert execution(task).result == m.BatchTaskExecutionResult.SUCCESS, task.execution_info
    blobs = _blobs(azurite, "outputs")
    assert blobs["results/result.txt"] == b"alpha\nbeta\n"
    assert blobs["results/deep/y.txt"] == b"deep\n"
    assert blobs["logs/stdout.txt"] == b"done\n"
    assert "never.txt" not in blobs
    assert read_task_file(batch_client, "job", "io", "wd/listing.txt") == b"sub\n"  # only the blobPrefix
    env = dict(line.split("=", 1) for line in blobs["env.txt"].decode().splitlines())
    assert env["AZ_BATCH_TASK_ID"] == "io"
    assert env["AZ_BATCH_JOB_ID"] == "job"
    assert env["AZ_BATCH_POOL_ID"] == "pool"
    assert env["AZ_BATCH_NODE_ID"] == node_info(task).node_id
    assert env["AZ_BATCH_TASK_WORKING_DIR"].endswith("/workitems/job/job-1/io/wd")
    assert read_task_file(batch_client, "job", "io", "wd/in/a.txt") == b"alpha\n"


def test_missing_blob_and_failed_upload_fail_the_task(azurite: Azurite, batch_client: BatchClient) -> None:
    _container(azurite, "readonly")
    create_pool(batch_client, dedicated=1, slots=2)
    create_job(batch_client)
    batch_client.create_task(
        "job",
        m.BatchTaskCreateOptions(
            id="no-input",
            command_line="/bin/true",
            resource_files=[m.ResourceFile(http_url=azurite.blob_sas_url("readonly", "absent.txt"), file_path="x")],
        ),
    )
    read_only = azurite.container_sas_url("readonly", write=False)
    batch_client.create_task(
        "job",
        m.BatchTaskCreateOptions(
            id="no-upload",
            command_line="/bin/true",
            output_files=[_output("../stdout.txt", read_only, "stdout.txt", "taskcompletion")],
        ),
    )

    no_input = wait_task(batch_client, "job", "no-input")
    assert execution(no_input).result == m.BatchTaskExecutionResult.FAILURE
    assert failure_code(no_input) == "BlobNotFound"
    assert execution(no_input).exit_code is None  # the command never ran
    no_upload = wait_task(batch_client, "job", "no-upload")
    assert execution(no_upload).exit_code == 0
    assert execution(no_upload).result == m.BatchTaskExecutionResult.FAILURE
    assert failure_code(no_upload) == "FileUploadMiscError"
    failure = execution(no_upload).failure_info
    assert failure is not None
    assert "sig=" not in str(failure.as_dict()).replace("sig=REDACTED", "")  # no SAS in the message


def test_retries_wall_clock_and_missing_program(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=4)
    create_job(batch_client)
    retry = m.BatchTaskConstraints(max_task_retry_count=2)
    batch_client.create_tasks(
        "job",
        [
            m.BatchTaskCreateOptions(id="always-fails", command_line=sh("echo try; exit 5"), constraints=retry),
            m.BatchTaskCreateOptions(
                id="second-time-lucky",
                # The same task directory is reused by the retry: a counter file tells attempts apart.
                command_line=sh("n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -ge 1 ]"),
                constraints=retry,
            ),
            m.BatchTaskCreateOptions(
                id="too-slow",
                command_line="/bin/sleep 30",
                constraints=m.BatchTaskConstraints(max_wall_clock_time=timedelta(seconds=1), max_task_retry_count=3),
            ),
            m.BatchTaskCreateOptions(id="no-such-program", command_line="/no/such/program --flag"),
        ],
    )

    fails = execution(wait_task(batch_client, "job", "always-fails"))
    assert (fails.exit_code, fails.retry_count, fails.result) == (5, 2, m.BatchTaskExecutionResult.FAILURE)
    assert fails.last_retry_time is not None
    assert read_task_file(batch_client, "job", "always-fails", "stdout.txt") == b"try\ntry\ntry\n"
    lucky = execution(wait_task(batch_client, "job", "second-time-lucky"))
    assert (lucky.exit_code, lucky.retry_count, lucky.result) == (0, 1, m.BatchTaskExecutionResult.SUCCESS)
    too_slow = wait_task(batch_client, "job", "too-slow")
    slow = execution(too_slow)
    assert failure_code(too_slow) == "TaskEnded"
    assert slow.retry_count == 0  # a wall-clock timeout is not retried
    assert slow.result == m.BatchTaskExecutionResult.FAILURE
    assert slow.end_time is not None and slow.start_time is not None
    assert (slow.end_time - slow.start_time).total_seconds() < 10
    missing = wait_task(batch_client, "job", "no-such-program")
    assert failure_code(missing) == "CommandProgramNotFound"
    assert execution(missing).exit_code is None


def test_start_task_runs_first_and_a_failing_one_blocks_the_node(batch_client: BatchClient) -> None:
    create_pool(
        batch_client,
        "good",
        start_task=m.BatchStartTask(
            command_line=sh("echo ready > $AZ_BATCH_NODE_SHARED_DIR/marker"),
            user_identity=m.UserIdentity(auto_user=m.AutoUserSpecification(elevation_level="admin")),
            wait_for_success=True,
        ),
    )
    create_job(batch_client, "uses-start", "good")
    batch_client.create_task(
        "uses-start", m.BatchTaskCreateOptions(id="t", command_line=sh("cat $AZ_BATCH_NODE_SHARED_DIR/marker"))
    )
    task = wait_task(batch_client, "uses-start", "t")
    assert read_task_file(batch_client, "uses-start", "t", "stdout.txt") == b"ready\n", task.execution_info
    node = batch_client.get_node("good", node_info(task).node_id or "")
    assert start_info(node).result == m.BatchTaskExecutionResult.SUCCESS
    assert start_info(node).exit_code == 0
    assert node.as_dict()["startTask"]["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}

    create_pool(
        batch_client,
        "bad",
        start_task=m.BatchStartTask(command_line=sh("echo broken >&2; exit 3"), wait_for_success=True),
    )
    create_job(batch_client, "blocked", "bad")
    batch_client.create_task("blocked", m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    (failed,) = wait_nodes(batch_client, "bad", "starttaskfailed", 1)
    info = start_info(failed)
    assert info.state == m.BatchStartTaskState.COMPLETED
    assert (info.exit_code, info.result) == (3, m.BatchTaskExecutionResult.FAILURE)
    assert info.failure_info is not None and info.failure_info.code == "FailureExitCode"
    node_id = failed.id or ""
    stderr = b"".join(batch_client.download_node_file("bad", node_id, "startup/stderr.txt"))
    assert stderr == b"broken\n"
    props = batch_client.get_node_file_properties("bad", node_id, "startup/stderr.txt")
    assert props.content_length == len(b"broken\n")
    assert batch_client.get_task("blocked", "t").state == m.BatchTaskState.ACTIVE  # no node takes it


def test_slots_and_order(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=2)
    create_job(batch_client)
    for i in range(6):  # one by one, so the order of addition is the order of ids
        batch_client.create_task("job", m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/sleep 0.3"))
    for i in range(6):
        wait_task(batch_client, "job", f"t{i}")
    spans = {}
    for task in batch_client.list_tasks("job"):
        info = execution(task)
        assert info.start_time is not None and info.end_time is not None
        spans[task.id] = (info.start_time, info.end_time)
    assert sorted(spans, key=lambda t: spans[t][0]) == [f"t{i}" for i in range(6)]
    overlap = max(sum(1 for s, e in spans.values() if s <= start < e) for start, _ in spans.values())
    assert overlap == 2  # taskSlotsPerNode 2 on the only node


def test_required_slots_and_pack_fill(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=2, slots=4, fill="pack")
    create_job(batch_client)
    wait_nodes(batch_client, "pool", "idle", 2)
    batch_client.create_tasks(
        "job", [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/sleep 0.5", required_slots=2) for i in range(2)]
    )
    for i in range(2):
        wait_task(batch_client, "job", f"t{i}")
    nodes = {node_info(batch_client.get_task("job", f"t{i}")).node_id for i in range(2)}
    assert len(nodes) == 1  # Pack fills one node before the next
    counts = batch_client.get_job_task_counts("job").as_dict()
    assert counts["taskSlotCounts"]["completed"] == 4
    assert counts["taskCounts"]["completed"] == 2


def test_preemption_requeues_running_tasks(emulator_faults: Emulator) -> None:
    client = make_client(emulator_faults)
    create_pool(client, dedicated=0, low_priority=2)
    create_job(client)
    client.create_tasks("job", [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/sleep 0.4") for i in range(4)])

    wait_for(lambda: client.get_job_task_counts("job").task_counts.completed == 4, timeout=40)

    infos = [execution(t) for t in client.list_tasks("job")]
    assert all(i.result == m.BatchTaskExecutionResult.SUCCESS for i in infos)
    assert sum(i.requeue_count or 0 for i in infos) >= 1
    assert emulator_faults.fault_counts()["preempt"] >= 1
    assert any(i.last_requeue_time for i in infos)
