"""What every resource handler shares: the service it serves, responses as the service shapes
them, entity lookups, and the route declarations the router collects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from batchspec.emulator import odata
from batchspec.emulator.errors import ApiError, error, error_json, not_found
from batchspec.emulator.protocol import Request, Response, Stats
from batchspec.emulator.scheduler import Engine
from batchspec.emulator.store import Job, Pool, State, Task, key
from batchspec.emulator.wire import JSON_CONTENT_TYPE, Json, dumps, etag, iso, ordered, rfc1123

Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    """``method`` on a path ``shape`` (``pools/{}/nodes``, ids as ``{}``) runs ``handler`` with the
    ids as arguments; ``operation`` names it as the azure-batch method that sends it."""

    method: str
    shape: str
    operation: str
    handler: Handler


@dataclass
class Service:
    """The emulated service a handler works on."""

    state: State
    engine: Engine
    base: str  # the endpoint entity URLs are built on
    nodes_root: Path
    stats: Stats


class Resource:
    """Base of the handler classes: responses and lookups over one :class:`Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.state = service.state
        self.engine = service.engine
        self.base = service.base

    def routes(self) -> list[Route]:
        raise NotImplementedError

    # ---- responses

    def common(self, req: Request) -> list[tuple[str, str]]:
        headers = [("request-id", req.request_id), ("DataServiceVersion", "3.0")]
        if req.headers.get("return-client-request-id", "").lower() == "true":
            client_id = req.headers.get("client-request-id") or req.headers.get("x-ms-client-request-id")
            if client_id:
                headers.append(("client-request-id", client_id))
        return headers

    def error(self, req: Request, err: ApiError, extra: list[tuple[str, str]] | None = None) -> Response:
        headers = self.common(req) + (extra or [])
        if req.method == "HEAD":  # a HEAD error has no body and no Content-Type
            return Response(err.status, headers)
        body = dumps(error_json(self.base, err, req.request_id, self.state.clock.ticks()))
        headers.append(("Content-Type", JSON_CONTENT_TYPE))
        return Response(err.status, headers, body, chunked=False)

    def json(self, req: Request, obj: Json, extra: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
        headers = [("Content-Type", JSON_CONTENT_TYPE), *self.common(req), *(extra or [])]
        return Response(status, headers, dumps(obj))

    def entity(self, req: Request, kind: str, body: Json, order: list[str]) -> Response:
        select = odata.parse_select(req.query.get("$select"))
        shown = odata.project(ordered(body, order), select)
        obj = {"odata.metadata": f"{self.base}/$metadata#{kind}/@Element", **shown}
        return self.json(req, obj, self.version_headers(body))

    @staticmethod
    def version_headers(body: Json) -> list[tuple[str, str]]:
        ticks = int(str(body["eTag"]), 16)
        return [("ETag", str(body["eTag"])), ("Last-Modified", rfc1123(ticks))]

    def done(
        self,
        req: Request,
        status: int,
        data_service_id: str | None = None,
        body: Json | None = None,
        location: bool = False,
    ) -> Response:
        """A bodiless success: create (201), update (200), action (202), delete (202)."""
        headers = self.common(req)
        if data_service_id:
            headers.append(("DataServiceId", data_service_id))
        if body is not None:
            headers += self.version_headers(body)
        if location and data_service_id:
            headers.append(("Location", data_service_id))
        if status == 204:
            return Response(204, [*headers, ("Content-Length", "0")], chunked=False)
        return Response(status, headers)

    def listing(
        self, req: Request, kind: str, items: Iterator[tuple[str, Json]], path: str, order: list[str] | None = None
    ) -> Response:
        render = (lambda b: ordered(b, order)) if order is not None else None
        page = odata.paginate(items, req.query, f"{self.base}/{path}", render=render)
        obj: Json = {"odata.metadata": f"{self.base}/$metadata#{kind}", "value": page.items}
        if page.next_link:
            obj["odata.nextLink"] = page.next_link
        return self.json(req, obj)

    def stamp(self, body: Json) -> int:
        """A user change: new eTag and lastModified."""
        ticks = self.state.clock.ticks()
        body["eTag"] = etag(ticks)
        body["lastModified"] = iso(ticks)
        self.state.touch()
        return ticks

    # ---- lookups

    def pool(self, pool_id: str) -> Pool:
        pool = self.state.pools.get(key(pool_id))
        if pool is None:
            raise not_found("Pool")
        return pool

    def job(self, job_id: str) -> Job:
        job = self.state.jobs.get(key(job_id))
        if job is None:
            raise not_found("Job")
        return job

    def task(self, job_id: str, task_id: str) -> tuple[Job, Task]:
        job = self.job(job_id)
        task = job.tasks.get(key(task_id))
        if task is None:
            raise not_found("Task")
        return job, task

    @staticmethod
    def job_accepts_changes(job: Job) -> None:
        if job.state == "deleting":
            raise error(409, "JobBeingDeleted")
        if job.state == "terminating":
            raise error(409, "JobBeingTerminated")
        if job.state == "completed":
            raise error(409, "JobCompleted")

    @staticmethod
    def pool_accepts_changes(pool: Pool) -> None:
        if pool.body.get("state") == "deleting":
            raise error(409, "PoolBeingDeleted")
