"""Build the typed model from a document that passed validation (so its shape is trusted).

Every value comes from the document with the schema's defaults filled in
(:func:`~batchspec.spec.defaults.fill_defaults`); the few defaults computed from other values
(the output container from the name, a parameter's type from its default) are made here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .defaults import fill_defaults
from .document import Document, format_path
from .model import (
    Autoscale,
    Axis,
    Cleanup,
    Container,
    FileSource,
    Image,
    Inputs,
    Job,
    OutputRule,
    Outputs,
    Param,
    ParamType,
    Pool,
    PoolContainers,
    Registry,
    Scalar,
    Spec,
    Stage,
    StartTask,
    TaskBody,
)
from .validate import schema, templated_fields
from .values import default_container, parse_duration

#: Stage names of a spec written with `task` (and `merge`) instead of `stages`.
TASK_STAGE, MERGE_STAGE = "task", "merge"


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _seconds(text: str | None) -> int | None:
    return int(parse_duration(text)) if text else None


def value_type(value: Scalar) -> ParamType:
    """The parameter type of a value: the default type of a parameter declared without one."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _param(name: str, raw: Any) -> Param:
    if not isinstance(raw, dict):  # the short form: a default value, any scalar accepted
        return Param(name, value_type(raw), raw, False, None, "", None, None, declared=False)
    required = "default" not in raw
    default = raw.get("default")
    kind: ParamType = raw.get("type") or (value_type(default) if not required else "string")
    choices = tuple(raw["enum"]) if "enum" in raw else None
    return Param(name, kind, default, required, choices, raw.get("description", ""), raw.get("minimum"),
                 raw.get("maximum"), declared=True)


def _files(items: list[dict[str, Any]]) -> tuple[FileSource, ...]:
    return tuple(
        FileSource(f.get("path"), f.get("url"), f.get("container"), f["prefix"], f.get("to"), f.get("mode"))
        for f in items
    )


def _body(d: dict[str, Any]) -> TaskBody:
    outputs = tuple(
        OutputRule(o, "success", None) if isinstance(o, str) else OutputRule(o["path"], o["when"], o.get("to"))
        for o in d["outputs"]
    )
    expected = d.get("expected_duration")
    return TaskBody(d["command"], outputs, d.get("id"), d["retries"], _seconds(d.get("timeout")),
                    parse_duration(expected) if expected else None, dict(d["env"]), _files(d["files"]),
                    _container(d.get("container")))


def _container(raw: Any) -> Container | None:
    if raw is None:
        return None
    if isinstance(raw, str):  # the short form: just the image, with the mapping's defaults
        form = schema()["$defs"]["task"]["properties"]["container"]["properties"]
        raw = {"image": raw, "workdir": form["workdir"]["default"]}
    return Container(raw["image"], raw.get("options", ""), raw["workdir"])


def _pool_containers(raw: Any) -> PoolContainers | None:
    if raw is None:
        return None
    registries = tuple(Registry(r["server"], r.get("username_env"), r.get("password_env"), r.get("identity"))
                       for r in raw["registries"])
    return PoolContainers(tuple(raw["prefetch"]), registries)


def _axis(raw: Any) -> Axis:
    if isinstance(raw, list):
        return Axis(tuple(raw), None, None, "1", None, 0)
    text = {k: str(raw[k]) for k in ("start", "stop") if k in raw}
    return Axis(None, text.get("start"), text.get("stop"), str(raw["step"]), raw.get("range"), raw["pad"])


def _stages(d: dict[str, Any]) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    if "stages" in d:
        for i, s in enumerate(d["stages"]):
            source = s.get("from", stages[-1].name if stages else None)
            stages.append(Stage(s["name"], _body(s["task"]), source, s["group"], _tuple(s["match"]), s["publish"],
                                s["with_source"], f"$.stages[{i}].task"))
    else:
        stages.append(Stage(TASK_STAGE, _body(d["task"]), None, "file", (), True, False, "$.task"))
    if "merge" in d:
        stages.append(Stage(MERGE_STAGE, _body(d["merge"]), stages[-1].name, "all", (), True, False, "$.merge"))
    return tuple(stages)


def build_spec(doc: Document, path: Path) -> Spec:
    """The model of ``doc`` (which passed validation)."""
    d: dict[str, Any] = fill_defaults(doc.data, schema())
    pool_d = d["pool"]
    nodes = pool_d["nodes"]
    autoscale_d = pool_d.get("autoscale")
    start_d = pool_d.get("start_task")
    pool = Pool(
        id=pool_d["id"],
        vm_size=pool_d["vm_size"],
        image=Image(**pool_d["image"]),
        node_agent_sku=pool_d["node_agent_sku"],
        dedicated=nodes["dedicated"],
        spot=nodes["spot"],
        autoscale=(Autoscale(autoscale_d["formula"], int(parse_duration(autoscale_d["interval"])))
                   if autoscale_d else None),
        task_slots_per_node=pool_d["task_slots_per_node"],
        ready_timeout_seconds=parse_duration(pool_d["ready_timeout"]),
        start_task=(
            StartTask(start_d["command"], start_d["elevated"], start_d["wait_for_success"], start_d["retries"],
                      dict(start_d["env"]), _files(start_d["files"]))
            if start_d else None
        ),
        container=_pool_containers(pool_d.get("container")),
    )
    inputs_d = d.get("inputs")
    inputs = Inputs(
        paths=_tuple(inputs_d.get("path")),
        exclude=_tuple(inputs_d.get("exclude")),
        container=inputs_d.get("container"),
        prefix=inputs_d["prefix"],
        items=tuple(inputs_d["list"]) if "list" in inputs_d else None,
        allow_empty=inputs_d["allow_empty"],
    ) if inputs_d is not None else None
    name = d["name"]
    outputs_d = d["outputs"]
    outputs = Outputs(
        container=outputs_d.get("container", default_container(name)),
        download=outputs_d.get("download", f"out/{name}"),
    )
    job_d = d["job"]
    lines = {format_path(p): doc.template_line(p, 1) for p, *_ in templated_fields(doc.data)}
    lines |= {format_path(p): doc.position(p)[0] for p in (("inputs",), ("matrix",))}
    return Spec(
        path=path,
        name=name,
        description=d["description"],
        params={k: _param(k, v) for k, v in d["params"].items()},
        pool=pool,
        requires=tuple(d["requires"]),
        inputs=inputs,
        matrix={k: _axis(v) for k, v in d["matrix"].items()},
        files=_files(d["files"]),
        stages=_stages(d),
        job=Job(job_d.get("id"), dict(job_d["env"]), _seconds(job_d.get("timeout"))),
        outputs=outputs,
        cleanup=Cleanup(**d["cleanup"], pool_given="pool" in doc.data.get("cleanup", {})),
        lines=lines,
    )
