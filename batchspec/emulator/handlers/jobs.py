"""Jobs: create, get, list, update, replace, delete, terminate, disable, enable, task counts, and
the job preparation and release task status of each node."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchspec.emulator import validation
from batchspec.emulator.errors import error, invalid_property, missing_property
from batchspec.emulator.handlers.base import Resource, Route, Service
from batchspec.emulator.protocol import Request, Response
from batchspec.emulator.store import Job, key
from batchspec.emulator.wire import (
    EPOCH_TICKS,
    JOB_ORDER,
    MAX_DURATION,
    TICKS_PER_SECOND,
    Json,
    etag,
    iso,
    ordered,
    parse_duration,
    parse_iso,
)

if TYPE_CHECKING:
    from batchspec.emulator.handlers.pools import Pools

#: The api-version from which taskcounts answers taskCounts and taskSlotCounts.
TASK_SLOT_COUNTS_VERSION = "2021-06-01"
AUTO_POOL_KEYS = (
    "vmSize", "taskSlotsPerNode", "taskSchedulingPolicy", "resizeTimeout", "targetDedicatedNodes",
    "targetLowPriorityNodes", "enableAutoScale", "autoScaleFormula", "autoScaleEvaluationInterval",
    "enableInterNodeCommunication", "startTask", "virtualMachineConfiguration",
)


class Jobs(Resource):
    def __init__(self, service: Service, pools: Pools) -> None:
        super().__init__(service)
        self.pools = pools  # auto pools are created through the pool handlers

    def routes(self) -> list[Route]:
        return [
            Route("GET", "jobs", "list_jobs", self.list_jobs),
            Route("POST", "jobs", "create_job", self.create_job),
            Route("GET", "jobs/{}", "get_job", self.get_job),
            Route("PUT", "jobs/{}", "replace_job", self.replace_job),
            Route("PATCH", "jobs/{}", "update_job", self.update_job),
            Route("DELETE", "jobs/{}", "delete_job", self.delete_job),
            Route("POST", "jobs/{}/terminate", "terminate_job", self.terminate_job),
            Route("POST", "jobs/{}/disable", "disable_job", self.disable_job),
            Route("POST", "jobs/{}/enable", "enable_job", self.enable_job),
            Route("GET", "jobs/{}/taskcounts", "get_job_task_counts", self.get_job_task_counts),
            Route(
                "GET",
                "jobs/{}/jobpreparationandreleasetaskstatus",
                "list_job_preparation_and_release_task_status",
                self.list_job_preparation_and_release_task_status,
            ),
        ]

    def _pool_info(self, info: object, job_id: str) -> tuple[Json, str]:
        """A job's ``poolInfo`` with defaults, and the pool id it runs on (an auto pool's GUID)."""
        if not isinstance(info, dict) or not (info.get("poolId") or info.get("autoPoolSpecification")):
            raise missing_property("poolInfo")
        if info.get("poolId"):
            return {"poolId": info["poolId"]}, str(info["poolId"])
        auto = validation.object_("autoPoolSpecification", info["autoPoolSpecification"])
        spec = auto.get("pool") or {}
        parts = validation.pool_spec(spec, False)
        out: Json = {}
        if auto.get("autoPoolIdPrefix"):
            out["autoPoolIdPrefix"] = auto["autoPoolIdPrefix"]
        out["poolLifetimeOption"] = str(auto.get("poolLifetimeOption") or "job").lower()
        out["keepAlive"] = bool(auto.get("keepAlive", False))
        out["pool"] = {k: parts[k] for k in AUTO_POOL_KEYS if k in parts}
        pool_id = self.pools.auto_pool(spec, None if out["keepAlive"] else key(job_id))
        return {"autoPoolSpecification": out}, pool_id

    def _set_deadline(self, job: Job) -> None:
        limit = str(job.body["constraints"]["maxWallClockTime"])
        if limit == MAX_DURATION:
            job.deadline = None
            return
        created = (parse_iso(str(job.body["creationTime"])) - EPOCH_TICKS) / TICKS_PER_SECOND
        job.deadline = created + parse_duration(limit) / TICKS_PER_SECOND

    def create_job(self, req: Request) -> Response:
        spec = validation.json_body(req.body)
        job_id = validation.check_id("id", spec.get("id"))
        if key(job_id) in self.state.jobs:
            raise error(409, "JobExists")
        on_all = validation.enum(
            "onAllTasksComplete", spec.get("onAllTasksComplete"), ("noaction", "terminatejob"), "noaction"
        )
        on_fail = validation.enum(
            "onTaskFailure", spec.get("onTaskFailure"), ("noaction", "performexitoptionsjobaction"), "noaction"
        )
        constraints = validation.job_constraints(spec.get("constraints"))
        prep = validation.prep_task(spec["jobPreparationTask"]) if spec.get("jobPreparationTask") else None
        release = validation.release_task(spec["jobReleaseTask"]) if spec.get("jobReleaseTask") else None
        if release and not prep:
            raise invalid_property("jobReleaseTask", "", "A job release task requires a job preparation task.")
        priority = validation.int_("priority", spec.get("priority"), 0, -1000, 1000)
        max_parallel = validation.int_("maxParallelTasks", spec.get("maxParallelTasks"), -1, -1)
        if max_parallel == 0:
            raise invalid_property("maxParallelTasks", 0, "The value must be -1 or greater than 0.")
        settings = None
        if spec.get("commonEnvironmentSettings") is not None:
            settings = validation.environment_settings("commonEnvironmentSettings", spec["commonEnvironmentSettings"])
        pool_info, pool_id = self._pool_info(spec.get("poolInfo"), job_id)
        created = self.state.clock.ticks()
        modified = self.state.clock.ticks()
        body: Json = {"id": job_id}
        if spec.get("displayName"):
            body["displayName"] = spec["displayName"]
        body |= {
            "url": f"{self.base}/jobs/{job_id}",
            "eTag": etag(modified),
            "lastModified": iso(modified),
            "creationTime": iso(created),
            "state": "active",
            "stateTransitionTime": iso(modified),
            "priority": priority,
            "maxParallelTasks": max_parallel,
            "usesTaskDependencies": validation.bool_("usesTaskDependencies", spec.get("usesTaskDependencies"), False),
            "allowTaskPreemption": validation.bool_("allowTaskPreemption", spec.get("allowTaskPreemption"), False),
            "constraints": constraints,
        }
        if spec.get("jobManagerTask") is not None:
            body["jobManagerTask"] = spec["jobManagerTask"]
        if prep:
            body["jobPreparationTask"] = prep
        if release:
            body["jobReleaseTask"] = release
        if settings is not None:
            body["commonEnvironmentSettings"] = settings
        body["poolInfo"] = pool_info
        for name in ("networkConfiguration", "metadata"):
            if spec.get(name) is not None:
                body[name] = spec[name]
        body["executionInfo"] = {"startTime": iso(modified), "poolId": pool_id}
        body["onAllTasksComplete"] = on_all
        body["onTaskFailure"] = on_fail
        job = Job(body=ordered(body, JOB_ORDER), seq=self.state.next_seq())
        self._set_deadline(job)
        self.state.jobs[job.key] = job
        self.state.touch()
        self.engine.wake()
        # The service names a new job by its internal name, not its id.
        return self.done(req, 201, f"{self.base}/jobs/job-1", job.body, location=True)

    def list_jobs(self, req: Request) -> Response:
        items = ((j.key, j.body) for j in self.state.sorted_jobs())
        return self.listing(req, "jobs", items, "jobs", JOB_ORDER)

    def get_job(self, req: Request, job_id: str) -> Response:
        return self.entity(req, "jobs", self.job(job_id).body, JOB_ORDER)

    def _update_job(self, job: Job, spec: Json, replace: bool) -> None:
        body = job.body
        if replace or "priority" in spec:
            body["priority"] = validation.int_("priority", spec.get("priority"), 0, -1000, 1000)
        if replace or "maxParallelTasks" in spec:
            body["maxParallelTasks"] = validation.int_("maxParallelTasks", spec.get("maxParallelTasks"), -1, -1)
        if replace or "allowTaskPreemption" in spec:
            body["allowTaskPreemption"] = validation.bool_(
                "allowTaskPreemption", spec.get("allowTaskPreemption"), False
            )
        if replace or spec.get("constraints") is not None:
            if replace:
                body["constraints"] = validation.job_constraints(spec.get("constraints"))
            else:
                given = spec["constraints"] if isinstance(spec["constraints"], dict) else {}
                body["constraints"] = validation.job_constraints({**body["constraints"], **given})
            self._set_deadline(job)
        if spec.get("poolInfo") is not None:
            info = spec["poolInfo"]
            if isinstance(info, dict) and info.get("poolId"):
                body["poolInfo"] = {"poolId": info["poolId"]}
                body["executionInfo"]["poolId"] = info["poolId"]
        elif replace:
            raise missing_property("poolInfo")
        if replace or "metadata" in spec:
            if spec.get("metadata"):
                body["metadata"] = spec["metadata"]
            else:
                body.pop("metadata", None)
        if replace or spec.get("onAllTasksComplete") is not None:
            value = validation.enum(
                "onAllTasksComplete", spec.get("onAllTasksComplete"), ("noaction", "terminatejob"), "noaction"
            )
            if body["onAllTasksComplete"] == "terminatejob" and value == "noaction":
                raise invalid_property(
                    "onAllTasksComplete", value, "Automatic job termination cannot be turned off once it is set."
                )
            body["onAllTasksComplete"] = value
        job.body = ordered(body, JOB_ORDER)
        self.stamp(job.body)
        self.engine.wake()

    def update_job(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        self.job_accepts_changes(job)
        self._update_job(job, validation.json_body(req.body), replace=False)
        return self.done(req, 200, job.body["url"], job.body)

    def replace_job(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        self.job_accepts_changes(job)
        self._update_job(job, validation.json_body(req.body), replace=True)
        return self.done(req, 200, job.body["url"], job.body)

    def delete_job(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        if job.state == "deleting":
            raise error(409, "JobBeingDeleted")
        self.engine.delete_job(job)
        return self.done(req, 202)

    def terminate_job(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        self.job_accepts_changes(job)
        reason = "UserTerminate"
        if req.body.strip():
            reason = str(validation.json_body(req.body).get("terminateReason") or reason)
        self.stamp(job.body)
        self.engine.terminate_job(job, reason)
        return self.done(req, 202, f"{job.body['url']}/terminate", job.body)

    def disable_job(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        self.job_accepts_changes(job)
        if job.state in ("disabling", "disabled"):
            raise error(409, "JobDisabled")
        spec = validation.json_body(req.body)
        if spec.get("disableTasks") is None:
            raise missing_property("disableTasks")
        option = validation.enum("disableTasks", spec["disableTasks"], ("requeue", "terminate", "wait"), "requeue")
        self.engine.disable_job(job, option)
        self.stamp(job.body)
        return self.done(req, 202, f"{job.body['url']}/disable", job.body)

    def enable_job(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        self.job_accepts_changes(job)
        if job.state not in ("disabling", "disabled"):
            raise error(409, "OperationInvalidForCurrentState", ("Reason", "The job is not disabled."))
        self.engine.enable_job(job)
        self.stamp(job.body)
        return self.done(req, 202, f"{job.body['url']}/enable", job.body)

    def get_job_task_counts(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        if req.query.get("api-version", "") < TASK_SLOT_COUNTS_VERSION:
            # Before 2021-06-01.14.0 the service answered the task counts alone, without slots.
            counts = {"odata.metadata": f"{self.base}/$metadata#taskcounts/@Element", **job.counts.as_json()}
            return self.json(req, counts)
        return self.json(
            req,
            {
                "odata.metadata": f"{self.base}/$metadata#taskcountsresult/@Element",
                "taskCounts": job.counts.as_json(),
                "taskSlotCounts": job.slot_counts.as_json(),
            },
        )

    def list_job_preparation_and_release_task_status(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        if not job.body.get("jobPreparationTask"):
            raise error(409, "JobPreparationTaskNotSpecified")
        items = []
        for pool in self.state.sorted_pools():
            for node in sorted(pool.nodes.values(), key=lambda n: n.id):
                status = node.prep.get(job.key)
                if status is None:
                    continue
                entry: Json = {"poolId": pool.id, "nodeId": node.id, "nodeUrl": node.body["url"]}
                entry |= status
                items.append((node.id, entry))
        return self.listing(req, "jobpreparationandreleasetaskstatuslist", iter(items), f"jobs/{job.id}/"
                            "jobpreparationandreleasetaskstatus")
