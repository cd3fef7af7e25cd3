"""Start-up benchmark: what users wait for on every command, as CPU time (user + sys) of the
whole process, each beside its baseline in the same run.

1. ``batchspec validate specs/mp4-to-mp3.yaml`` beside check-jsonschema validating the same file
   against the same schema (target: at most 0.5x its CPU). check-jsonschema is installed into
   this interpreter's environment for the benchmark if missing (it is no dependency of
   batchspec); when it cannot be, that line says so and is skipped.
2. ``batchspec --help`` (target: at most 0.15 s of CPU).
3. ``batchspec plan`` of the 5-input example spec, as a table (target: at most 0.15 s of CPU).

The interpreter alone (``python -c pass``) is shown for scale. Runs are paired (batchspec, then
its baseline, again and again) and each figure is the median of ``--rounds`` (at least 5). CPU
time, not wall time: the machine may be busy with other work. Bytecode is written before timing
(a warm-up run), as an installed package has it.

Run: ``python benchmarks/startup_bench.py [--rounds N]``; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "mp4-to-mp3.yaml"
SCHEMA = REPO / "batchspec" / "spec" / "batchspec.schema.json"
BIN = Path(sys.executable).parent
# The console script users run (python -m batchspec adds runpy's imports).
BATCHSPEC = [str(BIN / "batchspec")] if (BIN / "batchspec").exists() else [sys.executable, "-m", "batchspec"]
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cpu_seconds(argv: list[str], cwd: Path = REPO) -> float:
    """User + sys CPU of ``argv`` and what it started (its own rusage from wait4)."""
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=devnull, stderr=devnull)
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} exited {code}")
    return usage.ru_utime + usage.ru_stime


def paired(rounds: int, ours: list[str], theirs: list[str] | None) -> tuple[float, float | None]:
    """Medians over interleaved runs (after one warm-up run of each)."""
    cpu_seconds(ours)
    if theirs:
        cpu_seconds(theirs)
    mine, base = [], []
    for _ in range(rounds):
        mine.append(cpu_seconds(ours))
        if theirs:
            base.append(cpu_seconds(theirs))
    return statistics.median(mine), statistics.median(base) if base else None


def check_jsonschema() -> list[str] | None:
    """The check-jsonschema command, installed into this environment if it is missing."""
    found = shutil.which("check-jsonschema", path=str(BIN)) or shutil.which("check-jsonschema")
    if found is None:
        print("check-jsonschema is not installed: installing it into this environment for the benchmark ...",
              flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "check-jsonschema"], check=False, capture_output=True, text=True)
        found = shutil.which("check-jsonschema", path=str(BIN))
        if done.returncode != 0 or found is None:
            print(f"could not install check-jsonschema ({done.stderr.strip().splitlines()[-1:]}): "
                  "the validate comparison is skipped")
            return None
    return [found, "--schemafile", str(SCHEMA), str(SPEC)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rounds = max(5, args.rounds)
    ok = True
    python, _ = paired(rounds, [sys.executable, "-c", "pass"], None)
    print(f"python -c pass: {python:.3f} s CPU (the interpreter alone)")

    other = check_jsonschema()
    mine, base = paired(rounds, [*BATCHSPEC, "validate", str(SPEC)], other)
    if base is not None:
        ratio = mine / base
        ok &= ratio <= 0.5
        print(f"validate one spec: batchspec {mine:.3f} s CPU | check-jsonschema {base:.3f} s CPU | ratio "
              f"{ratio:.2f} (target <= 0.5: {'ok' if ratio <= 0.5 else 'MISSED'}; medians of {rounds})")
    else:
        print(f"validate one spec: batchspec {mine:.3f} s CPU (no check-jsonschema to compare with)")

    mine, _ = paired(rounds, [*BATCHSPEC, "--help"], None)
    ok &= mine <= 0.15
    print(f"--help: {mine:.3f} s CPU (target <= 0.15 s: {'ok' if mine <= 0.15 else 'MISSED'}; median of {rounds})")

    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:  # no earlier run's record to price
        mine, _ = paired(rounds, [*BATCHSPEC, "plan", str(SPEC), "--run-dir", tmp, "--offline"], None)
    ok &= mine <= 0.15
    print(f"plan of 5 inputs (table): {mine:.3f} s CPU (target <= 0.15 s: {'ok' if mine <= 0.15 else 'MISSED'}; "
          f"median of {rounds})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
