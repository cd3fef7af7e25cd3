"""Account-level operations the emulator adds: its own request and fault counts."""

from __future__ import annotations

from batchspec.emulator.faults import FaultInjector
from batchspec.emulator.handlers.base import Resource, Route, Service
from batchspec.emulator.protocol import Request, Response

STATS_OPERATION = "batchspec_stats"


class Account(Resource):
    def __init__(self, service: Service, faults: FaultInjector) -> None:
        super().__init__(service)
        self.faults = faults

    def routes(self) -> list[Route]:
        return [Route("GET", "batchspec/stats", STATS_OPERATION, self.get_stats)]

    def get_stats(self, req: Request) -> Response:
        return self.json(req, {"requests": self.service.stats.snapshot(), "faults": dict(self.faults.counts)})
