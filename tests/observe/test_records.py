"""What a record adds up to: counts, verdict, usage, ETA; its JSON form; the Azure task mapping."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from azure.batch import models

from batchspec.backends.azure.records import task_record
from batchspec.observe.records import (
    Attempt,
    JobRecord,
    NodeRecord,
    PoolRecord,
    RunRecord,
    TaskRecord,
    counts,
    dumps,
    eta_seconds,
    loads,
    usage,
    verdict,
)


def rec(tasks: list[TaskRecord], *, active: bool = False, planned: int | None = None, observed: float = 100.0,
        **kw: object) -> RunRecord:
    job = JobRecord("job-1", "active", planned if planned is not None else len(tasks), tuple(tasks), created=0.0)
    return RunRecord(spec="s.yaml", name="s", backend="local", jobs=(job,), active=active, observed=observed,
                     **kw)  # type: ignore[arg-type]


def done(task_id: str, start: float, end: float, where: str = "slot-0", state: str = "succeeded") -> TaskRecord:
    return TaskRecord(task_id, state, (Attempt(1, state, where, start, end, 0 if state == "succeeded" else 1),))


def test_counts_and_verdicts() -> None:
    tries = (Attempt(1, "retried", "slot-1", 0, 5, 2), Attempt(2, "failed", "slot-1", 5, 9, 2))
    retried = TaskRecord("r", "failed", tries, retries=1)
    record = rec([done("a", 0, 10), retried], planned=3)
    c = counts(record)
    assert (c.succeeded, c.failed, c.running, c.waiting, c.attempts, c.retries) == (1, 1, 0, 1, 3, 1)
    assert verdict(record) == "failed"
    assert verdict(rec([done("a", 0, 10)], planned=2)) == "incomplete"
    assert verdict(rec([done("a", 0, 10)])) == "succeeded"
    assert verdict(rec([], planned=2)) == "not started"
    assert verdict(rec([], planned=2, active=True)) == "running"


def test_usage_on_slots_and_on_billed_nodes() -> None:
    local = rec([done("a", 10, 20, "slot-0"), done("b", 10, 15, "slot-1"), done("c", 15, 20, "slot-1")], slots=2)
    u = usage(local)
    assert (u.wall_seconds, u.busy_seconds, u.capacity_seconds, u.utilisation) == (10, 20, 20, 1.0)
    assert u.node_hours == 0
    nodes = (NodeRecord("n1", "idle", spot=False, allocated=-100.0), NodeRecord("n2", "idle", spot=True, allocated=5.0))
    azure = rec([done("a", 10, 20, "n1")], nodes=nodes, pool=PoolRecord("p", "s", "steady", slots_per_node=2),
                billed=True)
    u = usage(azure)
    # Billed from the job's creation (0) or when the node joined, whichever is later, to the last end (20).
    assert u.dedicated_node_seconds == 20 and u.spot_node_seconds == 15
    assert u.capacity_seconds == 70 and u.utilisation == pytest.approx(10 / 70)


def test_eta_from_the_rate_so_far() -> None:
    running = TaskRecord("r", "running", (Attempt(1, "running", "slot-0", 20),))
    record = rec([done("a", 0, 10), done("b", 0, 10), running], planned=6, active=True, observed=20.0)
    # 2 finished in 20 s; 4 left -> 40 s.
    assert eta_seconds(record) == pytest.approx(40.0)
    assert eta_seconds(rec([done("a", 0, 10)])) is None  # not running
    assert usage(record).busy_seconds == 20  # a running attempt counts up to now


def test_json_round_trip() -> None:
    record = rec([done("a", 0, 10), TaskRecord("w", "waiting")], planned=2, slots=4,
                 notes=("a note",), nodes=(NodeRecord("n", "idle"),))
    again = loads(dumps(record))
    assert again == record


def test_azure_task_keeps_the_last_attempt_and_counts_the_others() -> None:
    task = models.BatchTask({
        "id": "t", "state": "completed", "creationTime": "2025-01-01T00:00:00Z",
        "executionInfo": {"startTime": "2025-01-01T00:01:00Z", "endTime": "2025-01-01T00:01:30Z", "exitCode": 1,
                          "result": "failure", "retryCount": 2, "requeueCount": 1,
                          "lastRequeueTime": "2025-01-01T00:00:30Z",
                          "failureInfo": {"category": "usererror", "code": "FailureExitCode", "message": "bad"}},
        "nodeInfo": {"nodeId": "tvm-1", "poolId": "p"},
    })
    record = task_record(task)
    assert record.state == "failed" and record.retries == 2 and record.requeues == 1
    assert [a.outcome for a in record.attempts] == ["requeued", "retried", "retried", "failed"]
    assert [a.placed for a in record.attempts] == [False, False, False, True]
    assert record.attempts[0].end == datetime(2025, 1, 1, 0, 0, 30, tzinfo=timezone.utc).timestamp()
    last = record.attempts[-1]
    assert last.where == "tvm-1" and last.seconds == 30 and last.exit_code == 1
    assert record.reason == "FailureExitCode: bad"
    waiting = task_record(models.BatchTask({"id": "w", "state": "active", "executionInfo": {"retryCount": 0,
                                                                                           "requeueCount": 0}}))
    assert waiting.state == "waiting" and waiting.attempts == ()
    running = task_record(models.BatchTask({"id": "r", "state": "running", "nodeInfo": {"nodeId": "n"},
                                            "executionInfo": {"startTime": "2025-01-01T00:00:00Z",
                                                              "retryCount": 1, "requeueCount": 0}}))
    assert running.state == "running" and [a.outcome for a in running.attempts] == ["retried", "running"]
