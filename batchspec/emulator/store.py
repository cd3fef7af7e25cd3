"""The emulator's state: pools, nodes, jobs and tasks, their state machines, and persistence.

Entities are kept as their wire bodies (plus a little bookkeeping), so reads only serialise. One
re-entrant lock guards everything; every task state change goes through :meth:`State.set_task_state`,
which keeps each job's ``taskcounts`` up to date incrementally (no scans per request).

With a data directory, a background :class:`Persister` writes a JSON snapshot atomically (temp
file + rename), debounced; on load, tasks that were running are requeued as after a node reboot.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchspec.containers import Credentials
from batchspec.emulator.dependencies import Dependencies, exit_options
from batchspec.emulator.wire import Clock, Json, execution_info, iso
from batchspec.redact import redact

if TYPE_CHECKING:
    from batchspec.emulator.execution import TaskHandle

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1

#: Task states that count as "running" in taskcounts (preparing counts as running).
RUNNING_STATES = frozenset({"running", "preparing"})


def key(entity_id: str) -> str:
    """Ids are case-insensitive (and case-preserving) on the service: this is the lookup key."""
    return entity_id.lower()


@dataclass
class Attempt:
    """One run of a task (or a start task) on a node; runtime only, never persisted."""

    node_id: str
    job_id: str = ""
    task_id: str = ""
    slots: int = 1
    process: TaskHandle | None = None
    stop_reason: str | None = None  # requeue | terminate | delete | shutdown
    started_at: float = 0.0  # service seconds
    start_ticks: int = 0  # the startTime it reports
    # A simulated attempt's drawn end: its endTime is exactly startTime + the drawn duration,
    # however late the engine thread gets to the event on a loaded machine.
    end_ticks: int | None = None
    released: bool = False  # its slots were freed: nothing more happens to it

    def stopped(self) -> bool:
        """Whether a stop was requested (read anew each time: other threads set it)."""
        return self.stop_reason is not None

    def request_stop(self, reason: str) -> TaskHandle | None:
        """Mark the attempt stopped; returns the process to stop (outside the lock)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        return self.process


@dataclass
class Counts:
    """taskCounts or taskSlotCounts of one job."""

    active: int = 0
    running: int = 0
    completed: int = 0
    succeeded: int = 0
    failed: int = 0

    def add(self, state: str, result: str | None, n: int) -> None:
        if state == "completed":
            self.completed += n
            if result == "success":
                self.succeeded += n
            else:
                self.failed += n
        elif state in RUNNING_STATES:
            self.running += n
        else:
            self.active += n

    def as_json(self) -> Json:
        return {
            "active": self.active,
            "running": self.running,
            "completed": self.completed,
            "succeeded": self.succeeded,
            "failed": self.failed,
        }


@dataclass
class Task:
    job_id: str
    body: Json
    seq: int
    node_id: str | None = None
    attempt: Attempt | None = None
    retried: bool = False  # the next start is a retry (sets lastRetryTime)

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def key(self) -> str:
        return key(self.id)

    @property
    def slots(self) -> int:
        return int(self.body.get("requiredSlots") or 1)


@dataclass
class Job:
    body: Json
    seq: int
    tasks: dict[str, Task] = field(default_factory=dict)
    pending: deque[str] = field(default_factory=deque)
    counts: Counts = field(default_factory=Counts)
    slot_counts: Counts = field(default_factory=Counts)
    running: int = 0  # attempts in flight
    delete_at: float | None = None
    deadline: float | None = None  # service time at which maxWallClockTime ends
    deps: Dependencies = field(default_factory=Dependencies)
    _sorted: list[str] | None = None

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def key(self) -> str:
        return key(self.id)

    @property
    def state(self) -> str:
        return str(self.body["state"])

    @property
    def uses_dependencies(self) -> bool:
        return bool(self.body.get("usesTaskDependencies"))

    @property
    def pool_id(self) -> str:
        info = self.body.get("executionInfo") or {}
        return str(info.get("poolId") or (self.body.get("poolInfo") or {}).get("poolId") or "")

    def sorted_ids(self) -> list[str]:
        """Task keys in ordinal order, as the service lists them (cached until a task is added)."""
        if self._sorted is None:
            self._sorted = sorted(self.tasks)
        return self._sorted


@dataclass
class Node:
    pool_id: str
    body: Json
    dedicated: bool
    used_slots: int = 0
    running: set[tuple[str, str]] = field(default_factory=set)
    boot_at: float | None = None  # service time when booting finishes
    ready: bool = False  # takes tasks
    start_attempt: Attempt | None = None
    leaving: bool = False  # removed once its running tasks finish (taskcompletion deallocation)
    #: Job preparation and release task status per job that ran here (the status list's entries).
    prep: dict[str, Json] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.body["id"])


@dataclass
class Pool:
    body: Json
    seq: int
    nodes: dict[str, Node] = field(default_factory=dict)
    resize_at: float | None = None  # service time when the current resize ends
    delete_at: float | None = None
    stopping: bool = False
    auto_for_job: str | None = None
    autoscale_at: float | None = None  # service time of the next formula evaluation
    deallocation: str = "requeue"  # what a shrink does to running tasks
    #: Its container registries' logins: kept in memory only (the body and snapshots never hold passwords).
    logins: tuple[Credentials, ...] = ()

    @property
    def containers(self) -> Json | None:
        """Its ``containerConfiguration``: its nodes run container tasks."""
        vm = self.body.get("virtualMachineConfiguration") or {}
        configuration = vm.get("containerConfiguration")
        return configuration if isinstance(configuration, dict) else None

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def key(self) -> str:
        return key(self.id)

    @property
    def windows(self) -> bool:
        vm = self.body.get("virtualMachineConfiguration") or {}
        return "windows" in str(vm.get("nodeAgentSKUId") or "").lower()

    @property
    def slots_per_node(self) -> int:
        return int(self.body.get("taskSlotsPerNode") or 1)


class State:
    """Everything the emulator knows, behind one re-entrant lock."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = clock or Clock()
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, Job] = {}
        self.seq = 0
        self.base_url = ""  # the endpoint entity URLs are built on (rebased when restored)
        self.version = 0  # bumped on every change, for the persister
        self.additions: Counter[str] = Counter()  # successful task adds per "job/task" (reliability checks)
        #: Logins of tasks' own container registries, by (job key, task key): in memory only.
        self.logins: dict[tuple[str, str], Credentials] = {}
        self._changed = threading.Condition(self.lock)

    # ---- bookkeeping

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def touch(self) -> None:
        """Record a change (for persistence)."""
        self.version += 1
        self._changed.notify_all()

    def wait_changed(self, version: int, timeout: float) -> int:
        with self.lock:
            if self.version == version:
                self._changed.wait(timeout)
            return self.version

    def node(self, node_id: str) -> Node | None:
        for pool in self.pools.values():
            node = pool.nodes.get(node_id)
            if node is not None:
                return node
        return None

    def all_nodes(self) -> Iterator[Node]:
        for pool in self.pools.values():
            yield from pool.nodes.values()

    def sorted_pools(self) -> list[Pool]:
        return [self.pools[k] for k in sorted(self.pools)]

    def sorted_jobs(self) -> list[Job]:
        return [self.jobs[k] for k in sorted(self.jobs)]

    # ---- task state machine

    def add_task(self, job: Job, task: Task) -> None:
        self.additions[f"{job.key}/{task.key}"] += 1
        job.tasks[task.key] = task
        job._sorted = None
        job.counts.add(task.body["state"], None, 1)
        job.slot_counts.add(task.body["state"], None, task.slots)
        # A task whose dependencies are unmet stays active but is not queued until they are met.
        if not job.uses_dependencies or job.deps.add(task.key, task.body.get("dependsOn")):
            job.pending.append(task.key)
        self.touch()

    def remove_task(self, job: Job, task: Task) -> None:
        result = (task.body.get("executionInfo") or {}).get("result")
        job.counts.add(str(task.body["state"]), result, -1)
        job.slot_counts.add(str(task.body["state"]), result, -task.slots)
        job.tasks.pop(task.key, None)
        self.logins.pop((job.key, task.key), None)
        job._sorted = None
        if job.uses_dependencies:
            job.pending.extend(job.deps.removed(task.key))
        self.touch()

    def set_task_state(self, job: Job, task: Task, state: str, ticks: int | None = None) -> None:
        """Move a task to ``state``, keeping previousState and the job's counts right."""
        body = task.body
        old = str(body["state"])
        old_result = (body.get("executionInfo") or {}).get("result")
        ticks = ticks if ticks is not None else self.clock.ticks()
        job.counts.add(old, old_result, -1)
        job.slot_counts.add(old, old_result, -task.slots)
        if old != state:
            body["previousState"] = old
            body["previousStateTransitionTime"] = body["stateTransitionTime"]
            body["state"] = state
            body["stateTransitionTime"] = iso(ticks)
        new_result = (body.get("executionInfo") or {}).get("result")
        job.counts.add(state, new_result, 1)
        job.slot_counts.add(state, new_result, task.slots)
        if state == "completed" and job.uses_dependencies:
            job.pending.extend(job.deps.completed(task.key, exit_options(body).dependency_action))
        self.touch()

    def remove_job(self, job: Job) -> None:
        self.jobs.pop(job.key, None)
        for login in [k for k in self.logins if k[0] == job.key]:
            del self.logins[login]
        self.touch()

    # ---- persistence

    def snapshot(self) -> Json:
        pools = [
            {
                "body": p.body,
                "seq": p.seq,
                "auto_for_job": p.auto_for_job,
                "deleting": p.delete_at is not None,
                "nodes": [{"body": n.body, "dedicated": n.dedicated} for n in p.nodes.values()],
            }
            for p in self.pools.values()
        ]
        jobs = [
            {
                "body": j.body,
                "seq": j.seq,
                "deadline": j.deadline,
                "pending": list(j.pending),
                "tasks": [{"body": t.body, "seq": t.seq, "node_id": t.node_id} for t in j.tasks.values()],
            }
            for j in self.jobs.values()
        ]
        return {"version": SNAPSHOT_VERSION, "seq": self.seq, "base_url": self.base_url, "pools": pools, "jobs": jobs}

    def restore(self, data: Json, boot_delay: float, delete_delay: float) -> None:
        """Load a snapshot; running tasks are requeued and nodes reboot (as after a restart)."""
        now = self.clock.now()
        ticks = self.clock.ticks()
        self.seq = int(data.get("seq", 0))
        for raw in data.get("pools", []):
            pool = Pool(body=raw["body"], seq=int(raw["seq"]), auto_for_job=raw.get("auto_for_job"))
            if raw.get("deleting"):
                pool.delete_at = now + delete_delay
            if pool.body.get("enableAutoScale"):
                pool.autoscale_at = now
            for raw_node in raw.get("nodes", []):
                node = Node(pool_id=pool.id, body=raw_node["body"], dedicated=bool(raw_node["dedicated"]))
                body = node.body
                body.update({"state": "starting", "stateTransitionTime": iso(ticks)})
                body.update({"runningTasksCount": 0, "runningTaskSlotsCount": 0})
                body.pop("startTaskInfo", None)
                node.boot_at = now + boot_delay
                pool.nodes[node.id] = node
            self.pools[pool.key] = pool
        for raw in data.get("jobs", []):
            job = Job(body=raw["body"], seq=int(raw["seq"]), deadline=raw.get("deadline"))
            requeued: list[str] = []
            tasks = sorted(
                (Task(job.key, t["body"], int(t["seq"]), node_id=t.get("node_id")) for t in raw.get("tasks", [])),
                key=lambda t: t.seq,
            )
            ready: set[str] = set()
            for task in tasks:
                job.tasks[task.key] = task
                if task.body["state"] in RUNNING_STATES:
                    requeue_body(task.body, ticks)
                    requeued.append(task.key)
                if not job.uses_dependencies or job.deps.add(task.key, task.body.get("dependsOn")):
                    ready.add(task.key)
                result = (task.body.get("executionInfo") or {}).get("result")
                job.counts.add(str(task.body["state"]), result, 1)
                job.slot_counts.add(str(task.body["state"]), result, task.slots)
            for task in tasks:
                if task.body["state"] == "completed" and job.uses_dependencies:
                    ready.update(job.deps.completed(task.key, exit_options(task.body).dependency_action))
            active = [t.key for t in tasks if t.body["state"] == "active" and t.key in ready and t.key not in requeued]
            job.pending = deque(requeued + active)
            if job.state == "deleting":
                job.delete_at = now + delete_delay
            elif job.state == "terminating":
                complete_job_body(job.body, ticks, None)
            self.jobs[job.key] = job


def requeue_body(body: Json, ticks: int) -> None:
    """A task body put back to active after a requeue (preemption, node removal, restart)."""
    info = body.get("executionInfo") or {}
    body["executionInfo"] = execution_info(
        retryCount=info.get("retryCount", 0),
        lastRetryTime=info.get("lastRetryTime"),
        requeueCount=int(info.get("requeueCount", 0)) + 1,
        lastRequeueTime=iso(ticks),
    )
    if body["state"] != "active":
        body["previousState"] = body["state"]
        body["previousStateTransitionTime"] = body["stateTransitionTime"]
        body["state"] = "active"
        body["stateTransitionTime"] = iso(ticks)


def complete_job_body(body: Json, ticks: int, reason: str | None) -> None:
    """A job body moved to completed (terminateReason kept if already set)."""
    info = dict(body.get("executionInfo") or {})
    stamp = iso(ticks)
    new_info: Json = {"startTime": info.get("startTime"), "endTime": stamp, "poolId": info.get("poolId")}
    if "schedulingError" in info:
        new_info["schedulingError"] = info["schedulingError"]
    new_info["terminateReason"] = info.get("terminateReason") or reason or "UserTerminate"
    body["executionInfo"] = {k: v for k, v in new_info.items() if v is not None}
    if body["state"] != "completed":
        body["previousState"] = body["state"] if body["state"] != "terminating" else "active"
        body["previousStateTransitionTime"] = body["stateTransitionTime"]
        body["state"] = "completed"
        body["stateTransitionTime"] = stamp


class Persister:
    """Writes debounced JSON snapshots of a :class:`State` to ``<data_dir>/state.json``."""

    FILE = "state.json"

    def __init__(self, state: State, data_dir: Path, debounce: float = 0.25) -> None:
        self.state = state
        self.path = data_dir / self.FILE
        self.debounce = debounce
        self._stop = threading.Event()
        self._written = -1
        self._thread = threading.Thread(target=self._loop, name="emulator-persist", daemon=True)

    @staticmethod
    def load(data_dir: Path, base_url: str) -> Json | None:
        """The saved snapshot, with entity URLs moved to ``base_url`` (the port may differ)."""
        path = data_dir / Persister.FILE
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ValueError(f"{path}: not a readable emulator state file: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"{path}: not an emulator state file of version {SNAPSHOT_VERSION}")
        old = data.get("base_url")
        if old and old != base_url:
            data = json.loads(text.replace(json.dumps(old)[1:-1], json.dumps(base_url)[1:-1]))
        return dict(data)

    def start(self) -> None:
        self._written = self.state.version
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.state.lock:
            self.state.touch()  # wake the loop
        self._thread.join(timeout=10)
        self.flush()

    def flush(self) -> None:
        with self.state.lock:
            version = self.state.version
            if version == self._written:
                return
            # SAS signatures in resource and output file URLs are never written to disk.
            text = redact(json.dumps(self.state.snapshot(), separators=(",", ":")), env={})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new snapshot
        self._written = version

    def _loop(self) -> None:
        while not self._stop.is_set():
            version = self.state.wait_changed(self._written, timeout=1.0)
            if self._stop.is_set():
                break
            if version != self._written:
                time.sleep(self.debounce)  # batch bursts of changes into one write
                try:
                    self.flush()
                except OSError as exc:
                    log.warning("could not write the emulator state: %s", exc)
                    time.sleep(1.0)
