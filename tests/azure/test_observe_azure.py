"""Seeing an Azure run from a fresh terminal: status, logs and the report, through the real SDKs
against the emulator and Azurite, for specs/mp4-to-mp3.yaml with one input that is not a video."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchspec.cli import cli
from batchspec.emulator.testing import batch_client, running_emulator
from tests.azurite import Azurite
from tests.browser import render_report
from tests.media import make_mp4
from tests.prices import PriceServer

from .conftest import AzureWorld, copy_spec

pytestmark = pytest.mark.e2e


def failing_mp4_spec(tmp_path: Path) -> Path:
    spec = copy_spec("mp4-to-mp3.yaml", tmp_path / "specs")
    for stem in ("good-1", "good-2"):
        make_mp4(spec.parent / "inputs" / f"{stem}.mp4", 1.0)
    (spec.parent / "inputs" / "broken.mp4").write_bytes(b"this is not a video\n")
    return spec


def test_status_logs_and_report_of_a_run_with_a_failing_input(tmp_path: Path, world: AzureWorld,
                                                               prices: PriceServer) -> None:
    spec = failing_mp4_spec(tmp_path)
    priced = {"BATCHSPEC_REGION": "westeurope", "BATCHSPEC_PRICES_URL": prices.url,
              "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = world.run("run", str(spec), "--backend", "azure", env=priced)
    assert run.exit_code == 1, run.output
    assert "FAILED: 2 succeeded, 1 failed of 3 tasks" in run.output
    report_line = re.search(r"^report: (.+)$", run.output, re.M)
    assert report_line, run.output
    assert "logs: on the nodes while job" in run.output and "under .batchspec/jobs/" in run.output
    # The pool is 5 spot nodes (2 in the emulator): what they were up for, at the Spot price.
    used = re.search(r"^used: ([\d.e-]+) node-hours \(0 dedicated \+ ([\d.e-]+) spot\), utilisation \d+%; "
                     r"cost ~([\d.]+) USD \(([\d.e-]+) spot node-h x 0\.0091 USD/h\)$", run.output, re.M)
    assert used, run.output
    assert float(used.group(3)) == pytest.approx(float(used.group(2)) * 0.0091, rel=0.01)
    run_page = render_report(Path(report_line.group(1)))
    assert "0.0091 USD/h" in run_page.text_of(".cards") and "from 127.0.0.1" in run_page.text_of(".cards")

    # A fresh terminal: a new process state, only the spec and the environment.
    before = world.emulator.request_counts()
    status = world.run("status", str(spec), "--backend", "azure", "--format", "json")
    assert status.exit_code == 1, status.output  # failed
    record = json.loads(status.output)
    assert record["verdict"] == "failed"
    assert record["counts"]["succeeded"] == 2 and record["counts"]["failed"] == 1
    tasks = {t["id"]: t for job in record["jobs"] for t in job["tasks"]}
    broken = next(t for i, t in tasks.items() if i.startswith("broken-"))
    assert broken["state"] == "failed" and broken["retries"] == 2 and len(broken["attempts"]) == 3
    last = broken["attempts"][-1]
    assert last["where"] and last["start"] and last["end"] and last["exit_code"] not in (None, 0)
    good = next(t for i, t in tasks.items() if i.startswith("good-1"))
    assert good["attempts"][0]["where"] in {n["id"] for n in record["nodes"]}
    assert record["pool"]["vm_size"] == "standard_a1_v2"
    # One pass: the job, one page of tasks, the pool and one page of nodes; never a request per task.
    after = world.emulator.request_counts()
    spent = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    assert spent == {"get_job": 1, "list_tasks": 1, "get_pool": 1, "list_nodes": 1}, spent
    assert record["requests"] == 4

    text = world.run("status", str(spec), "--backend", "azure")
    assert text.exit_code == 1
    assert "tasks: 3 planned: 2 succeeded, 1 failed, 0 running, 0 waiting" in text.output
    assert "pool ffmpeg-pool: standard_a1_v2" in text.output and "broken-" in text.output

    logs = world.run("logs", str(spec), "--backend", "azure")  # no TASK: the failed tasks' logs
    assert logs.exit_code == 0, logs.output
    assert "Invalid data found when processing input" in logs.output
    assert "==> broken-" in logs.output and "good-" not in logs.output
    one = world.run("logs", str(spec), "broken", "--stream", "stderr", "--backend", "azure")
    assert one.exit_code == 0, one.output
    assert one.output.startswith("ffmpeg version") or "Invalid data" in one.output
    assert "==>" not in one.output  # one log: raw, for pipes
    earlier = world.run("logs", str(spec), "broken", "--attempt", "1", "--backend", "azure")
    assert earlier.exit_code == 2 and "last attempt only" in earlier.output
    node = last["where"]
    start_log = world.run("logs", str(spec), "--node", node, "--stream", "stdout", "--backend", "azure")
    assert start_log.exit_code == 0, start_log.output

    out = tmp_path / "report.html"
    before = world.emulator.request_counts()
    report = world.run("report", str(spec), "--backend", "azure", "-o", str(out))
    assert report.exit_code == 0, report.output
    after = world.emulator.request_counts()
    spent = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    # The record's one pass, then one stderr download per task shown with its tail (failed, slowest).
    assert spent == {"get_job": 1, "list_tasks": 1, "get_pool": 1, "list_nodes": 1, "get_task_file": 3}, spent
    page = render_report(out)
    assert page.console_errors == []
    placed = sum(1 for t in tasks.values() for a in t["attempts"] if a["where"] and a["start"])
    assert page.bars == placed == 3  # the last attempt of each task; Batch does not place earlier ones
    assert page.text_of("#failed").count("broken-") == 1
    assert "Invalid data found" in page.text_of("#failed")
    assert page.badges == ["+2"]  # the failed task's two earlier attempts, counted


def test_status_after_the_job_was_deleted_uses_the_saved_record(tmp_path: Path, world: AzureWorld) -> None:
    spec = copy_spec("mp4-to-mp3.yaml", tmp_path / "specs")
    make_mp4(spec.parent / "inputs" / "only.mp4", 1.0)
    run = world.run("run", str(spec), "--backend", "azure")  # cleanup.job: delete after success
    assert run.exit_code == 0, run.output
    client = batch_client(world.emulator)
    job_id = re.search(r"job (mp4-to-mp3-\w+)\]", run.output).group(1)  # type: ignore[union-attr]
    deadline = time.monotonic() + 20
    while any(j.id == job_id for j in client.list_jobs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = world.run("status", str(spec), "--backend", "azure")
    assert status.exit_code == 0, status.output
    assert "succeeded" in status.output and "saved at the end of the run" in status.output
    logs = world.run("logs", str(spec), "only", "--stream", "stdout", "--backend", "azure")
    assert logs.exit_code == 0, logs.output  # the success record keeps stdout in the output container
    report = world.run("report", str(spec), "--backend", "azure")
    assert report.exit_code == 0, report.output


def test_status_of_a_spec_never_run(tmp_path: Path, world: AzureWorld) -> None:
    spec = copy_spec("mp4-to-mp3.yaml", tmp_path / "specs")
    make_mp4(spec.parent / "inputs" / "x.mp4", 1.0)
    status = world.run("status", str(spec), "--backend", "azure")
    assert status.exit_code == 2
    assert "no run of this spec found" in status.output


def test_preemptions_show_as_requeues(tmp_path: Path, azurite: Azurite) -> None:
    spec = tmp_path / "spec.yaml"
    (tmp_path / "in").mkdir()
    for i in range(4):
        (tmp_path / "in" / f"f{i}.txt").write_text("x")
    spec.write_text(
        "batchspec: 1\nname: spotty\n"
        "pool: {id: spot-pool, vm_size: standard_a1_v2, image: {publisher: canonical, offer: ubuntu-24_04-lts, "
        "sku: server}, node_agent_sku: batch.node.ubuntu 24.04, nodes: {spot: 2}}\n"
        "inputs: {path: in/*.txt}\ntask: {command: sleep 0.4}\n")
    with running_emulator(nodes=2, faults="preempt=0.5", seed=3) as emulator:
        env = {"AZURE_BATCH_ENDPOINT": emulator.endpoint, "AZURE_BATCH_ACCOUNT": emulator.account,
               "AZURE_BATCH_ACCESS_KEY": emulator.key, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
        runner = CliRunner()
        run = runner.invoke(cli, ["run", str(spec), "--backend", "azure"], env=env)
        assert run.exit_code == 0, run.output
        preempted = emulator.fault_counts()["preempt"]
        status = runner.invoke(cli, ["status", str(spec), "--backend", "azure", "--format", "json"], env=env)
        out = tmp_path / "r.html"
        assert runner.invoke(cli, ["report", str(spec), "--backend", "azure", "-o", str(out)], env=env).exit_code == 0
    record = json.loads(status.output)
    tasks = record["jobs"][0]["tasks"]
    assert preempted >= 1
    assert sum(t["requeues"] for t in tasks) == record["counts"]["requeues"] == preempted
    requeued = [a for t in tasks for a in t["attempts"] if a["outcome"] == "requeued"]
    assert len(requeued) == preempted and all(a["reason"] == "node preempted or removed" for a in requeued)
    assert record["counts"]["succeeded"] == 4
    page = render_report(out)
    assert page.console_errors == [] and page.bars == 4
    assert len(page.badges) == sum(1 for t in tasks if t["requeues"])
    assert f"{preempted} requeued (preempted)" in page.text_of(".cards")


def test_follow_a_running_task_from_another_process(tmp_path: Path, world: AzureWorld) -> None:
    spec = tmp_path / "spec.yaml"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "slow.txt").write_text("x")
    spec.write_text(
        "batchspec: 1\nname: ticking\n"
        "pool: {id: tick-pool, vm_size: standard_a1_v2, image: {publisher: canonical, offer: ubuntu-24_04-lts, "
        "sku: server}, node_agent_sku: batch.node.ubuntu 24.04, nodes: {dedicated: 1}}\n"
        "inputs: {path: in/*.txt}\ntask: {command: 'for i in 1 2 3 4; do echo tick $i; sleep 0.4; done'}\n")
    env = {**os.environ, **world.env}
    run = subprocess.Popen([sys.executable, "-m", "batchspec", "run", str(spec), "--backend", "azure"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            status = world.run("status", str(spec), "--backend", "azure")
            if "running (1):" in status.output or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status.exit_code == 3, status.output
        assert re.search(r"^  slow-\w+ on \S+ for [\d.]+s$", status.output, re.M), status.output
        follow = world.run("logs", str(spec), "slow", "--stream", "stdout", "--follow", "--backend", "azure")
        assert follow.exit_code == 0, follow.output
        assert follow.output == "tick 1\ntick 2\ntick 3\ntick 4\n"  # to the end, nothing twice
    finally:
        assert run.wait(timeout=60) == 0
