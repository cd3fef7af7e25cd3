"""The record of a run: per job, per task, per attempt; and the figures drawn from it.

Every backend builds a :class:`RunRecord` (the local backend from its SQLite run record, the
Azure backend from one listing of the job's tasks) and everything that shows a run (``status``,
``logs``, the report, the run summary) reads only this. Times are seconds since the epoch.

Tasks are grouped by job: a plan whose work spans several jobs gives several :class:`JobRecord`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..display import json_safe

#: What became of one attempt. ``retried``: it failed and the task ran again; ``requeued``: it was
#: stopped from outside (a spot node preempted or removed) and the task went back to the queue.
OUTCOMES = ("succeeded", "failed", "retried", "requeued", "running", "interrupted")
#: Where a task stands. ``waiting``: planned or queued, not running now.
TASK_STATES = ("waiting", "running", "succeeded", "failed", "interrupted")

RECORD_FORMAT = 1


@dataclass(frozen=True)
class Attempt:
    number: int  # 1-based
    outcome: str  # one of OUTCOMES
    where: str | None = None  # node id (Azure) or slot (local); None when the service does not say
    start: float | None = None
    end: float | None = None
    exit_code: int | None = None
    reason: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return max(0.0, self.end - self.start)

    @property
    def placed(self) -> bool:
        """Known where and when it started: it can be drawn on a timeline."""
        return self.where is not None and self.start is not None


@dataclass(frozen=True)
class TaskRecord:
    id: str
    state: str  # one of TASK_STATES
    attempts: tuple[Attempt, ...] = ()
    queued: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    retries: int = 0  # attempts that failed and were run again
    requeues: int = 0  # attempts stopped from outside (preemption) and queued again
    input_bytes: int | None = None
    output_bytes: int | None = None
    stderr_tail: tuple[str, ...] = ()  # filled in for the report (failed and slowest tasks)

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def seconds(self) -> float | None:
        """How long the last attempt ran (or has been running, for a running one: None)."""
        return self.last.seconds if self.last else None

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed")


@dataclass(frozen=True)
class JobRecord:
    id: str
    state: str  # the backend's word for the job: active, completed, ... or "not found"
    planned: int  # tasks the plan has for this job
    tasks: tuple[TaskRecord, ...] = ()
    created: float | None = None


@dataclass(frozen=True)
class NodeRecord:
    id: str
    state: str
    spot: bool = False
    allocated: float | None = None  # when the node joined the pool
    tasks_run: int | None = None
    start_task: str | None = None  # e.g. "succeeded" or "failed (exit code 1)"


@dataclass(frozen=True)
class PoolRecord:
    id: str
    vm_size: str
    state: str  # allocation state: steady, resizing, ...
    dedicated: int = 0
    spot: int = 0
    target_dedicated: int = 0
    target_spot: int = 0
    slots_per_node: int = 1


@dataclass(frozen=True)
class RunRecord:
    spec: str
    name: str
    backend: str
    jobs: tuple[JobRecord, ...]
    active: bool  # a run (local) or the job (Azure) is still going
    observed: float  # when this record was taken
    logs: str = ""  # where task logs live, for people
    pool: PoolRecord | None = None
    nodes: tuple[NodeRecord, ...] = ()
    slots: int | None = None  # parallel task slots (local backend)
    source: str = "live"  # "live", or where a saved record came from
    notes: tuple[str, ...] = ()  # what the record cannot say (e.g. times of earlier attempts)
    requests: int = 0  # service requests made to build it
    windows: bool = False  # nodes run Windows (prices differ)
    billed: bool = False  # its nodes are billed (Azure): node time has a price

    def tasks(self) -> Iterator[TaskRecord]:
        for job in self.jobs:
            yield from job.tasks

    def task(self, task_id: str) -> TaskRecord | None:
        return next((t for t in self.tasks() if t.id == task_id), None)

    @property
    def planned(self) -> int:
        return sum(job.planned for job in self.jobs)

    @property
    def job_ids(self) -> str:
        return ", ".join(job.id for job in self.jobs)

    def with_tails(self, tails: dict[str, tuple[str, ...]]) -> RunRecord:
        """The record with stderr tails attached to the tasks named in ``tails``."""
        jobs = tuple(
            replace(job, tasks=tuple(replace(t, stderr_tail=tails[t.id]) if t.id in tails else t for t in job.tasks))
            for job in self.jobs
        )
        return replace(self, jobs=jobs)


# --- what a record adds up to -------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    planned: int
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    interrupted: int = 0
    attempts: int = 0
    retries: int = 0
    requeues: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def waiting(self) -> int:
        return max(0, self.planned - self.done - self.running - self.interrupted)


def counts(record: RunRecord) -> Counts:
    by_state = dict.fromkeys(TASK_STATES, 0)
    attempts = retries = requeues = 0
    for task in record.tasks():
        by_state[task.state] = by_state.get(task.state, 0) + 1
        attempts += len(task.attempts)
        retries += task.retries
        requeues += task.requeues
    return Counts(record.planned, by_state["succeeded"], by_state["failed"], by_state["running"],
                  by_state["interrupted"], attempts, retries, requeues)


def verdict(record: RunRecord) -> str:
    """running | succeeded | failed | incomplete (stopped with work left) | not started."""
    c = counts(record)
    if record.active or c.running:
        return "running"
    if not any(t.attempts for t in record.tasks()):
        return "not started"
    if c.failed:
        return "failed"
    if c.succeeded >= c.planned:
        return "succeeded"
    return "incomplete"


def span(record: RunRecord) -> tuple[float, float] | None:
    """First start and last end (or now, while attempts run) over every placed attempt."""
    starts = [a.start for t in record.tasks() for a in t.attempts if a.start is not None]
    if not starts:
        return None
    ends = [a.end if a.end is not None else record.observed for t in record.tasks() for a in t.attempts
            if a.start is not None]
    return min(starts), max(*ends, min(starts))


def eta_seconds(record: RunRecord) -> float | None:
    """Time left at the rate tasks finished so far (None when nothing runs or nothing finished)."""
    if verdict(record) != "running":
        return None
    window = span(record)
    c = counts(record)
    finished = sum(1 for t in record.tasks() if t.finished and t.last is not None and t.last.end is not None
                   and window is not None and t.last.end >= window[0])
    remaining = c.planned - c.done
    if window is None or finished == 0 or remaining <= 0:
        return None
    elapsed = record.observed - window[0]
    return elapsed / finished * remaining if elapsed > 0 else None


@dataclass(frozen=True)
class Usage:
    """What the run used. Node seconds are billed time (Azure); capacity is slot time."""

    wall_seconds: float = 0.0
    busy_seconds: float = 0.0  # sum of attempt run times
    dedicated_node_seconds: float = 0.0
    spot_node_seconds: float = 0.0
    capacity_seconds: float = 0.0  # slot seconds the run had

    @property
    def node_hours(self) -> float:
        return (self.dedicated_node_seconds + self.spot_node_seconds) / 3600

    @property
    def utilisation(self) -> float | None:
        return self.busy_seconds / self.capacity_seconds if self.capacity_seconds > 0 else None


def _ran(attempt: Attempt, now: float) -> float:
    """How long an attempt ran; a running one, so far."""
    if attempt.outcome == "running" and attempt.start is not None:
        return max(0.0, now - attempt.start)
    return attempt.seconds or 0.0


def usage(record: RunRecord) -> Usage:
    window = span(record)
    busy = sum(_ran(a, record.observed) for t in record.tasks() for a in t.attempts)
    if window is None:
        return Usage(busy_seconds=busy)
    start, end = window
    if record.nodes:
        # Billed from when each node joined (or the job began) to the end of the work.
        created = [j.created for j in record.jobs if j.created is not None]
        begin = min([start, *created])
        dedicated = spot = 0.0
        for node in record.nodes:
            joined = max(begin, node.allocated if node.allocated is not None else begin)
            seconds = max(0.0, end - joined)
            if node.spot:
                spot += seconds
            else:
                dedicated += seconds
        slots = record.pool.slots_per_node if record.pool else 1
        return Usage(end - start, busy, dedicated, spot, (dedicated + spot) * slots)
    slots = record.slots or len({a.where for t in record.tasks() for a in t.attempts if a.where}) or 1
    return Usage(end - start, busy, capacity_seconds=(end - start) * slots)


# --- JSON ---------------------------------------------------------------------------------------


def to_dict(record: RunRecord) -> dict[str, Any]:
    """The record as plain data, with the figures drawn from it (``status --format json``)."""
    out = asdict(record)
    out["format"] = RECORD_FORMAT
    c = counts(record)
    out["verdict"] = verdict(record)
    out["counts"] = {**asdict(c), "waiting": c.waiting, "done": c.done}
    u = usage(record)
    out["usage"] = {**asdict(u), "node_hours": u.node_hours, "utilisation": u.utilisation}
    out["eta_seconds"] = eta_seconds(record)
    return out


def from_dict(data: dict[str, Any]) -> RunRecord:
    if data.get("format") != RECORD_FORMAT:
        raise ValueError(f"unsupported record format {data.get('format')!r}")
    jobs = tuple(
        JobRecord(
            id=j["id"], state=j["state"], planned=j["planned"], created=j.get("created"),
            tasks=tuple(
                TaskRecord(**{**t, "attempts": tuple(Attempt(**a) for a in t["attempts"]),
                              "stderr_tail": tuple(t.get("stderr_tail", ()))})
                for t in j["tasks"]
            ),
        )
        for j in data["jobs"]
    )
    pool = PoolRecord(**data["pool"]) if data.get("pool") else None
    known = set(RunRecord.__dataclass_fields__)
    rest = {k: v for k, v in data.items() if k in known and k not in ("jobs", "pool", "nodes", "notes")}
    return RunRecord(**rest, jobs=jobs, pool=pool, nodes=tuple(NodeRecord(**n) for n in data.get("nodes", ())),
                     notes=tuple(data.get("notes", ())))


def dumps(record: RunRecord) -> str:
    return json_safe(json.dumps(to_dict(record), ensure_ascii=False))


def loads(text: str) -> RunRecord:
    return from_dict(json.loads(text))


__all__ = [
    "OUTCOMES",
    "TASK_STATES",
    "Attempt",
    "Counts",
    "JobRecord",
    "NodeRecord",
    "PoolRecord",
    "RunRecord",
    "TaskRecord",
    "Usage",
    "counts",
    "eta_seconds",
    "span",
    "usage",
    "verdict",
]
