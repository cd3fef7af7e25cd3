"""The Batch REST API over one service: what happens to every request, in order.

:class:`BatchApi` turns a parsed :class:`~batchspec.emulator.protocol.Request` into a
:class:`~batchspec.emulator.protocol.Response`: route it (:mod:`~batchspec.emulator.routing`),
count the operation, inject a configured fault before the handler (503, 429, reset), check
authentication and ``api-version``, run the resource's handler under the state lock
(:mod:`~batchspec.emulator.handlers`), stop the processes it ended once the lock is released,
inject a fault after it (the answer lost), and log the request.
"""

from __future__ import annotations

import time

from batchspec.emulator.auth import Authenticator
from batchspec.emulator.errors import ApiError, error
from batchspec.emulator.faults import FaultInjector
from batchspec.emulator.handlers.account import STATS_OPERATION, Account
from batchspec.emulator.handlers.base import Handler, Resource, Service
from batchspec.emulator.handlers.files import Files
from batchspec.emulator.handlers.jobs import Jobs
from batchspec.emulator.handlers.nodes import Nodes
from batchspec.emulator.handlers.pools import Pools
from batchspec.emulator.handlers.tasks import Tasks
from batchspec.emulator.protocol import Request, Response, Stats
from batchspec.emulator.requestlog import RequestLog
from batchspec.emulator.routing import Router


class BatchApi:
    """Every supported Batch operation over one :class:`Service`."""

    def __init__(
        self, service: Service, *, auth: Authenticator, faults: FaultInjector, log: RequestLog | None = None
    ) -> None:
        self.service = service
        self.auth = auth
        self.faults = faults
        self.log = log
        pools = Pools(service)
        resources: list[Resource] = [
            pools, Jobs(service, pools), Tasks(service), Nodes(service), Files(service), Account(service, faults),
        ]
        self.router = Router(route for resource in resources for route in resource.routes())
        self._responses = resources[0]  # any resource shapes error answers the same way

    @property
    def stats(self) -> Stats:
        return self.service.stats

    def handle(self, req: Request) -> Response:
        started = time.perf_counter()
        operation = "unknown"
        try:
            operation, handler, args = self.router.resolve(req.method, req.raw_path)
        except ApiError as err:
            response = self._responses.error(req, err)
        else:
            response = self._serve(req, operation, handler, args)
        self.stats.count(operation)
        if self.log is not None:
            target = req.raw_path + (f"?{req.raw_query}" if req.raw_query else "")
            self.log.write(req.method, target, 0 if response.reset or response.drop else response.status,
                           time.perf_counter() - started, req.request_id, operation)
        return response

    def _serve(self, req: Request, operation: str, handler: Handler, args: tuple[str, ...]) -> Response:
        fault = self.faults.http_fault(operation) if operation != STATS_OPERATION else None
        if fault == "reset":
            return Response(0, reset=True)
        if fault == "http503":
            return self._responses.error(req, error(503, "ServerBusy"))
        if fault == "http429":
            return self._responses.error(req, error(429, "TooManyRequests"), [("Retry-After", "1")])
        response = self._call(req, operation, handler, args)
        if fault == "commit-drop":  # handled, then the answer is lost
            return Response(0, drop=True)
        if fault == "commit-reset":
            return Response(0, reset=True)
        return response

    def _call(self, req: Request, operation: str, handler: Handler, args: tuple[str, ...]) -> Response:
        try:
            self.auth.check(req.method, req.raw_path, req.raw_query, req.headers)
            if operation != STATS_OPERATION and not req.query.get("api-version"):
                raise error(400, "MissingRequiredQueryParameter", ("QueryParameterName", "api-version"))
            with self.service.state.lock:
                return handler(req, *args)
        except ApiError as err:
            return self._responses.error(req, err)
        finally:
            self.service.engine.flush_stops()  # stopping waits for a process group: never under the lock


__all__ = ["BatchApi"]
