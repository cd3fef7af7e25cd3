"""Merge and stage benchmarks, each printed beside its baseline from the same run.

1. A 10,000-input job (``--inputs``) with a merge step, planned and submitted to the emulator (in its own
   process, with Azurite) through the Azure backend: time, requests per operation and how the
   merge's wait is expressed, beside the same tasks without the merge. Done twice: with
   readable task ids (too long for one dependsOn list: gate tasks) and with numeric ids
   (``task.id: "<<item.n>>"``: taskIdRanges).
2. ``specs/chunked-encode.yaml`` on a 2-minute clip shaped like the tutorial's (640x360, 30 fps,
   stereo AAC) on 2 local slots, beside one ffmpeg run encoding the whole file the same way:
   wall-time ratio; the result must play and last as long as the input (within 0.1 s).

Run: ``python benchmarks/stages_bench.py [--inputs N] [--media FILE] [--skip-encode]`` (needs ``npm install`` for
Azurite, and ffmpeg on PATH); exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import client_for, emulator_exports, request_counts

from batchspec.backends.azure import AzureBackend
from batchspec.backends.base import RunContext, RunOptions, Wave
from batchspec.events import Event
from batchspec.plan import Plan, build_plan
from batchspec.plan.deps import express
from batchspec.spec import load_spec
from tests.azurite import running_azurite

INPUTS = 10_000
REPO = Path(__file__).resolve().parent.parent
POOL = ("pool: {id: p, vm_size: standard_a1_v2, image: {publisher: canonical, offer: ubuntu-24_04-lts, sku: server},"
        " node_agent_sku: batch.node.ubuntu 24.04, nodes: {dedicated: 1}}\n")


def spec_text(name: str, task_id: str, merge: bool, inputs: int = INPUTS) -> str:
    text = (
        f"batchspec: 1\nname: {name}\n{POOL}"
        f"inputs: {{list: [{', '.join(f'{{n: {i}}}' for i in range(inputs))}]}}\n"
        f"task:\n  id: {task_id}\n"
        "  command: ffmpeg -hide_banner -y -i clip-<<item.n>>.mp4 -vn -b:a 192k clip-<<item.n>>.mp3\n"
        "  outputs: [clip-<<item.n>>.mp3]\n  timeout: 30m\n  retries: 2\n"
    )
    if merge:
        text += ("merge:\n  command: ls *.mp3 > playlist.m3u && cat *.mp3 > all.mp3\n"
                 "  outputs: [all.mp3, playlist.m3u]\n  timeout: 1h\n")
    return text


def submit(work: Path, name: str, task_id: str, merge: bool, inputs: int) -> dict[str, object]:
    """Plan the job and submit it all to a fresh emulator (no nodes: submission alone)."""
    work.mkdir(parents=True, exist_ok=True)
    spec = work / f"{name}.yaml"
    spec.write_text(spec_text(name, task_id, merge, inputs))
    started = time.perf_counter()
    plan: Plan = build_plan(load_spec(spec))
    planned = time.perf_counter() - started
    with running_azurite(work) as azurite, emulator_exports("--nodes", "0") as exports, \
            client_for(exports) as client:
        options = RunOptions(env={**exports, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
        events: list[Event] = []
        backend = AzureBackend(options)
        ctx = RunContext(options, events.append)
        backend.stage_inputs(plan, ctx)
        started = time.perf_counter()
        backend.completed(plan, plan.tasks, ctx)  # as the engine does: fingerprints, earlier results
        checked = time.perf_counter() - started
        before = sum(request_counts(client).values())
        started = time.perf_counter()
        backend.submit(plan, Wave(tuple(s.name for s in plan.stages), plan.tasks, frozenset(), True), ctx)
        submitted = time.perf_counter() - started
        counts = request_counts(client)
        in_job = sum(1 for _ in client.list_tasks(plan.job_id, select=["id"]))
        merge_task = client.get_task(plan.job_id, "merge") if merge else None
        backend.close()
    how = "no merge"
    if merge_task is not None:
        (task,) = plan.stage("merge").tasks or ()
        how = express(task.id, task.depends_on).describe()
        files = merge_task.resource_files or []
        how += f"; the merge reads its {inputs:,} inputs through {len(files)} resource file(s)"
    return {"plan_s": planned, "check_s": checked, "submit_s": submitted, "requests": sum(counts.values()) - before,
            "adds": counts.get("create_task_collection", 0), "in_job": in_job, "how": how, "tasks": len(plan.tasks)}


def merge_bench(work: Path, inputs: int) -> bool:
    ok = True
    for label, task_id in (("readable ids", "clip-<<item.n>>"), ("numeric ids", "'<<item.n>>'")):
        base = submit(work / f"base-{label[0]}", "bench-plain", task_id, merge=False, inputs=inputs)
        with_merge = submit(work / f"merge-{label[0]}", "bench-merge", task_id, merge=True, inputs=inputs)
        print(f"{inputs:,} inputs, {label}: with a merge: planned in {with_merge['plan_s']:.2f} s, fingerprinted and "
              f"checked for earlier results in {with_merge['check_s']:.2f} s, submitted in "
              f"{with_merge['submit_s']:.2f} s with {with_merge['requests']} requests "
              f"({with_merge['adds']} create_task_collection), {with_merge['in_job']:,} tasks in the job | "
              f"without: planned in {base['plan_s']:.2f} s, submitted in {base['submit_s']:.2f} s with "
              f"{base['requests']} requests ({base['adds']} create_task_collection), {base['in_job']:,} tasks")
        print(f"  the merge waits through {with_merge['how']}")
        extra = int(str(with_merge["in_job"])) - int(str(base["in_job"]))
        ok = ok and extra >= 1 and int(str(with_merge["adds"])) <= int(str(base["adds"])) + 3
    return ok


def _clip(path: Path, media: Path | None) -> None:
    if media is not None:
        shutil.copyfile(media, path)
        return
    # Shaped like the tutorial's clips: 640x360 at 30 fps, stereo 44.1 kHz AAC at 128 kb/s, 2 minutes.
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=120",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=120",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2",
                    "-b:a", "128k", "-shortest", str(path)], check=True)


def _duration(path: Path) -> float:
    result = subprocess.run(["ffmpeg", "-v", "error", "-stats", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, check=True)
    h, m, s = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", result.stderr)[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def encode_bench(work: Path, media: Path | None) -> bool:
    specs = work / "specs"
    (specs / "inputs").mkdir(parents=True)
    text = (REPO / "specs" / "chunked-encode.yaml").read_text()
    (specs / "chunked-encode.yaml").write_text(re.sub(r"(?m)^  download: .*$", "  download: out", text))
    clip = specs / "inputs" / "tutorial.mp4"
    print("a 2-minute clip shaped like the tutorial's ..." if media is None else f"copying {media} ...", flush=True)
    _clip(clip, media)
    spec = load_spec(specs / "chunked-encode.yaml")
    params = build_plan(spec).params
    started = time.perf_counter()
    single = work / "single.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-map", "0:v", "-map", "0:a?", "-c:v", "libx264",
                    "-preset", str(params["preset"]), "-crf", str(params["crf"]), "-pix_fmt", "yuv420p", "-c:a", "copy",
                    "-movflags", "+faststart", str(single)], check=True)
    one = time.perf_counter() - started
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "batchspec", "run", str(specs / "chunked-encode.yaml"),
                             "--backend", "local", "--slots", "2", "--run-dir", str(work / "run"), "--json"],
                            capture_output=True, text=True, check=False)
    chunked = time.perf_counter() - started
    events = [json.loads(line) for line in result.stdout.splitlines()]
    waves = [e["tasks"] for e in events if e["event"] == "stages"]
    out = specs / "out" / "tutorial-encoded.mp4"
    plays = out.is_file() and not subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
                                                 capture_output=True, text=True, check=False).stderr.strip()
    source, made = _duration(clip), _duration(out) if out.is_file() else 0.0
    print(f"chunked encode of a {source:.1f} s clip on 2 local slots: {chunked:.1f} s ({waves[0]} split, "
          f"{waves[1] - 1 if len(waves) > 1 else 0} segment encodes, 1 join) | one ffmpeg over the whole file: "
          f"{one:.1f} s | ratio {chunked / one:.2f}x; result {made:.2f} s (input {source:.2f} s), "
          f"plays: {'yes' if plays else 'NO'}")
    print("  (on one machine x264 already keeps every core busy, so segments gain nothing here; they spread one "
          "video over many nodes)")
    return result.returncode == 0 and plays and abs(made - source) <= 0.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", type=Path, help="encode a copy of this clip instead of a generated one")
    parser.add_argument("--skip-encode", action="store_true", help="only the merge benchmark")
    parser.add_argument("--inputs", type=int, default=INPUTS, help="inputs of the merge benchmark's job "
                        "(default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ok = merge_bench(Path(tmp) / "merge", args.inputs)
        if not args.skip_encode:
            ok = encode_bench(Path(tmp) / "encode", args.media) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
