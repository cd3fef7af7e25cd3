"""Benchmark of ``batchspec status`` and ``batchspec report`` on a 10,000-task Azure job.

``batchspec run`` runs a 10,000-task job (each task ``true``) on the Batch emulator (its own
process, 8 nodes x 4 slots) with Azurite for storage. Then, each as a new process (a fresh
terminal), ``batchspec status --format json`` and ``batchspec report``, beside the baseline a
tool without a listing pass needs: one ``get_task`` per task. Requests are the emulator's own
count per operation; times are wall time of the whole command (Python start-up included).

    .venv/bin/python benchmarks/observe_bench.py [--tasks 10000]

Needs Azurite (``npm ci``), like scripts/test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import client_for, emulator_exports, request_counts

from tests.azurite import running_azurite

NODES, SLOTS = 8, 4


def spec_text(tasks: int) -> str:
    items = ", ".join(f"{{n: {i}}}" for i in range(tasks))
    return (
        "batchspec: 1\nname: tenk\n"
        "pool: {id: tenk-pool, vm_size: standard_a1_v2, image: {publisher: canonical, offer: ubuntu-24_04-lts, "
        f"sku: server}}, node_agent_sku: batch.node.ubuntu 24.04, nodes: {{dedicated: {NODES}}}, "
        f"task_slots_per_node: {SLOTS}}}\n"
        f"inputs: {{list: [{items}]}}\n"
        "task: {id: 't-<<item.n>>', command: 'true'}\n"
        "outputs: {container: tenk-output}\n"
        "cleanup: {job: keep, pool: keep}\n"
    )


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, result


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Requests between two counts, without the count request itself."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(after)
            if after.get(k, 0) != before.get(k, 0) and k != "batchspec_stats"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args(argv)
    batchspec = [sys.executable, "-m", "batchspec"]
    with (tempfile.TemporaryDirectory() as tmp, running_azurite(Path(tmp)) as azurite,
          emulator_exports("--nodes", str(NODES)) as exports):
        work = Path(tmp)
        spec = work / "tenk.yaml"
        spec.write_text(spec_text(args.tasks))
        env = {**os.environ, **exports, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
               "XDG_CACHE_HOME": str(work / "cache")}
        client = client_for(exports)

        print(f"status and report of a {args.tasks:,}-task job: batchspec emulator ({NODES} nodes x {SLOTS} slots, "
              "own process) and Azurite; each command a new process")
        run_s, run = timed([*batchspec, "run", str(spec), "--backend", "azure"], env)
        tail = run.stdout.strip().splitlines()
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:])
            return 1
        print(f"  batchspec run: {run_s:.1f} s ({tail[-3] if len(tail) >= 3 else ''})")

        plan_s, _ = timed([*batchspec, "plan", str(spec), "--format", "json"], env)
        before = request_counts(client)
        status_s, status = timed([*batchspec, "status", str(spec), "--backend", "azure", "--format", "json"], env)
        status_requests = delta(before, request_counts(client))
        record = json.loads(status.stdout)
        assert record["counts"]["succeeded"] == args.tasks, record["counts"]
        job_id = record["jobs"][0]["id"]

        before = request_counts(client)
        report_path = work / "report.html"
        report_s, report = timed([*batchspec, "report", str(spec), "--backend", "azure", "-o", str(report_path)], env)
        report_requests = delta(before, request_counts(client))
        assert report.returncode == 0, report.stderr
        report_mb = report_path.stat().st_size / 1e6

        before = request_counts(client)
        ids = [t["id"] for t in record["jobs"][0]["tasks"]]
        started = time.perf_counter()
        for task_id in ids:
            client.get_task(job_id, task_id, select=["id", "state", "creationTime", "executionInfo", "nodeInfo"])
        naive_s = time.perf_counter() - started
        naive_requests = delta(before, request_counts(client))
        client.close()

    def line(name: str, seconds: float, requests: dict[str, int], extra: str = "") -> str:
        total = sum(requests.values())
        return f"  {name:<44} {seconds:7.2f} s  {total:6,} requests  {json.dumps(requests)}{extra}"

    print(line("batchspec status --format json", status_s, status_requests))
    print(line("batchspec report", report_s, report_requests, f"  ({report_mb:.1f} MB of HTML)"))
    print(line("baseline: get_task per task (no process start)", naive_s, naive_requests))
    print(f"  (of each command's time, {plan_s:.2f} s is what `batchspec plan` of this spec takes alone: "
          f"start-up and reading its {args.tasks:,}-item inputs list)")
    status_total = sum(status_requests.values())
    print(f"\n  status needs {status_total} Batch requests where a per-task fetch needs "
          f"{sum(naive_requests.values()):,} ({sum(naive_requests.values()) / max(1, status_total):,.0f}x fewer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
