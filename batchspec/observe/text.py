"""Records, estimates and costs as text for a terminal: ``batchspec status``, the cost lines of
``batchspec plan`` and the usage line of the run summary."""

from __future__ import annotations

from ..spec.values import format_duration
from .pricing import Cost, Estimate, PriceLookup, cost, money
from .records import RunRecord, TaskRecord, Usage, counts, eta_seconds, usage, verdict

#: Tasks listed per group (running, failed) before "... and N more".
LIST_LIMIT = 20


def _task_line(task: TaskRecord, now: float) -> str:
    last = task.last
    where = f" on {last.where}" if last and last.where else ""
    tries = f" after {len(task.attempts)} attempts" if len(task.attempts) > 1 else ""
    if task.state == "running":
        since = f" for {format_duration(max(0.0, now - last.start))}" if last and last.start else ""
        attempt = f" (attempt {len(task.attempts)})" if len(task.attempts) > 1 else ""
        return f"  {task.id}{where}{since}{attempt}"
    code = f"exit code {task.exit_code}" if task.exit_code is not None else "no exit code"
    why = f": {task.reason}" if task.reason else ""
    return f"  {task.id} ({code}{tries}){where}{why}"


def status_text(record: RunRecord) -> str:
    c = counts(record)
    state = verdict(record)
    lines = [f"job {record.job_ids}: {state} ({record.backend} backend"
             + (f", job {record.jobs[0].state}" if record.backend != "local" else "")
             + (f", {record.source}" if record.source != "live" else "") + ")"]
    lines.append(f"tasks: {c.planned} planned: {c.succeeded} succeeded, {c.failed} failed, {c.running} running, "
                 f"{c.waiting} waiting" + (f", {c.interrupted} interrupted" if c.interrupted else ""))
    if c.attempts:
        lines.append(f"attempts: {c.attempts} ({c.retries} retries, {c.requeues} requeued after preemption)")
    if record.pool is not None:
        p = record.pool
        states: dict[str, int] = {}
        for node in record.nodes:
            states[node.state] = states.get(node.state, 0) + 1
        nodes = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no nodes"
        lines.append(f"pool {p.id}: {p.vm_size}, {p.state}, {p.dedicated} dedicated + {p.spot} spot nodes "
                     f"(target {p.target_dedicated} + {p.target_spot}): {nodes}")
        for node in record.nodes:
            if node.start_task and node.start_task.startswith("failed"):
                lines.append(f"  node {node.id}: start task {node.start_task} "
                             f"(batchspec logs SPEC --node {node.id})")
    now = record.observed
    for title, wanted in (("running", "running"), ("failed", "failed")):
        tasks = [t for t in record.tasks() if t.state == wanted]
        if tasks:
            lines.append(f"{title} ({len(tasks)}):")
            lines.extend(_task_line(t, now) for t in tasks[:LIST_LIMIT])
            if len(tasks) > LIST_LIMIT:
                lines.append(f"  ... and {len(tasks) - LIST_LIMIT} more")
    u = usage(record)
    if u.wall_seconds or u.busy_seconds:
        util = f", utilisation {u.utilisation:.0%}" if u.utilisation is not None else ""
        lines.append(f"time: {format_duration(u.wall_seconds)} wall, {format_duration(u.busy_seconds)} of task "
                     f"time{util}" + (f", {u.node_hours:.3g} node-hours" if record.nodes else ""))
    eta = eta_seconds(record)
    if eta is not None:
        lines.append(f"eta: {format_duration(eta)} at the rate tasks finished so far")
    lines.extend(f"note: {n}" for n in record.notes)
    if record.logs:
        lines.append(f"logs: {record.logs} (batchspec logs SPEC [TASK])")
    return "\n".join(lines)


def estimate_lines(est: Estimate, lookup: PriceLookup | None) -> list[str]:
    """The cost lines ``batchspec plan`` prints."""
    if est.task_seconds is None:
        return [f"cost   unknown: {est.basis}"]
    each = format_duration(est.task_seconds)
    if est.autoscale:
        time_text = (f"{est.tasks} tasks x {each} = {est.node_hours:.3g} node-hours at full use "
                     "(autoscale: the node count is the formula's)")
    else:
        assert est.wall_seconds is not None
        time_text = (f"{est.node_hours:.3g} node-hours ({est.dedicated_hours:.3g} dedicated + "
                     f"{est.spot_hours:.3g} spot): {est.tasks} tasks x {each} on the pool's slots take "
                     f"{format_duration(est.wall_seconds)}, plus node start-up")
    lines = [f"time   {time_text}", f"       task duration: {est.basis}"]
    if lookup is None:
        return lines
    price = lookup.price
    if price is None:
        lines.append(f"cost   {lookup.unknown()}")
        return lines
    result = cost(est.dedicated_hours, est.spot_hours, lookup)
    rates = ", ".join(f"{kind} {money(rate, price.currency)}/h" for kind, rate in
                      (("dedicated", price.dedicated), ("spot", price.spot)) if rate is not None)
    head = f"~{money(result.amount, result.currency)}" if result.amount is not None else result.detail
    lines.append(f"cost   {head} ({rates})")
    lines.append(f"       {price.describe()}" + (f" ({lookup.problem})" if lookup.problem else ""))
    return lines


def usage_line(record: RunRecord, spent: Cost | None) -> str:
    """The run summary's line on what the run used (and cost, on Azure)."""
    u: Usage = usage(record)
    util = f", utilisation {u.utilisation:.0%}" if u.utilisation is not None else ""
    if spent is None:  # local: slots on this machine, no bill
        return (f"used: {format_duration(u.busy_seconds)} of task time on {record.slots or '?'} slot(s) over "
                f"{format_duration(u.wall_seconds)}{util}; no Azure cost (ran on this machine)")
    money_text = (f"~{money(spent.amount, spent.currency)} ({spent.detail})" if spent.amount is not None
                  else spent.detail)
    return (f"used: {u.node_hours:.3g} node-hours ({u.dedicated_node_seconds / 3600:.3g} dedicated + "
            f"{u.spot_node_seconds / 3600:.3g} spot){util}; cost {money_text}")
