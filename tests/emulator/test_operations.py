"""Operations beyond the main path: job disable/enable, preparation and release tasks, task
reactivate, node reboot and scheduling, remove nodes, unsupported operations, the request log,
and simulation mode."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchJobTerminateOptions  # not exported by azure-batch 15.1
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from batchspec.emulator import Emulator
from batchspec.emulator.execution import Simulation
from batchspec.emulator.requestlog import RequestLog
from batchspec.emulator.testing import batch_client as make_client
from batchspec.emulator.testing import running_emulator
from tests.emulator.helpers import (
    create_job,
    create_pool,
    execution,
    read_task_file,
    sh,
    wait_counts,
    wait_for,
    wait_job_state,
    wait_nodes,
    wait_pool,
    wait_task,
)

API = "api-version=2025-06-01"


def _code(raised: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str]:
    assert raised.value.error is not None
    return int(raised.value.status_code or 0), str(raised.value.error.code)


def test_disable_requeues_running_tasks_and_enable_resumes(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(batch_client)
    # Sleeps on its first run only (the task directory keeps the marker when it is requeued).
    first_run_sleeps = sh("[ -f seen ] || (touch seen; echo sleeping; sleep 30)")
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="t", command_line=first_run_sleeps))
    # Running as the service says it is, and past `touch seen`: a task is "running" before its
    # process starts, and a requeue before the marker exists would make the second run sleep too.
    def sleeping() -> bool:
        try:
            return b"sleeping" in read_task_file(batch_client, "job", "t", "stdout.txt")
        except HttpResponseError:  # no stdout.txt yet
            return False

    wait_for(sleeping, what="task t to sleep")
    assert batch_client.get_task("job", "t").state == m.BatchTaskState.RUNNING

    requeue = m.BatchJobDisableOptions(disable_tasks="requeue")
    batch_client.begin_disable_job("job", requeue, polling_interval=0).result()

    job = wait_job_state(batch_client, "job", m.BatchJobState.DISABLED)
    assert job.previous_state in (m.BatchJobState.DISABLING, m.BatchJobState.ACTIVE)
    task = batch_client.get_task("job", "t")
    assert task.state == m.BatchTaskState.ACTIVE and execution(task).requeue_count == 1
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="quick", command_line="/bin/true"))
    with pytest.raises(HttpResponseError) as again:
        batch_client.begin_disable_job("job", m.BatchJobDisableOptions(disable_tasks="wait"), polling_interval=0)
    assert _code(again) == (409, "JobDisabled")
    assert batch_client.get_task("job", "quick").state == m.BatchTaskState.ACTIVE  # nothing starts while disabled

    batch_client.begin_enable_job("job", polling_interval=0).result()

    assert execution(wait_task(batch_client, "job", "quick")).exit_code == 0
    assert batch_client.get_job("job").state == m.BatchJobState.ACTIVE


def test_preparation_and_release_tasks_run_and_report(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(
        batch_client,
        job_preparation_task=m.BatchJobPreparationTask(command_line=sh("echo prepared > $AZ_BATCH_NODE_SHARED_DIR/p")),
        job_release_task=m.BatchJobReleaseTask(command_line=sh("echo released")),
    )
    reads = sh("cat $AZ_BATCH_NODE_SHARED_DIR/p")
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="t", command_line=reads))
    wait_task(batch_client, "job", "t")
    assert read_task_file(batch_client, "job", "t", "stdout.txt") == b"prepared\n"  # preparation ran first

    options = BatchJobTerminateOptions(termination_reason="UserTerminate")  # 15.1 needs options here
    batch_client.begin_terminate_job("job", options, polling_interval=0).result()

    def released() -> list[m.BatchJobPreparationAndReleaseTaskStatus] | None:
        status = list(batch_client.list_job_preparation_and_release_task_status("job"))
        done = status and status[0].job_release_task_execution_info
        return status if done and done.state == "completed" else None

    (status,) = wait_for(released)
    prep = status.job_preparation_task_execution_info
    assert prep is not None and prep.result == m.BatchTaskExecutionResult.SUCCESS and prep.exit_code == 0
    assert (prep.task_root_directory or "").endswith("job-1/jobpreparation")
    assert status.pool_id == "pool"

    create_job(batch_client, "plain")
    with pytest.raises(HttpResponseError) as none:
        list(batch_client.list_job_preparation_and_release_task_status("plain"))
    assert _code(none) == (409, "JobPreparationTaskNotSpecified")


def test_reactivate_runs_a_failed_task_again(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(batch_client)
    # Fails the first time, succeeds the second (the task directory keeps the marker).
    fails_once = sh("[ -f seen ] || (touch seen; exit 4)")
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="t", command_line=fails_once))
    assert execution(wait_task(batch_client, "job", "t")).exit_code == 4

    batch_client.reactivate_task("job", "t")

    task = wait_task(batch_client, "job", "t")
    assert execution(task).result == m.BatchTaskExecutionResult.SUCCESS and execution(task).retry_count == 0
    with pytest.raises(HttpResponseError) as succeeded:
        batch_client.reactivate_task("job", "t")
    assert succeeded.value.status_code == 409
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="slow", command_line=sh("sleep 30")))
    with pytest.raises(HttpResponseError) as active:
        batch_client.reactivate_task("job", "slow")
    assert _code(active) == (409, "TaskNotCompleted")


def test_reboot_requeues_and_scheduling_can_be_disabled(emulator: Emulator, batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(batch_client)
    (node,) = wait_nodes(batch_client, "pool", "idle", 1)
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="t", command_line=sh("sleep 0.5")))
    wait_for(lambda: batch_client.get_task("job", "t").state == m.BatchTaskState.RUNNING)

    # azure-batch 15.1 cannot send a reboot without options (it has no model for them): raw request.
    reboot = HttpRequest("POST", f"{emulator.endpoint}/pools/pool/nodes/{node.id}/reboot?{API}",
                         json={"nodeRebootOption": "requeue"})
    assert batch_client.send_request(reboot).status_code == 202

    assert batch_client.get_node("pool", node.id or "").state == m.BatchNodeState.REBOOTING
    task = wait_task(batch_client, "job", "t")
    assert execution(task).requeue_count == 1 and execution(task).exit_code == 0

    batch_client.disable_node_scheduling(
        "pool", node.id or "", m.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="requeue")
    )
    batch_client.create_task("job", m.BatchTaskCreateOptions(id="later", command_line="/bin/true"))
    assert batch_client.get_node("pool", node.id or "").scheduling_state == m.SchedulingState.DISABLED
    assert batch_client.get_task("job", "later").state == m.BatchTaskState.ACTIVE
    batch_client.enable_node_scheduling("pool", node.id or "")
    assert execution(wait_task(batch_client, "job", "later")).exit_code == 0


def test_remove_nodes_lowers_the_target(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=2)
    nodes = wait_nodes(batch_client, "pool", "idle", 2)

    batch_client.begin_remove_nodes(
        "pool", m.BatchNodeRemoveOptions(node_ids=[nodes[0].id or ""]), polling_interval=0
    ).result()

    pool = wait_pool(batch_client, "pool", lambda p: p.allocation_state == "steady")
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes) == (1, 1)
    assert [n.id for n in batch_client.list_nodes("pool")] == [nodes[1].id]


def test_unsupported_operations_answer_as_an_unknown_uri(emulator: Emulator, batch_client: BatchClient) -> None:
    for path, reason in (("jobschedules", "Job schedules are not emulated."),
                         ("certificates", "Certificates are not emulated."),
                         ("pools/p/nodes/n/users", "Node user accounts are not emulated")):
        with pytest.raises(HttpResponseError) as raised:
            batch_client.send_request(HttpRequest("GET", f"{emulator.endpoint}/{path}?{API}"))
        response = raised.value.response
        assert response is not None
        body = json.loads(response.text())
        assert response.status_code == 400 and body["code"] == "InvalidUri"
        first_line = body["message"]["value"].split("\n")[0]
        assert first_line.startswith("The requested URI does not represent any resource on the server. ")
        assert reason in first_line  # the reason in the message, as well as in values
        assert reason in {v["key"]: v["value"] for v in body["values"]}["Reason"]


def test_request_log_has_one_line_per_request() -> None:
    stream = io.StringIO()
    with running_emulator(log=RequestLog(stream)) as emu:
        client = make_client(emu)
        list(client.list_pools())
        with pytest.raises(HttpResponseError):
            client.get_job("nope")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    pattern = (r"^\d{4}-\d\d-\d\dT[\d:.]+Z GET /pools\?api-version=[\w.-]+ 200 [\d.]+ms "
               r"request-id=[0-9a-f-]{36} op=list_pools$")
    assert re.match(pattern, lines[0]), lines[0]
    assert " GET /jobs/nope?" in lines[1] and " 404 " in lines[1] and lines[1].endswith("op=get_job")
    assert emu.key not in stream.getvalue()


def test_simulation_draws_around_a_specs_expected_duration(tmp_path: Path) -> None:
    spec = (Path(__file__).parents[2] / "specs" / "mp4-to-mp3.yaml").read_text()
    with_estimate = tmp_path / "spec.yaml"
    with_estimate.write_text(spec.replace("  timeout: 30m\n", "  timeout: 30m\n  expected_duration: 4m\n"))
    assert Simulation.parse(f"spec={with_estimate},distribution=fixed").duration("t") == 240
    without = tmp_path / "plain.yaml"
    without.write_text(spec)
    with pytest.raises(ValueError, match=r"sets no task\.expected_duration"):
        Simulation.parse(f"spec={without}")


def test_simulation_runs_hours_of_tasks_in_seconds() -> None:
    simulation = Simulation(mean=600, distribution="uniform", spread=0.5, failure_rate=0.1, seed=4)
    with running_emulator(nodes=20, time_scale=2000, simulation=simulation, faults="preempt=0.2", seed=4) as emu:
        client = make_client(emu)
        create_pool(client, dedicated=10, low_priority=10, slots=2)
        create_job(client)
        client.create_tasks("job", [m.BatchTaskCreateOptions(id=f"t{i:03d}", command_line="ffmpeg -i in.mp4 out.mp3")
                                    for i in range(200)])

        counts = wait_counts(client, "job", lambda c: c.completed == 200, timeout=60)

        tasks = list(client.list_tasks("job"))
        spans = [(execution(t).end_time - execution(t).start_time).total_seconds() for t in tasks  # type: ignore[operator]
                 if execution(t).result == m.BatchTaskExecutionResult.SUCCESS]
        assert min(spans) >= 300 and max(spans) <= 900  # durations drawn in service time: 10 minutes +-50 %
        assert 0 < counts.failed < 60  # failures=0.1 (none retried)
        assert emu.fault_counts()["preempt"] > 0
        assert sum(execution(t).requeue_count or 0 for t in tasks) > 0
        assert not (emu.root / "nodes" / (tasks[0].node_info.node_id or "")).exists()  # type: ignore[union-attr]
