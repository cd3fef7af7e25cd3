"""Issue 9, item 4 and the kill proof: the runner SIGKILLed at random points, five times in one
test, then run to the end, on each backend. No output is lost and no finished task runs again:
every task appends its name to a log as its very last act, and each name is there exactly once.

Locally, tasks die with their runner (a watcher leads each task's process group: parent-death
signal, then SIGTERM, SIGKILL after a grace period) and what an attempt finished meanwhile is
adopted by the next run. The last act of each task ignores SIGTERM (``trap '' TERM``), so a task
that got as far as its log line always finishes: that is what "finished" means here, and it is
exact. On Azure, tasks keep running on the service and the next run follows them.

The seed of each test's random kill times is in its failure message (BATCHSPEC_KILL_SEED sets it).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import AzureWorld, alive, make_inputs, runner_process, write_spec

KILLS = 5
STEMS = [f"t{i:02}" for i in range(16)]


def seed() -> int:
    return int(os.environ.get("BATCHSPEC_KILL_SEED") or time.time_ns() % 1_000_000)


def kill_at_random(start: Callable[[], subprocess.Popen[str]], rng: random.Random, low: float, high: float,
                   note: list[str], after_kill: Callable[[], None] = lambda: None) -> int:
    """Start the runner and SIGKILL it at a random moment, KILLS times; returns how many of
    the kills found it still running."""
    landed = 0
    for n in range(KILLS):
        runner = start()
        delay = rng.uniform(low, high)
        try:
            runner.wait(timeout=delay)
            note.append(f"run {n + 1} ended by itself before its kill at {delay:.2f}s")
        except subprocess.TimeoutExpired:
            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=10)
            landed += 1
            note.append(f"run {n + 1} killed at {delay:.2f}s")
        assert runner.stdout is not None
        runner.stdout.close()
        after_kill()
    return landed


def check_log(log: Path, stems: list[str], note: list[str]) -> None:
    lines = log.read_text().split()
    assert sorted(lines) == stems, (note, lines)  # each task finished exactly once


def test_local_runner_killed_five_times(project: Path) -> None:
    rng_seed = seed()
    rng = random.Random(rng_seed)
    note = [f"seed {rng_seed}"]
    # 16 tasks of 0.5-1.0 s on 2 slots: about 6 s of work, more than five runs killed within
    # 1.5 s of their start can do, so every kill lands while the run is under way.
    make_inputs(project, {f"{s}.txt": f"{s} {rng.uniform(0.5, 1.0):.2f}\n" for s in STEMS})
    log, pids = project / "finished.log", project / "pids"
    command = (f"echo $$ >> {pids}; sleep $(cut -d' ' -f2 <<input>>); cp <<input>> <<stem>>.out; "
               f"trap '' TERM; echo <<stem>> >> {log}")
    spec = write_spec(project, command, outputs=["<<stem>>.out"])

    def start() -> subprocess.Popen[str]:
        return runner_process(spec)

    def no_task_left() -> None:  # tasks die with their runner (within the grace period)
        deadline = time.monotonic() + 10
        while pids.exists() and any(alive(int(p)) for p in pids.read_text().split()):
            assert time.monotonic() < deadline, ("task processes outlived their runner", note)
            time.sleep(0.05)

    assert kill_at_random(start, rng, 0.6, 1.5, note, no_task_left) == KILLS, note
    final = runner_process(spec)
    output, _ = final.communicate(timeout=60)
    assert final.returncode == 0, (note, output)
    check_log(log, STEMS, note)
    for stem in STEMS:
        assert (project / "out" / f"{stem}.out").read_text() == (project / "inputs" / f"{stem}.txt").read_text()
    assert f"OK: {len(STEMS)} succeeded" in output
    print("local kills:", "; ".join(note))  # shown with -s: what was tried


@pytest.mark.e2e
def test_azure_runner_killed_five_times(project: Path, world: AzureWorld) -> None:
    rng_seed = seed()
    rng = random.Random(rng_seed)
    note = [f"seed {rng_seed}"]
    stems = STEMS[:10]
    make_inputs(project, {f"{s}.txt": f"{s}\n" for s in stems})
    log = project / "finished.log"
    # 10 tasks of 1 s on the emulator's 2 nodes keep the service busy for 5 s or more, while
    # the runs are killed within 0.8-1.6 s of their start: the first three kills land for sure.
    spec = write_spec(project, f"sleep 1; cp <<input>> <<stem>>.out; echo <<stem>> >> {log}",
                      outputs=["<<stem>>.out"], name="relkill", cleanup={"job": "delete", "pool": "keep"})

    def start() -> subprocess.Popen[str]:
        return runner_process(spec, env=world.env, backend="azure")

    assert kill_at_random(start, rng, 0.8, 1.6, note) >= 3, note
    final = start()
    output, _ = final.communicate(timeout=120)
    assert final.returncode == 0, (note, output)
    check_log(log, stems, note)
    for stem in stems:
        assert (project / "out" / f"{stem}.out").read_text() == f"{stem}\n"
    adds = world.emulator.request_counts().get("create_task_collection", 0)
    again = runner_process(spec, env=world.env, backend="azure")
    output, _ = again.communicate(timeout=60)
    assert again.returncode == 0 and "nothing to add" in output, output
    assert world.emulator.request_counts().get("create_task_collection", 0) == adds
    print("azure kills:", "; ".join(note))  # shown with -s: what was tried


def test_what_a_killed_runs_task_finishes_is_kept(project: Path) -> None:
    """A task that ignores SIGTERM finishes after its runner was killed: the next run keeps it."""
    make_inputs(project, {"slow.txt": "slow\n"})
    log, started = project / "finished.log", project / "started"
    spec = write_spec(project, f"trap '' TERM; touch {started}; sleep 1; cp <<input>> <<stem>>.out; "
                               f"echo <<stem>> >> {log}", outputs=["<<stem>>.out"])
    runner = runner_process(spec)
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.kill()
    runner.wait(timeout=10)
    assert runner.stdout is not None
    runner.stdout.close()
    rerun = runner_process(spec)
    output, _ = rerun.communicate(timeout=30)
    assert rerun.returncode == 0, output
    assert "1 task(s) finished in an earlier run that was killed: their outputs are kept" in output
    assert log.read_text() == "slow\n"  # ran once
    assert (project / "out" / "slow.out").read_text() == "slow\n"
