"""The state machine of the emulated service: pools, nodes, jobs and tasks move through their
states here, and active tasks are handed to free slots of ready nodes.

One engine thread takes each step under the state lock: pool allocation and deletion, node boot,
autoscale samples and evaluations, job termination (``onAllTasksComplete``, ``maxWallClockTime``),
and dispatch (job priority, ``taskSlotsPerNode``, ``nodeFillType``, ``maxParallelTasks``, task
dependencies). What a task's run does is :mod:`batchspec.emulator.execution`'s business: the
engine gives it a :class:`~batchspec.emulator.execution.TaskRun` and applies the
:class:`~batchspec.emulator.execution.Outcome` (retries, requeues, completion, job actions).
Real attempts run in worker threads; simulated ones (``--simulate``) are events on a heap of
service times, so a million tasks need no thread each.

Every delay reads the service clock (:class:`~batchspec.emulator.wire.Clock`), which a time scale
can speed up. Processes to stop are collected under the lock and stopped outside it
(:meth:`Engine.flush_stops`): stopping waits for a process group.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchspec import __version__
from batchspec.emulator import autoscaling
from batchspec.emulator.containers import ContainerRun
from batchspec.emulator.dependencies import exit_options
from batchspec.emulator.execution import NodeRunner, Outcome, Simulation, TaskHandle, TaskRun
from batchspec.emulator.faults import FaultInjector
from batchspec.emulator.jobprep import JobTasks
from batchspec.emulator.starttask import StartTasks
from batchspec.emulator.store import (
    RUNNING_STATES,
    Attempt,
    Job,
    Node,
    Pool,
    State,
    Task,
    complete_job_body,
    requeue_body,
)
from batchspec.emulator.wire import (
    TICKS_PER_SECOND,
    Json,
    duration_seconds,
    execution_info,
    failure_info,
    iso,
)

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """How long simulated cloud operations take (service seconds); tests make them short."""

    allocation: float = 1.2  # pool resizing -> steady
    node_start: float = 1.0  # node starting -> idle (or start task)
    delete: float = 0.5  # pool/job deleting -> gone
    tick: float = 0.05  # engine wake-up interval (wall-clock seconds)


def quota_error(dedicated: bool) -> Json:
    """The resize error of a pool that hit the account's (the emulator's ``--nodes``) core quota."""
    if dedicated:
        return {"code": "AccountCoreQuotaReached", "message": "The specified account has reached VM core quota limit"}
    return {
        "code": "AccountLowPriorityCoreQuotaReached",
        "message": "The specified account has reached VM low priority core quota limit",
    }


TASK_ENDED_BY_USER = ("usererror", "TaskEnded", "Task was ended by user request.")


class _FreeSlots:
    """The nodes with free slots, bucketed by slots in use, so that choosing a node costs
    O(slots per node), not O(nodes): Spread takes the emptiest node that fits, Pack the fullest."""

    def __init__(self, nodes: list[Node], per_node: int) -> None:
        self.per_node = per_node
        self.buckets: dict[int, dict[str, Node]] = {}
        for node in nodes:
            if node.used_slots < per_node:
                self.buckets.setdefault(node.used_slots, {})[node.id] = node

    def __bool__(self) -> bool:
        return any(self.buckets.values())

    def take(self, slots: int, pack: bool) -> Node | None:
        usable = [used for used, group in self.buckets.items() if group and used <= self.per_node - slots]
        if not usable:
            return None
        used = max(usable) if pack else min(usable)
        return self.buckets[used].popitem()[1]

    def put(self, node: Node) -> None:
        if node.used_slots < self.per_node:
            self.buckets.setdefault(node.used_slots, {})[node.id] = node


class Engine:
    """Runs the emulated nodes of every pool."""

    def __init__(
        self,
        state: State,
        *,
        runner: NodeRunner,
        base_url: str,
        max_nodes: int,
        timings: Timings,
        faults: FaultInjector,
        simulation: Simulation | None = None,
    ) -> None:
        self.state = state
        self.clock = state.clock
        self.runner = runner
        self.simulation = simulation
        self.base_url = base_url
        self.max_nodes = max_nodes
        self.timings = timings
        self.faults = faults
        self.histories: dict[str, autoscaling.History] = {}
        self._stops: list[TaskHandle] = []
        self._stops_lock = threading.Lock()
        self._events: list[tuple[float, int, Callable[[], None]]] = []  # simulated attempts' ends
        self._event_seq = itertools.count()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emulator-engine", daemon=True)
        self._workers: set[threading.Thread] = set()
        self._workers_lock = threading.Lock()
        self.jobtasks = JobTasks(state, runner, self._spawn)
        self.start_tasks = StartTasks(state, runner, self._set_node_state)

    # ---- lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling and every running process (their tasks stay as they are)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        with self.state.lock:
            # "shutdown" leaves tasks as they are: a restart with --data-dir requeues them.
            attempts = [n.start_attempt for n in self.state.all_nodes() if n.start_attempt]
            attempts += [t.attempt for j in self.state.jobs.values() for t in j.tasks.values() if t.attempt]
            for attempt in attempts:
                self._stop_attempt(attempt, "shutdown")
        self.flush_stops()
        with self._workers_lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def defer_stop(self, handle: TaskHandle | None) -> None:
        """Stop ``handle`` once the state lock is released (see :meth:`flush_stops`)."""
        if handle is not None:
            with self._stops_lock:
                self._stops.append(handle)

    def flush_stops(self) -> None:
        """Stop the processes deferred so far; never called under the state lock."""
        with self._stops_lock:
            stops, self._stops = self._stops, []
        for handle in stops:
            handle.stop()

    def _stop_attempt(self, attempt: Attempt, reason: str) -> None:
        self.defer_stop(attempt.request_stop(reason))

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except Exception:  # a bug in the emulator: keep serving, leave a trace
                log.exception("emulator worker failed")
            finally:
                with self._workers_lock:
                    self._workers.discard(threading.current_thread())
                self.wake()

        thread = threading.Thread(target=run, name="emulator-worker", daemon=True)
        with self._workers_lock:
            self._workers.add(thread)
        thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            launches: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
            try:
                with self.state.lock:
                    self._step(self.clock.now(), launches)
            except Exception:
                log.exception("emulator engine step failed")
            self.flush_stops()
            for target, args in launches:
                self._spawn(target, *args)
            self._wake.wait(self._next_wait())
            self._wake.clear()

    def _next_wait(self) -> float:
        """Wall-clock seconds to sleep: the tick, or less when a simulated event is due sooner."""
        if not self._events:
            return self.timings.tick
        due = self.clock.real(self._events[0][0] - self.clock.now())
        return max(0.0, min(self.timings.tick, due))

    # ---- one engine step (under the state lock)

    def _step(self, now: float, launches: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        while self._events and self._events[0][0] <= now:
            _, _, event = heapq.heappop(self._events)
            event()
        state = self.state
        for pool in list(state.pools.values()):
            if pool.delete_at is not None:
                if now >= pool.delete_at and not any(n.running or n.start_attempt for n in pool.nodes.values()):
                    del state.pools[pool.key]
                    self.histories.pop(pool.key, None)
                    state.touch()
                continue
            if pool.resize_at is not None and now >= pool.resize_at:
                self._apply_resize(pool, now)
            for node in list(pool.nodes.values()):
                if node.boot_at is not None and now >= node.boot_at:
                    self._boot(pool, node, launches)
                elif node.leaving and not node.running and not node.start_attempt:
                    self._drop_node(pool, node)
            history = self.histories.setdefault(pool.key, autoscaling.History())
            autoscaling.sample(pool, state.jobs.values(), history, now)
            if pool.autoscale_at is not None and now >= pool.autoscale_at:
                self._autoscale(pool, now)
        for job in list(state.jobs.values()):
            self._job_step(job, now)
        self._dispatch(launches, now)

    # ---- pools and nodes

    def _free_capacity(self) -> int:
        return self.max_nodes - sum(len(p.nodes) for p in self.state.pools.values())

    def begin_resize(self, pool: Pool, now: float | None = None) -> None:
        ticks = self.clock.ticks()
        pool.body["allocationState"] = "resizing"
        pool.body["allocationStateTransitionTime"] = iso(ticks)
        pool.resize_at = (self.clock.now() if now is None else now) + self.timings.allocation
        self.state.touch()
        self.wake()

    def new_pool(self, pool: Pool) -> None:
        """A pool just created: allocation starts, and an autoscale pool evaluates its formula."""
        now = self.clock.now()
        pool.resize_at = now + self.timings.allocation
        if pool.body.get("enableAutoScale"):
            self._autoscale(pool, now, resize=False)
        self.wake()

    def _apply_resize(self, pool: Pool, now: float) -> None:
        """Bring the pool to its targets (within the node quota) and mark it steady."""
        body = pool.body
        pool.resize_at = None
        ticks = self.clock.ticks()
        if pool.stopping:
            pool.stopping = False
            low = int(body.get("targetLowPriorityNodes") or 0) > 0
            body["resizeErrors"] = [
                {
                    "code": "ResizeStopped",
                    "message": "Desired number of "
                    + ("low priority" if low else "dedicated")
                    + " nodes could not be allocated due to a stop resize operation",
                }
            ]
        else:
            errors: list[Json] = []
            for dedicated, key in ((True, "targetDedicatedNodes"), (False, "targetLowPriorityNodes")):
                want = int(body.get(key) or 0)
                have = [n for n in pool.nodes.values() if n.dedicated == dedicated and not n.leaving]
                # Shrink idle nodes first.
                have.sort(key=lambda n: (len(n.running), n.id))
                for node in have[want:] if len(have) > want else []:
                    self._shrink(pool, node)
                for _ in range(max(0, want - len(have))):
                    if self._free_capacity() <= 0:
                        # --nodes is the account's core quota: the resize ends short, with the
                        # service's quota error, and nothing tops it up later (as on the service).
                        errors.append(quota_error(dedicated))
                        break
                    self._add_node(pool, dedicated, now, ticks)
            if errors:
                body["resizeErrors"] = errors
            else:
                body.pop("resizeErrors", None)
        self._count_nodes(pool)
        body["allocationState"] = "steady"
        body["allocationStateTransitionTime"] = iso(ticks)
        self.state.touch()

    def _count_nodes(self, pool: Pool) -> None:
        pool.body["currentDedicatedNodes"] = sum(1 for n in pool.nodes.values() if n.dedicated)
        pool.body["currentLowPriorityNodes"] = sum(1 for n in pool.nodes.values() if not n.dedicated)

    def _shrink(self, pool: Pool, node: Node) -> None:
        """Take a node out of the pool as the deallocation option says."""
        option = pool.deallocation
        if node.running and option in ("taskcompletion", "retaineddata"):
            node.leaving = True  # its tasks finish first; then it goes
            self._set_node_state(node, "leavingpool")
            return
        self._stop_node(node, "terminate" if option == "terminate" else "requeue")
        self._drop_node(pool, node)

    def _drop_node(self, pool: Pool, node: Node) -> None:
        pool.nodes.pop(node.id, None)
        self._count_nodes(pool)
        self.state.touch()

    def _add_node(self, pool: Pool, dedicated: bool, now: float, ticks: int) -> Node:
        node_id = f"tvmps_{secrets.token_hex(32)}_{'d' if dedicated else 'p'}"
        url = f"{self.base_url}/pools/{pool.id}/nodes/{node_id}"
        vm = (pool.body.get("virtualMachineConfiguration") or {}).get("imageReference") or {}
        image = {**vm, "exactVersion": vm.get("version", "latest")} if vm else None
        body: Json = {
            "id": node_id,
            "url": url,
            "state": "starting",
            "schedulingState": "enabled",
            "stateTransitionTime": iso(ticks),
            "allocationTime": iso(ticks),
            "ipAddress": "127.0.0.1",
            "affinityId": f"TVM:{node_id}",
            "vmSize": pool.body.get("vmSize"),
            "totalTasksRun": 0,
            "totalTasksSucceeded": 0,
            "runningTasksCount": 0,
            "runningTaskSlotsCount": 0,
            "isDedicated": dedicated,
        }
        if pool.body.get("startTask"):
            body["startTask"] = pool.body["startTask"]
        if image:
            body["virtualMachineInfo"] = {"imageReference": image}
        node = Node(pool_id=pool.id, body=body, dedicated=dedicated, boot_at=now + self.timings.node_start)
        if self.simulation is None:
            self.runner.make_node(node_id)
        pool.nodes[node_id] = node
        return node

    def stop_node_tasks(self, node: Node, option: str) -> None:
        """Requeue (or end) the tasks running on a node, leaving the node as it is."""
        for job_key, task_key in list(node.running):
            job = self.state.jobs.get(job_key)
            task = job.tasks.get(task_key) if job else None
            if task and task.attempt:
                self._stop_attempt(task.attempt, "terminate" if option == "terminate" else "requeue")

    def _stop_node(self, node: Node, reason: str = "requeue") -> None:
        """Stop everything on a node: its running tasks are requeued (or ended, for terminate)."""
        for job_key, task_key in list(node.running):
            job = self.state.jobs.get(job_key)
            task = job.tasks.get(task_key) if job else None
            if task and task.attempt:
                self._stop_attempt(task.attempt, reason)
        if node.start_attempt:
            self._stop_attempt(node.start_attempt, "requeue")
        node.ready = False

    def _set_node_state(self, node: Node, state: str) -> None:
        if node.body["state"] != state:
            node.body["state"] = state
            node.body["stateTransitionTime"] = iso(self.clock.ticks())
            self.state.touch()

    def _boot(self, pool: Pool, node: Node, launches: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        node.boot_at = None
        ticks = self.clock.ticks()
        node.body["lastBootTime"] = iso(ticks)
        node.body["certificateReferences"] = []
        node.body["nodeAgentInfo"] = {"lastUpdateTime": iso(ticks), "version": f"batchspec-emulator-{__version__}"}
        node.body.pop("startTaskInfo", None)
        node.body.pop("errors", None)
        if pool.containers is not None and self.simulation is None:
            # A container pool's node gets its images before its start task or any task runs.
            node.ready = False
            launches.append((self._prefetch, (pool.id, node.id)))
            return
        self._booted(pool, node, launches)

    def _booted(self, pool: Pool, node: Node, launches: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        start = pool.body.get("startTask")
        if start and self.simulation is None:
            wait = start.get("waitForSuccess", True)
            self._set_node_state(node, "waitingforstarttask" if wait else "idle")
            node.ready = not wait
            node.start_attempt = Attempt(node_id=node.id)
            launches.append((self.start_tasks.run, (pool.id, node.id, node.start_attempt)))
        else:
            node.ready = True
            self._set_node_state(node, "idle")

    def _prefetch(self, pool_id: str, node_id: str) -> None:
        """Pull a container pool's images onto a node that just booted (worker thread); a node
        that cannot get them becomes unusable, with the error, as on the service."""
        with self.state.lock:
            pool = self.state.pools.get(pool_id.lower())
            node = pool.nodes.get(node_id) if pool else None
            if pool is None or node is None or pool.containers is None:
                return
            images = [str(i) for i in pool.containers.get("containerImageNames") or []]
            logins = pool.logins
        problem = self.runner.containers.prefetch(images, logins)
        launches: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        with self.state.lock:
            if node_id not in pool.nodes or node.body["state"] != "starting" or node.boot_at is not None:
                return  # removed, or rebooting, meanwhile
            if problem is not None:
                node.body["errors"] = [problem]
                self._set_node_state(node, "unusable")
                self.state.touch()
                return
            self._booted(pool, node, launches)
        for target, args in launches:
            self._spawn(target, *args)

    def delete_pool(self, pool: Pool) -> None:
        ticks = self.clock.ticks()
        pool.body["state"] = "deleting"
        pool.body["stateTransitionTime"] = iso(ticks)
        pool.body["allocationState"] = "resizing"
        pool.body["allocationStateTransitionTime"] = iso(ticks)
        pool.resize_at = None
        pool.autoscale_at = None
        pool.delete_at = self.clock.now() + self.timings.delete
        for node in pool.nodes.values():
            self._stop_node(node)
        self.state.touch()
        self.wake()

    def resize_pool(self, pool: Pool, dedicated: int, low_priority: int, deallocation: str = "requeue") -> None:
        pool.body["targetDedicatedNodes"] = dedicated
        pool.body["targetLowPriorityNodes"] = low_priority
        pool.body.pop("resizeErrors", None)
        pool.stopping = False
        pool.deallocation = deallocation
        self.begin_resize(pool)

    def stop_resize(self, pool: Pool) -> None:
        if pool.body.get("allocationState") == "resizing":
            ticks = self.clock.ticks()
            pool.body["allocationState"] = "stopping"
            pool.body["allocationStateTransitionTime"] = iso(ticks)
            pool.stopping = True
            pool.resize_at = self.clock.now() + self.timings.allocation
            self.state.touch()

    def remove_nodes(self, pool: Pool, nodes: list[Node], deallocation: str) -> None:
        """``removenodes``: those nodes go (as the option says) and the targets drop with them."""
        for node in nodes:
            key = "targetDedicatedNodes" if node.dedicated else "targetLowPriorityNodes"
            pool.body[key] = max(0, int(pool.body.get(key) or 0) - 1)
            pool.deallocation = deallocation
            self._shrink(pool, node)
        self.begin_resize(pool)

    def reboot_node(self, node: Node, option: str, reimage: bool = False) -> None:
        """Reboot (or reimage) a node: its tasks go as ``option`` says, then it boots again."""
        reason = "terminate" if option == "terminate" else "requeue"
        self._stop_node(node, reason)
        self._set_node_state(node, "reimaging" if reimage else "rebooting")
        node.boot_at = self.clock.now() + self.timings.node_start
        self.wake()

    def preempt_node(self, node_id: str, attempt: Attempt) -> None:
        """Spot preemption: the node goes away and comes back; its running tasks are requeued."""
        with self.state.lock:
            node = self.state.node(node_id)
            if node is None or attempt.stopped() or (self.simulation is None and attempt.process is None):
                return
            self.faults.count_preemption()
            self._stop_node(node)
            self._set_node_state(node, "preempted")
            node.boot_at = self.clock.now() + self.timings.node_start
        self.flush_stops()
        self.wake()

    # ---- autoscale

    def autoscale_context(self, pool: Pool) -> Any:
        history = self.histories.setdefault(pool.key, autoscaling.History())
        return autoscaling.context(pool, history, self.clock.now())

    def _autoscale(self, pool: Pool, now: float, *, resize: bool = True, record: bool = True) -> None:
        """Evaluate the pool's formula; apply its targets and schedule the next evaluation."""
        body = pool.body
        interval = duration_seconds(body.get("autoScaleEvaluationInterval")) or 15 * 60.0
        pool.autoscale_at = now + interval
        run, result = autoscaling.evaluate(str(body.get("autoScaleFormula") or ""), self.autoscale_context(pool),
                                           self.clock.ticks())
        if record:
            body["autoScaleRun"] = run
        if result is None:
            return
        pool.deallocation = result.deallocation
        changed = (result.target_dedicated, result.target_low_priority) != (
            int(body.get("targetDedicatedNodes") or 0),
            int(body.get("targetLowPriorityNodes") or 0),
        )
        body["targetDedicatedNodes"] = result.target_dedicated
        body["targetLowPriorityNodes"] = result.target_low_priority
        self.state.touch()
        if changed and resize and body.get("allocationState") == "steady":
            self.begin_resize(pool, now)

    def enable_autoscale(self, pool: Pool) -> None:
        """Autoscale enabled (or its formula or interval changed) on an existing pool.

        As on the service: a steady pool applies the formula at once (its last ``autoScaleRun``
        is kept until the next scheduled evaluation); a resizing one waits a full interval."""
        now = self.clock.now()
        interval = duration_seconds(pool.body.get("autoScaleEvaluationInterval")) or 15 * 60.0
        if pool.body.get("allocationState") == "steady":
            self._autoscale(pool, now, record="autoScaleRun" not in pool.body)
        else:
            pool.autoscale_at = now + interval
        self.wake()

    def disable_autoscale(self, pool: Pool) -> None:
        pool.autoscale_at = None

    # ---- jobs

    def _job_step(self, job: Job, now: float) -> None:
        state = job.state
        if state == "deleting":
            if job.running == 0 and job.delete_at is not None and now >= job.delete_at:
                self._finish_job(job)
                self.state.remove_job(job)
                self.runner.remove_work(job.id)
            return
        if state == "terminating":
            if job.running == 0:
                complete_job_body(job.body, self.clock.ticks(), None)
                self._finish_job(job)
                self.state.touch()
            return
        if state == "disabling":
            if job.running == 0:
                self._set_job_state(job, "disabled")
            return
        if state not in ("active", "disabled"):
            return
        if job.deadline is not None and now >= job.deadline:
            self.terminate_job(job, "MaxWallClockTimeExpiry")
            return
        # As on the service, a job without tasks is not terminated (its tasks are yet to come).
        counts = job.counts
        if (
            state == "active"
            and job.body.get("onAllTasksComplete") == "terminatejob"
            and counts.completed
            and not (counts.active or counts.running)
        ):
            self.terminate_job(job, "AllTasksComplete")

    def _set_job_state(self, job: Job, state: str) -> None:
        body = job.body
        if body["state"] != state:
            body["previousState"] = body["state"]
            body["previousStateTransitionTime"] = body["stateTransitionTime"]
            body["state"] = state
            body["stateTransitionTime"] = iso(self.clock.ticks())
            self.state.touch()

    def _finish_job(self, job: Job) -> None:
        """The job ended: its release task runs where it was prepared, and an auto pool with
        ``poolLifetimeOption: job`` goes with it."""
        self.jobtasks.release(job)
        for pool in self.state.pools.values():
            if pool.auto_for_job == job.key and pool.delete_at is None:
                self.delete_pool(pool)

    def terminate_job(self, job: Job, reason: str) -> None:
        """Job to terminating (or straight to completed when nothing runs)."""
        ticks = self.clock.ticks()
        info = dict(job.body.get("executionInfo") or {})
        info["terminateReason"] = reason
        job.body["executionInfo"] = info
        self._stop_job_tasks(job, "terminate")
        if job.running == 0:
            complete_job_body(job.body, ticks, reason)
            self._finish_job(job)
        else:
            self._set_job_state(job, "terminating")
            job.body["previousState"] = "active"
        self.state.touch()
        self.wake()

    def delete_job(self, job: Job) -> None:
        if job.state != "deleting":
            self._set_job_state(job, "deleting")
        job.delete_at = self.clock.now() + self.timings.delete
        self.state.touch()
        self.wake()
        self._stop_job_tasks(job, "delete")

    def disable_job(self, job: Job, disable_tasks: str) -> None:
        """``disable``: no new task starts; running ones are requeued, ended or left to finish."""
        if disable_tasks in ("requeue", "terminate"):
            self._stop_job_tasks(job, disable_tasks)
        self._set_job_state(job, "disabling" if job.running else "disabled")
        self.wake()

    def enable_job(self, job: Job) -> None:
        self._set_job_state(job, "enabling")
        self._set_job_state(job, "active")
        self.wake()

    def _stop_job_tasks(self, job: Job, reason: str) -> None:
        for task in job.tasks.values():
            if task.attempt is not None:
                self._stop_attempt(task.attempt, reason)

    # ---- tasks requested through the API

    def delete_task(self, job: Job, task: Task) -> None:
        if task.attempt is not None:
            self._stop_attempt(task.attempt, "delete")
        self.state.remove_task(job, task)
        self.runner.remove_work(job.id, task.id)

    def terminate_task(self, job: Job, task: Task) -> None:
        if task.attempt is not None:
            self._stop_attempt(task.attempt, "terminate")
        else:
            ticks = self.clock.ticks()
            info = task.body.get("executionInfo") or {}
            task.body["executionInfo"] = execution_info(
                endTime=iso(ticks),
                failureInfo=failure_info(*TASK_ENDED_BY_USER),
                result="failure",
                retryCount=info.get("retryCount", 0),
                requeueCount=info.get("requeueCount", 0),
            )
            self.state.set_task_state(job, task, "completed", ticks)
            self.after_task_completed(job, task)
        self.wake()

    def reactivate_task(self, job: Job, task: Task) -> None:
        """A completed task runs again from scratch: retry count and execution info reset."""
        info = task.body.get("executionInfo") or {}
        task.body["executionInfo"] = execution_info(retryCount=0, requeueCount=info.get("requeueCount", 0))
        task.body.pop("nodeInfo", None)
        if job.uses_dependencies:
            job.deps.reactivated(task.key)
        self.state.set_task_state(job, task, "active")
        if not job.uses_dependencies or not job.deps.waiting(task.key):
            job.pending.append(task.key)
        self.wake()

    def after_task_completed(self, job: Job, task: Task) -> None:
        """The job action of a failed task's exit conditions (``onTaskFailure:
        performexitoptionsjobaction``)."""
        if job.state != "active" or job.body.get("onTaskFailure") != "performexitoptionsjobaction":
            return
        if (task.body.get("executionInfo") or {}).get("result") != "failure":
            return
        action = exit_options(task.body).job_action
        if action == "terminate":
            self.terminate_job(job, "TaskFailed")
        elif action == "disable":
            self.disable_job(job, "requeue")

    # ---- dispatch

    def _dispatch(self, launches: list[tuple[Callable[..., None], tuple[Any, ...]]], now: float) -> None:
        by_pool: dict[str, list[Job]] = {}
        for job in self.state.jobs.values():
            if job.state == "active" and job.pending:
                by_pool.setdefault(job.pool_id.lower(), []).append(job)
        for pool_key, jobs in by_pool.items():
            pool = self.state.pools.get(pool_key)
            if pool is None or pool.delete_at is not None or pool.body.get("state") != "active":
                continue
            per_node = pool.slots_per_node
            nodes = [
                n for n in pool.nodes.values()
                if n.ready and not n.leaving and n.body.get("schedulingState") == "enabled" and n.used_slots < per_node
            ]
            if not nodes:
                continue
            pack = (pool.body.get("taskSchedulingPolicy") or {}).get("nodeFillType") == "Pack"
            jobs.sort(key=lambda j: (-int(j.body.get("priority") or 0), j.seq))
            for job in jobs:
                limit = int(job.body.get("maxParallelTasks", -1))
                usable = [n for n in nodes if not JobTasks.blocked(n, job)] if job.body.get(
                    "jobPreparationTask") else nodes
                free = _FreeSlots(usable, per_node)
                while job.pending and (limit < 0 or job.running < limit) and free:
                    task = job.tasks.get(job.pending[0])
                    if task is None or task.body["state"] != "active" or task.attempt is not None:
                        job.pending.popleft()
                        continue
                    node = free.take(task.slots, pack)
                    if node is None:
                        break
                    job.pending.popleft()
                    attempt = self._assign(job, task, node, pool, now)
                    free.put(node)
                    if self.simulation is not None:
                        self._simulate(job, task, attempt, now)
                    else:
                        launches.append((self._run_task, (attempt,)))
                nodes = [n for n in nodes if n.used_slots < per_node]

    def _assign(self, job: Job, task: Task, node: Node, pool: Pool, now: float) -> Attempt:
        ticks = self.clock.ticks()
        attempt = Attempt(node_id=node.id, job_id=job.key, task_id=task.key, slots=task.slots, started_at=now,
                          start_ticks=ticks)
        task.attempt = attempt
        task.node_id = node.id
        node.used_slots += task.slots
        node.running.add((job.key, task.key))
        node.body["runningTasksCount"] = len(node.running)
        node.body["runningTaskSlotsCount"] = node.used_slots
        self._set_node_state(node, "running")
        job.running += 1
        info = task.body.get("executionInfo") or {}
        task.body["executionInfo"] = execution_info(
            startTime=iso(ticks),
            retryCount=info.get("retryCount", 0),
            lastRetryTime=iso(ticks) if task.retried else info.get("lastRetryTime"),
            requeueCount=info.get("requeueCount", 0),
            lastRequeueTime=info.get("lastRequeueTime"),
        )
        task.retried = False
        node_url = node.body["url"]
        root = f"workitems/{job.id}/job-1/{task.id}"
        task.body["nodeInfo"] = {
            "affinityId": node.body["affinityId"],
            "nodeUrl": node_url,
            "poolId": pool.id,
            "nodeId": node.id,
            # A Windows node writes its paths with backslashes; the URL keeps slashes.
            "taskRootDirectory": root.replace("/", "\\") if pool.windows else root,
            "taskRootDirectoryUrl": f"{node_url}/files/{root}",
        }
        self.state.set_task_state(job, task, "running", ticks)
        return attempt

    def _release(self, job: Job | None, task: Task | None, attempt: Attempt, succeeded: bool | None) -> None:
        """Free the attempt's slots (under the lock); the task may have been deleted meanwhile."""
        if attempt.released:
            return
        attempt.released = True
        node = self.state.node(attempt.node_id)
        if node is not None and (attempt.job_id, attempt.task_id) in node.running:
            node.running.discard((attempt.job_id, attempt.task_id))
            node.used_slots -= attempt.slots
            node.body["runningTasksCount"] = len(node.running)
            node.body["runningTaskSlotsCount"] = node.used_slots
            if succeeded is not None:
                node.body["totalTasksRun"] += 1
                node.body["totalTasksSucceeded"] += 1 if succeeded else 0
            if node.body["state"] == "running" and not node.running:
                self._set_node_state(node, "idle")
        if job is not None:
            job.running -= 1
        if task is not None and task.attempt is attempt:
            task.attempt = None

    def _task_run(self, job: Job, task: Task, attempt: Attempt) -> TaskRun | None:
        """What the attempt runs, read from the state (under the lock)."""
        node = self.state.node(attempt.node_id)
        if node is None:
            return None
        pool = self.state.pools.get(node.pool_id.lower())
        body = task.body
        info = body.get("executionInfo") or {}
        container = None
        if body.get("containerSettings"):
            own = self.state.logins.get((job.key, task.key))
            container = ContainerRun(
                settings=body["containerSettings"],
                pool_has_containers=pool is not None and pool.containers is not None,
                node_root=self.runner.node_root(node.id),
                logins=((own,) if own else ()) + (pool.logins if pool else ()),
                on_container=lambda cid, state: self._container_info(attempt, cid, state))
        return TaskRun(
            job_id=job.id,
            task_id=task.id,
            pool_id=node.pool_id,
            node_id=node.id,
            command_line=str(body.get("commandLine") or ""),
            root=self.runner.node_root(node.id) / "workitems" / job.id / "job-1" / task.id,
            resource_files=tuple(body.get("resourceFiles") or ()),
            output_files=tuple(body.get("outputFiles") or ()),
            settings=tuple(job.body.get("commonEnvironmentSettings") or ()) + tuple(
                body.get("environmentSettings") or ()
            ),
            timeout=duration_seconds((body.get("constraints") or {}).get("maxWallClockTime")),
            linux=pool is None or not pool.windows,
            dedicated=node.dedicated,
            seed_key=f"{job.key}/{task.key}/{info.get('requeueCount', 0)}/{info.get('retryCount', 0)}",
            container=container,
        )

    def _container_info(self, attempt: Attempt, container_id: str, state: str) -> None:
        """``executionInfo.containerInfo`` of the attempt's task as its container comes and goes."""
        with self.state.lock:
            job = self.state.jobs.get(attempt.job_id)
            task = job.tasks.get(attempt.task_id) if job else None
            if task is None or task.attempt is not attempt:
                return
            info = dict(task.body.get("executionInfo") or {})
            info["containerInfo"] = {"containerId": container_id, "state": state}
            task.body["executionInfo"] = execution_info(**info)
            self.state.touch()

    # ---- a real attempt (worker thread)

    def _run_task(self, attempt: Attempt) -> None:
        with self.state.lock:
            job = self.state.jobs.get(attempt.job_id)
            task = job.tasks.get(attempt.task_id) if job else None
            run = self._task_run(job, task, attempt) if job and task else None
            if job is None or task is None or run is None:
                self._release(job, task, attempt, None)
                return
        if not self.jobtasks.before_task(attempt.job_id, attempt.node_id):
            with self.state.lock:  # the job's preparation failed here: the task goes elsewhere
                self._stop_attempt(attempt, "requeue")
            self._exited(attempt, Outcome())
            return
        paths, failure = self.runner.stage(run)
        if failure is not None:
            outcome = Outcome(failure=failure)
        else:
            prepared = self.runner.prepare(run, paths)
            outcome = prepared if isinstance(prepared, Outcome) else self._launch(run, attempt, prepared)
        if self._exited(attempt, outcome):
            upload_failure = self.runner.upload(run, paths, outcome.succeeded)
            if upload_failure is not None and outcome.failure is None:
                outcome = Outcome(outcome.exit_code, upload_failure, outcome.timed_out)
            with self.state.lock:
                self._completed(attempt, outcome)
            self.flush_stops()

    def _launch(self, run: TaskRun, attempt: Attempt, handle: TaskHandle) -> Outcome:
        with self.state.lock:
            attempt.process = handle
            stopped = attempt.stopped()
        if stopped:
            handle.stop()  # stopped while resource files were downloading
        timer: threading.Timer | None = None
        delay = None if run.dedicated else self.faults.preemption_delay(run.seed_key)
        if delay is not None:
            timer = threading.Timer(delay, self.preempt_node, (attempt.node_id, attempt))
            timer.daemon = True
            timer.start()
        result = handle.run(timeout=run.timeout)
        if timer is not None:
            timer.cancel()
            # A drawn preemption always happens: a task quicker than its draw is preempted as it
            # ends, before its completion reaches the service (it is requeued).
            self.preempt_node(attempt.node_id, attempt)
        return self.runner.finish(result, run)

    # ---- a simulated attempt (engine thread)

    def _simulate(self, job: Job, task: Task, attempt: Attempt, now: float) -> None:
        assert self.simulation is not None
        sim = self.simulation
        run = self._task_run(job, task, attempt)
        key = run.seed_key if run else attempt.task_id
        duration = sim.duration(key)
        if run is not None and run.timeout is not None and duration > run.timeout:
            end, outcome = now + run.timeout, Outcome(exit_code=143, timed_out=True)
        else:
            end, outcome = now + duration, Outcome(exit_code=1 if sim.fails(key) else 0)
        node_fails = sim.node_fails_at(key, duration)
        preempt = None if (run is None or run.dedicated) else self.faults.preemption_delay(key, duration)
        interruption = min((t for t in (node_fails, preempt) if t is not None), default=None)
        if interruption is not None and now + interruption < end:
            event: Callable[[], None] = lambda: self._interrupt(attempt, preempted=interruption == preempt)  # noqa: E731
            self._push(now + interruption, event)
            return

        attempt.end_ticks = attempt.start_ticks + int((end - now) * TICKS_PER_SECOND)

        def finish() -> None:
            if self._exited(attempt, outcome):
                self._completed(attempt, outcome)

        self._push(end, finish)

    def _push(self, when: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._event_seq), event))

    def _interrupt(self, attempt: Attempt, *, preempted: bool) -> None:
        node = self.state.node(attempt.node_id)
        if node is None or attempt.stopped():
            self._exited(attempt, Outcome())  # already stopped (its node went, say): settle it
            return
        if preempted:
            self.faults.count_preemption()
        self._stop_node(node)
        self._set_node_state(node, "preempted" if preempted else "rebooting")
        node.boot_at = self.clock.now() + self.timings.node_start
        self._exited(attempt, Outcome())

    # ---- what an attempt's end means (under the lock, or taking it)

    def _exited(self, attempt: Attempt, outcome: Outcome) -> bool:
        """The process ended: requeue, retry or stop here (False), or go on to complete (True)."""
        with self.state.lock:
            if attempt.released:
                return False
            job = self.state.jobs.get(attempt.job_id)
            task = job.tasks.get(attempt.task_id) if job else None
            if task is None or job is None:  # deleted while running
                self._release(job, None, attempt, None)
                return False
            reason = attempt.stop_reason
            if reason == "shutdown":
                return False
            if reason in ("requeue", "delete"):
                self._release(job, task, attempt, None)
                if reason == "requeue" and task.body["state"] in RUNNING_STATES:
                    requeue_body(task.body, self.clock.ticks())
                    self._fix_counts_after_requeue(job, task)
                    job.pending.appendleft(task.key)
                return False
            if reason is None and not outcome.timed_out and outcome.failure is None and outcome.exit_code not in (
                None,
                0,
            ):
                constraints = task.body.get("constraints") or {}
                limit = int(constraints.get("maxTaskRetryCount", 0))
                retries = int((task.body.get("executionInfo") or {}).get("retryCount", 0))
                if limit == -1 or retries < limit:
                    self._retry(job, task, attempt, retries)
                    return False
            return True

    def _completed(self, attempt: Attempt, outcome: Outcome) -> None:
        job = self.state.jobs.get(attempt.job_id)
        task = job.tasks.get(attempt.task_id) if job else None
        if task is None or job is None:
            self._release(job, task, attempt, None)
            return
        failure = outcome.failure
        if outcome.timed_out:
            # The service ends the task and reports TaskEnded (a server-side category).
            failure = failure_info(
                "servererror", "TaskEnded", "The task exceeded its maximum wall clock time and was ended."
            )
        elif attempt.stop_reason == "terminate":
            failure = failure_info(*TASK_ENDED_BY_USER)
        elif failure is None and outcome.exit_code not in (None, 0):
            failure = failure_info(
                "usererror", "FailureExitCode", "The task exited with an exit code representing a failure"
            )
        ticks = self.clock.ticks()
        info = task.body.get("executionInfo") or {}
        succeeded = failure is None and outcome.exit_code == 0
        task.body["executionInfo"] = execution_info(
            startTime=info.get("startTime"),
            endTime=iso(ticks if attempt.end_ticks is None else attempt.end_ticks),
            exitCode=outcome.exit_code,
            containerInfo=info.get("containerInfo"),
            failureInfo=failure,
            result="success" if succeeded else "failure",
            retryCount=info.get("retryCount", 0),
            lastRetryTime=info.get("lastRetryTime"),
            requeueCount=info.get("requeueCount", 0),
            lastRequeueTime=info.get("lastRequeueTime"),
        )
        self._release(job, task, attempt, succeeded)
        if task.body["state"] in RUNNING_STATES:
            self.state.set_task_state(job, task, "completed", ticks)
            self.after_task_completed(job, task)
        self.wake()

    def _fix_counts_after_requeue(self, job: Job, task: Task) -> None:
        """requeue_body changed the state directly: move the task's count from running to active."""
        job.counts.running -= 1
        job.counts.active += 1
        job.slot_counts.running -= task.slots
        job.slot_counts.active += task.slots
        self.state.touch()

    def _retry(self, job: Job, task: Task, attempt: Attempt, retries: int) -> None:
        self._release(job, task, attempt, False)
        info = task.body.get("executionInfo") or {}
        task.body["executionInfo"] = execution_info(
            retryCount=retries + 1,
            lastRetryTime=info.get("lastRetryTime"),
            requeueCount=info.get("requeueCount", 0),
            lastRequeueTime=info.get("lastRequeueTime"),
        )
        task.retried = True
        self.state.set_task_state(job, task, "active")
        job.pending.appendleft(task.key)
