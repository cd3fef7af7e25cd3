"""Emulated compute nodes: pool allocation, start tasks, task slots and real task execution.

One engine thread moves pools, nodes and jobs through their states (allocation, boot, deletion,
job termination, ``onAllTasksComplete``) and hands active tasks, in the order they were added,
to free slots of ready nodes (``taskSlotsPerNode``, ``nodeFillType``). Each attempt runs in its own
thread through :mod:`batchspec.runner`, the same code as the local backend: resource files are
downloaded into ``wd/``, the ``commandLine`` is split without a shell and run with the
``AZ_BATCH_*`` variables, output files are uploaded, and retries, ``maxWallClockTime``,
preemption and requeues are applied.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchspec import __version__
from batchspec.emulator.dependencies import exit_options
from batchspec.emulator.faults import FaultInjector
from batchspec.emulator.storage import FileError, download_resource_files, upload_output_files
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
    START_TASK_INFO_ORDER,
    Json,
    duration_seconds,
    execution_info,
    failure_info,
    iso,
    ordered,
)
from batchspec.runner import ProcessResult, TaskPaths, TaskProcess, batch_environment, split_command_line

log = logging.getLogger(__name__)

#: Directories every node has (as listed by the service for a node's root).
NODE_DIRS = ("applications", "fsmounts", "shared", "startup", "volatile", "workitems")

#: What a task inherits from the emulator's own environment: where programs are, locale and
#: home, as a node's task user has them. Nothing else (keys, tokens, connection strings) leaks in.
NODE_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def node_base_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in NODE_INHERITED_ENV if name in os.environ}


@dataclass
class Timings:
    """How long simulated cloud operations take (seconds); tests make them short."""

    allocation: float = 1.2  # pool resizing -> steady
    node_start: float = 1.0  # node starting -> idle (or start task)
    delete: float = 0.5  # pool/job deleting -> gone
    tick: float = 0.05  # engine wake-up interval


def exit_status(result: ProcessResult) -> int | None:
    """A Linux node's exit code: 128 + signal for a killed process (as a shell reports it)."""
    code = result.exit_code
    if code is not None and code < 0:
        return 128 - code
    return code


class Engine:
    """Runs the emulated nodes of every pool."""

    def __init__(
        self,
        state: State,
        *,
        nodes_root: Path,
        base_url: str,
        account: str,
        max_nodes: int,
        timings: Timings,
        faults: FaultInjector,
        auto_storage: str | None = None,
    ) -> None:
        self.state = state
        self.auto_storage = auto_storage  # connection string of the account's auto-storage account
        self.nodes_root = nodes_root
        self.base_url = base_url
        self.account = account
        self.max_nodes = max_nodes
        self.timings = timings
        self.faults = faults
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emulator-engine", daemon=True)
        self._workers: set[threading.Thread] = set()
        self._workers_lock = threading.Lock()

    # ---- lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling and every running process (their tasks stay as they are)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        procs: list[TaskProcess] = []
        with self.state.lock:
            # "shutdown" leaves tasks as they are: a restart with --data-dir requeues them.
            attempts = [n.start_attempt for n in self.state.all_nodes() if n.start_attempt]
            attempts += [t.attempt for j in self.state.jobs.values() for t in j.tasks.values() if t.attempt]
            for attempt in attempts:
                proc = attempt.request_stop("shutdown")
                if proc:
                    procs.append(proc)
        for proc in procs:
            proc.stop()
        with self._workers_lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def node_root(self, node_id: str) -> Path:
        return self.nodes_root / node_id

    def task_root(self, node_id: str, job_id: str, task_id: str) -> Path:
        return self.node_root(node_id) / "workitems" / job_id / "job-1" / task_id

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
            stops: list[TaskProcess] = []
            try:
                with self.state.lock:
                    self._step(time.monotonic(), launches, stops)
            except Exception:
                log.exception("emulator engine step failed")
            for proc in stops:
                proc.stop()
            for target, args in launches:
                self._spawn(target, *args)
            self._wake.wait(self.timings.tick)
            self._wake.clear()

    # ---- one engine step (under the state lock)

    def _step(
        self,
        now: float,
        launches: list[tuple[Callable[..., None], tuple[Any, ...]]],
        stops: list[TaskProcess],
    ) -> None:
        state = self.state
        for pool in list(state.pools.values()):
            if pool.delete_at is not None:
                if now >= pool.delete_at and not any(n.running or n.start_attempt for n in pool.nodes.values()):
                    del state.pools[pool.key]
                    state.touch()
                continue
            if pool.resize_at is not None and now >= pool.resize_at:
                stops.extend(self._apply_resize(pool, now))
            for node in pool.nodes.values():
                if node.boot_at is not None and now >= node.boot_at:
                    self._boot(pool, node, launches)
        for job in list(state.jobs.values()):
            self._job_step(job, now, stops)
        self._dispatch(launches)

    def _free_capacity(self) -> int:
        return self.max_nodes - sum(len(p.nodes) for p in self.state.pools.values())

    def _begin_resize(self, pool: Pool, now: float) -> None:
        ticks = self.state.clock.ticks()
        pool.body["allocationState"] = "resizing"
        pool.body["allocationStateTransitionTime"] = iso(ticks)
        pool.resize_at = now + self.timings.allocation
        self.state.touch()

    def _apply_resize(self, pool: Pool, now: float) -> list[TaskProcess]:
        """Bring the pool to its targets (within the node cap) and mark it steady."""
        procs: list[TaskProcess] = []
        body = pool.body
        pool.resize_at = None
        ticks = self.state.clock.ticks()
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
                have = [n for n in pool.nodes.values() if n.dedicated == dedicated]
                # Shrink idle nodes first (the service's default deallocation: requeue running tasks).
                have.sort(key=lambda n: (len(n.running), n.id))
                for node in have[want:] if len(have) > want else []:
                    procs.extend(self._remove_node(pool, node))
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
        body["currentDedicatedNodes"] = sum(1 for n in pool.nodes.values() if n.dedicated)
        body["currentLowPriorityNodes"] = sum(1 for n in pool.nodes.values() if not n.dedicated)
        body["allocationState"] = "steady"
        body["allocationStateTransitionTime"] = iso(ticks)
        self.state.touch()
        return procs

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
        root = self.node_root(node_id)
        for name in NODE_DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)
        pool.nodes[node_id] = node
        return node

    def _remove_node(self, pool: Pool, node: Node) -> list[TaskProcess]:
        procs = self._requeue_node(node)
        pool.nodes.pop(node.id, None)
        return procs

    def _requeue_node(self, node: Node) -> list[TaskProcess]:
        """Stop everything on a node; its running tasks go back to active (requeue)."""
        procs: list[TaskProcess] = []
        for job_id, task_id in list(node.running):
            job = self.state.jobs.get(job_id)
            task = job.tasks.get(task_id) if job else None
            if task and task.attempt:
                proc = task.attempt.request_stop("requeue")
                if proc:
                    procs.append(proc)
        if node.start_attempt:
            proc = node.start_attempt.request_stop("requeue")
            if proc:
                procs.append(proc)
        node.ready = False
        return procs

    def _set_node_state(self, node: Node, state: str) -> None:
        if node.body["state"] != state:
            node.body["state"] = state
            node.body["stateTransitionTime"] = iso(self.state.clock.ticks())
            self.state.touch()

    def _boot(self, pool: Pool, node: Node, launches: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        node.boot_at = None
        ticks = self.state.clock.ticks()
        node.body["lastBootTime"] = iso(ticks)
        node.body["certificateReferences"] = []
        node.body["nodeAgentInfo"] = {
            "lastUpdateTime": iso(ticks),
            "version": f"batchspec-emulator-{__version__}",
        }
        start = pool.body.get("startTask")
        if start:
            wait = start.get("waitForSuccess", True)
            self._set_node_state(node, "waitingforstarttask" if wait else "idle")
            node.ready = not wait
            node.start_attempt = Attempt(node_id=node.id)
            launches.append((self._run_start_task, (pool.id, node.id, node.start_attempt)))
        else:
            node.ready = True
            self._set_node_state(node, "idle")

    def _job_step(self, job: Job, now: float, stops: list[TaskProcess]) -> None:
        state = job.state
        if state == "deleting":
            if job.running == 0 and job.delete_at is not None and now >= job.delete_at:
                self._finish_job(job)
                self.state.remove_job(job)
            return
        if state == "terminating":
            if job.running == 0:
                complete_job_body(job.body, self.state.clock.ticks(), None)
                self._finish_job(job)
                self.state.touch()
            return
        if state != "active":
            return
        if job.deadline is not None and time.time() >= job.deadline:
            stops.extend(self.terminate_job(job, "MaxWallClockTimeExpiry"))
            return
        # As on the service, a job without tasks is not terminated (its tasks are yet to come).
        counts = job.counts
        if (
            job.body.get("onAllTasksComplete") == "terminatejob"
            and counts.completed
            and not (counts.active or counts.running)
        ):
            stops.extend(self.terminate_job(job, "AllTasksComplete"))

    def _finish_job(self, job: Job) -> None:
        """An auto pool with ``poolLifetimeOption: job`` goes with its job."""
        for pool in self.state.pools.values():
            if pool.auto_for_job == job.key and pool.delete_at is None:
                self.delete_pool(pool)

    # ---- operations requested through the API (called under the state lock)

    def terminate_job(self, job: Job, reason: str) -> list[TaskProcess]:
        """Job to terminating (or straight to completed when nothing runs); returns processes to stop."""
        ticks = self.state.clock.ticks()
        info = dict(job.body.get("executionInfo") or {})
        info["terminateReason"] = reason
        job.body["executionInfo"] = info
        procs = self._stop_job_tasks(job, "terminate")
        if job.running == 0:
            complete_job_body(job.body, ticks, reason)
            self._finish_job(job)
        else:
            job.body["previousState"] = job.body["state"]
            job.body["previousStateTransitionTime"] = job.body["stateTransitionTime"]
            job.body["state"] = "terminating"
            job.body["stateTransitionTime"] = iso(ticks)
        self.state.touch()
        self.wake()
        return procs

    def delete_job(self, job: Job) -> list[TaskProcess]:
        ticks = self.state.clock.ticks()
        if job.state != "deleting":
            job.body["previousState"] = job.body["state"]
            job.body["previousStateTransitionTime"] = job.body["stateTransitionTime"]
            job.body["state"] = "deleting"
            job.body["stateTransitionTime"] = iso(ticks)
        job.delete_at = time.monotonic() + self.timings.delete
        self.state.touch()
        self.wake()
        return self._stop_job_tasks(job, "delete")

    def _stop_job_tasks(self, job: Job, reason: str) -> list[TaskProcess]:
        procs: list[TaskProcess] = []
        for task in job.tasks.values():
            if task.attempt is not None:
                proc = task.attempt.request_stop(reason)
                if proc:
                    procs.append(proc)
        return procs

    def delete_pool(self, pool: Pool) -> list[TaskProcess]:
        ticks = self.state.clock.ticks()
        pool.body["state"] = "deleting"
        pool.body["stateTransitionTime"] = iso(ticks)
        pool.body["allocationState"] = "resizing"
        pool.body["allocationStateTransitionTime"] = iso(ticks)
        pool.resize_at = None
        pool.delete_at = time.monotonic() + self.timings.delete
        procs: list[TaskProcess] = []
        for node in pool.nodes.values():
            procs.extend(self._requeue_node(node))
        self.state.touch()
        self.wake()
        return procs

    def resize_pool(self, pool: Pool, dedicated: int, low_priority: int) -> list[TaskProcess]:
        pool.body["targetDedicatedNodes"] = dedicated
        pool.body["targetLowPriorityNodes"] = low_priority
        pool.body.pop("resizeErrors", None)
        pool.stopping = False
        self._begin_resize(pool, time.monotonic())
        self.wake()
        return []

    def stop_resize(self, pool: Pool) -> None:
        if pool.body.get("allocationState") == "resizing":
            ticks = self.state.clock.ticks()
            pool.body["allocationState"] = "stopping"
            pool.body["allocationStateTransitionTime"] = iso(ticks)
            pool.stopping = True
            pool.resize_at = time.monotonic() + self.timings.allocation
            self.state.touch()

    def preempt_node(self, node_id: str, attempt: Attempt) -> None:
        """Spot preemption: the node goes away and comes back; its running tasks are requeued."""
        procs: list[TaskProcess] = []
        with self.state.lock:
            node = self.state.node(node_id)
            if node is None or attempt.stopped() or attempt.process is None:
                return
            self.faults.count_preemption()
            procs = self._requeue_node(node)
            self._set_node_state(node, "preempted")
            node.boot_at = time.monotonic() + self.timings.node_start
        for proc in procs:
            proc.stop()
        self.wake()

    # ---- dispatch

    def _dispatch(self, launches: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        by_pool: dict[str, list[Job]] = {}
        for job in self.state.jobs.values():
            if job.state == "active" and job.pending:
                by_pool.setdefault(job.pool_id.lower(), []).append(job)
        for pool_key, jobs in by_pool.items():
            pool = self.state.pools.get(pool_key)
            if pool is None or pool.delete_at is not None or pool.body.get("state") != "active":
                continue
            nodes = [n for n in pool.nodes.values() if n.ready]
            if not nodes:
                continue
            per_node = pool.slots_per_node
            pack = (pool.body.get("taskSchedulingPolicy") or {}).get("nodeFillType") == "Pack"
            jobs.sort(key=lambda j: (-int(j.body.get("priority") or 0), j.seq))
            for job in jobs:
                limit = int(job.body.get("maxParallelTasks", -1))
                while job.pending and (limit < 0 or job.running < limit):
                    task = job.tasks.get(job.pending[0])
                    if task is None or task.body["state"] != "active":
                        job.pending.popleft()
                        continue
                    fits = [n for n in nodes if per_node - n.used_slots >= task.slots]
                    if not fits:
                        break
                    # Spread: the emptiest node; Pack: the fullest node that still fits.
                    node = (max if pack else min)(fits, key=lambda n: (n.used_slots, n.id))
                    job.pending.popleft()
                    launches.append((self._run_task, (self._assign(job, task, node, pool),)))

    def _assign(self, job: Job, task: Task, node: Node, pool: Pool) -> Attempt:
        ticks = self.state.clock.ticks()
        attempt = Attempt(node_id=node.id, job_id=job.key, task_id=task.key, slots=task.slots)
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
            "taskRootDirectory": root,
            "taskRootDirectoryUrl": f"{node_url}/files/{root}",
        }
        self.state.set_task_state(job, task, "running", ticks)
        return attempt

    def _release(self, job: Job | None, task: Task | None, attempt: Attempt, succeeded: bool | None) -> None:
        """Free the attempt's slots (under the lock); the task may have been deleted meanwhile."""
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

    # ---- running one task attempt (worker thread)

    def _task_env(
        self,
        paths: TaskPaths,
        *,
        job_id: str,
        task_id: str,
        pool_id: str,
        node_id: str,
        settings: Any,
        dedicated: bool,
    ) -> dict[str, str]:
        extra = {
            "AZ_BATCH_ACCOUNT_URL": self.base_url,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if dedicated else "false",
            "AZ_BATCH_NODE_MOUNTS_DIR": str(self.node_root(node_id) / "fsmounts"),
        }
        extra |= {str(e.get("name")): str(e.get("value", "")) for e in settings or [] if e.get("name")}
        return batch_environment(
            paths=paths,
            job_id=job_id,
            task_id=task_id,
            pool_id=pool_id,
            node_id=node_id,
            node_root=self.node_root(node_id),
            account=self.account,
            extra=extra,
            base=node_base_environment(),
        )

    def _run_task(self, attempt: Attempt) -> None:
        with self.state.lock:
            job = self.state.jobs.get(attempt.job_id)
            task = job.tasks.get(attempt.task_id) if job else None
            node = self.state.node(attempt.node_id)
            if job is None or task is None or node is None:
                self._release(job, task, attempt, None)
                return
            body = task.body
            command = str(body.get("commandLine") or "")
            resources = list(body.get("resourceFiles") or [])
            outputs = list(body.get("outputFiles") or [])
            common = list(job.body.get("commonEnvironmentSettings") or [])
            settings = common + list(body.get("environmentSettings") or [])
            timeout = duration_seconds((body.get("constraints") or {}).get("maxWallClockTime"))
            low_priority = not node.dedicated
            pool = self.state.pools.get(node.pool_id.lower())
            linux = pool is None or not pool.windows
            info = body.get("executionInfo") or {}
            key = f"{job.key}/{task.key}/{info.get('requeueCount', 0)}/{info.get('retryCount', 0)}"
            pool_id = node.pool_id
            job_id, task_id = job.id, task.id
        paths = TaskPaths(self.task_root(attempt.node_id, job_id, task_id)).create()
        env = self._task_env(
            paths,
            job_id=job_id,
            task_id=task_id,
            pool_id=pool_id,
            node_id=attempt.node_id,
            settings=settings,
            dedicated=not low_priority,
        )
        result: ProcessResult | None = None
        failure: Json | None = None
        try:
            download_resource_files(resources, paths.wd, auto_storage=self.auto_storage, linux=linux)
        except FileError as exc:
            failure = exc.info
        timer: threading.Timer | None = None
        if failure is None:
            try:
                argv = split_command_line(command)
            except ValueError as exc:
                argv = []
                failure = failure_info(
                    "usererror",
                    "CommandLaunchFailed",
                    "Failed to launch the specified command line.",
                    Message=str(exc),
                )
            if failure is None:
                proc = TaskProcess(argv, paths, env)
                with self.state.lock:
                    attempt.process = proc
                    stopped = attempt.stopped()
                if stopped:
                    proc.stop()  # stopped while resource files were downloading
                elif low_priority:
                    delay = self.faults.preemption_delay(key)
                    if delay is not None:
                        timer = threading.Timer(delay, self.preempt_node, (attempt.node_id, attempt))
                        timer.daemon = True
                        timer.start()
                result = proc.run(timeout=timeout)
                if timer is not None:
                    timer.cancel()
                    # A drawn preemption always happens: a task quicker than its draw is preempted
                    # as it ends, before its completion reaches the service (it is requeued).
                    self.preempt_node(attempt.node_id, attempt)
                if result.error is not None:
                    failure = program_not_found(result.error)
        self._finish_task(attempt, result, failure, outputs=outputs, paths=paths, env=env)

    def _finish_task(
        self,
        attempt: Attempt,
        result: ProcessResult | None,
        failure: Json | None,
        *,
        outputs: list[Any],
        paths: TaskPaths,
        env: dict[str, str],
    ) -> None:
        exit_code = exit_status(result) if result is not None and result.error is None else None
        with self.state.lock:
            job = self.state.jobs.get(attempt.job_id)
            task = job.tasks.get(attempt.task_id) if job else None
            if task is None:  # deleted while running
                self._release(job, None, attempt, None)
                return
            reason = attempt.stop_reason
            if reason == "shutdown":
                return
            if reason in ("requeue", "delete"):
                self._release(job, task, attempt, None)
                if reason == "requeue" and job is not None and task.body["state"] in RUNNING_STATES:
                    requeue_body(task.body, self.state.clock.ticks())
                    self._fix_counts_after_requeue(job, task)
                    job.pending.appendleft(task.key)
                return
            if result is not None and result.timed_out:
                # The service ends the task and reports TaskEnded (a server-side category).
                failure = failure_info(
                    "servererror", "TaskEnded", "The task exceeded its maximum wall clock time and was ended."
                )
            elif reason == "terminate":
                failure = failure_info("usererror", "TaskEnded", "Task was ended by user request.")
            elif failure is None and exit_code not in (None, 0):
                constraints = task.body.get("constraints") or {}
                limit = int(constraints.get("maxTaskRetryCount", 0))
                retries = int((task.body.get("executionInfo") or {}).get("retryCount", 0))
                if limit == -1 or retries < limit:
                    self._retry(job, task, attempt, retries)  # type: ignore[arg-type]
                    return
                failure = failure_info(
                    "usererror", "FailureExitCode", "The task exited with an exit code representing a failure"
                )
        succeeded = failure is None and exit_code == 0
        if outputs:
            try:
                upload_output_files(outputs, paths.wd, env, succeeded, paths.root / "fileuploadout.txt")
            except FileError as exc:
                if failure is None:
                    failure = exc.info
                    succeeded = False
        stops: list[TaskProcess] = []
        with self.state.lock:
            job = self.state.jobs.get(attempt.job_id)
            task = job.tasks.get(attempt.task_id) if job else None
            if task is None or job is None:
                self._release(job, task, attempt, None)
                return
            self._complete(job, task, attempt, exit_code=exit_code, failure=failure)
            stops = self.after_task_completed(job, task)
        for proc in stops:
            proc.stop()

    def after_task_completed(self, job: Job, task: Task) -> list[TaskProcess]:
        """The job action of a failed task's exit conditions (``onTaskFailure:
        performexitoptionsjobaction``); returns processes to stop."""
        if job.state != "active" or job.body.get("onTaskFailure") != "performexitoptionsjobaction":
            return []
        if (task.body.get("executionInfo") or {}).get("result") != "failure":
            return []
        if exit_options(task.body).job_action == "terminate":
            return self.terminate_job(job, "TaskFailed")
        return []

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

    def _complete(self, job: Job, task: Task, attempt: Attempt, *, exit_code: int | None, failure: Json | None) -> None:
        ticks = self.state.clock.ticks()
        info = task.body.get("executionInfo") or {}
        succeeded = failure is None and exit_code == 0
        task.body["executionInfo"] = execution_info(
            startTime=info.get("startTime"),
            endTime=iso(ticks),
            exitCode=exit_code,
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

    # ---- start task (worker thread)

    def _run_start_task(self, pool_id: str, node_id: str, attempt: Attempt) -> None:
        try:
            self._start_task(pool_id, node_id, attempt)
        finally:
            with self.state.lock:
                node = self.state.node(node_id)
                if node is not None and node.start_attempt is attempt:
                    node.start_attempt = None

    def _start_task(self, pool_id: str, node_id: str, attempt: Attempt) -> None:
        with self.state.lock:
            pool = self.state.pools.get(pool_id.lower())
            if pool is None or node_id not in pool.nodes:
                return
            spec = dict(pool.body.get("startTask") or {})
            linux = not pool.windows
            dedicated = pool.nodes[node_id].dedicated
        paths = TaskPaths(self.node_root(node_id) / "startup").create()
        env = self._task_env(
            paths,
            job_id="",
            task_id="starttask",
            pool_id=pool_id,
            node_id=node_id,
            settings=spec.get("environmentSettings"),
            dedicated=dedicated,
        )
        env.pop("AZ_BATCH_JOB_ID", None)  # a start task belongs to no job
        limit = int(spec.get("maxTaskRetryCount", 0))
        retries = 0
        while True:
            ticks = self.state.clock.ticks()
            with self.state.lock:
                node = self.state.node(node_id)
                if node is None or attempt.stopped():
                    return
                node.body["startTaskInfo"] = ordered(
                    {"state": "running", "startTime": iso(ticks), "retryCount": retries}
                    | ({"lastRetryTime": iso(ticks)} if retries else {}),
                    START_TASK_INFO_ORDER,
                )
                self.state.touch()
            failure: Json | None = None
            result: ProcessResult | None = None
            try:
                download_resource_files(
                    list(spec.get("resourceFiles") or []), paths.wd, auto_storage=self.auto_storage, linux=linux
                )
                argv = split_command_line(str(spec.get("commandLine") or ""))
                proc = TaskProcess(argv, paths, env)
                with self.state.lock:
                    attempt.process = proc
                    if attempt.stopped():
                        return
                result = proc.run()
                if result.error is not None:
                    failure = program_not_found(result.error)
            except FileError as exc:
                failure = exc.info
            except ValueError as exc:
                failure = failure_info(
                    "usererror",
                    "CommandLaunchFailed",
                    "Failed to launch the specified command line.",
                    Message=str(exc),
                )
            exit_code = exit_status(result) if result is not None and result.error is None else None
            if failure is None and exit_code not in (None, 0):
                if limit == -1 or retries < limit:
                    retries += 1
                    continue
                failure = failure_info(
                    "usererror", "FailureExitCode", "The task exited with an exit code representing a failure"
                )
            if attempt.stopped():
                return
            break
        with self.state.lock:
            node = self.state.node(node_id)
            if node is None or attempt.stopped():
                return
            info = node.body.get("startTaskInfo") or {}
            ok = failure is None
            node.body["startTaskInfo"] = ordered(
                {
                    "state": "completed",
                    "startTime": info.get("startTime"),
                    "endTime": iso(self.state.clock.ticks()),
                    "exitCode": exit_code,
                    "failureInfo": failure,
                    "retryCount": retries,
                    "lastRetryTime": info.get("lastRetryTime"),
                    "result": "success" if ok else "failure",
                },
                START_TASK_INFO_ORDER,
            )
            node.body["startTaskInfo"] = {k: v for k, v in node.body["startTaskInfo"].items() if v is not None}
            wait = spec.get("waitForSuccess", True)
            if ok or not wait:
                node.ready = True
                self._set_node_state(node, "running" if node.running else "idle")
            else:
                node.ready = False
                self._set_node_state(node, "starttaskfailed")
            self.state.touch()


def quota_error(dedicated: bool) -> Json:
    """The resize error of a pool that hit the account's (the emulator's ``--nodes``) core quota."""
    if dedicated:
        return {"code": "AccountCoreQuotaReached", "message": "The specified account has reached VM core quota limit"}
    return {
        "code": "AccountLowPriorityCoreQuotaReached",
        "message": "The specified account has reached VM low priority core quota limit",
    }


def program_not_found(error: str) -> Json:
    """The failureInfo of a task whose program could not be started."""
    return failure_info("usererror", "CommandProgramNotFound", "The specified command program is not found.",
                        Message=error)
