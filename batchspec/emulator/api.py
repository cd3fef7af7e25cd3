"""The Batch REST operations: routing, validation, the service's defaults, bodies and headers.

:class:`BatchApi` turns a parsed :class:`Request` into a :class:`Response` (it knows nothing of
sockets). Per request it counts the operation, injects a configured fault, checks
authentication and ``api-version``, then runs the handler under the state lock. Entity bodies are
built once with the service's defaults and key order (:mod:`batchspec.emulator.wire`), so a GET
only filters and serialises.
"""

from __future__ import annotations

import json
import mimetypes
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from batchspec.emulator import odata
from batchspec.emulator.auth import Authenticator
from batchspec.emulator.dependencies import depends_on_problem
from batchspec.emulator.faults import FaultInjector
from batchspec.emulator.scheduler import Engine
from batchspec.emulator.store import Job, Pool, State, Task, key
from batchspec.emulator.wire import (
    EPOCH_TICKS,
    IMAGE_ORDER,
    JOB_ORDER,
    JSON_CONTENT_TYPE,
    MAX_DURATION,
    NODE_ORDER,
    POOL_ORDER,
    TASK_ORDER,
    TICKS_PER_SECOND,
    VM_CONFIG_ORDER,
    ApiError,
    Json,
    dumps,
    error,
    error_json,
    etag,
    execution_info,
    failure_info,
    inner_error,
    invalid_body,
    invalid_property,
    iso,
    missing_property,
    normalized_duration,
    not_found,
    ordered,
    parse_duration,
    parse_iso,
    pascal_fill_type,
    rfc1123,
    user_identity,
)
from batchspec.runner import TaskProcess

#: addtaskcollection limits of the service.
MAX_TASKS_PER_COLLECTION = 100
MAX_COLLECTION_BYTES = 1024 * 1024

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_IMAGE_ID_RE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(images/[^/]+|galleries/[^/]+/images/[^/]+(/versions/[^/]+)?)$",
    re.IGNORECASE,
)
_IMAGE_ID_REASON = (
    "The specified resource id must be of the format "
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/images/"
    "{imageName}, /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/"
    "Microsoft.Compute/galleries/{galleryName}/images/{galleryImageName}/versions/{galleryImageVersionName}, "
    "or /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/"
    "galleries/{galleryName}/images/{galleryImageName}"
)
STATS_OPERATION = "batchspec_stats"


@dataclass
class Request:
    """One HTTP request, already read from the socket."""

    method: str
    raw_path: str  # percent-encoded, without the query
    raw_query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    """What to answer; ``reset`` drops the connection without an answer."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = True
    reset: bool = False  # drop the connection with a reset (RST)
    drop: bool = False  # close the connection without an answer (FIN)


@dataclass
class Stats:
    """Requests served, per operation (named as the azure-batch method that sends them)."""

    requests: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, operation: str) -> None:
        with self.lock:
            self.requests[operation] = self.requests.get(operation, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.requests)


Handler = Callable[..., Response]


def _json_body(req: Request) -> Json:
    if not req.body.strip():
        raise invalid_body("The request body is empty.")
    try:
        data = json.loads(req.body)
    except ValueError as exc:
        raise invalid_body(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise invalid_body("The request body must be a JSON object.")
    return data


def _check_id(name: str, value: object) -> str:
    if value is None or value == "":
        raise missing_property(name)
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise invalid_property(
            name,
            value,
            "The id can contain any combination of alphanumeric characters including hyphens and "
            "underscores, and cannot contain more than 64 characters.",
        )
    return value


def _int(name: str, value: object, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_property(name, value, "The value must be an integer.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise invalid_property(name, value, f"The value must be between {minimum} and {maximum}.")
    return value


def _bool(name: str, value: object, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_property(name, value, "The value must be a boolean.")
    return value


def _enum(name: str, value: object, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    text = str(value).lower()
    if text not in allowed:
        raise invalid_property(name, value, f"The value must be one of: {', '.join(allowed)}.")
    return text


def _list(name: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise invalid_property(name, value, "The value must be an array.")
    return value


def _object(name: str, value: object) -> Json:
    if not isinstance(value, dict):
        raise invalid_property(name, value, "The value must be an object.")
    return value


RESOURCE_SOURCES = ("autoStorageContainerName", "storageContainerUrl", "httpUrl")


def resource_files(value: object) -> list[Json]:
    """``resourceFiles`` as the service accepts them: exactly one source each; ``httpUrl`` needs a
    ``filePath`` (the file's path); ``blobPrefix`` only goes with a container source."""
    out = []
    for item in _list("resourceFiles", value):
        spec = _object("resourceFiles", item)
        sources = [name for name in RESOURCE_SOURCES if spec.get(name)]
        if len(sources) != 1:
            raise invalid_property(
                "resourceFiles",
                ",".join(sources),
                "The autoStorageContainerName, storageContainerUrl and httpUrl properties are mutually exclusive "
                "and one of them must be specified.",
            )
        if sources == ["httpUrl"] and not spec.get("filePath"):
            raise missing_property("filePath")
        if sources == ["httpUrl"] and spec.get("blobPrefix"):
            raise invalid_property(
                "blobPrefix",
                spec["blobPrefix"],
                "The property is valid only when autoStorageContainerName or storageContainerUrl is used.",
            )
        if spec.get("fileMode") is not None and not re.fullmatch(r"[0-7]{3,4}", str(spec["fileMode"])):
            raise invalid_property("fileMode", spec["fileMode"], "The file mode must be in octal format, e.g. 0770.")
        out.append(dict(spec))
    return out


UPLOAD_CONDITIONS = ("tasksuccess", "taskfailure", "taskcompletion")


def output_files(value: object) -> list[Json]:
    """``outputFiles`` with their required parts checked and enums in the service's casing."""
    out = []
    for item in _list("outputFiles", value):
        spec = dict(_object("outputFiles", item))
        if not spec.get("filePattern"):
            raise missing_property("filePattern")
        destination = _object("destination", spec.get("destination"))
        container = _object("container", destination.get("container"))
        if not container.get("containerUrl"):
            raise missing_property("containerUrl")
        options = dict(_object("uploadOptions", spec.get("uploadOptions")))
        if options.get("uploadCondition") is None:
            raise missing_property("uploadCondition")
        options["uploadCondition"] = _enum("uploadCondition", options["uploadCondition"], UPLOAD_CONDITIONS, "")
        spec["uploadOptions"] = options
        out.append(spec)
    return out


def depends_on(value: object, job: Json) -> Json:
    spec = dict(_object("dependsOn", value))
    if not job.get("usesTaskDependencies"):
        raise error(400, "TaskDependenciesNotSpecifiedOnJob")
    ids = _list("taskIds", spec.get("taskIds") or [])
    if any(not isinstance(t, str) for t in ids):
        raise invalid_property("taskIds", ids, "Task ids must be strings.")
    ranges = []
    for raw in _list("taskIdRanges", spec.get("taskIdRanges") or []):
        entry = _object("taskIdRanges", raw)
        start = _int("start", entry.get("start"), -1)
        end = _int("end", entry.get("end"), -1)
        if entry.get("start") is None:
            raise missing_property("start")
        if entry.get("end") is None:
            raise missing_property("end")
        if start < 0 or end < start:
            raise invalid_property("taskIdRanges", f"{start}-{end}", "The start of a range must be a non-negative "
                                   "integer no greater than its end.")
        ranges.append({"start": start, "end": end})
    problem = depends_on_problem(spec)
    if problem is not None:
        raise error(400, problem[0])
    out: Json = {}
    if ids:
        out["taskIds"] = ids
    if ranges:
        out["taskIdRanges"] = ranges
    return out


def exit_conditions(value: object, job: Json) -> Json:
    """``exitConditions`` with ``dependencyAction``/``jobAction`` checked against the job and
    written in the service's casing."""
    spec = dict(_object("exitConditions", value))

    def options(raw: object) -> Json:
        given = dict(_object("exitOptions", raw))
        if given.get("jobAction") is not None:
            if job.get("onTaskFailure") != "performexitoptionsjobaction":
                raise invalid_property(
                    "jobAction", given["jobAction"],
                    "The job's onTaskFailure is noaction: a jobAction cannot be specified.",
                )
            given["jobAction"] = _enum("jobAction", given["jobAction"], ("none", "disable", "terminate"), "")
        if given.get("dependencyAction") is not None:
            if not job.get("usesTaskDependencies"):
                raise invalid_property(
                    "dependencyAction", given["dependencyAction"],
                    "The job does not use task dependencies: a dependencyAction cannot be specified.",
                )
            given["dependencyAction"] = _enum("dependencyAction", given["dependencyAction"], ("satisfy", "block"), "")
        return given

    for name in ("exitCodes", "exitCodeRanges"):
        if spec.get(name) is not None:
            entries = []
            for raw in _list(name, spec[name]):
                entry = dict(_object(name, raw))
                entry["exitOptions"] = options(entry.get("exitOptions") or {})
                entries.append(entry)
            spec[name] = entries
    for name in ("preProcessingError", "fileUploadError", "default"):
        if spec.get(name) is not None:
            spec[name] = options(spec[name])
    return spec


class BatchApi:
    """Every supported Batch operation over one :class:`State` and :class:`Engine`."""

    def __init__(
        self,
        state: State,
        engine: Engine,
        *,
        base_url: str,
        auth: Authenticator,
        faults: FaultInjector,
        nodes_root: Path,
    ) -> None:
        self.state = state
        self.engine = engine
        self.base = base_url
        self.auth = auth
        self.faults = faults
        self.nodes_root = nodes_root
        self.stats = Stats()

    # ---- entry point

    def handle(self, req: Request) -> Response:
        try:
            operation, handler, args = self._route(req)
        except ApiError as err:
            self.stats.count("unknown")
            return self._error(req, err)
        self.stats.count(operation)
        fault = self.faults.http_fault(operation) if operation != STATS_OPERATION else None
        if fault == "reset":
            return Response(0, reset=True)
        if fault == "http503":
            return self._error(req, error(503, "ServerBusy"))
        if fault == "http429":
            return self._error(req, error(429, "TooManyRequests"), [("Retry-After", "1")])
        response = self._handle(req, operation, handler, args)
        if fault == "commit-drop":  # handled, then the answer is lost
            return Response(0, drop=True)
        if fault == "commit-reset":
            return Response(0, reset=True)
        return response

    def _handle(self, req: Request, operation: str, handler: Handler, args: tuple[str, ...]) -> Response:
        try:
            self.auth.check(req.method, req.raw_path, req.raw_query, req.headers)
            if operation != STATS_OPERATION and not req.query.get("api-version"):
                raise error(400, "MissingRequiredQueryParameter", ("QueryParameterName", "api-version"))
            procs: list[TaskProcess] = []
            with self.state.lock:
                response = handler(req, procs, *args)
            for proc in procs:  # stopping waits for the process group: never under the lock
                proc.stop()
            return response
        except ApiError as err:
            return self._error(req, err)

    # ---- routing

    def _route(self, req: Request) -> tuple[str, Handler, tuple[str, ...]]:
        raw = [p for p in req.raw_path.split("/") if p != ""]
        seg = [unquote(p) for p in raw]
        m = req.method
        n = len(seg)
        routes: list[tuple[str, Handler]] = []
        args: tuple[str, ...] = ()
        if n >= 6 and seg[0] == "pools" and seg[2] == "nodes" and seg[4] == "files":
            args = (seg[1], seg[3], "/".join(seg[5:]))
            routes = [
                ("GET:get_node_file", self.node_file),
                ("HEAD:get_node_file_properties", self.node_file),
                ("DELETE:delete_node_file", self.delete_node_file),
            ]
        elif n >= 6 and seg[0] == "jobs" and seg[2] == "tasks" and seg[4] == "files":
            args = (seg[1], seg[3], "/".join(seg[5:]))
            routes = [
                ("GET:get_task_file", self.task_file),
                ("HEAD:get_task_file_properties", self.task_file),
                ("DELETE:delete_task_file", self.delete_task_file),
            ]
        else:
            shape = "/".join(s if i % 2 == 0 or (seg[0] == "batchspec") else "{}" for i, s in enumerate(seg))
            args = tuple(s for i, s in enumerate(seg) if i % 2 == 1 and seg[0] != "batchspec")
            table: dict[str, list[tuple[str, Handler]]] = {
                "batchspec/stats": [("GET:" + STATS_OPERATION, self.get_stats)],
                "pools": [("GET:list_pools", self.list_pools), ("POST:create_pool", self.create_pool)],
                "pools/{}": [
                    ("GET:get_pool", self.get_pool),
                    ("HEAD:pool_exists", self.pool_exists),
                    ("DELETE:delete_pool", self.delete_pool),
                    ("PATCH:update_pool", self.update_pool),
                ],
                "pools/{}/resize": [("POST:resize_pool", self.resize_pool)],
                "pools/{}/stopresize": [("POST:stop_pool_resize", self.stop_pool_resize)],
                "pools/{}/enableautoscale": [("POST:enable_pool_auto_scale", self.enable_pool_auto_scale)],
                "pools/{}/disableautoscale": [("POST:disable_pool_auto_scale", self.disable_pool_auto_scale)],
                "pools/{}/updateproperties": [("POST:replace_pool_properties", self.replace_pool_properties)],
                "pools/{}/nodes": [("GET:list_nodes", self.list_nodes)],
                "pools/{}/nodes/{}": [("GET:get_node", self.get_node)],
                "pools/{}/nodes/{}/files": [("GET:list_node_files", self.list_node_files)],
                "nodecounts": [("GET:list_pool_node_counts", self.list_pool_node_counts)],
                "jobs": [("GET:list_jobs", self.list_jobs), ("POST:create_job", self.create_job)],
                "jobs/{}": [
                    ("GET:get_job", self.get_job),
                    ("PUT:replace_job", self.replace_job),
                    ("PATCH:update_job", self.update_job),
                    ("DELETE:delete_job", self.delete_job),
                ],
                "jobs/{}/terminate": [("POST:terminate_job", self.terminate_job)],
                "jobs/{}/taskcounts": [("GET:get_job_task_counts", self.get_job_task_counts)],
                "jobs/{}/tasks": [
                    ("GET:list_tasks", self.list_tasks),
                    ("POST:create_task", self.create_task),
                ],
                "jobs/{}/addtaskcollection": [("POST:create_task_collection", self.create_task_collection)],
                "jobs/{}/tasks/{}": [
                    ("GET:get_task", self.get_task),
                    ("PUT:replace_task", self.replace_task),
                    ("DELETE:delete_task", self.delete_task),
                ],
                "jobs/{}/tasks/{}/terminate": [("POST:terminate_task", self.terminate_task)],
                "jobs/{}/tasks/{}/files": [("GET:list_task_files", self.list_task_files)],
            }
            routes = table.get(shape, [])
        if not routes:
            raise error(400, "InvalidUri", ("Reason", "The emulator does not support this operation."))
        for name, handler in routes:
            method, _, operation = name.partition(":")
            if method == m:
                return operation, handler, args
        raise error(405, "UnsupportedHttpVerb")

    # ---- responses

    def _common(self, req: Request) -> list[tuple[str, str]]:
        headers = [("request-id", req.request_id), ("DataServiceVersion", "3.0")]
        if req.headers.get("return-client-request-id", "").lower() == "true":
            client_id = req.headers.get("client-request-id") or req.headers.get("x-ms-client-request-id")
            if client_id:
                headers.append(("client-request-id", client_id))
        return headers

    def _error(self, req: Request, err: ApiError, extra: list[tuple[str, str]] | None = None) -> Response:
        headers = self._common(req) + (extra or [])
        if req.method == "HEAD":  # a HEAD error has no body and no Content-Type
            return Response(err.status, headers)
        body = dumps(error_json(self.base, err, req.request_id, self.state.clock.ticks()))
        headers.append(("Content-Type", JSON_CONTENT_TYPE))
        return Response(err.status, headers, body, chunked=False)

    def _json(self, req: Request, obj: Json, extra: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
        headers = [("Content-Type", JSON_CONTENT_TYPE), *self._common(req), *(extra or [])]
        return Response(status, headers, dumps(obj))

    def _entity(self, req: Request, kind: str, body: Json, order: list[str]) -> Response:
        select = odata.parse_select(req.query.get("$select"))
        shown = odata.project(ordered(body, order), select)
        obj = {"odata.metadata": f"{self.base}/$metadata#{kind}/@Element", **shown}
        return self._json(req, obj, self._version_headers(body))

    def _version_headers(self, body: Json) -> list[tuple[str, str]]:
        ticks = int(str(body["eTag"]), 16)
        return [("ETag", str(body["eTag"])), ("Last-Modified", rfc1123(ticks))]

    def _done(
        self,
        req: Request,
        status: int,
        data_service_id: str | None = None,
        body: Json | None = None,
        location: bool = False,
    ) -> Response:
        """A bodiless success: create (201), update (200), action (202), delete (202)."""
        headers = self._common(req)
        if data_service_id:
            headers.append(("DataServiceId", data_service_id))
        if body is not None:
            headers += self._version_headers(body)
        if location and data_service_id:
            headers.append(("Location", data_service_id))
        if status == 204:
            return Response(204, [*headers, ("Content-Length", "0")], chunked=False)
        return Response(status, headers)

    def _list(
        self, req: Request, kind: str, items: Iterator[tuple[str, Json]], path: str, order: list[str]
    ) -> Response:
        page = odata.paginate(items, req.query, f"{self.base}/{path}", render=lambda b: ordered(b, order))
        obj: Json = {"odata.metadata": f"{self.base}/$metadata#{kind}", "value": page.items}
        if page.next_link:
            obj["odata.nextLink"] = page.next_link
        return self._json(req, obj)

    def _stamp(self, body: Json) -> int:
        """A user change: new eTag and lastModified."""
        ticks = self.state.clock.ticks()
        body["eTag"] = etag(ticks)
        body["lastModified"] = iso(ticks)
        self.state.touch()
        return ticks

    # ---- lookups

    def _pool(self, pool_id: str) -> Pool:
        pool = self.state.pools.get(key(pool_id))
        if pool is None:
            raise not_found("Pool")
        return pool

    def _job(self, job_id: str) -> Job:
        job = self.state.jobs.get(key(job_id))
        if job is None:
            raise not_found("Job")
        return job

    def _task(self, job_id: str, task_id: str) -> tuple[Job, Task]:
        job = self._job(job_id)
        task = job.tasks.get(key(task_id))
        if task is None:
            raise not_found("Task")
        return job, task

    def _job_accepts_changes(self, job: Job) -> None:
        if job.state == "deleting":
            raise error(409, "JobBeingDeleted")
        if job.state == "terminating":
            raise error(409, "JobBeingTerminated")
        if job.state == "completed":
            raise error(409, "JobCompleted")

    def _pool_accepts_changes(self, pool: Pool) -> None:
        if pool.body.get("state") == "deleting":
            raise error(409, "PoolBeingDeleted")

    # ---- emulator-only

    def get_stats(self, req: Request, _procs: list[TaskProcess]) -> Response:
        return self._json(req, {"requests": self.stats.snapshot(), "faults": dict(self.faults.counts)})

    # ---- pools

    def _start_task(self, spec: object) -> Json:
        if not isinstance(spec, dict):
            raise invalid_property("startTask", spec, "The value must be an object.")
        if not spec.get("commandLine"):
            raise missing_property("commandLine")
        out: Json = {"commandLine": spec["commandLine"]}
        for name in ("containerSettings", "resourceFiles", "environmentSettings"):
            if spec.get(name) is not None:
                out[name] = spec[name]
        out["userIdentity"] = user_identity(spec.get("userIdentity"))
        out["maxTaskRetryCount"] = _int("maxTaskRetryCount", spec.get("maxTaskRetryCount"), 0, -1)
        out["waitForSuccess"] = _bool("waitForSuccess", spec.get("waitForSuccess"), True)
        return out

    def _vm_config(self, vm: object) -> Json:
        if not isinstance(vm, dict):
            raise missing_property("virtualMachineConfiguration")
        out = dict(vm)
        image = out.get("imageReference")
        if isinstance(image, dict) and image.get("virtualMachineImageId"):
            image_id = str(image["virtualMachineImageId"])
            if not _IMAGE_ID_RE.match(image_id):
                raise invalid_property("virtualMachineImageId", image_id, _IMAGE_ID_REASON)
        if isinstance(image, dict) and "virtualMachineImageId" not in image:
            out["imageReference"] = ordered({**image, "version": image.get("version") or "latest"}, IMAGE_ORDER)
        if isinstance(out.get("dataDisks"), list):
            out["dataDisks"] = [
                {
                    "lun": d.get("lun"),
                    "caching": str(d.get("caching") or "none").lower(),
                    "diskSizeGB": d.get("diskSizeGB"),
                    "storageAccountType": str(d.get("storageAccountType") or "standard_lrs").lower(),
                }
                for d in out["dataDisks"]
                if isinstance(d, dict)
            ]
        return ordered(out, VM_CONFIG_ORDER)

    def _pool_spec(self, spec: Json, windows: bool) -> Json:
        """The parts of a pool given at creation, with the service's defaults (shared by auto pools)."""
        vm_size = spec.get("vmSize")
        if not vm_size:
            raise missing_property("vmSize")
        if spec.get("enableAutoScale"):
            raise invalid_property("enableAutoScale", True, "The emulator does not evaluate autoscale formulas.")
        out: Json = {"vmSize": str(vm_size).lower()}
        out["resizeTimeout"] = normalized_duration("resizeTimeout", spec.get("resizeTimeout") or "PT15M")
        out["targetDedicatedNodes"] = _int("targetDedicatedNodes", spec.get("targetDedicatedNodes"), 0, 0)
        out["targetLowPriorityNodes"] = _int("targetLowPriorityNodes", spec.get("targetLowPriorityNodes"), 0, 0)
        out["enableAutoScale"] = False
        out["enableInterNodeCommunication"] = _bool(
            "enableInterNodeCommunication", spec.get("enableInterNodeCommunication"), False
        )
        if spec.get("startTask") is not None:
            out["startTask"] = self._start_task(spec["startTask"])
        if spec.get("userAccounts") is not None:
            accounts = []
            for account in _list("userAccounts", spec["userAccounts"]):
                entry: Json = {
                    "name": account.get("name"),
                    "elevationLevel": str(account.get("elevationLevel") or "nonadmin").lower(),
                }
                if account.get("linuxUserConfiguration"):
                    entry["linuxUserConfiguration"] = account["linuxUserConfiguration"]
                if windows or account.get("windowsUserConfiguration"):
                    login = (account.get("windowsUserConfiguration") or {}).get("loginMode") or "batch"
                    entry["windowsUserConfiguration"] = {"loginMode": str(login).lower()}
                accounts.append(entry)  # passwords are never returned
            out["userAccounts"] = accounts
        out["certificateReferences"] = spec.get("certificateReferences") or []
        for name in ("applicationPackageReferences", "metadata"):
            if spec.get(name) is not None:
                out[name] = spec[name]
        out["taskSlotsPerNode"] = _int("taskSlotsPerNode", spec.get("taskSlotsPerNode"), 1, 1, 256)
        policy = spec.get("taskSchedulingPolicy") or {}
        out["taskSchedulingPolicy"] = {"nodeFillType": pascal_fill_type(policy.get("nodeFillType"))}
        out["virtualMachineConfiguration"] = self._vm_config(spec.get("virtualMachineConfiguration"))
        if isinstance(spec.get("networkConfiguration"), dict):
            given = spec["networkConfiguration"]
            net: Json = {k: given[k] for k in ("subnetId",) if k in given}
            net["dynamicVNetAssignmentScope"] = str(given.get("dynamicVNetAssignmentScope") or "none").lower()
            net |= {k: v for k, v in given.items() if k not in net and k != "enableAcceleratedNetworking"}
            net["enableAcceleratedNetworking"] = _bool(
                "enableAcceleratedNetworking", given.get("enableAcceleratedNetworking"), False
            )
            out["networkConfiguration"] = net
        for name in (
            "mountConfiguration",
            "identity",
            "upgradePolicy",
            "targetNodeCommunicationMode",
            "displayName",
        ):
            if spec.get(name) is not None:
                out[name] = spec[name]
        return out

    def _new_pool(self, pool_id: str, spec: Json, auto_for_job: str | None = None) -> Pool:
        windows = "windows" in str((spec.get("virtualMachineConfiguration") or {}).get("nodeAgentSKUId", "")).lower()
        parts = self._pool_spec(spec, windows)
        created = self.state.clock.ticks()
        modified = self.state.clock.ticks()
        body: Json = {
            "id": pool_id,
            "url": f"{self.base}/pools/{pool_id}",
            "eTag": etag(modified),
            "lastModified": iso(modified),
            "creationTime": iso(created),
            "state": "active",
            "stateTransitionTime": iso(created),
            "allocationState": "resizing",
            "allocationStateTransitionTime": iso(modified),
            "currentDedicatedNodes": 0,
            "currentLowPriorityNodes": 0,
            **parts,
        }
        pool = Pool(body=ordered(body, POOL_ORDER), seq=self.state.next_seq(), auto_for_job=auto_for_job)
        pool.resize_at = time.monotonic() + self.engine.timings.allocation
        self.state.pools[pool.key] = pool
        self.state.touch()
        self.engine.wake()
        return pool

    def create_pool(self, req: Request, _procs: list[TaskProcess]) -> Response:
        spec = _json_body(req)
        pool_id = _check_id("id", spec.get("id"))
        if key(pool_id) in self.state.pools:
            raise error(409, "PoolExists")
        pool = self._new_pool(pool_id, spec)
        return self._done(req, 201, pool.body["url"], pool.body, location=True)

    def list_pools(self, req: Request, _procs: list[TaskProcess]) -> Response:
        items = ((p.key, p.body) for p in self.state.sorted_pools())
        return self._list(req, "pools", items, "pools", POOL_ORDER)

    def get_pool(self, req: Request, _procs: list[TaskProcess], pool_id: str) -> Response:
        return self._entity(req, "pools", self._pool(pool_id).body, POOL_ORDER)

    def pool_exists(self, req: Request, _procs: list[TaskProcess], pool_id: str) -> Response:
        pool = self._pool(pool_id)
        return Response(200, self._common(req) + self._version_headers(pool.body))

    def delete_pool(self, req: Request, procs: list[TaskProcess], pool_id: str) -> Response:
        pool = self._pool(pool_id)
        self._pool_accepts_changes(pool)
        procs.extend(self.engine.delete_pool(pool))
        return self._done(req, 202)

    def update_pool(self, req: Request, _procs: list[TaskProcess], pool_id: str) -> Response:
        pool = self._pool(pool_id)
        self._pool_accepts_changes(pool)
        spec = _json_body(req)
        body = pool.body
        if spec.get("startTask") is not None:
            body["startTask"] = self._start_task(spec["startTask"])
        for name in (
            "metadata",
            "applicationPackageReferences",
            "certificateReferences",
            "targetNodeCommunicationMode",
        ):
            if spec.get(name) is not None:
                body[name] = spec[name]
        self._stamp(body)
        return self._done(req, 200, body["url"], body)

    def replace_pool_properties(self, req: Request, _procs: list[TaskProcess], pool_id: str) -> Response:
        pool = self._pool(pool_id)
        self._pool_accepts_changes(pool)
        spec = _json_body(req)
        body = pool.body
        for name in ("certificateReferences", "applicationPackageReferences", "metadata"):
            if spec.get(name) is None:
                raise missing_property(name)
        if spec.get("startTask") is not None:
            body["startTask"] = self._start_task(spec["startTask"])
        else:
            body.pop("startTask", None)  # updateproperties replaces: no startTask removes it
        body["certificateReferences"] = spec["certificateReferences"]
        for name in ("applicationPackageReferences", "metadata"):
            if spec[name]:
                body[name] = spec[name]
            else:
                body.pop(name, None)
        if spec.get("targetNodeCommunicationMode") is not None:
            body["targetNodeCommunicationMode"] = spec["targetNodeCommunicationMode"]
        self._stamp(body)
        return self._done(req, 204, f"{body['url']}/updateproperties", body)

    def resize_pool(self, req: Request, procs: list[TaskProcess], pool_id: str) -> Response:
        pool = self._pool(pool_id)
        self._pool_accepts_changes(pool)
        spec = _json_body(req)
        dedicated = _int("targetDedicatedNodes", spec.get("targetDedicatedNodes"), 0, 0)
        low = _int("targetLowPriorityNodes", spec.get("targetLowPriorityNodes"), 0, 0)
        if spec.get("resizeTimeout") is not None:
            normalized_duration("resizeTimeout", spec["resizeTimeout"])
        procs.extend(self.engine.resize_pool(pool, dedicated, low))
        self._stamp(pool.body)
        return self._done(req, 202, f"{pool.body['url']}/resize", pool.body)

    def stop_pool_resize(self, req: Request, _procs: list[TaskProcess], pool_id: str) -> Response:
        pool = self._pool(pool_id)
        self._pool_accepts_changes(pool)
        self.engine.stop_resize(pool)
        return self._done(req, 202, f"{pool.body['url']}/stopresize", pool.body)

    def enable_pool_auto_scale(self, req: Request, _procs: list[TaskProcess], pool_id: str) -> Response:
        """Records the formula; the emulator does not evaluate it (the pool keeps its targets)."""
        pool = self._pool(pool_id)
        self._pool_accepts_changes(pool)
        spec = _json_body(req)
        formula = spec.get("autoScaleFormula") or pool.body.get("autoScaleFormula")
        if not formula:
            raise missing_property("autoScaleFormula")
        interval = spec.get("autoScaleEvaluationInterval") or pool.body.get("autoScaleEvaluationInterval") or "PT15M"
        body = pool.body
        body["enableAutoScale"] = True
        body["autoScaleFormula"] = formula
        body["autoScaleEvaluationInterval"] = normalized_duration("autoScaleEvaluationInterval", interval)
        pool.body = ordered(body, POOL_ORDER)
        self._stamp(pool.body)
        return self._done(req, 200, f"{pool.body['url']}/enableautoscale", pool.body)

    def disable_pool_auto_scale(self, req: Request, _procs: list[TaskProcess], pool_id: str) -> Response:
        pool = self._pool(pool_id)
        self._pool_accepts_changes(pool)
        body = pool.body
        body["enableAutoScale"] = False
        for name in ("autoScaleFormula", "autoScaleEvaluationInterval", "autoScaleRun"):
            body.pop(name, None)
        ticks = self._stamp(body)
        body["allocationStateTransitionTime"] = iso(ticks)
        return self._done(req, 200, f"{body['url']}/disableautoscale", body)

    # ---- nodes

    def list_nodes(self, req: Request, _procs: list[TaskProcess], pool_id: str) -> Response:
        pool = self._pool(pool_id)
        items = ((n.id, n.body) for n in sorted(pool.nodes.values(), key=lambda n: n.id))
        return self._list(req, "nodes", items, f"pools/{pool.id}/nodes", NODE_ORDER)

    def get_node(self, req: Request, _procs: list[TaskProcess], pool_id: str, node_id: str) -> Response:
        pool = self._pool(pool_id)
        node = pool.nodes.get(node_id)
        if node is None:
            raise not_found("Node")
        obj = {"odata.metadata": f"{self.base}/$metadata#nodes/@Element", **ordered(node.body, NODE_ORDER)}
        return self._json(req, odata.project(obj, odata.parse_select(req.query.get("$select"))))

    def list_pool_node_counts(self, req: Request, _procs: list[TaskProcess]) -> Response:
        states = [
            "creating",
            "deallocated",
            "deallocating",
            "idle",
            "leavingPool",
            "offline",
            "preempted",
            "rebooting",
            "reimaging",
            "running",
            "starting",
            "startTaskFailed",
            "unusable",
            "unknown",
            "upgradingOS",
            "waitingForStartTask",
        ]
        value = []
        for pool in self.state.sorted_pools():
            entry: Json = {"poolId": pool.id}
            for dedicated, name in ((True, "dedicated"), (False, "lowPriority")):
                counts = dict.fromkeys(states, 0)
                for node in pool.nodes.values():
                    if node.dedicated == dedicated:
                        wire = {s.lower(): s for s in states}.get(str(node.body["state"]), "unknown")
                        counts[wire] += 1
                counts["total"] = sum(counts.values())
                entry[name] = counts
            value.append(entry)
        return self._json(req, {"odata.metadata": f"{self.base}/$metadata#poolnodecounts", "value": value})

    # ---- jobs

    def _job_constraints(self, spec: object) -> Json:
        spec = spec if isinstance(spec, dict) else {}
        return {
            "maxWallClockTime": normalized_duration("maxWallClockTime", spec.get("maxWallClockTime") or MAX_DURATION),
            "maxTaskRetryCount": _int("maxTaskRetryCount", spec.get("maxTaskRetryCount"), 0, -1),
        }

    def _pool_info(self, info: object, job_id: str) -> tuple[Json, str]:
        """A job's ``poolInfo`` with defaults, and the pool id it runs on (an auto pool's GUID)."""
        if not isinstance(info, dict) or not (info.get("poolId") or info.get("autoPoolSpecification")):
            raise missing_property("poolInfo")
        if info.get("poolId"):
            return {"poolId": info["poolId"]}, str(info["poolId"])
        auto = info["autoPoolSpecification"]
        spec = auto.get("pool") or {}
        parts = self._pool_spec(spec, False)
        pool_spec: Json = {
            k: parts[k]
            for k in [
                "vmSize",
                "taskSlotsPerNode",
                "taskSchedulingPolicy",
                "resizeTimeout",
                "targetDedicatedNodes",
                "targetLowPriorityNodes",
                "enableAutoScale",
                "enableInterNodeCommunication",
                "startTask",
                "virtualMachineConfiguration",
            ]
            if k in parts
        }
        out: Json = {}
        if auto.get("autoPoolIdPrefix"):
            out["autoPoolIdPrefix"] = auto["autoPoolIdPrefix"]
        out["poolLifetimeOption"] = str(auto.get("poolLifetimeOption") or "job").lower()
        out["keepAlive"] = bool(auto.get("keepAlive", False))
        out["pool"] = pool_spec
        pool_id = str(uuid.uuid4()).upper()
        self._new_pool(pool_id, spec, auto_for_job=None if out["keepAlive"] else key(job_id))
        return {"autoPoolSpecification": out}, pool_id

    def _prep_task(self, spec: object) -> Json:
        if not isinstance(spec, dict) or not spec.get("commandLine"):
            raise missing_property("jobPreparationTask.commandLine")
        constraints = spec.get("constraints") or {}
        out: Json = {"id": spec.get("id") or "jobpreparation", "commandLine": spec["commandLine"]}
        for name in ("containerSettings", "resourceFiles", "environmentSettings"):
            if spec.get(name) is not None:
                out[name] = spec[name]
        out["constraints"] = {
            "maxWallClockTime": normalized_duration(
                "maxWallClockTime", constraints.get("maxWallClockTime") or MAX_DURATION
            ),
            "retentionTime": normalized_duration("retentionTime", constraints.get("retentionTime") or "P7D"),
            "maxTaskRetryCount": _int("maxTaskRetryCount", constraints.get("maxTaskRetryCount"), 0, -1),
        }
        out["userIdentity"] = user_identity(spec.get("userIdentity"))
        out["waitForSuccess"] = _bool("waitForSuccess", spec.get("waitForSuccess"), True)
        out["rerunOnNodeRebootAfterSuccess"] = _bool(
            "rerunOnNodeRebootAfterSuccess", spec.get("rerunOnNodeRebootAfterSuccess"), True
        )
        return out

    def _release_task(self, spec: object) -> Json:
        if not isinstance(spec, dict) or not spec.get("commandLine"):
            raise missing_property("jobReleaseTask.commandLine")
        out: Json = {"id": spec.get("id") or "jobrelease", "commandLine": spec["commandLine"]}
        for name in ("containerSettings", "resourceFiles", "environmentSettings"):
            if spec.get(name) is not None:
                out[name] = spec[name]
        out["maxWallClockTime"] = normalized_duration("maxWallClockTime", spec.get("maxWallClockTime") or "PT15M")
        out["retentionTime"] = normalized_duration("retentionTime", spec.get("retentionTime") or "P7D")
        out["userIdentity"] = user_identity(spec.get("userIdentity"))
        return out

    def _set_deadline(self, job: Job) -> None:
        limit = parse_duration(str(job.body["constraints"]["maxWallClockTime"]))
        if str(job.body["constraints"]["maxWallClockTime"]) == MAX_DURATION:
            job.deadline = None
            return
        created = (parse_iso(str(job.body["creationTime"])) - EPOCH_TICKS) / TICKS_PER_SECOND
        job.deadline = created + limit / TICKS_PER_SECOND

    def create_job(self, req: Request, _procs: list[TaskProcess]) -> Response:
        spec = _json_body(req)
        job_id = _check_id("id", spec.get("id"))
        if key(job_id) in self.state.jobs:
            raise error(409, "JobExists")
        on_all = _enum("onAllTasksComplete", spec.get("onAllTasksComplete"), ("noaction", "terminatejob"), "noaction")
        on_fail = _enum(
            "onTaskFailure",
            spec.get("onTaskFailure"),
            ("noaction", "performexitoptionsjobaction"),
            "noaction",
        )
        constraints = self._job_constraints(spec.get("constraints"))
        prep = self._prep_task(spec["jobPreparationTask"]) if spec.get("jobPreparationTask") else None
        release = self._release_task(spec["jobReleaseTask"]) if spec.get("jobReleaseTask") else None
        priority = _int("priority", spec.get("priority"), 0, -1000, 1000)
        max_parallel = _int("maxParallelTasks", spec.get("maxParallelTasks"), -1, -1)
        if max_parallel == 0:
            raise invalid_property("maxParallelTasks", 0, "The value must be -1 or greater than 0.")
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
            "usesTaskDependencies": _bool("usesTaskDependencies", spec.get("usesTaskDependencies"), False),
            "allowTaskPreemption": _bool("allowTaskPreemption", spec.get("allowTaskPreemption"), False),
            "constraints": constraints,
        }
        if spec.get("jobManagerTask") is not None:
            body["jobManagerTask"] = spec["jobManagerTask"]
        if prep:
            body["jobPreparationTask"] = prep
        if release:
            body["jobReleaseTask"] = release
        for name in ("commonEnvironmentSettings",):
            if spec.get(name) is not None:
                body[name] = spec[name]
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
        return self._done(req, 201, f"{self.base}/jobs/job-1", job.body, location=True)

    def list_jobs(self, req: Request, _procs: list[TaskProcess]) -> Response:
        items = ((j.key, j.body) for j in self.state.sorted_jobs())
        return self._list(req, "jobs", items, "jobs", JOB_ORDER)

    def get_job(self, req: Request, _procs: list[TaskProcess], job_id: str) -> Response:
        return self._entity(req, "jobs", self._job(job_id).body, JOB_ORDER)

    def _update_job(self, job: Job, spec: Json, replace: bool) -> None:
        body = job.body
        if replace or "priority" in spec:
            body["priority"] = _int("priority", spec.get("priority"), 0, -1000, 1000)
        if replace or "maxParallelTasks" in spec:
            body["maxParallelTasks"] = _int("maxParallelTasks", spec.get("maxParallelTasks"), -1, -1)
        if replace or "allowTaskPreemption" in spec:
            body["allowTaskPreemption"] = _bool("allowTaskPreemption", spec.get("allowTaskPreemption"), False)
        if replace or spec.get("constraints") is not None:
            if replace:
                body["constraints"] = self._job_constraints(spec.get("constraints"))
            else:
                given = spec["constraints"] if isinstance(spec["constraints"], dict) else {}
                body["constraints"] = self._job_constraints({**body["constraints"], **given})
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
            value = _enum(
                "onAllTasksComplete", spec.get("onAllTasksComplete"), ("noaction", "terminatejob"), "noaction"
            )
            if body["onAllTasksComplete"] == "terminatejob" and value == "noaction":
                raise invalid_property(
                    "onAllTasksComplete",
                    value,
                    "Automatic job termination cannot be turned off once it is set.",
                )
            body["onAllTasksComplete"] = value
        job.body = ordered(body, JOB_ORDER)
        self._stamp(job.body)
        self.engine.wake()

    def update_job(self, req: Request, _procs: list[TaskProcess], job_id: str) -> Response:
        job = self._job(job_id)
        self._job_accepts_changes(job)
        self._update_job(job, _json_body(req), replace=False)
        return self._done(req, 200, job.body["url"], job.body)

    def replace_job(self, req: Request, _procs: list[TaskProcess], job_id: str) -> Response:
        job = self._job(job_id)
        self._job_accepts_changes(job)
        self._update_job(job, _json_body(req), replace=True)
        return self._done(req, 200, job.body["url"], job.body)

    def delete_job(self, req: Request, procs: list[TaskProcess], job_id: str) -> Response:
        job = self._job(job_id)
        if job.state == "deleting":
            raise error(409, "JobBeingDeleted")
        procs.extend(self.engine.delete_job(job))
        return self._done(req, 202)

    def terminate_job(self, req: Request, procs: list[TaskProcess], job_id: str) -> Response:
        job = self._job(job_id)
        self._job_accepts_changes(job)
        reason = "UserTerminate"
        if req.body.strip():
            reason = str(_json_body(req).get("terminateReason") or reason)
        self._stamp(job.body)
        procs.extend(self.engine.terminate_job(job, reason))
        return self._done(req, 202, f"{job.body['url']}/terminate", job.body)

    def get_job_task_counts(self, req: Request, _procs: list[TaskProcess], job_id: str) -> Response:
        job = self._job(job_id)
        return self._json(
            req,
            {
                "odata.metadata": f"{self.base}/$metadata#taskcountsresult/@Element",
                "taskCounts": job.counts.as_json(),
                "taskSlotCounts": job.slot_counts.as_json(),
            },
        )

    # ---- tasks

    def _task_body(self, job: Job, spec: object, ticks: int) -> Json:
        """A new task's body with the service's defaults; raises 400 errors."""
        if not isinstance(spec, dict):
            raise invalid_body("Each task must be a JSON object.")
        task_id = _check_id("id", spec.get("id"))
        if not spec.get("commandLine"):
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
        if isinstance(spec.get("containerSettings"), dict):
            settings = spec["containerSettings"]
            container: Json = {"imageName": settings.get("imageName")}
            for name in ("containerRunOptions", "registry"):
                if settings.get(name) is not None:
                    container[name] = settings[name]
            container["workingDirectory"] = settings.get("workingDirectory") or "taskWorkingDirectory"
            for name, value in settings.items():
                container.setdefault(name, value)
            body["containerSettings"] = container
        if spec.get("resourceFiles") is not None:
            body["resourceFiles"] = resource_files(spec["resourceFiles"])
        if spec.get("outputFiles") is not None:
            body["outputFiles"] = output_files(spec["outputFiles"])
        if spec.get("environmentSettings") is not None:
            body["environmentSettings"] = _list("environmentSettings", spec["environmentSettings"])
        if spec.get("affinityInfo") is not None:
            body["affinityInfo"] = spec["affinityInfo"]
        if spec.get("exitConditions") is not None:
            body["exitConditions"] = exit_conditions(spec["exitConditions"], job.body)
        body["userIdentity"] = user_identity(spec.get("userIdentity"))
        body["constraints"] = self._task_constraints(job, spec.get("constraints"))
        body["requiredSlots"] = _int("requiredSlots", spec.get("requiredSlots"), 1, 1)
        for name in ("multiInstanceSettings",):
            if spec.get(name) is not None:
                body[name] = spec[name]
        if spec.get("dependsOn") is not None:
            body["dependsOn"] = depends_on(spec["dependsOn"], job.body)
        if spec.get("applicationPackageReferences") is not None:
            body["applicationPackageReferences"] = spec["applicationPackageReferences"]
        body["executionInfo"] = execution_info(retryCount=0, requeueCount=0)
        return body

    def _task_constraints(self, job: Job, spec: object) -> Json:
        spec = spec if isinstance(spec, dict) else {}
        default_retries = int(job.body["constraints"].get("maxTaskRetryCount", 0))
        return {
            "maxWallClockTime": normalized_duration("maxWallClockTime", spec.get("maxWallClockTime") or MAX_DURATION),
            "retentionTime": normalized_duration("retentionTime", spec.get("retentionTime") or "P7D"),
            "maxTaskRetryCount": _int("maxTaskRetryCount", spec.get("maxTaskRetryCount"), default_retries, -1),
        }

    def _add(self, job: Job, body: Json) -> Task:
        task = Task(job.key, body, self.state.next_seq())
        self.state.add_task(job, task)
        return task

    def create_task(self, req: Request, _procs: list[TaskProcess], job_id: str) -> Response:
        job = self._job(job_id)
        spec = _json_body(req)
        body = self._task_body(job, spec, self.state.clock.ticks())
        self._job_accepts_changes(job)
        if key(body["id"]) in job.tasks:
            raise error(409, "TaskExists")
        task = self._add(job, body)
        self.engine.wake()
        return self._done(req, 201, task.body["url"], task.body, location=True)

    def create_task_collection(self, req: Request, _procs: list[TaskProcess], job_id: str) -> Response:
        if len(req.body) > MAX_COLLECTION_BYTES:
            raise error(413, "RequestBodyTooLarge", ("MaxLimit", str(MAX_COLLECTION_BYTES)))
        spec = _json_body(req)
        tasks = _list("value", spec.get("value"))
        if len(tasks) > MAX_TASKS_PER_COLLECTION:
            raise error(413, "RequestBodyTooLarge", ("MaxTasksPerRequest", str(MAX_TASKS_PER_COLLECTION)))
        job = self._job(job_id)
        ticks = self.state.clock.ticks()
        bodies = [self._task_body(job, t, ticks) for t in tasks]  # any invalid task fails the request
        self._job_accepts_changes(job)
        results = []
        for body in bodies:
            if key(body["id"]) in job.tasks:
                err = error(409, "TaskExists")
                results.append(
                    {
                        "status": "ClientError",
                        "taskId": body["id"],
                        "error": inner_error(err, req.request_id, ticks),
                    }
                )
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
        return self._json(req, {"odata.metadata": f"{self.base}/$metadata#taskaddresult", "value": results})

    def list_tasks(self, req: Request, _procs: list[TaskProcess], job_id: str) -> Response:
        job = self._job(job_id)
        items = ((k, job.tasks[k].body) for k in job.sorted_ids())
        return self._list(req, "tasks", items, f"jobs/{job.id}/tasks", TASK_ORDER)

    def get_task(self, req: Request, _procs: list[TaskProcess], job_id: str, task_id: str) -> Response:
        _job, task = self._task(job_id, task_id)
        return self._entity(req, "tasks", task.body, TASK_ORDER)

    def replace_task(self, req: Request, _procs: list[TaskProcess], job_id: str, task_id: str) -> Response:
        job, task = self._task(job_id, task_id)
        self._job_accepts_changes(job)
        spec = _json_body(req)
        task.body["constraints"] = self._task_constraints(job, spec.get("constraints"))
        self._stamp(task.body)
        return self._done(req, 200, task.body["url"], task.body)

    def delete_task(self, req: Request, procs: list[TaskProcess], job_id: str, task_id: str) -> Response:
        job, task = self._task(job_id, task_id)
        if task.attempt is not None:
            proc = task.attempt.request_stop("delete")
            if proc:
                procs.append(proc)
        self.state.remove_task(job, task)
        return self._done(req, 200)

    def terminate_task(self, req: Request, procs: list[TaskProcess], job_id: str, task_id: str) -> Response:
        job, task = self._task(job_id, task_id)
        if task.body["state"] == "completed":
            raise error(409, "TaskCompleted")
        if task.attempt is not None:
            proc = task.attempt.request_stop("terminate")
            if proc:
                procs.append(proc)
        else:
            ticks = self.state.clock.ticks()
            info = task.body.get("executionInfo") or {}
            task.body["executionInfo"] = execution_info(
                endTime=iso(ticks),
                failureInfo=failure_info("usererror", "TaskEnded", "Task was ended by user request."),
                result="failure",
                retryCount=info.get("retryCount", 0),
                requeueCount=info.get("requeueCount", 0),
            )
            self.state.set_task_state(job, task, "completed", ticks)
            procs.extend(self.engine.after_task_completed(job, task))
        self._stamp(task.body)
        self.engine.wake()
        return self._done(req, 204, f"{task.body['url']}/terminate", task.body)

    # ---- files

    def _node_dir(self, node_id: str) -> Path:
        return self.nodes_root / node_id

    @staticmethod
    def _safe(root: Path, rel: str) -> Path:
        rel = rel.replace("\\", "/").strip("/")
        path = (root / rel).resolve() if rel else root.resolve()
        base = root.resolve()
        if path != base and base not in path.parents:
            raise not_found("File")
        return path

    def _task_dir(self, task: Task) -> Path:
        info = task.body.get("nodeInfo")
        if not info:
            raise not_found("File")  # the task has not run on any node yet
        return self._node_dir(str(info["nodeId"])) / str(info["taskRootDirectory"])

    def _file_response(self, req: Request, path: Path, url: str) -> Response:
        try:
            st = path.stat()
        except OSError:
            raise not_found("File") from None
        is_dir = path.is_dir()
        ctype = "application/octet-stream"
        if not is_dir:
            ctype = mimetypes.guess_type(path.name)[0] or ctype
        headers = [
            ("Content-Type", ctype),
            *self._common(req),
            ("Last-Modified", _http_time(st.st_mtime)),
            ("ocp-creation-time", _http_time(st.st_ctime)),
            ("ocp-batch-file-isdirectory", "True" if is_dir else "False"),
            ("ocp-batch-file-url", quote(url, safe="")),
            ("ocp-batch-file-mode", oct(st.st_mode)),
        ]
        if req.method == "HEAD":
            return Response(200, [*headers, ("Content-Length", "0" if is_dir else str(st.st_size))], chunked=False)
        data = b"" if is_dir else path.read_bytes()
        wanted = req.headers.get("ocp-range")
        if wanted:
            data = _byte_range(data, wanted)
        return Response(200, headers, data)

    def task_file(self, req: Request, _procs: list[TaskProcess], job_id: str, task_id: str, rel: str) -> Response:
        job, task = self._task(job_id, task_id)
        path = self._safe(self._task_dir(task), rel)
        rel_url = rel.replace("\\", "/").strip("/")
        return self._file_response(req, path, f"{self.base}/jobs/{job.id}/tasks/{task.id}/files/{rel_url}")

    def node_file(self, req: Request, _procs: list[TaskProcess], pool_id: str, node_id: str, rel: str) -> Response:
        pool = self._pool(pool_id)
        if node_id not in pool.nodes:
            raise not_found("Node")
        path = self._safe(self._node_dir(node_id), rel)
        rel_url = rel.replace("\\", "/").strip("/")
        return self._file_response(req, path, f"{self.base}/pools/{pool.id}/nodes/{node_id}/files/{rel_url}")

    def _delete_file(self, req: Request, path: Path) -> Response:
        if not path.exists():
            raise not_found("File")
        if path.is_dir():
            if req.query.get("recursive", "").lower() != "true" and any(path.iterdir()):
                raise error(409, "OperationInvalidForCurrentState", ("Reason", "The directory is not empty."))
            shutil.rmtree(path)
        else:
            path.unlink()
        return self._done(req, 200)

    def delete_task_file(
        self, req: Request, _procs: list[TaskProcess], job_id: str, task_id: str, rel: str
    ) -> Response:
        _job, task = self._task(job_id, task_id)
        return self._delete_file(req, self._safe(self._task_dir(task), rel))

    def delete_node_file(
        self, req: Request, _procs: list[TaskProcess], pool_id: str, node_id: str, rel: str
    ) -> Response:
        pool = self._pool(pool_id)
        if node_id not in pool.nodes:
            raise not_found("Node")
        return self._delete_file(req, self._safe(self._node_dir(node_id), rel))

    def _file_list(self, req: Request, root: Path, url: str) -> Response:
        recursive = req.query.get("recursive", "").lower() == "true"
        entries: list[tuple[str, Json]] = []
        level = [root] if root.is_dir() else []
        while level:
            next_level: list[Path] = []
            for directory in level:
                for child in sorted(directory.iterdir(), key=lambda p: p.name):
                    rel = child.relative_to(root).as_posix()
                    entry: Json = {"name": rel, "url": f"{url}/{rel}", "isDirectory": child.is_dir()}
                    if child.is_dir():
                        if recursive:
                            next_level.append(child)
                    else:
                        st = child.stat()
                        entry["properties"] = {
                            "creationTime": _iso_time(st.st_ctime),
                            "lastModified": _iso_time(st.st_mtime),
                            "contentLength": str(st.st_size),
                            "contentType": mimetypes.guess_type(child.name)[0] or "application/octet-stream",
                            "fileMode": oct(st.st_mode),
                        }
                    entries.append((rel, entry))
            level = next_level
        page = odata.paginate(((str(i).zfill(9), e) for i, (_rel, e) in enumerate(entries)), req.query, url)
        obj: Json = {"odata.metadata": f"{self.base}/$metadata#files", "value": page.items}
        if page.next_link:
            obj["odata.nextLink"] = page.next_link
        return self._json(req, obj)

    def list_task_files(self, req: Request, _procs: list[TaskProcess], job_id: str, task_id: str) -> Response:
        job, task = self._task(job_id, task_id)
        if not task.body.get("nodeInfo"):
            return self._json(req, {"odata.metadata": f"{self.base}/$metadata#files", "value": []})
        return self._file_list(req, self._task_dir(task), f"{self.base}/jobs/{job.id}/tasks/{task.id}/files")

    def list_node_files(self, req: Request, _procs: list[TaskProcess], pool_id: str, node_id: str) -> Response:
        pool = self._pool(pool_id)
        if node_id not in pool.nodes:
            raise not_found("Node")
        return self._file_list(req, self._node_dir(node_id), f"{self.base}/pools/{pool.id}/nodes/{node_id}/files")


def _http_time(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def _iso_time(seconds: float) -> str:
    return iso(EPOCH_TICKS + int(seconds * TICKS_PER_SECOND))


def _byte_range(data: bytes, spec: str) -> bytes:
    """The bytes of an ``ocp-range`` such as ``bytes=0-99`` or ``bytes=100-``."""
    match = re.match(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", spec)
    if not match:
        raise error(
            416,
            "InvalidRange",
            message="The range specified is invalid for the current size of the resource.",
        )
    start_text, end_text = match.groups()
    if start_text == "":
        return data[-int(end_text) :] if end_text else data
    start = int(start_text)
    end = int(end_text) + 1 if end_text else len(data)
    return data[start:end]


__all__ = ["BatchApi", "Request", "Response", "Stats"]
