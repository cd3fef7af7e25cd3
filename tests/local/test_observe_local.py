"""Seeing a local run from a fresh terminal: status, logs (with attempts and --follow), the
report in a real browser, the cost estimate from the last run, and state.db migration."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batchspec.cli import cli
from tests.browser import render_report
from tests.media import make_mp4
from tests.prices import PriceServer

from .conftest import SpecWriter, make_inputs

pytestmark = pytest.mark.e2e

#: Fails every attempt on inputs named bad*, saying which attempt it is (the count lives in the task dir).
COMMAND = ("n=$(( $(cat \"$AZ_BATCH_TASK_DIR/count\" 2>/dev/null || echo 0) + 1 )); "
           "echo $n > \"$AZ_BATCH_TASK_DIR/count\"; echo \"out of <<name>> try $n\"; "
           "case <<name>> in bad*) echo \"boom on try $n\" >&2; exit 7;; esac; cp <<input>> <<stem>>.out")


def cli_run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def run_with_a_failure(tmp_path: Path, write_spec: SpecWriter) -> Path:
    make_inputs(tmp_path, ["a.txt", "b-good.txt", "bad.txt"])
    spec = write_spec(COMMAND, outputs=["<<stem>>.out"], retries=2)
    result = cli_run("run", str(spec), "--slots", "2")
    assert result.exit_code == 1, result.output
    return spec


def test_status_logs_and_report_after_a_run(tmp_path: Path, write_spec: SpecWriter) -> None:
    spec = run_with_a_failure(tmp_path, write_spec)

    status = cli_run("status", str(spec))
    assert status.exit_code == 1, status.output  # done, with a failure
    assert "tasks: 3 planned: 2 succeeded, 1 failed, 0 running, 0 waiting" in status.output
    assert "attempts: 5 (2 retries" in status.output
    assert re.search(r"bad-\w+ \(exit code 7 after 3 attempts\) on slot-\d", status.output)

    record = json.loads(cli_run("status", str(spec), "--format", "json").output)
    assert record["verdict"] == "failed" and record["slots"] == 2
    bad = next(t for t in record["jobs"][0]["tasks"] if t["id"].startswith("bad-"))
    assert [a["outcome"] for a in bad["attempts"]] == ["retried", "retried", "failed"]
    assert [a["exit_code"] for a in bad["attempts"]] == [7, 7, 7]
    assert all(a["start"] <= a["end"] and a["where"].startswith("slot-") for a in bad["attempts"])
    good = next(t for t in record["jobs"][0]["tasks"] if t["id"].startswith("a-"))
    assert good["input_bytes"] == 2 and good["output_bytes"] == 2 and good["state"] == "succeeded"

    failed_logs = cli_run("logs", str(spec))  # no TASK: every failed task's logs
    assert failed_logs.exit_code == 0
    assert "==> bad-" in failed_logs.output and "boom on try 3" in failed_logs.output
    assert "boom on try 1" not in failed_logs.output  # the last attempt's, not the whole file
    first = cli_run("logs", str(spec), "bad", "--attempt", "1", "--stream", "stderr")
    assert first.output == "boom on try 1\n"
    second = cli_run("logs", str(spec), "bad", "--attempt", "2", "--stream", "stdout")
    assert second.output == "out of bad.txt try 2\n"
    no_such = cli_run("logs", str(spec), "bad", "--attempt", "4")
    assert no_such.exit_code == 2 and "has attempts 1-3" in no_such.output
    typo = cli_run("logs", str(spec), "bda")
    assert typo.exit_code == 2 and "has no task 'bda'" in typo.output
    ambiguous = cli_run("logs", str(spec), "b")
    assert ambiguous.exit_code == 2 and "matches 2 tasks" in ambiguous.output

    out = tmp_path / "r.html"
    report = cli_run("report", str(spec), "-o", str(out))
    assert report.exit_code == 0 and report.output.strip() == f"report: {out}"
    page = render_report(out)
    assert page.console_errors == []
    assert page.bars == 5  # one bar per attempt: 1 + 1 + 3
    assert "boom on try 3" in page.text_of("#failed")
    assert "5 retries" not in page.text_of(".cards") and "2 retries" in page.text_of(".cards")
    assert "no Azure nodes" in page.text_of(".cards")
    assert page.histogram_bins >= 1


def test_the_run_writes_a_report_and_says_where_logs_are(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt", "bad.txt"])
    spec = write_spec(COMMAND, outputs=["<<stem>>.out"], retries=1)
    result = cli_run("run", str(spec))
    assert result.exit_code == 1
    report = re.search(r"^report: (.+)$", result.output, re.M)
    assert report and Path(report.group(1)).is_file()
    logs = re.search(r"^logs: (.+) \(batchspec logs SPEC \[TASK\]\)$", result.output, re.M)
    assert logs and "stdout.txt and stderr.txt" in logs.group(1)
    assert re.search(r"^used: [\d.]+s of task time on \d+ slot\(s\) over", result.output, re.M)
    page = render_report(Path(report.group(1)))
    assert page.bars == 3 and page.console_errors == []


def test_status_and_follow_from_another_terminal_while_running(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["slow.txt"])
    spec = write_spec("for i in 1 2 3 4; do echo tick $i; sleep 0.4; done", outputs=[])
    run = subprocess.Popen([sys.executable, "-m", "batchspec", "run", str(spec)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            status = cli_run("status", str(spec))
            if "running (1):" in status.output or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status.exit_code == 3, status.output
        assert re.search(r"slow-\w+ on slot-0 for [\d.]+s", status.output)
        follow = cli_run("logs", str(spec), "slow", "--stream", "stdout", "--follow")
        assert follow.exit_code == 0
        assert follow.output == "tick 1\ntick 2\ntick 3\ntick 4\n"  # followed to the end, nothing twice
    finally:
        run.wait(timeout=30)
    assert cli_run("status", str(spec)).exit_code == 0


def test_a_killed_run_is_not_running(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["one.txt"])
    spec = write_spec("sleep 30", outputs=[])
    run = subprocess.Popen([sys.executable, "-m", "batchspec", "run", str(spec)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while "running (1):" not in cli_run("status", str(spec)).output and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the runner and its task, as a power cut would
        run.wait()
    status = cli_run("status", str(spec))
    assert status.exit_code == 1, status.output  # not 3: nothing holds the run's lock any more
    assert "incomplete" in status.output and "1 interrupted" in status.output


def test_never_run(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write_spec("true", outputs=[])
    status = cli_run("status", str(spec))
    assert status.exit_code == 2 and "no run of this spec found" in status.output
    report = cli_run("report", str(spec))
    assert report.exit_code == 2 and "no run of job" in report.output
    assert not (tmp_path / ".batchspec").exists()  # looking never creates anything


def test_state_db_from_before_attempts_is_read_and_migrated(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt"])
    spec = write_spec("cp <<input>> <<stem>>.out", outputs=["<<stem>>.out"])
    assert cli_run("run", str(spec)).exit_code == 0
    job_dir = next((tmp_path / ".batchspec").glob("job-*"))
    db = sqlite3.connect(job_dir / "state.db")
    db.execute("DROP TABLE attempts")  # as an older batchspec left it
    db.execute("DROP TABLE runs")
    db.commit()
    db.close()
    (job_dir / "record.json").unlink()

    record = json.loads(cli_run("status", str(spec), "--format", "json").output)
    tasks = record["jobs"][0]["tasks"]
    assert [t["state"] for t in tasks] == ["succeeded", "succeeded"]
    assert all(len(t["attempts"]) == 1 and t["attempts"][0]["where"] is None for t in tasks)

    assert cli_run("run", str(spec)).exit_code == 0  # resumes: both done; the tables come back, migrated
    db = sqlite3.connect(job_dir / "state.db")
    rows = db.execute("SELECT task_id, slot, outcome FROM attempts ORDER BY task_id").fetchall()
    db.close()
    assert [(r[1], r[2]) for r in rows] == [(None, "succeeded"), (None, "succeeded")]


def test_plan_estimates_from_the_last_run_and_prices_it(tmp_path: Path, write_spec: SpecWriter,
                                                       prices: PriceServer) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt", "c.txt"])
    spec = write_spec("sleep 0.2", outputs=[])
    env = {"BATCHSPEC_PRICES_URL": prices.url, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    before = cli_run("plan", str(spec), "--region", "westeurope", env=env)
    assert "cost   unknown: no task duration known: set task.expected_duration, or run the spec once" \
        in before.output
    assert prices.requests == []  # nothing to price
    assert cli_run("run", str(spec)).exit_code == 0
    after = cli_run("plan", str(spec), "--region", "westeurope", env=env)
    assert after.exit_code == 0, after.output
    assert "task duration: mean of 3 succeeded task(s) measured in the run of" in after.output
    assert "(local backend" in after.output
    # 1 dedicated node, 1 slot: 3 tasks one after another.
    assert re.search(r"time   0\.000\d+ node-hours \(0\.000\d+ dedicated \+ 0 spot\)", after.output), after.output
    assert re.search(r"cost   ~0\.0000\d+ USD \(dedicated 0\.043 USD/h, spot 0\.0091 USD/h\)", after.output), \
        after.output
    assert "Azure retail pay-as-you-go price of Standard_A1_v2 (Linux) in westeurope, effective 2024-05-01; " \
           "fetched" in after.output and "from 127.0.0.1" in after.output
    asked = len(prices.requests)
    offline = cli_run("plan", str(spec), "--region", "westeurope", "--offline", env=env)
    assert "cost   ~" in offline.output and len(prices.requests) == asked
    elsewhere = cli_run("plan", str(spec), "--region", "uksouth", "--offline", env=env)
    assert "cost   price unknown (--offline and no cached price for standard_a1_v2 in uksouth)" in elsewhere.output


def test_secrets_in_task_output_are_redacted_in_logs_and_report(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    leak = "https://acct.blob.core.windows.net/c/x?sv=2025-01-05&sig=c2VjcmV0c2lnbmF0dXJlMTIzNDU2Nzg5MA%3D%3D"
    spec = write_spec(f"echo 'fetching {leak}' >&2; echo 'AccountKey=bm90LWEtcmVhbC1rZXk=;' >&2; exit 1",
                      outputs=[])
    assert cli_run("run", str(spec)).exit_code == 1
    logs = cli_run("logs", str(spec), "a", "--stream", "stderr")
    assert "sig=REDACTED" in logs.output and "AccountKey=REDACTED" in logs.output
    assert "c2VjcmV0" not in logs.output and "bm90LWEt" not in logs.output
    report = next((tmp_path / ".batchspec").glob("job-*/report.html")).read_text()
    assert "sig=REDACTED" in report and "c2VjcmV0" not in report and "bm90LWEt" not in report


def test_mp4_to_mp3_with_a_broken_input_seen_from_a_fresh_terminal(tmp_path: Path) -> None:
    """The issue's check on the local backend: the shipped spec, real ffmpeg, one input that is not a video."""
    repo = Path(__file__).resolve().parents[2]
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = specs / "mp4-to-mp3.yaml"
    spec.write_text((repo / "specs" / "mp4-to-mp3.yaml").read_text())
    make_mp4(specs / "inputs" / "clip-1.mp4", 1.0)
    make_mp4(specs / "inputs" / "clip-2.mp4", 1.5)
    (specs / "inputs" / "broken.mp4").write_bytes(b"this is not a video\n")
    run = cli_run("run", str(spec), "--slots", "2")
    assert run.exit_code == 1, run.output

    status = cli_run("status", str(spec))  # a fresh CliRunner: nothing shared with the run but the files
    assert status.exit_code == 1
    assert "tasks: 3 planned: 2 succeeded, 1 failed, 0 running, 0 waiting" in status.output
    assert "attempts: 5 (2 retries" in status.output  # retries: 2 in the spec
    logs = cli_run("logs", str(spec), "broken", "--stream", "stderr")
    assert "Invalid data found when processing input" in logs.output
    out = tmp_path / "report.html"
    assert cli_run("report", str(spec), "-o", str(out)).exit_code == 0
    page = render_report(out)
    assert page.console_errors == [] and page.bars == 5
    assert "Invalid data found" in page.text_of("#failed")
