"""Azure backend benchmarks against the emulator and Azurite, each beside its baseline.

1. A 10,000-task plan (``--tasks``) submitted with ``create_task_collection``: at most one
   request per 100 tasks and one more (101), with at least 4 in flight, beside the same requests
   sent one at a time.
2. 100 files (``--files``) of 1 MB uploaded to Azurite with parallel transfers, beside one at a time.

Run: ``python benchmarks/azure_bench.py [--tasks N] [--files N]`` (needs ``npm install`` for
Azurite); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from azure.batch import BatchClient, models

from batchspec.backends.azure.config import AzureConfig
from batchspec.backends.azure.storage import Storage
from batchspec.backends.azure.tasks import Submitter, Urls, task_options
from batchspec.plan import InputFile, Plan, build_plan
from batchspec.spec import load_spec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import emulator_process

from tests.azurite import running_azurite

TASKS = 10_000


def tenk_plan(work: Path, tasks: int) -> Plan:
    """A realistic plan: ``tasks`` (10,000) ffmpeg tasks, each with an input and an output."""
    spec = work / "spec.yaml"
    spec.write_text(
        "batchspec: 1\nname: bench\n"
        "pool: {id: p, vm_size: standard_a1_v2, image: {publisher: canonical, offer: ubuntu-24_04-lts, sku: server},"
        " node_agent_sku: batch.node.ubuntu 24.04, nodes: {dedicated: 1}}\n"
        f"inputs: {{list: [{', '.join(f'{{n: {i}}}' for i in range(tasks))}]}}\n"
        "task:\n  id: clip-<<item.n>>\n"
        "  command: ffmpeg -hide_banner -y -i clip-<<item.n>>.mp4 -vn -b:a 192k clip-<<item.n>>.mp3\n"
        "  outputs: [clip-<<item.n>>.mp3]\n  timeout: 30m\n  retries: 2\n"
    )
    plan = build_plan(load_spec(spec))
    # List items carry no file; give each task the input file it would really have.
    with_files = tuple(replace(t, inputs=(InputFile(f"inputs/{t.id}.mp4", f"{t.id}.mp4"),)) for t in plan.tasks)
    return plan.with_stages((replace(plan.stages[0], tasks=with_files),))


def submit(client: BatchClient, job_id: str, options: list[models.BatchTaskCreateOptions],
           concurrency: int) -> tuple[float, Submitter]:
    client.create_job(models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id="p")))
    submitter = Submitter(client, job_id, concurrency=concurrency)
    started = time.perf_counter()
    submitter.submit(options)
    return time.perf_counter() - started, submitter


def submission_bench(work: Path, tasks: int) -> bool:
    plan = tenk_plan(work, tasks)
    sas = "sv=2025-01-05&sr=c&sp=r&se=2030-01-01T00%3A00%3A00Z&sig=" + "x" * 44
    base = "http://127.0.0.1:10000/devstoreaccount1"
    urls = Urls(lambda f: f"{base}/bench-input/{f.source}?{sas}", lambda c: f"{base}/{c}?{sas}",
                f"{base}/bench-output?{sas}", lambda s: f"{base}/bench-{s}?{sas}")
    options = [task_options(plan, t, urls, "0" * 32) for t in plan.tasks]
    with emulator_process() as (client, _):  # no nodes: this measures submission alone
        client.create_pool(models.BatchPoolCreateOptions(
            id="p", vm_size="standard_a1_v2", target_dedicated_nodes=0,
            virtual_machine_configuration=models.VirtualMachineConfiguration(
                image_reference=models.BatchVmImageReference(publisher="canonical", offer="ubuntu-24_04-lts",
                                                             sku="server"),
                node_agent_sku_id="batch.node.ubuntu 24.04")))
        parallel_s, parallel = submit(client, "parallel", options, 4)
        serial_s, serial = submit(client, "serial", options, 1)
        stored = sum(1 for _ in client.list_tasks("parallel", select=["id"]))
    print(f"submit {tasks:,} tasks: 4 in flight {parallel_s:.2f} s ({parallel.requests} requests, "
          f"max {parallel.max_in_flight} in flight) | one at a time {serial_s:.2f} s ({serial.requests} requests) | "
          f"speed-up {serial_s / parallel_s:.2f}x; tasks in the job: {stored:,}")
    most = -(-tasks // 100) + 1  # one request per 100 tasks, and one more: 101 for 10,000
    return parallel.requests <= most and parallel.max_in_flight >= 4 and parallel.added == tasks == stored


def upload_bench(work: Path, count: int) -> bool:
    files = []
    for i in range(count):
        path = work / "upload" / f"f{i:03}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1024 * 1024))
        files.append((path, path.name))
    with running_azurite(work) as service:
        config = AzureConfig("http://127.0.0.1:1", "bench", storage_connection_string=service.connection_string)
        storage = Storage(config)
        timings = {}
        for label, workers in (("parallel", 8), ("serial", 1)):
            storage.ensure_container(label)
            started = time.perf_counter()
            report = storage.upload(label, files, workers=workers)
            timings[label] = time.perf_counter() - started
            assert report.transferred == count, report
        again = storage.upload("parallel", files)
    mb = count
    parallel, serial = timings["parallel"], timings["serial"]
    print(f"upload {count} x 1 MB to Azurite: 8 in parallel {parallel:.2f} s ({mb / parallel:.0f} MB/s) | "
          f"one at a time {serial:.2f} s ({mb / serial:.0f} MB/s) | "
          f"speed-up {serial / parallel:.2f}x; second upload skipped {again.skipped} "
          f"and sent {again.bytes} bytes")
    return parallel < serial and again.bytes == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=TASKS, help="tasks submitted (default: %(default)s)")
    parser.add_argument("--files", type=int, default=100, help="files of 1 MB uploaded (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ok = submission_bench(Path(tmp), args.tasks)
        ok = upload_bench(Path(tmp), args.files) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
