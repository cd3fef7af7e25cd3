"""The scripts in benchmarks/ run as users run them, at their smallest sizes, so that they cannot
break unnoticed (a change elsewhere, such as a spec limit, once made two of them crash).

Each is a child process (``python benchmarks/X.py ...`` from the repository root, the venv's bin
first on PATH, where scripts/test puts ffmpeg) and must do the same work as at full size: exit 0,
or 1 only where a speed target can be missed at toy sizes, print its figure lines, pass its
checks (tasks in the job, outputs that decode, the same task lines as its baseline) and never end
in a traceback. No timing is asserted: at these sizes the
figures say nothing about speed. Limits that only full sizes reach (a spec file's size: a
10,000-item inputs list) are checked apart, by loading and planning the specs the benchmarks
write at their default sizes, in this process.

Prices are asked of a loopback stand-in (tests/prices.py) and cached in the test's own directory;
temporary files go there too.

Not run: ``benchmarks/startup_bench.py``: it pip-installs check-jsonschema, its baseline, and tests
use no network; tests/test_startup.py covers what it measures.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from batchspec.plan import Plan, build_plan
from batchspec.spec import load_spec
from tests.media import make_mp4
from tests.prices import PriceServer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: ffmpeg (scripts/test links it there) and batchspec

pytestmark = pytest.mark.e2e


def bench(script: str, *args: str, tmp_path: Path, prices: PriceServer, targets: bool = False) -> str:
    """Run ``benchmarks/SCRIPT ARGS``; its output (stdout and stderr). ``targets``: exit 1 (a
    target missed) is allowed; the caller checks that the work was done right."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "TMPDIR": str(tmp_path),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "BATCHSPEC_PRICES_URL": prices.url}
    env.pop("BATCHSPEC_REGION", None)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode in ((0, 1) if targets else (0,)), output
    return output


def figures(output: str, *patterns: str) -> list[re.Match[str]]:
    """Each pattern's match in the output (multi-line mode), in order; fails naming the first missing."""
    found = []
    for pattern in patterns:
        match = re.search(pattern, output, re.MULTILINE)
        assert match, f"no line matching {pattern!r} in:\n{output}"
        found.append(match)
    return found


def test_simulate_bench(tmp_path: Path, prices: PriceServer) -> None:
    # Two waves of tasks on 100 simulated nodes; the per-poll target holds at any size.
    output = bench("simulate_bench.py", "--sizes", "200:100", tmp_path=tmp_path, prices=prices)
    figures(output, r"^\s+200 tasks / 100 nodes$", r"^exit code\s+0$", r"^wall time\s+[\d.]+ s$",
            r"^requests in total\s+[\d,]+$", r"^  create_task_collection\s+2$",
            r"^  monitoring polls \(taskcounts\)\s+[1-9][\d,]*$", r"^  the run's record, after the last poll\s+\d+$",
            r"^most requests in one poll\s+[0-2]$", r"target: at most 2 requests per monitoring poll.*: PASS$")


def test_observe_bench(tmp_path: Path, prices: PriceServer) -> None:
    output = bench("observe_bench.py", "--tasks", "20", tmp_path=tmp_path, prices=prices)
    figures(output, r"^status and report of a 20-task job", r"^  batchspec run: [\d.]+ s",
            r"^  batchspec status --format json\s+[\d.]+ s\s+\d+ requests  \{",
            r"^  batchspec report\s+[\d.]+ s\s+\d+ requests  \{.*MB of HTML\)$",
            r"^  baseline: get_task per task \(no process start\)\s+[\d.]+ s\s+20 requests  \{\"get_task\": 20\}$",
            r"reading its 20-item inputs list\)$",
            r"^  status needs \d+ Batch requests where a per-task fetch needs 20 ")


def test_emulator_bench(tmp_path: Path, prices: PriceServer) -> None:
    # The latency target (median under 2 ms) may be missed on a busy machine: exit 1 allowed.
    output = bench("emulator_bench.py", "--tasks", "100", "--calls", "20", tmp_path=tmp_path, prices=prices,
                   targets=True)
    figures(output, r"^create_tasks: 100 tasks \(1 requests of up to 100 tasks\)$",
            r"^  sequential \(max_concurrency=None\)\s+[\d.]+ s   100 added, 1 requests, ",
            r"^  max_concurrency=4\s+[\d.]+ s   100 added, 1 requests, ",
            r"^  baseline: raw HTTP keep-alive GET \(no SDK\)\s+median\s+[\d.]+ ms\s+p95\s+[\d.]+ ms\s+\(n=20\)$",
            r"^  baseline: SDK get_job\s+median .*\(n=20\)$", r"^  SDK get_job_task_counts\s+median .*\(n=20\)$",
            r"^  task counts of 'seq': active=100 running=0 completed=0$",
            r"^  create_tasks 100 tasks < 5 s:\s+[\d.]+ s\s+(PASS|FAIL)$",
            r"^  median taskcounts latency < 2 ms:\s+[\d.]+ ms\s+(PASS|FAIL)$", r"^requests served per operation: \{")


def test_plan_bench(tmp_path: Path, prices: PriceServer) -> None:
    # At 300 files start-up outweighs planning: the ratio to the plain script is missed; exit 1 allowed.
    output = bench("plan_bench.py", "--files", "300", tmp_path=tmp_path, prices=prices, targets=True)
    assert "differ from batchspec's" not in output  # the same task lines as the plain script
    figures(output, r"^creating 300 input files \.\.\.$",
            r"^plan --format json, 300 inputs \(\d+ MB of JSON\): batchspec [\d.]+ s CPU, peak RSS \d+ MB \| "
            r"plain script [\d.]+ s CPU, peak RSS \d+ MB \| ratio [\d.]+ \(paired: [\d.]+-[\d.]+; medians of 5\) \| "
            r"targets <= 1.5x: (ok|MISSED), <= 200 MB: (ok|MISSED)$")


def test_validate_bench_beside_a_baseline(tmp_path: Path, prices: PriceServer) -> None:
    # Our own command as the baseline: the paired path runs, and its ratio (about 1) misses the
    # target of 0.5 (exit 1). Without --baseline only the figures of batchspec and the 5 s target.
    output = bench("validate_bench.py", "--specs", "20", "--baseline", str(BIN / "batchspec"), tmp_path=tmp_path,
                   prices=prices, targets=True)
    assert "batchspec validate exited" not in output  # valid specs pass, broken ones fail, in both
    figures(output,
            r"^validate 20 valid specs: [\d.]+ s \([\d.]+ s CPU; [\d.]+ ms/file\), peak RSS \d+ MB \| baseline "
            r"[\d.]+ s \([\d.]+ s CPU\) \| ratio [\d.]+ \(paired: [\d.]+-[\d.]+; target <= 0.5\) \| in-process "
            r"[\d.]+ s, 0 problems \| target < 5 s and ratio: (ok|MISSED) \| ok: 20 files valid \(medians of 5\)$",
            r"^validate 20 invalid specs: .* \| baseline .* \| in-process [\d.]+ s, 60 problems \| .* \| "
            r"60 problems in 20 of 20 files \(medians of 5\)$")


def test_azure_bench(tmp_path: Path, prices: PriceServer) -> None:
    # At 500 tasks and 5 files, at least 4 requests in flight and a faster parallel upload are up
    # to chance: exit 1 allowed. What is checked: every task in the job, 1 request per 100.
    output = bench("azure_bench.py", "--tasks", "500", "--files", "5", tmp_path=tmp_path, prices=prices,
                   targets=True)
    submit, upload = figures(
        output,
        r"^submit 500 tasks: 4 in flight [\d.]+ s \((\d+) requests, max (\d+) in flight\) \| one at a time [\d.]+ s "
        r"\((\d+) requests\) \| speed-up [\d.]+x; tasks in the job: 500$",
        r"^upload 5 x 1 MB to Azurite: 8 in parallel [\d.]+ s \(\d+ MB/s\) \| one at a time [\d.]+ s \(\d+ MB/s\) \| "
        r"speed-up [\d.]+x; second upload skipped (\d+) and sent (\d+) bytes$")
    assert int(submit[1]) == int(submit[3]) == 5 and 1 <= int(submit[2]) <= 4
    assert (upload[1], upload[2]) == ("5", "0")


def test_stages_bench(tmp_path: Path, prices: PriceServer) -> None:
    clip = make_mp4(tmp_path / "media" / "clip.mp4", seconds=3.0, keyframes=10)
    output = bench("stages_bench.py", "--inputs", "50", "--media", str(clip), tmp_path=tmp_path, prices=prices)
    for ids in ("readable ids", "numeric ids"):
        figures(output,
                rf"^50 inputs, {ids}: with a merge: planned in [\d.]+ s, fingerprinted and checked for earlier "
                r"results in [\d.]+ s, submitted in [\d.]+ s with \d+ requests \(\d+ create_task_collection\), "
                r"51 tasks in the job \| without: planned in [\d.]+ s, submitted in [\d.]+ s with \d+ requests "
                r"\(\d+ create_task_collection\), 50 tasks$")
    figures(output, r"^  the merge waits through .*; the merge reads its 50 inputs through \d+ resource file\(s\)$",
            r"^chunked encode of a 3.0 s clip on 2 local slots: [\d.]+ s \(1 split, 1 segment encodes, 1 join\) \| "
            r"one ffmpeg over the whole file: [\d.]+ s \| ratio [\d.]+x; result [\d.]+ s \(input [\d.]+ s\), "
            r"plays: yes$")


def test_local_bench(tmp_path: Path, prices: PriceServer) -> None:
    # Against xargs and GNU parallel the targets are for real clips and 1,000 tasks; here exit 1 is allowed.
    output = bench("local_bench.py", "--seconds", "1", "--noop", "20", "--jobs", "2", tmp_path=tmp_path,
                   prices=prices, targets=True)
    figures(output, r"^generating ten 1-second MP4s \.\.\.$",
            r"^10 x 1 s MP4 -> MP3, 2 slots: batchspec [\d.]+ s \| xargs -P2 [\d.]+ s \| ratio [\d.]+ \(paired "
            r"[\d.]+-[\d.]+; target <= 1.02; medians of 5\) \| difference [+-][\d.]+ s, of which [\d.]+ s is "
            r"batchspec's fixed start-up")
    if shutil.which("parallel", path=os.environ.get("PATH")) is None:
        figures(output, r"^GNU parallel is not installed \(apt-get install parallel\): no baseline$")
    else:
        figures(output, r"^20 no-op tasks, 2 at once: batchspec [\d.]+ s \(-?[\d.]+ ms/task after [\d.]+ s "
                        r"start-up\) \| GNU parallel [\d.]+ s \([\d.]+ ms/task\) \| ratio -?[\d.]+ \(target <= 1.0\)$")


def test_containers_bench(tmp_path: Path, prices: PriceServer, container_image: str) -> None:
    # container_image: the test image built, and BATCHSPEC_CONTAINER_OPTIONS set where this runtime needs it.
    output = bench("containers_bench.py", "--tasks", "2", tmp_path=tmp_path, prices=prices)
    figures(output, r"^2 tasks on 2 slots\s+processes\s+containers$", r"^wall time\s+[\d.]+ s\s+[\d.]+ s$",
            r"^per task \(wall time x slots/tasks\)\s+[\d.]+ s\s+[\d.]+ s$",
            r"^container overhead per task\s+-?[\d.]+ s$", r"^the check of the image, once per run .*[\d.]+ s$",
            r"^MP3s decode and last as long as their inputs: yes$")


def benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as a module (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def plan_of(path: Path, text: str | None = None) -> Plan:
    if text is not None:
        path.write_text(text)
    return build_plan(load_spec(path))


def test_specs_of_the_default_sizes_load_and_plan(tmp_path: Path) -> None:
    # What the runs above cannot reach at their sizes: a spec limit once refused these.
    observe, stages = benchmark("observe_bench"), benchmark("stages_bench")
    assert len(plan_of(tmp_path / "observe.yaml", observe.spec_text(10_000)).tasks) == 10_000
    merge = plan_of(tmp_path / "stages.yaml", stages.spec_text("bench-merge", "clip-<<item.n>>", True))
    assert len(merge.tasks) == stages.INPUTS + 1 == 10_001
    assert len(benchmark("azure_bench").tenk_plan(tmp_path, 10_000).tasks) == 10_000
    simulate = benchmark("simulate_bench")
    for tasks, nodes in ((10_000, 100), (100_000, 1000)):  # its default --sizes
        assert len(plan_of(simulate.spec_for(tmp_path, tasks, nodes)).tasks) == tasks
