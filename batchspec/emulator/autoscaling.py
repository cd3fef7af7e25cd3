"""Autoscale pools: metric samples every 30 seconds of service time, and formula evaluation.

The formula language is :mod:`batchspec.autoscale` (the parser ``batchspec validate`` uses).
Each pool keeps a history of the service's metrics ($ActiveTasks, $RunningTasks,
$PendingTasks, $SucceededTasks, $FailedTasks, node counts, $CPUPercent as the share of busy
slots); an evaluation reads them through the formula's ``GetSample`` calls and answers with the
``autoScaleRun`` the service reports (``timestamp`` and ``results``, or ``error``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from batchspec import autoscale
from batchspec.emulator.store import Job, Pool
from batchspec.emulator.wire import Json, iso

#: Samples kept per metric: 24 hours at one every 30 seconds.
HISTORY = 2880
AUTOSCALE_RUN_ORDER = ("timestamp", "results", "error")


class History:
    """The metric samples of one pool, oldest first."""

    def __init__(self) -> None:
        self.samples: dict[str, deque[tuple[datetime, float]]] = {}
        self.last_at: float | None = None
        self.finished = (0, 0)  # succeeded, failed at the previous sample

    def record(self, when: datetime, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.samples.setdefault(name, deque(maxlen=HISTORY)).append((when, value))

    def of(self, name: str) -> Sequence[tuple[datetime, float]]:
        return self.samples.get(name, ())


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def metrics(pool: Pool, jobs: Iterable[Job], history: History) -> dict[str, float]:
    """The service's metrics of ``pool`` now (task counts of the jobs running on it)."""
    active = running = succeeded = failed = 0
    for job in jobs:
        if job.pool_id.lower() != pool.key or job.state not in ("active", "terminating", "disabling"):
            continue
        # $ActiveTasks counts tasks ready to run: dependencies met, job not disabled.
        if job.state == "active":
            active += max(0, job.counts.active - len(job.deps.waiters))
        running += job.counts.running
        succeeded += job.counts.succeeded
        failed += job.counts.failed
    done_before = history.finished
    history.finished = (succeeded, failed)
    nodes = list(pool.nodes.values())
    slots = sum(pool.slots_per_node for n in nodes if n.ready) or 1
    used = sum(n.used_slots for n in nodes)
    return {
        "$ActiveTasks": float(active),
        "$RunningTasks": float(running),
        "$PendingTasks": float(active + running),
        "$SucceededTasks": float(max(0, succeeded - done_before[0])),
        "$FailedTasks": float(max(0, failed - done_before[1])),
        "$SampleNodeCount": float(len(nodes)),
        "$PreemptedNodeCount": float(sum(1 for n in nodes if n.body.get("state") == "preempted")),
        "$CPUPercent": 100.0 * used / slots,
        "$WallClockSeconds": 0.0,
        "$MemoryBytes": 0.0,
        "$DiskBytes": 0.0,
        "$DiskReadBytes": 0.0,
        "$DiskWriteBytes": 0.0,
        "$DiskReadOps": 0.0,
        "$DiskWriteOps": 0.0,
        "$NetworkInBytes": 0.0,
        "$NetworkOutBytes": 0.0,
    }


def sample(pool: Pool, jobs: Iterable[Job], history: History, now: float) -> None:
    """Take the pool's samples due at ``now`` (service seconds), one per 30-second period."""
    if history.last_at is not None and now - history.last_at < autoscale.SAMPLE_PERIOD:
        return
    history.last_at = now
    history.record(_when(now), metrics(pool, jobs, history))


def context(pool: Pool, history: History, now: float) -> autoscale.Context:
    body = pool.body
    return autoscale.Context(
        now=_when(now),
        current_dedicated=int(body.get("currentDedicatedNodes") or 0),
        current_low_priority=int(body.get("currentLowPriorityNodes") or 0),
        target_dedicated=int(body.get("targetDedicatedNodes") or 0),
        target_low_priority=int(body.get("targetLowPriorityNodes") or 0),
        task_slots_per_node=pool.slots_per_node,
        usable_nodes=sum(1 for n in pool.nodes.values() if n.ready),
        history=history.of,
    )


def evaluate(formula: str, ctx: autoscale.Context, ticks: int) -> tuple[Json, autoscale.Evaluation | None]:
    """The ``autoScaleRun`` of evaluating ``formula``, and its targets when it succeeded."""
    try:
        result = autoscale.evaluate(formula, ctx)
    except autoscale.FormulaError as exc:
        return {"timestamp": iso(ticks), "error": run_error(exc)}, None
    return {"timestamp": iso(ticks), "results": result.results}, result


def run_error(exc: autoscale.FormulaError) -> Json:
    """An ``autoScaleRun.error`` as the service reports a failed evaluation."""
    if exc.kind == "samples":
        code, message = "InsufficientSampleData", "Autoscale evaluation failed due to insufficient sample data"
    elif exc.kind == "syntax":
        code, message = "AutoScalingFormulaSyntaxError", "The specified auto-scaling formula has a syntax error."
    else:
        code, message = "AutoScalingFormulaEvaluationError", "Autoscale evaluation failed"
    return {"code": code, "message": message, "values": [{"name": "Message", "value": str(exc)}]}
