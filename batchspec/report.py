"""Formatting results for people and for machines: validation reports and plan listings.

Run progress has its own reporters in :mod:`batchspec.engine.reporters`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .display import json_safe, one_line, printable
from .errors import Diagnostic
from .spec.values import format_duration

if TYPE_CHECKING:  # rich and the plan are imported by what prints them: `validate` needs neither
    from rich.console import Console

    from .plan import InputFile, Plan, PlannedTask, StagePlan
    from .spec import Param, Spec


def console() -> Console:
    """A rich console on the current stdout (looked up at call time, for CliRunner)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def validation_text(results: Sequence[tuple[str, list[Diagnostic]]]) -> str:
    """One line per problem (and warning), then a summary line."""
    lines = [d.format() for _, diags in results for d in diags]
    bad = sum(1 for _, diags in results if any(d.is_error for d in diags))
    problems = sum(1 for _, diags in results for d in diags if d.is_error)
    warnings = sum(1 for _, diags in results for d in diags if not d.is_error)
    files = len(results)
    noun = "file" if files == 1 else "files"
    also = f", and {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
    if bad:
        lines.append(f"{problems} problem{'s' if problems != 1 else ''} in {bad} of {files} {noun}{also}")
    else:
        lines.append(f"ok: {files} {noun} valid{also}")
    return "\n".join(lines)


def validation_json(results: Sequence[tuple[str, list[Diagnostic]]]) -> str:
    """A JSON list of ``{file, line, column, path, message}``, one per problem (warnings also
    have ``"severity": "warning"``)."""
    return json_safe(json.dumps([d.as_dict() for _, diags in results for d in diags], indent=2, ensure_ascii=False))


def _param_dict(param: Param) -> dict[str, object]:
    return {"name": param.name, "type": param.type, "default": param.default, "required": param.required,
            "choices": list(param.choices) if param.choices is not None else None,
            "minimum": param.minimum, "maximum": param.maximum, "description": param.description}


def params_json(spec: Spec) -> str:
    """The spec's parameters as a JSON list."""
    return json.dumps([_param_dict(p) for p in spec.params.values()], indent=2, ensure_ascii=False)


def print_params(spec: Spec, out: Console) -> None:
    """The spec's parameters as ``--help`` lists options: name, type and default, then meaning."""
    from rich.markup import escape

    if not spec.params:
        out.print(f"{escape(str(spec.path))} has no parameters")
        return
    for param in spec.params.values():
        default = "required" if param.required else f"default {json.dumps(param.default, ensure_ascii=False)}"
        about = f"{param.type}, {default}" if param.declared else f"{default}, any value"
        out.print(f"[bold]{escape(param.name)}[/] ({escape(about)})")
        notes = [param.description] if param.description else []
        if param.choices is not None:
            notes.append("one of: " + ", ".join(map(str, param.choices)))
        if param.minimum is not None:
            notes.append(f"at least {_number(param.minimum)}")
        if param.maximum is not None:
            notes.append(f"at most {_number(param.maximum)}")
        if notes:
            out.print("    " + escape("; ".join(notes)))
    out.print(f"set them with: batchspec run {escape(str(spec.path))} --set NAME=VALUE")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def container_text(plan: Plan) -> str:
    """Which image each stage's tasks run in, and what the pool's nodes pull as they start."""
    assert plan.pool.container is not None
    used: dict[str, list[str]] = {}
    for stage in plan.stages:
        if stage.container is not None:
            c = stage.container
            extra = "".join((f" {c.options}" if c.options else "", ", in the image's WORKDIR" if c.workdir == "image"
                             else ""))
            used.setdefault(c.image + extra, []).append(stage.name)
    parts = [f"{image} ({', '.join(names)})" if len(plan.stages) > 1 else image for image, names in used.items()]
    text = "tasks run in " + "; ".join(parts) if parts else "no task runs in an image"
    registries = [r.server for r in plan.pool.container.registries]
    text += f"; nodes pull {len(plan.pool.container.images)} image(s) as they start"
    return text + (f", logging in to {', '.join(registries)}" if registries else "")


def print_plan(plan: Plan, limit: int, out: Console, cost: Sequence[str] = ()) -> None:
    """The human summary of a plan: job, pool, stages, task count, the ``cost`` lines (the
    estimate), and the first ``limit`` tasks."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    pool = plan.pool
    if pool.autoscale:
        nodes = f"autoscale every {format_duration(pool.autoscale.interval_seconds)}"
    else:
        nodes = f"{pool.dedicated} dedicated + {pool.spot} spot"
    image = f"{pool.image.publisher}/{pool.image.offer}/{pool.image.sku}/{pool.image.version}"
    about = f"  ({plan.description})" if plan.description else ""
    out.print(f"[bold]job[/]    {escape(printable(plan.job_id + about))}")
    out.print(f"[bold]pool[/]   {escape(pool.id)}: {escape(pool.vm_size)}, {nodes} nodes, "
              f"{pool.task_slots_per_node} slot(s) per node, image {escape(image)}")
    if plan.params:
        out.print("[bold]params[/] " + escape(one_line(", ".join(f"{k}={v}" for k, v in plan.params.items()))))
    if pool.container is not None:
        out.print("[bold]images[/] " + escape(container_text(plan)))
    if plan.files:
        out.print("[bold]files[/]  every task gets " + escape(", ".join(_file_text(f) for f in plan.files)))
    if plan.env or plan.timeout_seconds:
        limit_text = f"wall-clock limit {format_duration(plan.timeout_seconds)}" if plan.timeout_seconds else ""
        env_text = ("env " + ", ".join(k for k, _ in plan.env)) if plan.env else ""
        out.print("[bold]job[/]    " + escape("; ".join(x for x in (env_text, limit_text) if x)))
    if len(plan.stages) > 1:
        out.print(f"[bold]stages[/] {len(plan.stages)}")
        for stage in plan.stages:
            out.print(f"  [bold]{escape(stage.name)}[/]: {escape(stage_text(stage))}")
            if stage.tasks is None:
                out.print(f"    command: {escape(stage.command)}")
            elif (waits := dependency_text(stage.tasks)) is not None:
                out.print(f"    waits through {escape(waits)}")
    later = " (later stages add theirs when they are known)" if not plan.complete else ""
    out.print(f"[bold]tasks[/]  {len(plan.tasks)}{later}")
    for line in cost:
        out.print(line, markup=False)
    for warning in plan.warnings:
        out.print(f"[yellow]warning:[/] {escape(printable(warning))}")
    if not plan.tasks:
        return
    table = Table(show_lines=False, pad_edge=False, expand=False)
    staged = len(plan.stages) > 1
    for column in ("task id", *(("stage",) if staged else ()), "command", "inputs", "outputs"):
        table.add_column(column, overflow="fold")
    for task in plan.tasks[:limit]:
        inputs = "\n".join(one_line(_file_text(f)) for f in task.inputs)
        outputs = "\n".join(one_line(o.pattern) + (f" ({o.when})" if o.when != "success" else "")
                            + (f" -> {one_line(o.to)}" if o.to else "") for o in task.outputs)
        stage_cell = (plan.stage_of(task).name,) if staged else ()
        table.add_row(*(Text(cell) for cell in (task.id, *stage_cell, one_line(task.command), inputs, outputs)))
    out.print(table)
    if len(plan.tasks) > limit:
        out.print(f"... and {len(plan.tasks) - limit} more")


def _file_text(f: InputFile) -> str:
    if f.kind == "blob":
        return f"{f.container}/{f.source}"
    if f.kind == "blobs":
        return f"{f.container}/{f.source}* -> {f.path or '.'}/"
    if f.kind == "output":
        return f"{f.stage}: {f.source}"
    if f.kind == "url":
        return f"{f.source} -> {f.path}"
    return f.source


def stage_text(stage: StagePlan) -> str:
    """How a stage fans out, what becomes of its outputs, and whether its tasks are known."""
    if stage.source is None:
        fan = "one task per input"
    else:
        which = f" matching {', '.join(stage.match)}" if stage.match else ""
        fan = {"file": f"one task per output file of {stage.source}{which}",
               "input": f"one task per input, over the outputs of {stage.source}{which} it led to",
               "all": f"one task over every output of {stage.source}{which}"}[stage.group]
    count = f"{len(stage.tasks)} task(s), " if stage.tasks is not None else ""
    known = "" if stage.tasks is not None else f"; known when {stage.source} has finished"
    kept = "published" if stage.publish else "kept for later stages only"
    return f"{count}{fan}; outputs {kept}{known}"


def dependency_text(tasks: Sequence[PlannedTask]) -> str | None:
    """How the stage's waiting is expressed on Azure Batch (its longest dependency list)."""
    from .plan.deps import longest

    found = longest(tasks)
    return found.describe() if found is not None else None
