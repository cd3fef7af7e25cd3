"""Start tasks: what a node runs when it joins its pool, before it takes tasks.

Run in a worker thread when a node boots (its retries up to ``maxTaskRetryCount`` included); with
``waitForSuccess`` the node stays ``waitingforstarttask`` until it succeeds and goes to
``starttaskfailed`` when it does not, as on the service. ``startTaskInfo`` tells how it went.
"""

from __future__ import annotations

from collections.abc import Callable

from batchspec.emulator.execution import NodeRunner, Outcome, TaskRun
from batchspec.emulator.store import Attempt, Node, State
from batchspec.emulator.wire import START_TASK_INFO_ORDER, Json, failure_info, iso, ordered


class StartTasks:
    def __init__(self, state: State, runner: NodeRunner, set_node_state: Callable[[Node, str], None]) -> None:
        self.state = state
        self.runner = runner
        self.set_node_state = set_node_state

    def run(self, pool_id: str, node_id: str, attempt: Attempt) -> None:
        """Run the pool's start task on a node that just booted (worker thread)."""
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
            run = TaskRun(
                job_id="",
                task_id="starttask",
                pool_id=pool.id,
                node_id=node_id,
                command_line=str(spec.get("commandLine") or ""),
                root=self.runner.node_root(node_id) / "startup",
                resource_files=tuple(spec.get("resourceFiles") or ()),
                settings=tuple(spec.get("environmentSettings") or ()),
                linux=not pool.windows,
                dedicated=pool.nodes[node_id].dedicated,
            )
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
            paths, failure = self.runner.stage(run)
            if failure is not None:
                outcome = Outcome(failure=failure)
            else:
                prepared = self.runner.prepare(run, paths)
                if isinstance(prepared, Outcome):
                    outcome = prepared
                else:
                    with self.state.lock:
                        attempt.process = prepared
                        if attempt.stopped():
                            return
                    outcome = self.runner.finish(prepared.run())
            if outcome.failure is None and outcome.exit_code not in (None, 0):
                if limit == -1 or retries < limit:
                    retries += 1
                    continue
                outcome = Outcome(outcome.exit_code, failure_info(
                    "usererror", "FailureExitCode", "The task exited with an exit code representing a failure"
                ))
            if attempt.stopped():
                return
            break
        with self.state.lock:
            self._done(node_id, spec, attempt, outcome, retries)

    def _done(self, node_id: str, spec: Json, attempt: Attempt, outcome: Outcome, retries: int) -> None:
        node = self.state.node(node_id)
        if node is None or attempt.stopped():
            return
        info = node.body.get("startTaskInfo") or {}
        ok = outcome.failure is None
        done = ordered(
            {
                "state": "completed",
                "startTime": info.get("startTime"),
                "endTime": iso(self.state.clock.ticks()),
                "exitCode": outcome.exit_code,
                "failureInfo": outcome.failure,
                "retryCount": retries,
                "lastRetryTime": info.get("lastRetryTime"),
                "result": "success" if ok else "failure",
            },
            START_TASK_INFO_ORDER,
        )
        node.body["startTaskInfo"] = {k: v for k, v in done.items() if v is not None}
        wait = spec.get("waitForSuccess", True)
        if ok or not wait:
            node.ready = True
            self.set_node_state(node, "running" if node.running else "idle")
        else:
            node.ready = False
            self.set_node_state(node, "starttaskfailed")
        self.state.touch()
