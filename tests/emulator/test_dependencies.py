"""Task dependencies and exit conditions through the real SDK, as the service applies them."""

from __future__ import annotations

from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from batchspec.emulator.dependencies import Dependencies, exit_options
from tests.emulator.helpers import (
    create_job,
    create_pool,
    execution,
    sh,
    wait_completed,
    wait_for,
    wait_job_state,
    wait_task,
)


def _task(task_id: str, command: str = "/bin/true", **kwargs: Any) -> m.BatchTaskCreateOptions:
    return m.BatchTaskCreateOptions(id=task_id, command_line=command, **kwargs)


def _after(ids: list[str] | None = None, ranges: list[tuple[int, int]] | None = None) -> m.BatchTaskDependencies:
    return m.BatchTaskDependencies(
        task_ids=ids, task_id_ranges=[m.BatchTaskIdRange(start=s, end=e) for s, e in ranges or []] or None
    )


def _error(raised: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str]:
    assert raised.value.error is not None
    return int(raised.value.status_code or 0), str(raised.value.error.code)


def test_merge_task_runs_after_all_its_dependencies(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=4)
    create_job(batch_client, uses_task_dependencies=True)
    batch_client.create_tasks(
        "job",
        [
            _task("merge", sh("cat $AZ_BATCH_NODE_SHARED_DIR/part-*"), depends_on=_after(["a", "b", "c"])),
            *(_task(p, sh(f"sleep 0.3; echo {p} > $AZ_BATCH_NODE_SHARED_DIR/part-{p}")) for p in "abc"),
        ],
    )
    # While its dependencies run, the merge task is active and counted as active.
    wait_for(lambda: batch_client.get_job_task_counts("job").task_counts.running == 3)
    assert batch_client.get_task("job", "merge").state == m.BatchTaskState.ACTIVE
    assert batch_client.get_job_task_counts("job").task_counts.active == 1

    merge = wait_task(batch_client, "job", "merge")

    assert execution(merge).result == m.BatchTaskExecutionResult.SUCCESS
    ends = [execution(batch_client.get_task("job", p)).end_time for p in "abc"]
    assert execution(merge).start_time >= max(e for e in ends if e is not None)  # type: ignore[operator]
    assert batch_client.get_task("job", "merge").as_dict()["dependsOn"] == {"taskIds": ["a", "b", "c"]}


def test_a_failed_dependency_blocks_unless_its_exit_conditions_satisfy(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=4)
    create_job(batch_client, uses_task_dependencies=True)
    lenient = m.ExitConditions(
        exit_codes=[m.ExitCodeMapping(code=3, exit_options=m.ExitOptions(dependency_action="Satisfy"))]
    )
    batch_client.create_tasks(
        "job",
        [
            _task("fails", "/bin/false"),
            _task("blocked", depends_on=_after(["fails"])),
            _task("fails-ok", sh("exit 3"), exit_conditions=lenient),
            _task("runs", depends_on=_after(["fails-ok"])),
        ],
    )

    wait_task(batch_client, "job", "runs")
    wait_completed(batch_client, "job", 3)

    blocked = batch_client.get_task("job", "blocked")
    assert blocked.state == m.BatchTaskState.ACTIVE  # blocked for good, still active
    counts = batch_client.get_job_task_counts("job").task_counts
    assert (counts.active, counts.completed, counts.failed, counts.succeeded) == (1, 3, 2, 1)
    # The service writes enums in its own casing whatever the client sent.
    exit_codes = batch_client.get_task("job", "fails-ok").as_dict()["exitConditions"]["exitCodes"]
    assert exit_codes == [{"code": 3, "exitOptions": {"dependencyAction": "satisfy"}}]


def test_id_ranges_select_integer_ids_and_tasks_added_later(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1, slots=4)
    create_job(batch_client, uses_task_dependencies=True)
    batch_client.create_tasks(
        "job",
        [
            _task("after", depends_on=_after(ranges=[(1, 3)])),
            _task("needs-late", depends_on=_after(["late"])),
            _task("1"),
            _task("03"),  # task 3: leading zeros do not count
            _task("2five", "/bin/false"),  # not an integer id: outside every range
        ],
    )
    after = wait_task(batch_client, "job", "after")
    assert execution(after).result == m.BatchTaskExecutionResult.SUCCESS
    assert batch_client.get_task("job", "needs-late").state == m.BatchTaskState.ACTIVE

    batch_client.create_task("job", _task("late"))  # a dependency may be added after its dependent

    assert execution(wait_task(batch_client, "job", "needs-late")).result == m.BatchTaskExecutionResult.SUCCESS


def test_dependency_errors(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=0)
    create_job(batch_client, "plain")
    with pytest.raises(HttpResponseError) as not_enabled:
        batch_client.create_task("plain", _task("t", depends_on=_after(["x"])))
    assert _error(not_enabled) == (400, "TaskDependenciesNotSpecifiedOnJob")
    action = m.ExitConditions(default=m.ExitOptions(dependency_action="satisfy"))
    with pytest.raises(HttpResponseError) as no_action:
        batch_client.create_task("plain", _task("t", exit_conditions=action))
    assert _error(no_action) == (400, "InvalidPropertyValue")

    create_job(batch_client, "deps", uses_task_dependencies=True)
    many = [f"task-{i:06d}" for i in range(6000)]  # 6000 * 11 characters + commas > 64000
    with pytest.raises(HttpResponseError) as too_long:
        batch_client.create_task("deps", _task("t", depends_on=_after(many)))
    assert _error(too_long) == (400, "TaskDependencyListTooLong")
    batch_client.create_task("deps", _task("ok", depends_on=_after(many[:5000])))  # 59,999 characters


def test_failed_task_terminates_the_job_with_exit_options(batch_client: BatchClient) -> None:
    create_pool(batch_client, dedicated=1)
    create_job(batch_client, task_failure_mode="performexitoptionsjobaction")
    batch_client.create_task("job", _task("bad", "/bin/false"))

    job = wait_job_state(batch_client, "job", m.BatchJobState.COMPLETED)

    assert job.execution_info is not None and job.execution_info.termination_reason == "TaskFailed"


# ---- the bookkeeping itself, without a service


def test_dependencies_bookkeeping() -> None:
    deps = Dependencies()
    assert deps.add("a", None)
    assert not deps.add("m", {"taskIds": ["a", "B"], "taskIdRanges": [{"start": 1, "end": 2}]})
    assert deps.add("1", None) and deps.add("01", None)
    assert deps.completed("a", "satisfy") == []
    assert deps.completed("b", "block") == []  # blocks: m still waits
    assert deps.completed("01", "satisfy") == []
    assert deps.completed("b", "satisfy") == ["m"]  # task 1 (as 01) done, 2 absent: range met
    assert not deps.waiting("m")


def test_exit_options_defaults_and_precedence() -> None:
    conditions = {
        "exitCodes": [{"code": 2, "exitOptions": {"dependencyAction": "satisfy"}}],
        "fileUploadError": {"dependencyAction": "satisfy", "jobAction": "none"},
        "preProcessingError": {"dependencyAction": "satisfy"},
    }

    def options(code: int | None, failure: str | None, exit_conditions: object = conditions) -> tuple[str, str]:
        info: dict[str, object] = {"exitCode": code} if code is not None else {}
        if failure:
            info["failureInfo"] = {"code": failure}
        found = exit_options({"executionInfo": info, "exitConditions": exit_conditions})
        return found.dependency_action, found.job_action

    assert options(0, None, None) == ("satisfy", "none")
    assert options(1, "FailureExitCode", None) == ("block", "terminate")
    assert options(2, "FailureExitCode") == ("satisfy", "terminate")
    assert options(0, "FileUploadMiscError") == ("satisfy", "none")
    assert options(None, "BlobNotFound") == ("satisfy", "terminate")
    assert options(None, "TaskEnded") == ("block", "terminate")
