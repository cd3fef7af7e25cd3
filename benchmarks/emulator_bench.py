"""Benchmark of the Batch emulator driven by the real azure-batch SDK.

Targets (issue 5): 10,000 tasks added through ``create_tasks`` in under 5 s, and a median
``get_job_task_counts`` latency under 2 ms. Printed side by side with baselines from the same run:
raw keep-alive HTTP round trips to the same server (the transport floor), the SDK's own cost for
a trivial authenticated GET (``get_job``), and ``create_tasks`` sequential vs ``max_concurrency=4``.

The emulator runs in its own process, as users run it, and its pool has no nodes, so the
figures measure the API, not task execution.

    .venv/bin/python benchmarks/emulator_bench.py [--tasks 10000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from azure.batch import BatchClient
from azure.batch import models as m

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import emulator_process, request_counts


def _latencies(call: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(50, n)):  # warm-up: connections, caches
        call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def _summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return f"  {name:<46} median {statistics.median(ms):6.3f} ms   p95 {p95:6.3f} ms   (n={len(ms)})"


def _setup(client: BatchClient, job_id: str) -> None:
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id="bench")))


def _tasks(prefix: str, n: int) -> list[m.BatchTaskCreateOptions]:
    return [m.BatchTaskCreateOptions(id=f"{prefix}-{i:05d}", command_line=f"/bin/echo {i}") for i in range(n)]


def _add(client: BatchClient, job_id: str, n: int, concurrency: int | None) -> tuple[float, int]:
    tasks = _tasks(job_id, n)
    start = time.perf_counter()
    result = client.create_tasks(job_id, tasks, max_concurrency=concurrency)
    elapsed = time.perf_counter() - start
    return elapsed, len(result.result_values or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)

    with emulator_process() as (client, endpoint):
        client.create_pool(
            m.BatchPoolCreateOptions(
                id="bench",
                vm_size="standard_d2s_v3",
                virtual_machine_configuration=m.VirtualMachineConfiguration(
                    image_reference=m.BatchVmImageReference(publisher="canonical", offer="ubuntu", sku="22_04"),
                    node_agent_sku_id="batch.node.ubuntu 22.04",
                ),
            )
        )
        print(f"Batch emulator benchmark ({endpoint}, `batchspec emulator` in its own process), "
              "azure-batch SDK with Shared Key auth")

        print(f"\ncreate_tasks: {args.tasks} tasks ({(args.tasks + 99) // 100} requests of up to 100 tasks)")
        results = {}
        for label, job_id, concurrency in (
            ("sequential (max_concurrency=None)", "seq", None),
            ("max_concurrency=4", "par", 4),
        ):
            _setup(client, job_id)
            before = request_counts(client).get("create_task_collection", 0)
            elapsed, added = _add(client, job_id, args.tasks, concurrency)
            requests = request_counts(client).get("create_task_collection", 0) - before
            results[label] = elapsed
            rate = added / elapsed if elapsed else float("inf")
            print(f"  {label:<46} {elapsed:6.2f} s   {added} added, {requests} requests, {rate:,.0f} tasks/s")

        print(f"\nround-trip latency, {args.calls} calls each (job 'seq' holds {args.tasks} tasks)")
        url = urlparse(endpoint)
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)

        def raw() -> None:
            conn.request("GET", "/jobs/seq/taskcounts?api-version=2025-06-01")
            conn.getresponse().read()  # unsigned: answered 403 without touching state

        raw_lat = _latencies(raw, args.calls)
        job_lat = _latencies(lambda: client.get_job("seq"), args.calls)
        counts_lat = _latencies(lambda: client.get_job_task_counts("seq"), args.calls)
        counts = client.get_job_task_counts("seq").task_counts
        print(_summary("baseline: raw HTTP keep-alive GET (no SDK)", raw_lat))
        print(_summary("baseline: SDK get_job", job_lat))
        print(_summary("SDK get_job_task_counts", counts_lat))
        print(f"  task counts of 'seq': active={counts.active} running={counts.running} completed={counts.completed}")

        seq = results["sequential (max_concurrency=None)"]
        median_ms = statistics.median(counts_lat) * 1000
        print("\nTargets")
        print(f"  create_tasks {args.tasks} tasks < 5 s:        {seq:6.2f} s   {'PASS' if seq < 5 else 'FAIL'}")
        print(f"  median taskcounts latency < 2 ms:  {median_ms:6.3f} ms  {'PASS' if median_ms < 2 else 'FAIL'}")
        print(f"\nrequests served per operation: {request_counts(client)}")
        return 0 if seq < 5 and median_ms < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
