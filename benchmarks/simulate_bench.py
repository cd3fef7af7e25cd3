"""Cloud-scale benchmark: the mp4-to-mp3 job through ``batchspec run --backend azure`` against the
emulator in simulation mode (``batchspec emulator --simulate``) and Azurite.

Two sizes side by side, so the growth is visible: 100,000 tasks on 1,000 simulated spot nodes,
and the same job at 10,000 tasks on 100 nodes (both 100 waves of tasks). Tasks do not run: each
takes 15 to 25 minutes (uniform) of service time (the spec's timeout is 30m), and the emulator's clock runs
``--time-scale`` times faster, so some 33 hours of cloud time pass in about a minute. Printed for
each: requests per monitoring poll (target: at most 2 at any task count), requests in total and
per operation, batchspec's CPU time, the emulator's CPU time, and wall time.

The spec is ``specs/mp4-to-mp3.yaml`` with its pool scaled to the node count and its clips named
by 100 listed sources times a matrix of parts (files that exist only in the simulation, so
nothing is uploaded).

    python benchmarks/simulate_bench.py [--sizes 100000:1000,10000:100] [--time-scale 2000]

Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.azurite import running_azurite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import stop_emulator

REPO = Path(__file__).resolve().parent.parent
#: Requests the Azure backend makes while it follows a job (the rest is submission and set-up).
MONITORING = {"get_job_task_counts", "get_pool", "list_nodes", "list_tasks", "get_task_file", "get_node_file"}


@dataclass
class Result:
    tasks: int
    nodes: int
    wall: float
    batchspec_cpu: float
    emulator_cpu: float
    requests: Counter[str]
    polls: int
    max_per_poll: int
    after_last_poll: int
    exit_code: int


def spec_for(work: Path, tasks: int, nodes: int) -> Path:
    """specs/mp4-to-mp3.yaml on ``nodes`` spot nodes over ``tasks`` clips: 100 listed sources
    times a matrix of parts (a list of 100,000 inputs would exceed what a spec file may hold)."""
    sources, parts = 100, max(1, tasks // 100)
    text = (REPO / "specs" / "mp4-to-mp3.yaml").read_text()
    text = text.replace("nodes: {dedicated: 0, spot: 5}", f"nodes: {{dedicated: 0, spot: {nodes}}}")
    items = ", ".join(f"{{clip: clip{i:03d}}}" for i in range(sources))
    text = text.replace("  path: inputs/*.mp4\n", f"  list: [{items}]\n")
    clip = "<<item.clip>>-<<matrix.part>>"
    text = text.replace("-i <<input>>", f"-i {clip}.mp4").replace("<<stem>>", clip)
    text = text.replace("\ntask:\n", f"\ntask:\n  id: {clip}\n")
    text += "matrix:\n  part: [" + ", ".join(str(i) for i in range(parts)) + "]\n"
    spec = work / f"mp4-to-mp3-{tasks}.yaml"
    spec.write_text(text)
    return spec


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_poll(log: Path) -> tuple[int, int, int]:
    """Monitoring polls (taskcounts requests), the most monitoring requests one poll made, and
    the requests after the last poll: the run's record (one task listing, its pool and nodes,
    the report's stderr tails), made once when the job is done, not while following it."""
    polls, most, current = 0, 0, 0
    for line in log.read_text().splitlines():
        op = line.rsplit("op=", 1)[-1]
        if op == "get_job_task_counts":
            polls += 1
            most = max(most, current)
            current = 1
        elif op in MONITORING and polls:
            current += 1
    return polls, most, current - 1 if polls else 0


def run(tasks: int, nodes: int, time_scale: float, azurite_connection: str, work: Path) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    log = work / "requests.log"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "batchspec", "emulator", "--nodes", str(nodes), "--time-scale", str(time_scale),
         "--simulate", "duration=20m,distribution=uniform,spread=0.25", "--seed", "1", "--log", str(log)],
        stdout=subprocess.PIPE, text=True,
    )
    assert emulator.stdout is not None
    env = dict(os.environ)
    for line in emulator.stdout:
        match = re.match(r"^export (\w+)=(.*)$", line.strip())
        if match:
            env[match.group(1)] = shlex.split(match.group(2))[0]
        if line.startswith("Press Ctrl-C"):
            break
    env["AZURE_STORAGE_CONNECTION_STRING"] = azurite_connection
    spec = spec_for(work, tasks, nodes)
    try:
        started = time.perf_counter()
        with (work / "run.log").open("w") as out:
            child = subprocess.Popen([sys.executable, "-m", "batchspec", "run", str(spec), "--backend", "azure"],
                                     cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        emulator_cpu = _cpu_seconds(emulator.pid)
    finally:
        stop_emulator(emulator)
    requests = Counter(line.rsplit("op=", 1)[-1] for line in log.read_text().splitlines())
    polls, most, after = _per_poll(log)
    return Result(tasks, nodes, wall, usage.ru_utime + usage.ru_stime, emulator_cpu, requests, polls, most, after,
                  os.waitstatus_to_exitcode(status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000:100,100000:1000", help="TASKS:NODES,... (default: %(default)s)")
    parser.add_argument("--time-scale", type=float, default=2000.0)
    parser.add_argument("--keep", type=Path, default=None, help="Work here and keep the logs (default: a temp dir).")
    args = parser.parse_args(argv)
    sizes = [tuple(int(x) for x in size.split(":")) for size in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp, running_azurite(Path(tmp)) as azurite:
        work = args.keep or Path(tmp)
        for tasks, nodes in sizes:
            print(f"running {tasks:,} tasks on {nodes:,} simulated nodes ...", flush=True)
            results.append(run(tasks, nodes, args.time_scale, azurite.connection_string, work / str(tasks)))
    print(f"\nmp4-to-mp3 through `batchspec run --backend azure`, emulator --simulate (tasks of 15-25 min), "
          f"time x{args.time_scale:g}")
    header = f"{'':<42}" + "".join(f"{f'{r.tasks:,} tasks / {r.nodes:,} nodes':>28}" for r in results)
    print(header)
    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("exit code", lambda r: f"{r.exit_code}"),
        ("wall time", lambda r: f"{r.wall:.1f} s"),
        ("batchspec CPU time", lambda r: f"{r.batchspec_cpu:.1f} s"),
        ("emulator CPU time", lambda r: f"{r.emulator_cpu:.1f} s"),
        ("requests in total", lambda r: f"{sum(r.requests.values()):,}"),
        ("  create_task_collection", lambda r: f"{r.requests['create_task_collection']:,}"),
        ("  monitoring polls (taskcounts)", lambda r: f"{r.polls:,}"),
        ("  other monitoring requests",
         lambda r: f"{sum(r.requests[o] for o in MONITORING) - r.polls - r.after_last_poll:,}"),
        ("  the run's record, after the last poll", lambda r: f"{r.after_last_poll:,}"),
        ("most requests in one poll", lambda r: f"{r.max_per_poll}"),
    ]
    for label, cell in rows:
        print(f"{label:<42}" + "".join(f"{cell(r):>28}" for r in results))
    ok = all(r.exit_code == 0 and r.max_per_poll <= 2 for r in results)
    print(f"\ntarget: at most 2 requests per monitoring poll at any task count: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
