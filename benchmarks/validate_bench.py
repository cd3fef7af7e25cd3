"""Validation benchmark: ``batchspec validate`` over 1,000 spec files (target: under 5 s).

Writes 1,000 distinct specs (different names, params, commands, timeouts) into a temporary
directory, then times the whole command as a user runs it (a child process: interpreter start,
imports, discovery, reading, schema and template checks, report) and reports its peak RSS (the
child's ru_maxrss from wait4). A second figure does the same for 1,000 specs with three
problems each (the error path: positions, "did you mean" hints). The median of ``--rounds`` runs
is compared with the target; the in-process time (no interpreter start) is printed too.

Run: ``python benchmarks/validate_bench.py [--rounds N]``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import SPEC_HEAD, run_child

from batchspec.spec import discover, validate_file

FILES = 1_000
TARGET_SECONDS = 5.0
CLI = [sys.executable, "-m", "batchspec", "validate"]


def write_specs(folder: Path, *, broken: bool) -> None:
    folder.mkdir(parents=True)
    for i in range(FILES):
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="validate-bench-") as tmp:
        for label, broken, expected_exit in (("valid", False, 0), ("invalid", True, 1)):
            folder = Path(tmp) / label
            write_specs(folder, broken=broken)
            runs = [run_child([*CLI, str(folder)]) for _ in range(args.rounds)]
            bad = [r for r in runs if r.returncode != expected_exit]
            if bad:
                print(f"{label}: batchspec validate exited {bad[0].returncode}, expected {expected_exit}")
                return 1
            summary = runs[0].stdout.strip().splitlines()[-1]
            seconds = statistics.median(r.seconds for r in runs)
            peak = max(r.peak_rss_mb for r in runs)
            inner, problems = in_process(folder)
            ok = seconds < TARGET_SECONDS
            failed |= not ok
            print(f"validate {FILES:,} {label} specs: {seconds:.2f} s (median of {args.rounds}; "
                  f"{seconds / FILES * 1000:.2f} ms/file), peak RSS {peak:.0f} MB (child process) | "
                  f"in-process {inner:.2f} s, {problems:,} problems | target < {TARGET_SECONDS:.0f} s: "
                  f"{'ok' if ok else 'MISSED'} | {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
