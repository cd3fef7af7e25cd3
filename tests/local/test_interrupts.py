"""Ctrl-C and SIGKILL of the runner: state is recorded, tasks die with the runner, nothing blocks
the next run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import SpecWriter, make_inputs


def start_runner(spec: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "AZURE_BATCH_ENDPOINT": "", "AZURE_BATCH_ACCOUNT": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "batchspec", "run", str(spec), "--run-dir", str(spec.parent / "run"), "--slots", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()


def task_states(run: Path) -> dict[str, str]:
    (db,) = run.glob("job-*/state.db")
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, state FROM tasks").fetchall())


def test_ctrl_c_stops_tasks_records_state_and_exits_130(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt"])
    spec = write_spec("echo $$ > $AZ_BATCH_TASK_DIR/pid; exec sleep 60")
    runner = start_runner(spec)
    def pid_files() -> list[Path]:
        return list((tmp_path / "run").glob("job-*/*/pid"))

    wait_for(lambda: len(pid_files()) == 2 and all(p.read_text().strip() for p in pid_files()))
    pids = [int(p.read_text()) for p in pid_files()]
    assert all(alive(pid) for pid in pids)
    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=20)
    assert runner.returncode == 130, output
    assert "INTERRUPTED" in output and "Traceback" not in output
    wait_for(lambda: not any(alive(pid) for pid in pids), 5)
    assert set(task_states(tmp_path / "run").values()) == {"interrupted"}


def test_sigkill_then_rerun_finishes_without_redoing_work(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["fast1.txt", "fast2.txt", "slow1.txt", "slow2.txt"])
    shared = tmp_path / "run" / "shared"
    shared.mkdir(parents=True)
    (shared / "slow").touch()  # slow tasks hang while this flag exists
    command = (
        "echo <<stem>> >> $AZ_BATCH_NODE_SHARED_DIR/runs.log; "
        "case <<stem>> in slow*) [ -e $AZ_BATCH_NODE_SHARED_DIR/slow ] && "
        "{ echo $$ > $AZ_BATCH_TASK_DIR/pid; exec sleep 60; };; esac; cp <<input>> <<stem>>.out"
    )
    spec = write_spec(command, outputs=["<<stem>>.out"])
    runner = start_runner(spec)
    out = tmp_path / "out"
    def pid_files() -> list[Path]:
        return list((tmp_path / "run").glob("job-*/*/pid"))

    wait_for(lambda: (out / "fast1.out").exists() and (out / "fast2.out").exists()
             and len(pid_files()) == 2 and all(p.read_text().strip() for p in pid_files()))
    wait_for(lambda: sorted(task_states(tmp_path / "run").values()).count("succeeded") == 2)
    orphans = [int(p.read_text()) for p in pid_files()]
    runner.kill()
    runner.wait(timeout=10)
    wait_for(lambda: not any(alive(pid) for pid in orphans), 5)  # tasks die with their runner

    (shared / "slow").unlink()
    rerun = start_runner(spec)
    output, _ = rerun.communicate(timeout=30)
    assert rerun.returncode == 0, output
    assert "2 skipped (done earlier)" in output
    assert "killed while 2 task(s) ran" in output
    runs = (shared / "runs.log").read_text().split()
    assert sorted(runs) == ["fast1", "fast2", "slow1", "slow1", "slow2", "slow2"]  # fast ones ran once
    assert sorted(p.name for p in out.iterdir()) == ["fast1.out", "fast2.out", "slow1.out", "slow2.out"]
