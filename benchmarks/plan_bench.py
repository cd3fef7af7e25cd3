"""Planning benchmark: a plan over 100,000 input files (targets: at most 2 s and 300 MB).

Creates 100,000 empty ``inputs/clip-NNNNNN.mp4`` files next to an mp4-to-mp3 spec in a temporary
directory. Each round runs a child process that loads the spec and times ``build_plan`` alone
(glob, sort, job id, 100,000 rendered commands, outputs and ids); the child's peak RSS (its
ru_maxrss from wait4, interpreter and imports included) is the memory figure. Beside it, in the
same run: a bare Python loop that only formats the same command and output strings with
``str.format`` over the same names, so the ratio shows what templating, quoting and checking
cost. For information, the wall time and peak RSS of the whole ``batchspec plan --format json``
command (which also prints the 100,000-task JSON) are printed too.

Run: ``python benchmarks/plan_bench.py [--rounds N] [--files N]``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import SPEC_HEAD, run_child

TARGET_SECONDS = 2.0
TARGET_MB = 300.0

CHILD = """\
import json, sys, time
from pathlib import Path
from batchspec.plan import build_plan
from batchspec.spec import load_spec
spec = load_spec(Path(sys.argv[1]))
started = time.perf_counter()
plan = build_plan(spec)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "tasks": len(plan.tasks), "first": plan.tasks[0].command}))
"""


def baseline(names: list[str], bitrate: str) -> tuple[float, str]:
    """Only the strings: the command and output of each task with str.format."""
    command = "ffmpeg -hide_banner -y -i {input} -vn -b:a {bitrate} {stem}.mp3"
    output = "{stem}.mp3"
    started = time.perf_counter()
    tasks = []
    for name in names:
        stem = name[: -len(".mp4")]
        tasks.append((command.format(input=name, bitrate=bitrate, stem=stem), output.format(stem=stem)))
    return time.perf_counter() - started, tasks[0][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        root = Path(tmp)
        inputs = root / "inputs"
        inputs.mkdir()
        names = [f"clip-{i:06d}.mp4" for i in range(args.files)]
        print(f"creating {args.files:,} input files ...", flush=True)
        for name in names:
            os.close(os.open(inputs / name, os.O_CREAT | os.O_WRONLY, 0o644))
        spec = root / "bench.yaml"
        spec.write_text(SPEC_HEAD.format(name="plan-bench", description="Plan benchmark.", bitrate="192k", spot=5,
                                         suffix="", timeout=30))

        planned = []
        for _ in range(args.rounds):
            child = run_child([sys.executable, "-c", CHILD, str(spec)])
            if child.returncode != 0:
                print(f"the planning child failed (exit {child.returncode})")
                return 1
            result = json.loads(child.stdout)
            assert result["tasks"] == args.files, result
            planned.append((result["seconds"], child.peak_rss_mb, result["first"]))
        seconds = statistics.median(p[0] for p in planned)
        peak = max(p[1] for p in planned)
        base = statistics.median(baseline(names, "192k")[0] for _ in range(args.rounds))
        assert baseline(names, "192k")[1] == planned[0][2], (baseline(names, "192k")[1], planned[0][2])

        cli = run_child([sys.executable, "-m", "batchspec", "plan", str(spec), "--format", "json"])
        if cli.returncode != 0:
            print(f"batchspec plan exited {cli.returncode}")
            return 1
        assert json.loads(cli.stdout)["task_count"] == args.files

    time_ok, memory_ok = seconds <= TARGET_SECONDS, peak <= TARGET_MB
    print(f"build_plan, {args.files:,} inputs: {seconds:.2f} s (median of {args.rounds}) | "
          f"str.format loop: {base:.3f} s | ratio {seconds / base:.1f}x | "
          f"peak RSS {peak:.0f} MB (child process) | "
          f"targets <= {TARGET_SECONDS:.0f} s: {'ok' if time_ok else 'MISSED'}, "
          f"<= {TARGET_MB:.0f} MB: {'ok' if memory_ok else 'MISSED'}")
    print(f"batchspec plan --format json (whole command, {len(cli.stdout) / 1e6:.0f} MB of JSON): "
          f"{cli.seconds:.2f} s, peak RSS {cli.peak_rss_mb:.0f} MB (for information)")
    return 0 if time_ok and memory_ok else 1


if __name__ == "__main__":
    sys.exit(main())
