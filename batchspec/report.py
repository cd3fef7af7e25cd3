"""Formatting results for people and for machines: validation reports and plan listings.

Run progress has its own reporters in :mod:`batchspec.engine.reporters`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .display import json_safe, one_line, printable
from .errors import Diagnostic
from .plan import Plan
from .spec.values import format_duration


def console() -> Console:
    """A rich console on the current stdout (looked up at call time, for CliRunner)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def validation_text(results: Sequence[tuple[str, list[Diagnostic]]]) -> str:
    """One line per problem, then a summary line."""
    lines = [d.format() for _, diags in results for d in diags]
    bad = sum(1 for _, diags in results if diags)
    problems = sum(len(diags) for _, diags in results)
    files = len(results)
    noun = "file" if files == 1 else "files"
    if bad:
        lines.append(f"{problems} problem{'s' if problems != 1 else ''} in {bad} of {files} {noun}")
    else:
        lines.append(f"ok: {files} {noun} valid")
    return "\n".join(lines)


def validation_json(results: Sequence[tuple[str, list[Diagnostic]]]) -> str:
    """A JSON list of ``{file, line, column, path, message}``, one per problem."""
    return json_safe(json.dumps([d.as_dict() for _, diags in results for d in diags], indent=2, ensure_ascii=False))


def print_plan(plan: Plan, limit: int, out: Console, cost: Sequence[str] = ()) -> None:
    """The human summary of a plan: job, pool, task count, the ``cost`` lines (the estimate),
    and the first ``limit`` tasks."""
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
    out.print(f"[bold]tasks[/]  {len(plan.tasks)}")
    for line in cost:
        out.print(line, markup=False)
    for warning in plan.warnings:
        out.print(f"[yellow]warning:[/] {escape(printable(warning))}")
    if not plan.tasks:
        return
    table = Table(show_lines=False, pad_edge=False, expand=False)
    for column in ("task id", "command", "inputs", "outputs"):
        table.add_column(column, overflow="fold")
    for task in plan.tasks[:limit]:
        inputs = "\n".join(one_line(f.source if not f.container else f"{f.container}/{f.source}") for f in task.inputs)
        cells = (task.id, one_line(task.command), "\n".join(map(one_line, inputs.split("\n"))),
                 "\n".join(map(one_line, task.outputs)))
        table.add_row(*(Text(cell) for cell in cells))
    out.print(table)
    if len(plan.tasks) > limit:
        out.print(f"... and {len(plan.tasks) - limit} more")
