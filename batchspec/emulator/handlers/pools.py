"""Pools: create, get, list, exists, update, replace properties, delete, resize and stop resize,
autoscale (enable, disable, evaluate), remove nodes, and the account's node counts."""

from __future__ import annotations

import uuid

from batchspec.emulator import autoscaling, validation
from batchspec.emulator.errors import error, missing_property
from batchspec.emulator.handlers.base import Resource, Route
from batchspec.emulator.protocol import Request, Response
from batchspec.emulator.store import Pool, key
from batchspec.emulator.wire import POOL_ORDER, Json, etag, iso, ordered

NODE_COUNT_STATES = (
    "creating", "deallocated", "deallocating", "idle", "leavingPool", "offline", "preempted", "rebooting",
    "reimaging", "running", "starting", "startTaskFailed", "unusable", "unknown", "upgradingOS", "waitingForStartTask",
)
DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")


class Pools(Resource):
    def routes(self) -> list[Route]:
        return [
            Route("GET", "pools", "list_pools", self.list_pools),
            Route("POST", "pools", "create_pool", self.create_pool),
            Route("GET", "pools/{}", "get_pool", self.get_pool),
            Route("HEAD", "pools/{}", "pool_exists", self.pool_exists),
            Route("DELETE", "pools/{}", "delete_pool", self.delete_pool),
            Route("PATCH", "pools/{}", "update_pool", self.update_pool),
            Route("POST", "pools/{}/updateproperties", "replace_pool_properties", self.replace_pool_properties),
            Route("POST", "pools/{}/resize", "resize_pool", self.resize_pool),
            Route("POST", "pools/{}/stopresize", "stop_pool_resize", self.stop_pool_resize),
            Route("POST", "pools/{}/enableautoscale", "enable_pool_auto_scale", self.enable_pool_auto_scale),
            Route("POST", "pools/{}/disableautoscale", "disable_pool_auto_scale", self.disable_pool_auto_scale),
            Route("POST", "pools/{}/evaluateautoscale", "evaluate_pool_auto_scale", self.evaluate_pool_auto_scale),
            Route("POST", "pools/{}/removenodes", "remove_nodes", self.remove_nodes),
            Route("GET", "nodecounts", "list_pool_node_counts", self.list_pool_node_counts),
        ]

    def new_pool(self, pool_id: str, spec: Json, auto_for_job: str | None = None) -> Pool:
        """Create a pool (from a create request or a job's auto pool specification)."""
        windows = "windows" in str((spec.get("virtualMachineConfiguration") or {}).get("nodeAgentSKUId", "")).lower()
        parts = validation.pool_spec(spec, windows)
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
        configuration = (spec.get("virtualMachineConfiguration") or {}).get("containerConfiguration")
        logins = validation.container_configuration(configuration)[1] if configuration is not None else ()
        pool = Pool(body=ordered(body, POOL_ORDER), seq=self.state.next_seq(), auto_for_job=auto_for_job,
                    logins=logins)
        self.state.pools[pool.key] = pool
        self.state.touch()
        self.engine.new_pool(pool)
        return pool

    def create_pool(self, req: Request) -> Response:
        spec = validation.json_body(req.body)
        pool_id = validation.check_id("id", spec.get("id"))
        if key(pool_id) in self.state.pools:
            raise error(409, "PoolExists")
        pool = self.new_pool(pool_id, spec)
        return self.done(req, 201, pool.body["url"], pool.body, location=True)

    def auto_pool(self, spec: Json, job_key: str | None) -> str:
        """An auto pool for a job: created under a generated (upper-case GUID) id."""
        pool_id = str(uuid.uuid4()).upper()
        self.new_pool(pool_id, spec, auto_for_job=job_key)
        return pool_id

    def list_pools(self, req: Request) -> Response:
        items = ((p.key, p.body) for p in self.state.sorted_pools())
        return self.listing(req, "pools", items, "pools", POOL_ORDER)

    def get_pool(self, req: Request, pool_id: str) -> Response:
        return self.entity(req, "pools", self.pool(pool_id).body, POOL_ORDER)

    def pool_exists(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        return Response(200, self.common(req) + self.version_headers(pool.body))

    def delete_pool(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        self.pool_accepts_changes(pool)
        self.engine.delete_pool(pool)
        return self.done(req, 202)

    def update_pool(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        self.pool_accepts_changes(pool)
        spec = validation.json_body(req.body)
        body = pool.body
        if spec.get("startTask") is not None:
            body["startTask"] = validation.start_task(spec["startTask"])
        for name in ("metadata", "applicationPackageReferences", "certificateReferences",
                     "targetNodeCommunicationMode"):
            if spec.get(name) is not None:
                body[name] = spec[name]
        self.stamp(body)
        return self.done(req, 200, body["url"], body)

    def replace_pool_properties(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        self.pool_accepts_changes(pool)
        spec = validation.json_body(req.body)
        body = pool.body
        for name in ("certificateReferences", "applicationPackageReferences", "metadata"):
            if spec.get(name) is None:
                raise missing_property(name)
        if spec.get("startTask") is not None:
            body["startTask"] = validation.start_task(spec["startTask"])
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
        self.stamp(body)
        return self.done(req, 204, f"{body['url']}/updateproperties", body)

    def _steady_manual_pool(self, pool: Pool) -> None:
        self.pool_accepts_changes(pool)
        if pool.body.get("enableAutoScale"):
            raise error(409, "OperationInvalidForCurrentState",
                        ("Reason", "Autoscale is enabled on the pool: disable it before resizing."))

    def resize_pool(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        self._steady_manual_pool(pool)
        if pool.body.get("allocationState") != "steady":
            raise error(409, "PoolBeingResized")
        spec = validation.json_body(req.body)
        dedicated = validation.int_("targetDedicatedNodes", spec.get("targetDedicatedNodes"), 0, 0)
        low = validation.int_("targetLowPriorityNodes", spec.get("targetLowPriorityNodes"), 0, 0)
        if spec.get("resizeTimeout") is not None:
            validation.normalized_duration("resizeTimeout", spec["resizeTimeout"])
        option = validation.enum("nodeDeallocationOption", spec.get("nodeDeallocationOption"),
                                 DEALLOCATION_OPTIONS, "requeue")
        self.engine.resize_pool(pool, dedicated, low, option)
        self.stamp(pool.body)
        return self.done(req, 202, f"{pool.body['url']}/resize", pool.body)

    def stop_pool_resize(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        self.pool_accepts_changes(pool)
        self.engine.stop_resize(pool)
        return self.done(req, 202, f"{pool.body['url']}/stopresize", pool.body)

    def remove_nodes(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        self._steady_manual_pool(pool)
        spec = validation.json_body(req.body)
        ids = validation.list_("nodeList", spec.get("nodeList"))
        if not ids:
            raise missing_property("nodeList")
        if len(ids) > 100:
            raise error(400, "InvalidPropertyValue", ("PropertyName", "nodeList"),
                        ("Reason", "At most 100 nodes can be removed in one request."))
        nodes = []
        for node_id in ids:
            node = pool.nodes.get(str(node_id))
            if node is None:
                raise error(404, "NodeNotFound")
            nodes.append(node)
        option = validation.enum("nodeDeallocationOption", spec.get("nodeDeallocationOption"),
                                 DEALLOCATION_OPTIONS, "requeue")
        self.engine.remove_nodes(pool, nodes, option)
        self.stamp(pool.body)
        return self.done(req, 202, f"{pool.body['url']}/removenodes", pool.body)

    def enable_pool_auto_scale(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        self.pool_accepts_changes(pool)
        spec = validation.json_body(req.body)
        body = pool.body
        if not spec.get("autoScaleFormula") and not spec.get("autoScaleEvaluationInterval"):
            raise missing_property("autoScaleFormula")
        formula = validation.autoscale_formula(spec.get("autoScaleFormula") or body.get("autoScaleFormula"))
        interval = validation.autoscale_interval(
            spec.get("autoScaleEvaluationInterval") or body.get("autoScaleEvaluationInterval")
        )
        body["enableAutoScale"] = True
        body["autoScaleFormula"] = formula
        body["autoScaleEvaluationInterval"] = interval
        pool.body = ordered(body, POOL_ORDER)
        self.engine.enable_autoscale(pool)
        self.stamp(pool.body)
        return self.done(req, 200, f"{pool.body['url']}/enableautoscale", pool.body)

    def disable_pool_auto_scale(self, req: Request, pool_id: str) -> Response:
        pool = self.pool(pool_id)
        self.pool_accepts_changes(pool)
        body = pool.body
        body["enableAutoScale"] = False
        for name in ("autoScaleFormula", "autoScaleEvaluationInterval", "autoScaleRun"):
            body.pop(name, None)
        self.engine.disable_autoscale(pool)
        ticks = self.stamp(body)
        body["allocationStateTransitionTime"] = iso(ticks)
        return self.done(req, 200, f"{body['url']}/disableautoscale", body)

    def evaluate_pool_auto_scale(self, req: Request, pool_id: str) -> Response:
        """Evaluate a formula against the pool without applying it (the pool must autoscale)."""
        pool = self.pool(pool_id)
        spec = validation.json_body(req.body)
        formula = validation.autoscale_formula(spec.get("autoScaleFormula"))
        if not pool.body.get("enableAutoScale"):
            raise error(409, "OperationInvalidForCurrentState",
                        ("Reason", "Autoscale is not enabled on the pool: enable it before evaluating a formula."))
        run, _ = autoscaling.evaluate(formula, self.engine.autoscale_context(pool), self.state.clock.ticks())
        obj = {"odata.metadata": f"{self.base}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.AutoScaleRun", **run}
        return self.json(req, obj, [("DataServiceId", f"{pool.body['url']}/evaluateautoscale")])

    def list_pool_node_counts(self, req: Request) -> Response:
        wire_names = {s.lower(): s for s in NODE_COUNT_STATES}
        value = []
        for pool in self.state.sorted_pools():
            entry: Json = {"poolId": pool.id}
            for dedicated, name in ((True, "dedicated"), (False, "lowPriority")):
                counts = dict.fromkeys(NODE_COUNT_STATES, 0)
                for node in pool.nodes.values():
                    if node.dedicated == dedicated:
                        counts[wire_names.get(str(node.body["state"]), "unknown")] += 1
                counts["total"] = sum(counts.values())
                entry[name] = counts
            value.append(entry)
        return self.json(req, {"odata.metadata": f"{self.base}/$metadata#poolnodecounts", "value": value})
