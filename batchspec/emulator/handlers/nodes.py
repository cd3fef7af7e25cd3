"""Compute nodes: list, get, reboot, reimage, disable and enable task scheduling."""

from __future__ import annotations

from batchspec.emulator import validation
from batchspec.emulator.errors import error, not_found
from batchspec.emulator.handlers.base import Resource, Route
from batchspec.emulator.protocol import Request, Response
from batchspec.emulator.store import Node, Pool
from batchspec.emulator.wire import NODE_ORDER, ordered

REBOOT_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")


class Nodes(Resource):
    def routes(self) -> list[Route]:
        return [
            Route("GET", "pools/{}/nodes", "list_nodes", self.list_nodes),
            Route("GET", "pools/{}/nodes/{}", "get_node", self.get_node),
            Route("POST", "pools/{}/nodes/{}/reboot", "reboot_node", self.reboot_node),
            Route("POST", "pools/{}/nodes/{}/reimage", "reimage_node", self.reimage_node),
            Route("POST", "pools/{}/nodes/{}/disablescheduling", "disable_node_scheduling", self.disable_scheduling),
            Route("POST", "pools/{}/nodes/{}/enablescheduling", "enable_node_scheduling", self.enable_scheduling),
        ]

    def node(self, pool_id: str, node_id: str) -> tuple[Pool, Node]:
        pool = self.pool(pool_id)
        node = pool.nodes.get(node_id)
        if node is None:
            raise not_found("Node")
        return pool, node

    def list_nodes(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        items = ((n.id, n.body) for n in sorted(pool.nodes.values(), key=lambda n: n.id))
        return self.listing(req, "nodes", items, f"pools/{pool.id}/nodes", NODE_ORDER)

    def get_node(self, req: Request, pool_id: str, node_id: str) -> Response:
        _pool, node = self.node(pool_id, node_id)
        obj = {"odata.metadata": f"{self.base}/$metadata#nodes/@Element", **ordered(node.body, NODE_ORDER)}
        return self.json(req, validation.select(obj, req.query.get("$select")))

    def _restart(self, req: Request, pool_id: str, node_id: str, action: str) -> Response:
        _pool, node = self.node(pool_id, node_id)
        if node.body["state"] in ("starting", "rebooting", "reimaging"):
            raise error(409, "NodeBeingRebooted" if node.body["state"] == "rebooting" else "NodeBeingStarted")
        spec = validation.json_body(req.body) if req.body.strip() else {}
        field = "nodeRebootOption" if action == "reboot" else "nodeReimageOption"
        option = validation.enum(field, spec.get(field), REBOOT_OPTIONS, "requeue")
        self.engine.reboot_node(node, option, reimage=action == "reimage")
        return self.done(req, 202, f"{node.body['url']}/{action}")

    def reboot_node(self, req: Request, pool_id: str, node_id: str) -> Response:
        return self._restart(req, pool_id, node_id, "reboot")

    def reimage_node(self, req: Request, pool_id: str, node_id: str) -> Response:
        return self._restart(req, pool_id, node_id, "reimage")

    def disable_scheduling(self, req: Request, pool_id: str, node_id: str) -> Response:
        _pool, node = self.node(pool_id, node_id)
        spec = validation.json_body(req.body) if req.body.strip() else {}
        option = validation.enum("nodeDisableSchedulingOption", spec.get("nodeDisableSchedulingOption"),
                                 ("requeue", "terminate", "taskcompletion"), "requeue")
        if node.body.get("schedulingState") == "disabled":
            raise error(409, "NodeAlreadyInTargetSchedulingState")
        node.body["schedulingState"] = "disabled"
        if option != "taskcompletion":
            self.engine.stop_node_tasks(node, option)
        self.state.touch()
        return self.done(req, 200, f"{node.body['url']}/disablescheduling")

    def enable_scheduling(self, req: Request, pool_id: str, node_id: str) -> Response:
        _pool, node = self.node(pool_id, node_id)
        if node.body.get("schedulingState") == "enabled":
            raise error(409, "NodeAlreadyInTargetSchedulingState")
        node.body["schedulingState"] = "enabled"
        self.state.touch()
        self.engine.wake()
        return self.done(req, 200, f"{node.body['url']}/enablescheduling")
