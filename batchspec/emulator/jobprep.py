"""Job preparation and release tasks on the nodes, as the service runs them.

A job's ``jobPreparationTask`` runs on a node before the first of the job's tasks there (once;
retried up to its ``maxTaskRetryCount``); with ``waitForSuccess`` a failed preparation keeps the
job's tasks off that node. When the job ends (terminated or completed), its ``jobReleaseTask``
runs on every node that ran the preparation. Each node's status is what
``jobpreparationandreleasetaskstatus`` lists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from batchspec.emulator.execution import NodeRunner, Outcome, TaskRun
from batchspec.emulator.store import Job, Node, State
from batchspec.emulator.wire import Json, duration_seconds, failure_info, iso, ordered

if TYPE_CHECKING:
    from batchspec.emulator.wire import Clock

PREP_INFO = "jobPreparationTaskExecutionInfo"
RELEASE_INFO = "jobReleaseTaskExecutionInfo"
INFO_ORDER = (
    "startTime", "endTime", "state", "taskRootDirectory", "taskRootDirectoryUrl", "exitCode", "containerInfo",
    "failureInfo", "retryCount", "lastRetryTime", "result",
)


class JobTasks:
    def __init__(self, state: State, runner: NodeRunner, spawn: Callable[..., None]) -> None:
        self.state = state
        self.runner = runner
        self.spawn = spawn
        self._events: dict[tuple[str, str], threading.Event] = {}

    @property
    def clock(self) -> Clock:
        return self.state.clock

    @staticmethod
    def blocked(node: Node, job: Job) -> bool:
        """Whether a failed preparation (waitForSuccess) keeps the job's tasks off the node."""
        info = node.prep.get(job.key, {}).get(PREP_INFO) or {}
        wait = (job.body.get("jobPreparationTask") or {}).get("waitForSuccess", True)
        return bool(wait and info.get("result") == "failure")

    def _run(self, job: Job, node: Node, spec: Json, name: str, timeout: Any) -> TaskRun:
        return TaskRun(
            job_id=job.id,
            task_id=str(spec.get("id") or name),
            pool_id=node.pool_id,
            node_id=node.id,
            command_line=str(spec.get("commandLine") or ""),
            root=self.runner.node_root(node.id) / "workitems" / job.id / "job-1" / str(spec.get("id") or name),
            resource_files=tuple(spec.get("resourceFiles") or ()),
            settings=tuple(job.body.get("commonEnvironmentSettings") or ()) + tuple(
                spec.get("environmentSettings") or ()
            ),
            timeout=duration_seconds(timeout),
            dedicated=node.dedicated,
        )

    def _info(self, node: Node, run: TaskRun, **fields: Any) -> Json:
        root = f"workitems/{run.job_id}/job-1/{run.task_id}"
        info: Json = {k: v for k, v in fields.items() if v is not None}
        info["taskRootDirectory"] = root
        info["taskRootDirectoryUrl"] = f"{node.body['url']}/files/{root}"
        return ordered(info, INFO_ORDER)

    def _execute(self, run: TaskRun) -> Outcome:
        paths, failure = self.runner.stage(run)
        if failure is not None:
            return Outcome(failure=failure)
        prepared = self.runner.prepare(run, paths)
        if isinstance(prepared, Outcome):
            return prepared
        outcome = self.runner.finish(prepared.run(timeout=run.timeout))
        if outcome.failure is None and outcome.exit_code not in (None, 0):
            return Outcome(outcome.exit_code, failure_info(
                "usererror", "FailureExitCode", "The task exited with an exit code representing a failure"
            ))
        return outcome

    def before_task(self, job_key: str, node_id: str) -> bool:
        """Run the job's preparation on the node if it has not run yet (worker thread).
        False when it failed and the task must not run there."""
        with self.state.lock:
            job = self.state.jobs.get(job_key)
            node = self.state.node(node_id)
            spec = (job.body.get("jobPreparationTask") if job else None) or {}
            if job is None or node is None or not spec:
                return True
            event = self._events.get((node_id, job_key))
            owner = event is None and job_key not in node.prep
            if owner:
                event = self._events[(node_id, job_key)] = threading.Event()
                run = self._run(job, node, spec, "jobpreparation", (spec.get("constraints") or {}).get(
                    "maxWallClockTime"))
                node.prep[job_key] = {PREP_INFO: self._info(node, run, startTime=iso(self.clock.ticks()),
                                                            state="running", retryCount=0)}
                self.state.touch()
        if not owner:
            if event is not None:
                event.wait()
            with self.state.lock:
                return not (job is None or node is None or self.blocked(node, job))
        assert event is not None
        limit = int((spec.get("constraints") or {}).get("maxTaskRetryCount", 0))
        retries = 0
        while True:
            outcome = self._execute(run)
            if outcome.succeeded or not (limit == -1 or retries < limit):
                break
            retries += 1
        with self.state.lock:
            started = node.prep[job_key][PREP_INFO].get("startTime")
            node.prep[job_key][PREP_INFO] = self._info(
                node, run, startTime=started, endTime=iso(self.clock.ticks()), state="completed",
                exitCode=outcome.exit_code, failureInfo=outcome.failure, retryCount=retries,
                result="success" if outcome.succeeded else "failure",
            )
            self.state.touch()
            self._events.pop((node_id, job_key), None)
            event.set()
            return not self.blocked(node, job)

    def release(self, job: Job) -> None:
        """The job ended: its release task runs on every node that prepared it (under the lock)."""
        spec = job.body.get("jobReleaseTask") or {}
        if not spec:
            return
        for pool in self.state.pools.values():
            for node in pool.nodes.values():
                status = node.prep.get(job.key)
                if status is not None and RELEASE_INFO not in status:
                    run = self._run(job, node, spec, "jobrelease", spec.get("maxWallClockTime"))
                    status[RELEASE_INFO] = self._info(node, run, startTime=iso(self.clock.ticks()), state="running")
                    self.spawn(self._release, node, run, status)

    def _release(self, node: Node, run: TaskRun, status: Json) -> None:
        outcome = self._execute(run)
        with self.state.lock:
            status[RELEASE_INFO] = self._info(
                node, run, startTime=status[RELEASE_INFO].get("startTime"), endTime=iso(self.clock.ticks()),
                state="completed", exitCode=outcome.exit_code, failureInfo=outcome.failure,
                result="success" if outcome.succeeded else "failure",
            )
            self.state.touch()
