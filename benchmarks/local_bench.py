"""Local backend benchmarks, each printed beside its baseline from the same run.

1. Ten generated 60-second MP4s (``--seconds``; or ten copies of ``--media``, e.g. the tutorial's
   clip) to MP3 with two slots: ``batchspec run`` against ``xargs -P2`` running the same ffmpeg commands, in
   paired rounds (target: median at most 1.02x).
2. 1,000 no-op tasks (``--noop``): per-task overhead of ``batchspec run`` against GNU parallel
   (``apt-get install parallel``) with the same number of jobs at once (target: no worse).

Run: ``python benchmarks/local_bench.py [--rounds N] [--media FILE | --seconds N] [--noop N]`` (at least
5 rounds); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batchspec.plan import build_plan
from batchspec.runner import node_command_line
from batchspec.spec import load_spec

POOL = {
    "id": "bench", "vm_size": "standard_a1_v2",
    "image": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
    "node_agent_sku": "batch.node.ubuntu 24.04", "nodes": {"dedicated": 1},
}
FFMPEG = shutil.which("ffmpeg") or sys.exit("ffmpeg is needed on PATH")
TARGET_RATIO = 1.02


def timed(argv: list[str], cwd: Path, stdin: bytes | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, input=stdin, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def batchspec_run(spec: Path, slots: int, run_dir: Path) -> float:
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(spec.parent / "out", ignore_errors=True)
    env_prefix = [sys.executable, "-m", "batchspec", "run", str(spec), "--backend", "local", "--slots", str(slots),
                  "--run-dir", str(run_dir)]
    return timed(env_prefix, spec.parent)


def ffmpeg_bench(work: Path, rounds: int, media: Path | None, seconds: float) -> bool:
    inputs = work / "inputs"
    inputs.mkdir(parents=True)
    if media is not None:
        print(f"ten copies of {media} ...", flush=True)
    else:
        print(f"generating ten {seconds:g}-second MP4s ...", flush=True)
    for i in range(10):
        if media is not None:
            shutil.copyfile(media, inputs / f"clip{i}.mp4")
            continue
        # Shaped like the tutorial's clips: 640x360 at 30 fps, stereo 44.1 kHz AAC at 128 kb/s.
        subprocess.run([FFMPEG, "-v", "error", "-y",
                        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds:g}",
                        "-f", "lavfi", "-i", f"sine=frequency={300 + 50 * i}:sample_rate=44100:duration={seconds:g}",
                        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-ac", "2", "-b:a", "128k",
                        "-shortest", str(inputs / f"clip{i}.mp4")], check=True)
    spec = work / "spec.yaml"
    spec.write_text(json.dumps({
        "batchspec": 1, "name": "bench-mp3", "pool": POOL, "requires": ["ffmpeg"],
        "inputs": {"path": "inputs/*.mp4"},
        "task": {"command": "ffmpeg -hide_banner -y -i <<input>> -vn -b:a 192k <<stem>>.mp3",
                 "outputs": ["<<stem>>.mp3"]},
        "outputs": {"download": "out"},
    }))
    # The baseline runs the very commands batchspec runs, each in a directory holding its input.
    plan = build_plan(load_spec(spec))
    xargs_dirs = work / "xargs"
    lines = []
    for task in plan.tasks:
        wd = xargs_dirs / task.id
        lines.append(f"mkdir -p {wd} && ln -f {plan.resolve(task.inputs[0].source)} {wd}/ && cd {wd} && "
                     f"{node_command_line(task.command)}")
    script = "\0".join(lines).encode()
    ours, theirs = [], []
    for _ in range(rounds):  # interleaved, so both sides see the same machine state
        ours.append(batchspec_run(spec, 2, work / "run"))
        shutil.rmtree(xargs_dirs, ignore_errors=True)
        theirs.append(timed(["xargs", "-0", "-P2", "-n1", "bash", "-c"], work, script))
    mine, base = statistics.median(ours), statistics.median(theirs)
    ratio = mine / base
    paired = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    startup = startup_seconds(work, rounds)
    what = media.name if media is not None else f"{seconds:g} s MP4"
    print(f"10 x {what} -> MP3, 2 slots: batchspec {mine:.2f} s | xargs -P2 {base:.2f} s | "
          f"ratio {ratio:.3f} (paired {paired[0]:.3f}-{paired[-1]:.3f}; target <= {TARGET_RATIO}; medians of "
          f"{rounds}) | difference {mine - base:+.2f} s, of which {startup:.2f} s is batchspec's fixed start-up "
          "(a one-task no-op run)")
    return ratio <= TARGET_RATIO


def startup_seconds(work: Path, rounds: int) -> float:
    """Interpreter start, imports, validation, planning and run bookkeeping: a one-task run of
    a command that does nothing."""
    one = work / "startup.yaml"
    one.write_text(json.dumps({
        "batchspec": 1, "name": "bench-startup", "pool": POOL, "inputs": {"list": [{"n": 0}]},
        "task": {"command": "true"}, "outputs": {"download": "out"},
    }))
    return statistics.median(batchspec_run(one, 1, work / "startup-run") for _ in range(rounds))


def noop_bench(work: Path, rounds: int, jobs: int, tasks: int) -> bool:
    work.mkdir(parents=True)
    spec = work / "noop.yaml"
    spec.write_text(json.dumps({
        "batchspec": 1, "name": "bench-noop", "pool": POOL,
        "inputs": {"list": [{"n": i} for i in range(tasks)]},
        "task": {"command": "true"},
        "outputs": {"download": "out"},
    }))
    parallel = shutil.which("parallel")
    if parallel is None:
        print("GNU parallel is not installed (apt-get install parallel): no baseline")
        return False
    ours, theirs = [], []
    seq = "\n".join(str(i) for i in range(tasks)).encode()
    for _ in range(rounds):
        ours.append(batchspec_run(spec, jobs, work / "noop-run"))
        theirs.append(timed([parallel, "-j", str(jobs), "true"], work, seq))
    # Start-up is paid once per run, not per task: take it out, so the figure is per task.
    startup = startup_seconds(work, rounds)
    mine = (statistics.median(ours) - startup) / tasks * 1000
    base = statistics.median(theirs) / tasks * 1000
    print(f"{tasks:,} no-op tasks, {jobs} at once: batchspec {statistics.median(ours):.2f} s "
          f"({mine:.2f} ms/task after {startup:.2f} s start-up) | GNU parallel {statistics.median(theirs):.2f} s "
          f"({base:.2f} ms/task) | ratio {mine / base:.2f} (target <= 1.0)")
    return mine <= base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="tasks at once for the no-op run")
    parser.add_argument("--media", type=Path, default=None,
                        help="convert ten copies of this MP4 instead of generated clips "
                             "(e.g. the tutorial's 2-minute ../shared/media/LowPriVMs-4.mp4)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="length of the generated clips, in seconds (default: %(default)g)")
    parser.add_argument("--noop", type=int, default=1000, help="no-op tasks (default: %(default)s)")
    args = parser.parse_args()
    args.rounds = max(5, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ok_ffmpeg = ffmpeg_bench(work / "ffmpeg", args.rounds, args.media, args.seconds)
        ok_noop = noop_bench(work / "noop", args.rounds, args.jobs, args.noop)
    return 0 if ok_ffmpeg and ok_noop else 1


if __name__ == "__main__":
    sys.exit(main())
