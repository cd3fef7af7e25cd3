"""Planning benchmark: ``batchspec plan --format json`` over 100,000 input files, beside a plain
Python script that prints the same task lines (targets: at most 1.5x its CPU time, at most
200 MB peak memory).

Creates 100,000 empty ``inputs/clip-NNNNNN.mp4`` files next to an mp4-to-mp3 spec in a temporary
directory. Each round runs, one after the other, the whole command as a user runs it (interpreter
start, imports, validation, glob, 100,000 rendered commands, outputs and ids, the JSON) and
``benchmarks/plan_baseline.py`` (glob, sort, shell-quote, format the command, hash an id, one
JSON line per task; nothing else). Their task lines are compared, byte for byte, before their
costs are. The figures are CPU time (user + sys, from wait4) and peak RSS (ru_maxrss), medians
of ``--rounds`` (at least 5) paired runs.

Run: ``python benchmarks/plan_bench.py [--rounds N] [--files N]``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import CHILD_ENV, SPEC_HEAD

TARGET_RATIO = 1.5
TARGET_MB = 200.0
BASELINE = Path(__file__).resolve().parent / "plan_baseline.py"


def measured(argv: list[str], cwd: Path, out: Path) -> tuple[float, float]:
    """CPU seconds and peak RSS (MB) of ``argv``, its standard output written to ``out``."""
    with out.open("wb") as stdout, open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(argv, cwd=cwd, env=CHILD_ENV, stdout=stdout, stderr=devnull)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def same_tasks(ours: Path, theirs: Path) -> bool:
    """Do both files have the same lines from ``"tasks": [`` on? Read line by line: a child's
    peak RSS counts its parent's memory at the fork, so this process stays small."""
    with ours.open() as mine, theirs.open() as base:
        for line in mine:
            if line.startswith('  "tasks": ['):
                break
        return all(a == b for a, b in itertools.zip_longest(itertools.chain([line], mine), base))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    rounds = max(5, args.rounds)
    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        root = Path(tmp)
        inputs = root / "inputs"
        inputs.mkdir()
        print(f"creating {args.files:,} input files ...", flush=True)
        for i in range(args.files):
            os.close(os.open(inputs / f"clip-{i:06d}.mp4", os.O_CREAT | os.O_WRONLY, 0o644))
        spec = root / "bench.yaml"
        spec.write_text(SPEC_HEAD.format(name="plan-bench", description="Plan benchmark.", bitrate="192k", spot=5,
                                         suffix="", timeout=30))
        ours_argv = [sys.executable, "-m", "batchspec", "plan", str(spec), "--format", "json"]
        theirs_argv = [sys.executable, str(BASELINE), str(root)]
        ours_out, theirs_out = root / "ours.json", root / "theirs.json"
        measured(ours_argv, root, ours_out)  # warm-up: bytecode written, directory in the page cache
        measured(theirs_argv, root, theirs_out)
        if not same_tasks(ours_out, theirs_out):
            print("the baseline's task lines differ from batchspec's: not the same work")
            return 1
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(measured(ours_argv, root, ours_out))
            theirs.append(measured(theirs_argv, root, theirs_out))
        size = ours_out.stat().st_size
    cpu = statistics.median(c for c, _ in ours)
    base = statistics.median(c for c, _ in theirs)
    peak = max(m for _, m in ours)
    ratios = sorted(c / b for (c, _), (b, _) in zip(ours, theirs, strict=True))
    ratio = cpu / base
    ratio_ok, memory_ok = ratio <= TARGET_RATIO, peak <= TARGET_MB
    print(f"plan --format json, {args.files:,} inputs ({size / 1e6:.0f} MB of JSON): batchspec {cpu:.2f} s CPU, "
          f"peak RSS {peak:.0f} MB | plain script {base:.2f} s CPU, peak RSS {max(m for _, m in theirs):.0f} MB | "
          f"ratio {ratio:.2f} (paired: {ratios[0]:.2f}-{ratios[-1]:.2f}; medians of {rounds}) | "
          f"targets <= {TARGET_RATIO}x: {'ok' if ratio_ok else 'MISSED'}, <= {TARGET_MB:.0f} MB: "
          f"{'ok' if memory_ok else 'MISSED'}")
    return 0 if ratio_ok and memory_ok else 1


if __name__ == "__main__":
    sys.exit(main())
