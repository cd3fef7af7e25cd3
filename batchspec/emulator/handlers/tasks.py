"""Tasks: add one, add a collection, get, list, update (replace), delete, terminate, reactivate,
and list subtasks (the emulator runs no multi-instance tasks: always none)."""

from __future__ import annotations

from batchspec.emulator import validation
from batchspec.emulator.errors import error, inner_error, invalid_body, missing_property
from batchspec.emulator.handlers.base import Resource, Route
from batchspec.emulator.protocol import Request, Response
from batchspec.emulator.store import Job, Task, key
from batchspec.emulator.wire import TASK_ORDER, Json, etag, execution_info, iso, user_identity

#: addtaskcollection limits of the service.
MAX_TASKS_PER_COLLECTION = 100
MAX_COLLECTION_BYTES = 1024 * 1024


class Tasks(Resource):
    def routes(self) -> list[Route]:
        return [
            Route("GET", "jobs/{}/tasks", "list_tasks", self.list_tasks),
            Route("POST", "jobs/{}/tasks", "create_task", self.create_task),
            Route("POST", "jobs/{}/addtaskcollection", "create_task_collection", self.create_task_collection),
            Route("GET", "jobs/{}/tasks/{}", "get_task", self.get_task),
            Route("PUT", "jobs/{}/tasks/{}", "replace_task", self.replace_task),
            Route("DELETE", "jobs/{}/tasks/{}", "delete_task", self.delete_task),
            Route("POST", "jobs/{}/tasks/{}/terminate", "terminate_task", self.terminate_task),
            Route("POST", "jobs/{}/tasks/{}/reactivate", "reactivate_task", self.reactivate_task),
            Route("GET", "jobs/{}/tasks/{}/subtasksinfo", "list_sub_tasks", self.list_sub_tasks),
        ]

    def task_body(self, job: Job, spec: object, ticks: int) -> Json:
        """A new task's body with the service's defaults; raises 400 errors."""
        if not isinstance(spec, dict):
            raise invalid_body("Each task must be a JSON object.")
        task_id = validation.check_id("id", spec.get("id"))
        # A container task may leave it empty: the image's ENTRYPOINT runs.
        if spec.get("commandLine") is None or (not spec["commandLine"] and not spec.get("containerSettings")):
            raise missing_property("commandLine")
        stamp = iso(ticks)
        body: Json = {"id": task_id}
        if spec.get("displayName"):
            body["displayName"] = spec["displayName"]
        body |= {
            "url": f"{self.base}/jobs/{job.id}/tasks/{task_id}",
            "eTag": etag(ticks),
            "creationTime": stamp,
            "lastModified": stamp,
            "state": "active",
            "stateTransitionTime": stamp,
            "commandLine": spec["commandLine"],
        }
        if spec.get("containerSettings") is not None:
            body["containerSettings"], login = validation.container_settings(spec["containerSettings"])
            if login is not None:
                self.state.logins[(job.key, key(task_id))] = login
        if spec.get("resourceFiles") is not None:
            body["resourceFiles"] = validation.resource_files(spec["resourceFiles"])
        if spec.get("outputFiles") is not None:
            body["outputFiles"] = validation.output_files(spec["outputFiles"])
        if spec.get("environmentSettings") is not None:
            body["environmentSettings"] = validation.environment_settings(
                "environmentSettings", spec["environmentSettings"]
            )
        if spec.get("affinityInfo") is not None:
            body["affinityInfo"] = spec["affinityInfo"]
        if spec.get("exitConditions") is not None:
            body["exitConditions"] = validation.exit_conditions(spec["exitConditions"], job.body)
        body["userIdentity"] = user_identity(spec.get("userIdentity"))
        body["constraints"] = validation.task_constraints(spec.get("constraints"), self._default_retries(job))
        body["requiredSlots"] = validation.int_("requiredSlots", spec.get("requiredSlots"), 1, 1)
        if spec.get("multiInstanceSettings") is not None:
            body["multiInstanceSettings"] = spec["multiInstanceSettings"]
        if spec.get("dependsOn") is not None:
            body["dependsOn"] = validation.depends_on(spec["dependsOn"], job.body)
        if spec.get("applicationPackageReferences") is not None:
            body["applicationPackageReferences"] = spec["applicationPackageReferences"]
        body["executionInfo"] = execution_info(retryCount=0, requeueCount=0)
        return body

    @staticmethod
    def _default_retries(job: Job) -> int:
        return int(job.body["constraints"].get("maxTaskRetryCount", 0))

    def _check_reserved_id(self, job: Job, task_id: str) -> None:
        for field, code in (("jobPreparationTask", "TaskIdSameAsJobPreparationTask"),
                            ("jobReleaseTask", "TaskIdSameAsJobReleaseTask")):
            special = job.body.get(field)
            if special and str(special.get("id", "")).lower() == task_id.lower():
                raise error(409, code)

    def _add(self, job: Job, body: Json) -> Task:
        task = Task(job.key, body, self.state.next_seq())
        self.state.add_task(job, task)
        return task

    def create_task(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        body = self.task_body(job, validation.json_body(req.body), self.state.clock.ticks())
        self.job_accepts_changes(job)
        self._check_reserved_id(job, body["id"])
        if key(body["id"]) in job.tasks:
            raise error(409, "TaskExists")
        task = self._add(job, body)
        self.engine.wake()
        return self.done(req, 201, task.body["url"], task.body, location=True)

    def create_task_collection(self, req: Request, job_id: str) -> Response:
        if len(req.body) > MAX_COLLECTION_BYTES:
            raise error(413, "RequestBodyTooLarge", ("MaxLimit", str(MAX_COLLECTION_BYTES)))
        spec = validation.json_body(req.body)
        tasks = validation.list_("value", spec.get("value"))
        if len(tasks) > MAX_TASKS_PER_COLLECTION:
            raise error(413, "RequestBodyTooLarge", ("MaxTasksPerRequest", str(MAX_TASKS_PER_COLLECTION)))
        job = self.job(job_id)
        ticks = self.state.clock.ticks()
        bodies = [self.task_body(job, t, ticks) for t in tasks]  # any invalid task fails the request
        self.job_accepts_changes(job)
        results = []
        for body in bodies:
            if key(body["id"]) in job.tasks:
                err = error(409, "TaskExists")
                results.append({"status": "ClientError", "taskId": body["id"],
                                "error": inner_error(err, req.request_id, ticks)})
                continue
            task = self._add(job, body)
            results.append(
                {
                    "status": "Success",  # PascalCase, as the service sends it
                    "taskId": task.id,
                    "eTag": task.body["eTag"],
                    "lastModified": task.body["lastModified"],
                    "location": task.body["url"],
                }
            )
        self.engine.wake()
        return self.json(req, {"odata.metadata": f"{self.base}/$metadata#taskaddresult", "value": results})

    def list_tasks(self, req: Request, job_id: str) -> Response:
        job = self.job(job_id)
        items = ((k, job.tasks[k].body) for k in job.sorted_ids())
        return self.listing(req, "tasks", items, f"jobs/{job.id}/tasks", TASK_ORDER)

    def get_task(self, req: Request, job_id: str, task_id: str) -> Response:
        _job, task = self.task(job_id, task_id)
        return self.entity(req, "tasks", task.body, TASK_ORDER)

    def replace_task(self, req: Request, job_id: str, task_id: str) -> Response:
        """Task update: only its constraints can change."""
        job, task = self.task(job_id, task_id)
        self.job_accepts_changes(job)
        spec = validation.json_body(req.body)
        task.body["constraints"] = validation.task_constraints(spec.get("constraints"), self._default_retries(job))
        self.stamp(task.body)
        return self.done(req, 200, task.body["url"], task.body)

    def delete_task(self, req: Request, job_id: str, task_id: str) -> Response:
        job, task = self.task(job_id, task_id)
        self.engine.delete_task(job, task)
        return self.done(req, 200)

    def terminate_task(self, req: Request, job_id: str, task_id: str) -> Response:
        job, task = self.task(job_id, task_id)
        if task.body["state"] == "completed":
            raise error(409, "TaskCompleted")
        self.engine.terminate_task(job, task)
        self.stamp(task.body)
        return self.done(req, 204, f"{task.body['url']}/terminate", task.body)

    def reactivate_task(self, req: Request, job_id: str, task_id: str) -> Response:
        """A failed task becomes active again, eligible for its full retry count."""
        job, task = self.task(job_id, task_id)
        self.job_accepts_changes(job)
        if task.body["state"] != "completed":
            raise error(409, "TaskNotCompleted")
        if (task.body.get("executionInfo") or {}).get("result") == "success":
            raise error(409, "OperationInvalidForCurrentState",
                        ("Reason", "A task that completed successfully cannot be reactivated."))
        self.engine.reactivate_task(job, task)
        self.stamp(task.body)
        return self.done(req, 204, f"{task.body['url']}/reactivate", task.body)

    def list_sub_tasks(self, req: Request, job_id: str, task_id: str) -> Response:
        self.task(job_id, task_id)
        return self.json(req, {"odata.metadata": f"{self.base}/$metadata#subtaskinfo", "value": []})
