"""Tasks in container images on the local backend, beside the same tasks as plain processes.

The tutorial's job (MP4 to MP3, 1 s generated clips) on 2 local slots, run twice from a clean run
directory each time: once with the tasks as processes (the baseline), once in the test image
(scripts/build-test-image) with podman or docker. Prints wall time, time per task and the
overhead a container adds to each task, and what the run's check of the image costs (once per
run: it starts, and has the required tools). The MP3s must decode and last as long as their inputs.

Run: ``python benchmarks/containers_bench.py [--tasks N]`` (needs podman or docker; where the
runtime's defaults are refused, set BATCHSPEC_CONTAINER_OPTIONS, see README); exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchspec.containers import find_runtime
from tests.media import decodes_cleanly, make_mp4, probe_duration

REPO = Path(__file__).resolve().parent.parent
IMAGE = "localhost/batchspec-test-ffmpeg:1"


def spec(container: bool) -> str:
    return json.dumps({
        "batchspec": 1, "name": "bench",
        "pool": {"id": "p", "vm_size": "standard_d2s_v3", "node_agent_sku": "batch.node.ubuntu 22.04",
                 "image": {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204"},
                 "nodes": {"dedicated": 1}},
        "requires": ["ffmpeg"], "inputs": {"path": "inputs/*.mp4"},
        "task": {**({"container": IMAGE} if container else {}),
                 "command": "ffmpeg -v error -y -i <<input>> -vn -b:a 96k <<stem>>.mp3", "outputs": ["<<stem>>.mp3"]},
        "outputs": {"download": "out"},
    })


def run(work: Path, container: bool) -> float:
    """Seconds the run took, from a clean run directory."""
    shutil.rmtree(work / "run", ignore_errors=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    (work / "spec.yaml").write_text(spec(container))
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "batchspec", "run", str(work / "spec.yaml"), "--backend", "local",
                           "--slots", "2", "--run-dir", str(work / "run")], capture_output=True, text=True, check=False)
    total = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    build = subprocess.run([str(REPO / "scripts" / "build-test-image")], capture_output=True, text=True, check=False)
    if build.returncode != 0:
        print(build.stdout + build.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = make_mp4(work / "clip.mp4", seconds=1.0, size="64x48")
        (work / "inputs").mkdir()
        for i in range(args.tasks):
            os.link(clip, work / "inputs" / f"clip-{i:03d}.mp4")
        plain = run(work, container=False)
        boxed = run(work, container=True)
        began = time.monotonic()
        find_runtime().probe(IMAGE, ["ffmpeg"])
        probe = time.monotonic() - began
        mp3s = sorted((work / "out").glob("*.mp3"))
        ok = len(mp3s) == args.tasks and all(decodes_cleanly(p) and abs(probe_duration(p) - 1.0) < 0.1
                                               for p in mp3s[:5])
    per = args.tasks / 2  # tasks per slot
    print(f"{args.tasks} tasks on 2 slots            processes   containers")
    print(f"wall time                          {plain:8.2f} s  {boxed:8.2f} s")
    print(f"per task (wall time x slots/tasks) {plain / per:8.3f} s  {boxed / per:8.3f} s")
    print(f"container overhead per task        {(boxed - plain) / per:8.3f} s")
    print(f"the check of the image, once per run (included above)  {probe:.2f} s")
    print(f"MP3s decode and last as long as their inputs: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
