"""The run report: one self-contained HTML file, charts drawn as inline SVG.

Nothing is fetched (a Content-Security-Policy forbids it, so a browser reports any attempt) and
no script runs: the timeline, the histogram and their tooltips (SVG ``<title>``) are plain
markup, so the file opens offline, in a mail attachment or a CI artifact viewer, prints, and
stays small (a few KB plus ~150 bytes per task attempt).

Sections, after Nextflow's report and timeline: totals (tasks, attempts, wall and node time,
utilisation, data, cost); a timeline with one row per node or slot and one bar per task
attempt coloured by outcome; a histogram of attempt durations; failed tasks and the slowest
tasks with the tail of their stderr; the nodes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from html import escape

from ..spec.values import format_duration
from .pricing import Cost, PriceLookup, money
from .records import Attempt, RunRecord, TaskRecord, counts, span, usage, verdict

COLOURS = {
    "succeeded": "#2e9e5b",
    "failed": "#d64545",
    "retried": "#f0a030",
    "requeued": "#8e5bd6",
    "running": "#3b82f6",
    "interrupted": "#9aa0a6",
}
LABELS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "retried": "failed, retried",
    "requeued": "preempted, requeued",
    "running": "running",
    "interrupted": "interrupted",
}
WIDTH = 1100  # SVG user units; the SVG scales to the page width
LABEL_W = 150
ROW_H = 18
BAR_H = 12
SLOWEST = 10
NO_NODES = "the pool has no nodes now (deleted or scaled down): their time cannot be read"
TABLE_LIMIT = 200

_CSS = """
:root { --fg: #1f2328; --muted: #636c76; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); margin: 0; background: #fff; }
header { background: #24292f; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .sub { color: #c9d1d9; font-size: 13px; }
main { padding: 8px 28px 40px; max-width: 1400px; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.verdict { display: inline-block; padding: 1px 10px; border-radius: 12px; font-size: 13px; font-weight: 600;
           margin-left: 8px; vertical-align: middle; }
.v-succeeded { background: #2e9e5b; } .v-failed { background: #d64545; } .v-running { background: #3b82f6; }
.v-incomplete, .v-not-started { background: #9aa0a6; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; margin-top: 16px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; background: var(--bg); }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 600; margin: 2px 0; }
.card .d { color: var(--muted); font-size: 12px; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
svg .row-label { fill: var(--fg); }
svg .grid { stroke: #eaeef2; stroke-width: 1; }
svg .zebra { fill: #f6f8fa; }
svg .attempt { stroke: rgba(0,0,0,.25); stroke-width: .5; }
svg .badge { fill: #fff; font-weight: 700; font-size: 10px; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin: 6px 0 4px; font-size: 13px; }
.legend span::before { content: ""; display: inline-block; width: 12px; height: 12px; border-radius: 2px;
                       margin-right: 5px; vertical-align: -1px; background: var(--c); }
.note { color: var(--muted); font-size: 13px; margin: 6px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #0d1117; color: #e6edf3;
      padding: 8px 10px; border-radius: 4px; overflow-x: auto; margin: 4px 0 0; white-space: pre-wrap; }
details summary { cursor: pointer; color: var(--muted); }
footer { color: var(--muted); font-size: 12px; margin-top: 30px; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f}s" if seconds < 1 else format_duration(seconds)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _short(name: str, keep: int = 20) -> str:
    """A row label that fits: Batch node ids are 70 characters (tvmps_<hash>_d); the ends tell them apart."""
    return name if len(name) <= keep else f"{name[:9]}\u2026{name[-(keep - 10):]}"


def _natural(text: str) -> list[object]:
    """Sort key putting slot-2 before slot-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def render(record: RunRecord, *, cost: Cost | None, price: PriceLookup | None, generated: float) -> str:
    """The whole report as one HTML document."""
    state = verdict(record)
    title = f"batchspec report: {record.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may load from anywhere: the report must work offline, and a browser logs any attempt.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        "<header>",
        f'<h1>{_e(record.name)} <span class="verdict v-{state.replace(" ", "-")}">{_e(state)}</span></h1>',
        f'<div class="sub">job {_e(record.job_ids)} &middot; {_e(record.backend)} backend &middot; spec '
        f"<code>{_e(record.spec)}</code> &middot; generated {_e(_when(generated))}"
        + (f" &middot; {_e(record.source)}" if record.source != "live" else "") + "</div>",
        "</header><main>",
        _totals(record, cost, price),
        _timeline(record),
        _histogram(record),
        _failed(record),
        _slowest(record),
        _nodes(record),
        '<footer>Made by batchspec. Times are UTC; the timeline starts at the first attempt\'s start. '
        "Hover a bar for its task, attempt and timing.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


# --- totals -------------------------------------------------------------------------------------


def _card(key: str, value: str, detail: str = "") -> str:
    return (f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div>'
            f'<div class="d">{_e(detail)}</div></div>')


def _totals(record: RunRecord, cost: Cost | None, price: PriceLookup | None) -> str:
    c = counts(record)
    u = usage(record)
    window = span(record)
    ins = [t.input_bytes for t in record.tasks() if t.input_bytes is not None]
    outs = [t.output_bytes for t in record.tasks() if t.output_bytes is not None]
    cards = [
        _card("tasks", f"{c.succeeded + c.failed} of {c.planned} done",
              f"{c.succeeded} succeeded, {c.failed} failed, {c.running} running, {c.waiting} waiting"),
        _card("attempts", str(c.attempts), f"{c.retries} retries, {c.requeues} requeued (preempted)"),
        _card("wall time", _dur(u.wall_seconds if window else None),
              f"{_when(window[0])} to {_when(window[1])}" if window else "nothing ran yet"),
        _card("task time", _dur(u.busy_seconds), "sum of all attempts' run times"),
    ]
    util = f"utilisation {u.utilisation:.0%}" if u.utilisation is not None else "utilisation unknown"
    if record.nodes:
        cards.append(_card("node time", f"{u.node_hours:.3g} node-hours",
                           f"{u.dedicated_node_seconds / 3600:.3g} dedicated + {u.spot_node_seconds / 3600:.3g} spot; "
                           + util))
    elif record.billed:
        cards.append(_card("node time", "unknown", NO_NODES))
    else:
        slots = record.slots or "?"
        cards.append(_card("slot time", _dur(u.capacity_seconds), f"{slots} slots x wall time; {util}"))
    cards.append(_card("data", f"{_bytes(sum(ins)) if ins else '-'} in",
                       f"{_bytes(sum(outs)) if outs else '-'} out"))
    if not record.billed:
        cards.append(_card("cost", "none", "ran on this machine: no Azure nodes"))
    elif cost is None or cost.amount is None:
        cards.append(_card("cost", "unknown", cost.detail if cost else "no price was looked up"))
    else:
        source = price.price.describe() if price and price.price else ""
        stale = f" ({price.problem})" if price and price.problem else ""
        cards.append(_card("cost", money(cost.amount, cost.currency), f"{cost.detail}. {source}{stale}"))
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in record.notes)
    pool = ""
    if record.pool is not None:
        p = record.pool
        pool = (f'<p class="note">pool <code>{_e(p.id)}</code>: {_e(p.vm_size)}, {p.dedicated} dedicated + '
                f"{p.spot} spot nodes now ({_e(p.state)}), {p.slots_per_node} slot(s) per node</p>")
    return f'<div class="cards">{"".join(cards)}</div>{pool}{notes}'


# --- timeline -----------------------------------------------------------------------------------


_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)


def nice_step(raw: float) -> float:
    """A round step of at least ``raw`` seconds: 1-2-5 below a second, then clock steps."""
    if raw <= 0:
        return 1.0
    if raw >= 1:
        return float(next((s for s in _STEPS if s >= raw), 86400 * math.ceil(raw / 86400)))
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def seconds_label(value: float, step: float) -> str:
    """``value`` as precisely as ``step`` needs: 0.25s, 45s, 2:30, 1:02:00."""
    if step < 1:
        decimals = max(0, -math.floor(math.log10(step)))
        return f"{value:.{decimals}f}s"
    s = round(value)
    if s < 60 and step < 60:
        return f"{s}s"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _attempt_title(task: TaskRecord, a: Attempt) -> str:
    bits = [f"{task.id}", f"attempt {a.number} of {len(task.attempts)}: {LABELS.get(a.outcome, a.outcome)}",
            f"on {a.where}", f"start {_when(a.start)}"]
    if a.seconds is not None:
        bits.append(f"ran {format_duration(a.seconds)}")
    if a.exit_code is not None:
        bits.append(f"exit code {a.exit_code}")
    if a.reason:
        bits.append(a.reason)
    return "\n".join(bits)


def _timeline(record: RunRecord) -> str:
    window = span(record)
    placed = [(t, a) for t in record.tasks() for a in t.attempts if a.placed]
    unplaced = sum(1 for t in record.tasks() for a in t.attempts if not a.placed)
    head = '<h2>Timeline</h2>'
    legend = _legend(a.outcome for _, a in placed)
    if window is None or not placed:
        return head + '<p class="note">No attempt has started yet.</p>'
    start, end = window
    length = max(end - start, 1e-3)
    lane_of, lanes = _lanes(placed, record.observed)
    names = sorted({a.where for _, a in placed if a.where} | {n.id for n in record.nodes}, key=_natural)
    first_row: dict[str, int] = {}
    rows = 0
    for name in names:
        first_row[name] = rows
        rows += lanes.get(name, 1)
    top = 22
    height = top + rows * ROW_H + 8
    plot = WIDTH - LABEL_W - 10
    scale = plot / length
    out = [f'<svg id="timeline" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="Timeline: one row per node or slot, one bar per task attempt">']
    for i, name in enumerate(names):
        if i % 2:  # one band per node, however many slots it has
            out.append(f'<rect class="zebra" x="0" y="{top + first_row[name] * ROW_H}" width="{WIDTH}" '
                       f'height="{lanes.get(name, 1) * ROW_H}"/>')
    step = nice_step(length / 8)
    for i in range(int(length // step) + 1):
        x = LABEL_W + i * step * scale
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 8}"/>')
        out.append(f'<text x="{x:.1f}" y="{top - 8}" text-anchor="middle">{seconds_label(i * step, step)}</text>')
    for name in names:
        y = top + first_row[name] * ROW_H + ROW_H / 2 + 4
        out.append(f'<text class="row-label" x="{LABEL_W - 8}" y="{y:.1f}" text-anchor="end">{_e(_short(name))}'
                   f"<title>{_e(name)}</title></text>")
    badges = []
    for task, a in placed:
        assert a.start is not None and a.where is not None
        x = LABEL_W + (a.start - start) * scale
        stop = a.end if a.end is not None else record.observed
        w = max(1.5, (stop - a.start) * scale)
        y = top + (first_row[a.where] + lane_of[id(a)]) * ROW_H + (ROW_H - BAR_H) / 2
        out.append(
            f'<rect class="attempt o-{_e(a.outcome)}" data-task="{_e(task.id)}" data-attempt="{a.number}" '
            f'x="{x:.2f}" y="{y:.1f}" width="{w:.2f}" height="{BAR_H}" rx="2" fill="{COLOURS.get(a.outcome, "#888")}">'
            f"<title>{_e(_attempt_title(task, a))}</title></rect>")
        earlier = sum(1 for e in task.attempts if not e.placed)
        if earlier and a is task.last:  # drawn over every bar: a pill at the bar's start
            why = (f"{task.id}: {earlier} earlier attempt(s) without recorded times ({task.retries} retries, "
                   f"{task.requeues} requeued after preemption)")
            badges.append(
                f'<g class="earlier"><rect x="{x:.2f}" y="{y - 1:.1f}" width="22" height="{BAR_H + 2}" rx="6" '
                f'fill="{COLOURS["requeued"]}"/><text class="badge" x="{x + 11:.2f}" y="{y + BAR_H - 2:.1f}" '
                f'text-anchor="middle">+{earlier}<title>{_e(why)}</title></text></g>')
    out.extend(badges)
    out.append("</svg>")
    note = ""
    if unplaced:
        note = (f'<p class="note">{unplaced} earlier attempt(s) have no recorded times and are not drawn; '
                "a purple +N at the start of a task's last attempt counts them.</p>")
    return head + legend + "".join(out) + note


def _lanes(placed: list[tuple[TaskRecord, Attempt]], now: float) -> tuple[dict[int, int], dict[str, int]]:
    """Attempts that overlap on one node (several task slots) go to separate lanes: each attempt
    takes the first lane free when it starts. Returns each attempt's lane and each node's lanes."""
    by_node: dict[str, list[Attempt]] = {}
    for _, a in placed:
        by_node.setdefault(a.where or "", []).append(a)
    lane_of: dict[int, int] = {}
    lanes: dict[str, int] = {}
    for node, attempts in by_node.items():
        ends: list[float] = []
        for a in sorted(attempts, key=lambda a: a.start or 0.0):
            begin = a.start or 0.0
            lane = next((i for i, e in enumerate(ends) if e <= begin + 1e-6), len(ends))
            if lane == len(ends):
                ends.append(0.0)
            ends[lane] = a.end if a.end is not None else now
            lane_of[id(a)] = lane
        lanes[node] = max(1, len(ends))
    return lane_of, lanes


def _legend(outcomes: Iterable[str]) -> str:
    seen: dict[str, int] = {}
    for outcome in outcomes:
        seen[outcome] = seen.get(outcome, 0) + 1
    items = "".join(f'<span style="--c:{COLOURS[o]}">{_e(LABELS[o])} ({seen[o]})</span>'
                    for o in COLOURS if o in seen)
    return f'<div class="legend">{items}</div>'


# --- histogram ----------------------------------------------------------------------------------


def _histogram(record: RunRecord) -> str:
    finished = [(a.seconds, a.outcome) for t in record.tasks() for a in t.attempts
                if a.seconds is not None and a.outcome != "running"]
    head = "<h2>Attempt durations</h2>"
    if not finished:
        return head + '<p class="note">No attempt has finished yet.</p>'
    longest = max(s for s, _ in finished)
    # About 20 bins over the spread, but never finer than 1/50 of the longest: 0.3045s vs 0.3050s is noise.
    width = nice_step(max((longest - min(s for s, _ in finished)) / 20, longest / 50))
    low = math.floor(min(s for s, _ in finished) / width) * width
    bins = int((longest - low) // width) + 1
    counts_by_bin: list[dict[str, int]] = [{} for _ in range(bins)]
    for seconds, outcome in finished:
        i = min(bins - 1, int((seconds - low) // width))
        counts_by_bin[i][outcome] = counts_by_bin[i].get(outcome, 0) + 1
    tallest = max(sum(b.values()) for b in counts_by_bin)
    left, top, plot_h = 50, 10, 160
    plot_w = WIDTH - left - 40
    bar_w = plot_w / bins
    out = [f'<svg id="histogram" viewBox="0 0 {WIDTH} {top + plot_h + 40}" role="img" '
           f'aria-label="Histogram of attempt durations">']
    count_step = max(1, int(nice_step(tallest / 4))) if tallest > 4 else 1
    for n in range(0, tallest + 1, count_step):
        y = top + plot_h - n / tallest * plot_h
        out.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{n}</text>')
    for i, bucket in enumerate(counts_by_bin):
        y = top + plot_h
        lo, hi = low + i * width, low + (i + 1) * width
        for outcome, colour in COLOURS.items():
            n = bucket.get(outcome, 0)
            if not n:
                continue
            h = n / tallest * plot_h
            y -= h
            out.append(f'<rect class="bin o-{outcome}" x="{left + i * bar_w + 1:.2f}" y="{y:.2f}" '
                       f'width="{max(1.0, bar_w - 2):.2f}" height="{h:.2f}" fill="{colour}">'
                       f"<title>{n} attempt(s) {LABELS[outcome]}, {seconds_label(lo, width)} to "
                       f"{seconds_label(hi, width)}</title></rect>")
    label_step = max(width, nice_step(bins * width / 8))
    value = math.ceil(low / label_step - 1e-9) * label_step
    while value <= low + bins * width + 1e-9:
        x = left + (value - low) / width * bar_w
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                   f"{_e(seconds_label(value, label_step))}</text>")
        value += label_step
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 34}" text-anchor="middle">'
               f"attempt run time ({len(finished)} finished attempts)</text>")
    out.append("</svg>")
    return head + _legend(o for _, o in finished) + "".join(out)


# --- tables -------------------------------------------------------------------------------------


def _tail(task: TaskRecord, open_: bool) -> str:
    if not task.stderr_tail:
        return '<span class="note">no stderr</span>'
    body = _e("\n".join(task.stderr_tail))
    lines = "last line" if len(task.stderr_tail) == 1 else f"last {len(task.stderr_tail)} lines"
    return (f"<details{' open' if open_ else ''}><summary>{lines} of stderr</summary>"
            f"<pre>{body}</pre></details>")


def _failed(record: RunRecord) -> str:
    failed = [t for t in record.tasks() if t.state == "failed"]
    if not failed:
        return ""
    rows = []
    for i, t in enumerate(failed[:TABLE_LIMIT]):
        code = t.exit_code if t.exit_code is not None else "-"
        rows.append(f"<tr><td><code>{_e(t.id)}</code></td><td class=\"n\">{_e(code)}</td>"
                    f"<td class=\"n\">{len(t.attempts)}</td><td>{_e(t.reason or '')}{_tail(t, i < 5)}</td></tr>")
    more = f'<p class="note">... and {len(failed) - TABLE_LIMIT} more</p>' if len(failed) > TABLE_LIMIT else ""
    return (f"<h2>Failed tasks ({len(failed)})</h2><table id=\"failed\"><tr><th>task</th><th>exit code</th>"
            f"<th>attempts</th><th>why</th></tr>{''.join(rows)}</table>{more}")


def _slowest(record: RunRecord) -> str:
    timed = sorted((t for t in record.tasks() if t.seconds is not None), key=lambda t: t.seconds or 0.0,
                   reverse=True)[:SLOWEST]
    if not timed:
        return ""
    rows = []
    for t in timed:
        last = t.last
        assert last is not None
        rows.append(f"<tr><td><code>{_e(t.id)}</code></td><td class=\"n\">{_e(_dur(t.seconds))}</td>"
                    f"<td>{_e(last.where or '-')}</td><td>{_e(t.state)}</td><td class=\"n\">{len(t.attempts)}</td>"
                    f"<td>{_tail(t, False)}</td></tr>")
    return (f"<h2>Slowest tasks</h2><table id=\"slowest\"><tr><th>task</th><th>last attempt ran</th><th>on</th>"
            f"<th>state</th><th>attempts</th><th>stderr</th></tr>{''.join(rows)}</table>")


def _nodes(record: RunRecord) -> str:
    if not record.nodes:
        return ""
    rows = "".join(
        f"<tr><td><code>{_e(n.id)}</code></td><td>{'spot' if n.spot else 'dedicated'}</td><td>{_e(n.state)}</td>"
        f"<td>{_e(_when(n.allocated))}</td><td class=\"n\">{_e(n.tasks_run if n.tasks_run is not None else '-')}</td>"
        f"<td>{_e(n.start_task or '-')}</td></tr>"
        for n in sorted(record.nodes, key=lambda n: _natural(n.id))[:TABLE_LIMIT])
    return (f"<h2>Nodes ({len(record.nodes)})</h2><table id=\"nodes\"><tr><th>node</th><th>kind</th><th>state</th>"
            f"<th>joined</th><th>tasks run</th><th>start task</th></tr>{rows}</table>")
