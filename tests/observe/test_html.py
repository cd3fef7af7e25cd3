"""The HTML report: self-contained, escaped, one bar per placed attempt, and what Chromium renders."""

from __future__ import annotations

import re
from pathlib import Path

from batchspec.observe.html import nice_step, render, seconds_label
from batchspec.observe.pricing import Cost, PriceLookup, VmPrice
from batchspec.observe.records import Attempt, JobRecord, NodeRecord, PoolRecord, RunRecord, TaskRecord
from tests.browser import Chromium, render_report

HOSTILE = '<script>alert("x")</script> & "quotes" \'apos\' <img src=http://example.invalid/x.png>'


def sample(n_tasks: int = 6) -> RunRecord:
    tasks = []
    for i in range(n_tasks):
        start = float(i * 3)
        attempt = Attempt(1, "succeeded", f"slot-{i % 2}", start, start + 2.5, 0)
        tasks.append(TaskRecord(f"ok-{i}", "succeeded", (attempt,), input_bytes=1000, output_bytes=500))
    tasks.append(TaskRecord(
        "bad-1", "failed",
        (Attempt(1, "retried", "slot-0", 1.0, 1.5, 1), Attempt(2, "requeued", "slot-1", 2.0, 2.2),
         Attempt(3, "failed", "slot-0", 3.0, 3.9, 1, HOSTILE)),
        exit_code=1, reason=HOSTILE, retries=1, requeues=1, stderr_tail=(HOSTILE, "second line")))
    tasks.append(TaskRecord("run-1", "running", (Attempt(1, "running", "slot-1", 20.0),)))
    job = JobRecord("job-<1>", "active", n_tasks + 2, tuple(tasks), created=0.0)
    return RunRecord(spec=f"specs/{HOSTILE}.yaml", name="demo", backend="local", jobs=(job,), active=True,
                     observed=25.0, logs="somewhere", slots=2)


def test_self_contained_and_escaped() -> None:
    page = render(sample(), cost=None, price=None, generated=30.0)
    assert "<script" not in page  # hostile text is escaped; the report itself has no script
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert not re.search(r"<[a-zA-Z][^>]*\s(src|href)\s*=", page)  # no element refers to anything
    assert "default-src 'none'" in page  # and a browser would refuse if there were
    assert page.count('class="attempt ') == 6 + 3 + 1
    assert page.count('class="attempt o-retried"') == 1 and page.count('class="attempt o-requeued"') == 1
    assert "waiting" in page and "job-&lt;1&gt;" in page


def test_an_empty_run_and_unplaced_attempts() -> None:
    empty = RunRecord("s", "n", "azure", (JobRecord("j", "active", 3),), True, 0.0)
    page = render(empty, cost=None, price=None, generated=0.0)
    assert "No attempt has started yet" in page and "No attempt has finished yet" in page
    earlier = (Attempt(1, "retried"), Attempt(2, "retried"), Attempt(3, "failed", "tvmps_" + "a" * 64 + "_d", 1, 2, 1))
    task = TaskRecord("t", "failed", earlier, retries=2)
    record = RunRecord("s", "n", "azure", (JobRecord("j", "completed", 1, (task,)),), False, 5.0,
                       nodes=(NodeRecord("tvmps_" + "a" * 64 + "_d", "idle", allocated=0.0),),
                       pool=PoolRecord("p", "standard_a1_v2", "steady", 1), billed=True)
    price = PriceLookup(VmPrice("Standard_A1_v2", "westeurope", "Linux", "USD", 0.043, 0.0091, "2024-05-01",
                                "2025-02-03", "prices.azure.com"))
    page = render(record, cost=Cost(0.0123, "USD", "1 dedicated node-h"), price=price, generated=6.0)
    assert page.count('class="attempt ') == 1 and ">+2<title>" in page
    assert "tvmps_aaa\u2026aaaaaaaa_d" in page  # a long node id, shortened, whole in its tooltip
    assert "0.0123 USD" in page and "effective 2024-05-01; fetched 2025-02-03 from prices.azure.com" in page


def test_axis_steps_and_labels() -> None:
    assert nice_step(0.15) == 0.2 and nice_step(7) == 10 and nice_step(50) == 60 and nice_step(4000) == 7200
    assert seconds_label(0.4, 0.2) == "0.4s" and seconds_label(30, 10) == "30s"
    assert seconds_label(150, 60) == "2:30" and seconds_label(3720, 600) == "1:02:00"


def test_chromium_renders_every_bar_without_errors(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(render(sample(), cost=None, price=None, generated=30.0))
    page = render_report(path)
    assert page.console_errors == []
    assert page.bars == 10
    assert HOSTILE in page.text_of("#failed")  # shown as text, not run
    assert "6 succeeded, 1 failed, 1 running, 0 waiting" in page.text_of(".cards")


def test_the_error_probe_sees_console_errors_and_blocked_loads(tmp_path: Path) -> None:
    """The browser check must be able to fail: a page that logs an error and tries to fetch."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                   "content=\"default-src 'none'; script-src 'unsafe-inline'\"></head><body>"
                   "<img src=\"http://127.0.0.1:9/x.png\"><script>console.error('boom')</script></body></html>")
    browser = Chromium()
    try:
        browser.open(bad.as_uri())
        errors = browser.errors()
    finally:
        browser.close()
    assert any("boom" in e for e in errors)
    assert any("Content Security Policy" in e for e in errors), errors


def test_overlapping_attempts_on_one_node_get_their_own_lanes() -> None:
    tasks = tuple(TaskRecord(f"t{i}", "succeeded", (Attempt(1, "succeeded", "node-1", s, e, 0),))
                  for i, (s, e) in enumerate([(0, 10), (1, 5), (6, 9), (10, 12)]))
    record = RunRecord("s", "n", "azure", (JobRecord("j", "completed", 4, tasks),), False, 12.0,
                       nodes=(NodeRecord("node-1", "idle", allocated=0.0),), billed=True,
                       pool=PoolRecord("p", "standard_a1_v2", "steady", 1, slots_per_node=2))
    page = render(record, cost=None, price=None, generated=12.0)
    ys = {task: float(y) for task, y in re.findall(r'data-task="(t\d)" data-attempt="1" x="[\d.]+" y="([\d.]+)"', page)}
    assert ys["t0"] == ys["t3"] != ys["t1"] == ys["t2"]  # t1 and t2 ran beside t0 in the node's second slot
