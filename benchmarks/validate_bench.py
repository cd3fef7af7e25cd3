"""Validation benchmark: ``batchspec validate`` over 1,000 spec files, beside the code before the
speed work (target: at most half its time; and under 5 s).

Writes 1,000 (``--specs``) distinct specs (different names, params, commands, timeouts) into a temporary
directory, then times the whole command as a user runs it (a child process: interpreter start,
imports, discovery, reading, schema and template checks, report): its wall time and CPU time
(user + sys, every process it started), and peak RSS (the child's ru_maxrss from wait4). A second
figure does the same for as many specs with three problems each (the error path: positions, "did
you mean" hints).

``--baseline PATH`` is the ``batchspec`` executable of the code to compare with, e.g. commit
feb4a55 installed apart: ``python -m venv /tmp/baseline-venv && /tmp/baseline-venv/bin/pip install
./baseline-checkout``. Runs are paired (ours, then the baseline's, again and again); each figure
is the median of ``--rounds`` (at least 5). Without it, only the 5 s target applies.

Run: ``python benchmarks/validate_bench.py [--rounds N] [--baseline PATH] [--specs N]``; exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import SPEC_HEAD, Measured, run_child

from batchspec.spec import discover, validate_file

FILES = 1_000
TARGET_SECONDS = 5.0
CLI = [sys.executable, "-m", "batchspec", "validate"]


def write_specs(folder: Path, count: int, *, broken: bool) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        text = SPEC_HEAD.format(
            name=f"job-{i:04d}", description=f"Benchmark spec number {i}.", bitrate=f"{96 + i % 5 * 32}k",
            spot=1 + i % 7, suffix=f"-v{i % 3}", timeout=10 + i % 50,
        )
        if broken:  # three problems: a negative count, a misspelt key, an unknown template variable
            text = text.replace(f"spot: {1 + i % 7}", "spot: -1").replace("  retries:", "  retires:")
            text = text.replace("<<stem>>", "<<stme>>", 1)
        (folder / f"spec-{i:04d}.yaml").write_text(text)


def in_process(folder: Path) -> tuple[float, int]:
    started = time.perf_counter()
    problems = sum(len(validate_file(path, str(path))[1]) for path in discover([folder]))
    return time.perf_counter() - started, problems


def timed(argv: list[str]) -> tuple[Measured, float]:
    """The child's measures and its CPU time (user + sys of it and the workers it started)."""
    before = os.times()
    measured = run_child(argv)
    after = os.times()
    return measured, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="the batchspec executable of the code to compare with (e.g. before the speed work)")
    parser.add_argument("--specs", type=int, default=FILES, help="spec files (default: %(default)s)")
    args = parser.parse_args()
    rounds = max(5, args.rounds)
    failed = False
    with tempfile.TemporaryDirectory(prefix="validate-bench-") as tmp:
        for label, broken, expected_exit in (("valid", False, 0), ("invalid", True, 1)):
            folder = Path(tmp) / label
            write_specs(folder, args.specs, broken=broken)
            ours = [*CLI, str(folder)]
            theirs = [str(args.baseline), "validate", str(folder)] if args.baseline else None
            timed(ours)  # warm-up: bytecode written, files in the page cache
            if theirs:
                timed(theirs)
            mine: list[tuple[Measured, float]] = []
            base: list[tuple[Measured, float]] = []
            for _ in range(rounds):
                mine.append(timed(ours))
                if theirs:
                    base.append(timed(theirs))
            bad = [m.returncode for m, _ in mine + base if m.returncode != expected_exit]
            if bad:
                print(f"{label}: batchspec validate exited {bad[0]}, expected {expected_exit}")
                return 1
            summary = mine[0][0].stdout.strip().splitlines()[-1]
            seconds = statistics.median(m.seconds for m, _ in mine)
            cpu = statistics.median(c for _, c in mine)
            peak = max(m.peak_rss_mb for m, _ in mine)
            inner, problems = in_process(folder)
            ok = seconds < TARGET_SECONDS
            line = (f"validate {args.specs:,} {label} specs: {seconds:.2f} s ({cpu:.2f} s CPU; "
                    f"{seconds / args.specs * 1000:.2f} ms/file), peak RSS {peak:.0f} MB")
            if base:
                then = statistics.median(m.seconds for m, _ in base)
                then_cpu = statistics.median(c for _, c in base)
                ratios = [m.seconds / b.seconds for (m, _), (b, _) in zip(mine, base, strict=True)]
                ratio = seconds / then
                ok &= ratio <= 0.5
                line += (f" | baseline {then:.2f} s ({then_cpu:.2f} s CPU) | ratio {ratio:.2f} (paired: "
                         f"{min(ratios):.2f}-{max(ratios):.2f}; target <= 0.5)")
            failed |= not ok
            print(f"{line} | in-process {inner:.2f} s, {problems:,} problems | target < {TARGET_SECONDS:.0f} s"
                  f"{' and ratio' if base else ''}: {'ok' if ok else 'MISSED'} | {summary} (medians of {rounds})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
