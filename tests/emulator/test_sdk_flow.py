"""The main path through the real SDK: pools, jobs, 250 tasks, counts, files, lists, lifecycles."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from urllib.parse import unquote

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchJobTerminateOptions  # not exported by azure-batch 15.1
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest

from batchspec.emulator import Emulator
from batchspec.emulator.testing import FAST, running_emulator
from batchspec.emulator.testing import batch_client as make_client
from tests.emulator.helpers import (
    create_job,
    create_pool,
    execution,
    failure_code,
    node_info,
    read_task_file,
    sh,
    wait_completed,
    wait_for,
    wait_job_state,
    wait_nodes,
    wait_pool_steady,
    wait_task,
)


def test_250_tasks_added_in_three_requests_run_and_report(emulator: Emulator, batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=2, slots=4)
    create_job(batch_client)
    tasks = [
        m.BatchTaskCreateOptions(id=f"task-{i:03d}", command_line=sh(f"echo out-{i}; exit {3 if i % 50 == 7 else 0}"))
        for i in range(250)
    ]
    before = emulator.request_counts().get("create_task_collection", 0)

    result = batch_client.create_tasks("job", tasks)

    assert emulator.request_counts()["create_task_collection"] - before == 3
    values = result.result_values or []
    assert len(values) == 250
    assert {v.status for v in values} == {"Success"}  # the service's PascalCase, kept as sent
    assert {v.task_id for v in values} == {t.id for t in tasks}

    counts = wait_completed(batch_client, "job", 250)
    assert counts.task_counts.as_dict() == {"active": 0, "running": 0, "completed": 250, "succeeded": 245, "failed": 5}
    assert counts.task_slot_counts.as_dict() == counts.task_counts.as_dict()

    assert read_task_file(batch_client, "job", "task-017", "stdout.txt") == b"out-17\n"
    props = batch_client.get_task_file_properties("job", "task-017", "stdout.txt")
    assert props.content_length == len(b"out-17\n")
    assert props.is_directory is False
    # The service percent-encodes the whole URL in ocp-batch-file-url; the SDK passes it on as is.
    assert unquote(props.url or "") == f"{emulator.endpoint}/jobs/job/tasks/task-017/files/stdout.txt"
    assert props.file_mode

    failed = batch_client.get_task("job", "task-057")
    info = execution(failed)
    assert failed.state == m.BatchTaskState.COMPLETED
    assert info.result == m.BatchTaskExecutionResult.FAILURE
    assert info.exit_code == 3
    assert info.failure_info is not None
    assert info.failure_info.code == "FailureExitCode"
    assert info.failure_info.category == m.BatchErrorSourceCategory.USER_ERROR
    assert node_info(failed).pool_id == "pool"
    assert node_info(failed).task_root_directory == "workitems/job/job-1/task-057"


def test_list_tasks_filter_select_and_paging(emulator: Emulator, batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=8)
    create_job(batch_client)
    batch_client.create_tasks(
        "job",
        [
            m.BatchTaskCreateOptions(id=f"t{i:03d}", command_line=sh(f"exit {1 if i % 10 == 0 else 0}"))
            for i in range(230)
        ],
    )
    wait_completed(batch_client, "job", 230)
    before = emulator.request_counts().get("list_tasks", 0)

    done = list(batch_client.list_tasks("job", filter="state eq 'completed'", select=["id", "state"], max_results=100))

    assert emulator.request_counts()["list_tasks"] - before == 3  # pages of 100, 100, 30 via odata.nextLink
    assert [t.id for t in done] == [f"t{i:03d}" for i in range(230)]  # ordinal id order, as the service lists
    assert all(t.command_line is None for t in done)  # $select honoured
    assert all(t.execution_info is None for t in done)

    failed = list(batch_client.list_tasks("job", filter="executionInfo/result eq 'failure'", select=["id"]))
    assert [t.id for t in failed] == [f"t{i:03d}" for i in range(0, 230, 10)]
    both = list(batch_client.list_tasks("job", filter="(state eq 'completed') and (executionInfo/exitCode eq 0)"))
    assert len(both) == 230 - 23
    assert list(batch_client.list_tasks("job", filter="state eq 'active'")) == []


def test_all_tasks_complete_terminates_the_job(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=2)
    create_job(batch_client)
    batch_client.create_tasks("job", [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(4)])
    batch_client.update_job("job", m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))

    job = wait_job_state(batch_client, "job", m.BatchJobState.COMPLETED)
    assert job.execution_info is not None
    assert job.execution_info.termination_reason == "AllTasksComplete"
    assert job.execution_info.end_time is not None
    assert job.all_tasks_complete_mode == m.BatchAllTasksCompleteMode.TERMINATE_JOB
    assert batch_client.get_job_task_counts("job").task_counts.completed == 4


def test_terminate_job_ends_running_tasks_and_leaves_active_ones(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=1)
    create_job(batch_client)
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="long", command_line="/bin/sleep 30"))
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="waiting", command_line="/bin/true"))
    wait_for(lambda: batch_client.get_task("job", "long").state == m.BatchTaskState.RUNNING)

    # azure-batch 15.1 cannot send a terminate without non-empty options (it then sends no content
    # type and fails client-side): give the reason explicitly.
    options = BatchJobTerminateOptions(termination_reason="UserTerminate")
    batch_client.begin_terminate_job("job", options, polling_interval=0).result()

    job = batch_client.get_job("job")
    assert job.state == m.BatchJobState.COMPLETED
    assert job.execution_info is not None
    assert job.execution_info.termination_reason == "UserTerminate"
    long = wait_task(batch_client, "job", "long")
    assert failure_code(long) == "TaskEnded"
    assert execution(long).result == m.BatchTaskExecutionResult.FAILURE
    assert batch_client.get_task("job", "waiting").state == m.BatchTaskState.ACTIVE
    with pytest.raises(ResourceExistsError) as raised:
        batch_client.create_task("job", m.BatchTaskCreateOptions(id="late", command_line="/bin/true"))
    assert raised.value.error is not None
    assert raised.value.error.code == "JobCompleted"


def test_pool_lifecycle_nodes_resize_and_delete(batch_client: BatchClient) -> None:
    create_pool(batch_client, "p", dedicated=2)
    pool = batch_client.get_pool("p")
    assert pool.allocation_state == m.AllocationState.RESIZING
    assert pool.current_dedicated_nodes == 0
    pool = wait_pool_steady(batch_client, "p")
    assert pool.current_dedicated_nodes == 2
    nodes = wait_nodes(batch_client, "p", "idle", 2)
    assert all((n.id or "").startswith("tvmps_") and n.is_dedicated for n in nodes)
    node = batch_client.get_node("p", nodes[0].id or "")
    assert node.scheduling_state == m.SchedulingState.ENABLED
    assert batch_client.pool_exists("p") is True

    batch_client.begin_resize_pool("p", m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0).result()
    assert batch_client.get_pool("p").current_dedicated_nodes == 1
    assert len(list(batch_client.list_nodes("p"))) == 1

    poller = batch_client.begin_delete_pool("p", polling_interval=0)
    assert batch_client.get_pool("p").state == m.BatchPoolState.DELETING
    poller.result()
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_pool("p")


def test_delete_job_stops_its_tasks() -> None:
    # Deleting takes 30 s here, so the job is seen in the deleting state without a race.
    with running_emulator(timings=replace(FAST, delete=30.0)) as emu:
        client = make_client(emu)
        create_pool(client, dedicated=1)
        create_job(client)
        client.create_task("job", m.BatchTaskCreateOptions(id="long", command_line="/bin/sleep 30"))
        wait_for(lambda: client.get_task("job", "long").state == m.BatchTaskState.RUNNING)

        deleted = client.send_request(HttpRequest("DELETE", f"{emu.endpoint}/jobs/job?api-version=2025-06-01"))

        assert deleted.status_code == 202
        job = client.get_job("job")
        assert (job.state, job.previous_state) == (m.BatchJobState.DELETING, m.BatchJobState.ACTIVE)
        wait_nodes(client, "pool", "idle", 1)  # its task was stopped: the node is free again


def test_a_deleted_job_is_gone_once_deleted(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(batch_client)
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="long", command_line="/bin/sleep 30"))
    wait_for(lambda: batch_client.get_task("job", "long").state == m.BatchTaskState.RUNNING)

    batch_client.begin_delete_job("job", polling_interval=0).result()

    with pytest.raises(ResourceNotFoundError):
        batch_client.get_job("job")
    wait_nodes(batch_client, "pool", "idle", 1)


def test_jobs_list_get_replace_and_task_update(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=0)
    create_job(batch_client, "b-job", priority=5)
    create_job(batch_client, "a-job")
    assert [j.id for j in batch_client.list_jobs()] == ["a-job", "b-job"]
    job = batch_client.get_job("b-job")
    assert job.priority == 5
    assert job.max_parallel_tasks == -1
    assert job.constraints is not None and job.constraints.max_task_retry_count == 0

    batch_client.replace_job(
        "b-job",
        m.BatchJob(
            pool_info=m.BatchPoolInfo(pool_id="pool"), constraints=m.BatchJobConstraints(max_task_retry_count=2)
        ),
    )
    job = batch_client.get_job("b-job")
    assert job.priority == 0
    assert job.constraints is not None and job.constraints.max_task_retry_count == 2

    batch_client.create_task("b-job", m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    task = batch_client.get_task("b-job", "t")
    assert task.constraints is not None and task.constraints.max_task_retry_count == 2  # the job's
    assert task.as_dict()["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    batch_client.replace_task("b-job", "t", m.BatchTask(constraints=m.BatchTaskConstraints(max_task_retry_count=5)))
    updated = batch_client.get_task("b-job", "t")
    assert updated.constraints is not None and updated.constraints.max_task_retry_count == 5
    assert updated.etag != task.etag


def test_job_max_wall_clock_time_terminates_the_job(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(batch_client, constraints=m.BatchJobConstraints(max_wall_clock_time=timedelta(seconds=1)))
    assert (batch_client.get_job("job").constraints or m.BatchJobConstraints()).max_wall_clock_time == timedelta(
        seconds=1
    )
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="long", command_line="/bin/sleep 30"))

    job = wait_job_state(batch_client, "job", m.BatchJobState.COMPLETED, timeout=15)

    assert job.execution_info is not None
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    assert failure_code(wait_task(batch_client, "job", "long")) == "TaskEnded"


def test_deleting_a_running_task_frees_its_slot(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=1)
    create_job(batch_client)
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="long", command_line="/bin/sleep 30"))
    wait_for(lambda: batch_client.get_task("job", "long").state == m.BatchTaskState.RUNNING)
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="next", command_line="/bin/true"))

    batch_client.delete_task("job", "long")

    with pytest.raises(ResourceNotFoundError):
        batch_client.get_task("job", "long")
    assert execution(wait_task(batch_client, "job", "next")).exit_code == 0
    assert batch_client.get_job_task_counts("job").task_counts.as_dict() == {
        "active": 0,
        "running": 0,
        "completed": 1,
        "succeeded": 1,
        "failed": 0,
    }
