"""Specs: load a YAML/JSON file, validate it, and build the typed model.

``load_spec(path)`` is the one entry point the rest of batchspec uses; ``validate_file`` and
``discover`` serve ``batchspec validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .document import Document, format_path
from .model import Autoscale, Cleanup, Image, Inputs, Outputs, Pool, Spec, StartTask, Task
from .validate import discover, load_document, schema, templated_fields, validate_file, validate_files
from .values import parse_duration

__all__ = ["Spec", "discover", "load_spec", "schema", "validate_file", "validate_files"]


def load_spec(path: Path) -> Spec:
    """Load, validate and model the spec at ``path``; raises SpecError listing every problem."""
    doc = load_document(path)
    return build_spec(doc, path)


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def build_spec(doc: Document, path: Path) -> Spec:
    """The model of a document that passed validation (so its shape is trusted)."""
    d: dict[str, Any] = doc.data
    pool_d = d["pool"]
    nodes = pool_d.get("nodes") or {}
    autoscale_d = pool_d.get("autoscale")
    start_d = pool_d.get("start_task")
    pool = Pool(
        id=pool_d["id"],
        vm_size=pool_d["vm_size"],
        image=Image(**pool_d["image"]),
        node_agent_sku=pool_d["node_agent_sku"],
        dedicated=nodes.get("dedicated", 0),
        spot=nodes.get("spot", 0),
        autoscale=(
            Autoscale(autoscale_d["formula"], int(parse_duration(autoscale_d.get("interval", "15m"))))
            if autoscale_d
            else None
        ),
        task_slots_per_node=pool_d.get("task_slots_per_node", 1),
        ready_timeout_seconds=parse_duration(pool_d.get("ready_timeout", "30m")),
        start_task=(
            StartTask(
                command=start_d["command"],
                elevated=start_d.get("elevated", False),
                wait_for_success=start_d.get("wait_for_success", True),
                retries=start_d.get("retries", 0),
                env=dict(start_d.get("env", {})),
            )
            if start_d
            else None
        ),
    )
    inputs_d = d["inputs"]
    inputs = Inputs(
        paths=_tuple(inputs_d.get("path")),
        exclude=_tuple(inputs_d.get("exclude")),
        container=inputs_d.get("container"),
        prefix=inputs_d.get("prefix", ""),
        items=tuple(inputs_d["list"]) if "list" in inputs_d else None,
        allow_empty=inputs_d.get("allow_empty", False),
    )
    task_d = d["task"]
    timeout = task_d.get("timeout")
    task = Task(
        command=task_d["command"],
        outputs=tuple(task_d.get("outputs", ())),
        id=task_d.get("id"),
        retries=task_d.get("retries", 0),
        timeout_seconds=int(parse_duration(timeout)) if timeout else None,
        env=dict(task_d.get("env", {})),
    )
    name = d["name"]
    outputs_d = d.get("outputs", {})
    outputs = Outputs(
        container=outputs_d.get("container", f"{name.lower().replace('_', '-')}-output"),
        download=outputs_d.get("download", f"out/{name}"),
    )
    lines = {format_path(p): doc.template_line(p, 1) for p, *_ in templated_fields(d)}
    lines |= {format_path(p): doc.position(p)[0] for p in (("inputs",), ("matrix",))}
    return Spec(
        path=path,
        name=name,
        description=d.get("description", ""),
        params=dict(d.get("params", {})),
        pool=pool,
        requires=tuple(d.get("requires", ())),
        inputs=inputs,
        matrix={k: tuple(v) for k, v in d.get("matrix", {}).items()},
        task=task,
        job_id=d.get("job", {}).get("id"),
        outputs=outputs,
        cleanup=Cleanup(**d.get("cleanup", {}), pool_given="pool" in d.get("cleanup", {})),
        expected_task_seconds=parse_duration(task_d["expected_duration"]) if "expected_duration" in task_d else None,
        lines=lines,
    )


__all__ += ["Autoscale", "Cleanup", "Image", "Inputs", "Outputs", "Pool", "StartTask", "Task", "build_spec"]
