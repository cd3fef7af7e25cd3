"""The engine on the local backend: layout, environment, failures, timeouts, retries, resume."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchspec.cli import cli

from .conftest import SpecWriter, make_inputs


def invoke(spec: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    runner = CliRunner()
    run_dir = spec.parent / "run"
    base_env = {"AZURE_BATCH_ENDPOINT": "", "AZURE_BATCH_ACCOUNT": ""}
    result = runner.invoke(cli, ["run", str(spec), "--run-dir", str(run_dir), "--slots", "2", *args],
                           env={**base_env, **(env or {})}, catch_exceptions=False)
    return result.exit_code, result.output


def job_dir(spec: Path) -> Path:
    dirs = [d for d in (spec.parent / "run").iterdir() if d.is_dir() and d.name.startswith("job-")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def states(spec: Path) -> dict[str, tuple[str, int | None, int]]:
    with sqlite3.connect(job_dir(spec) / "state.db") as db:
        rows = db.execute("SELECT id, state, exit_code, attempts FROM tasks").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_layout_and_batch_environment(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    command = (
        "env | grep ^AZ_BATCH_ | sort > env.txt; pwd > pwd.txt; ls > ls.txt; "
        "echo to-stdout; echo to-stderr >&2"
    )
    spec = write_spec(command, outputs=["env.txt", "pwd.txt", "ls.txt"], id="<<stem>>-task")
    code, output = invoke(spec)
    assert code == 0, output
    out = tmp_path / "out"
    env = dict(line.split("=", 1) for line in (out / "env.txt").read_text().splitlines())
    jd = job_dir(spec)
    task_dir = jd / "a-task"
    assert env["AZ_BATCH_JOB_ID"] == jd.name
    assert env["AZ_BATCH_TASK_ID"] == "a-task"
    assert env["AZ_BATCH_TASK_DIR"] == str(task_dir)
    assert env["AZ_BATCH_TASK_WORKING_DIR"] == str(task_dir / "wd")
    assert env["AZ_BATCH_NODE_SHARED_DIR"] == str(tmp_path / "run" / "shared")
    assert env["AZ_BATCH_POOL_ID"] == "test-pool"
    assert (out / "pwd.txt").read_text().strip() == str(task_dir / "wd")
    assert (out / "ls.txt").read_text().split() == ["a.txt", "env.txt", "ls.txt", "pwd.txt"]  # input staged in wd/
    assert (task_dir / "stdout.txt").read_text() == "to-stdout\n"
    assert (task_dir / "stderr.txt").read_text() == "to-stderr\n"
    # A copy (a reflink where the filesystem can), never the user's file itself.
    staged, original = task_dir / "wd" / "a.txt", tmp_path / "inputs" / "a.txt"
    assert staged.read_bytes() == original.read_bytes()
    assert staged.stat().st_ino != original.stat().st_ino


def test_outputs_keep_relative_names(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt"])
    spec = write_spec("mkdir -p res/<<stem|raw>> && cp <<input>> res/<<stem|raw>>/copy.txt",
                      outputs=["res/<<stem>>/*.txt"])
    code, output = invoke(spec)
    assert code == 0, output
    assert (tmp_path / "out" / "res" / "a" / "copy.txt").read_text() == "x\n"
    assert (tmp_path / "out" / "res" / "b" / "copy.txt").read_text() == "x\n"


def test_failing_task_reports_exit_code_and_stderr_tail(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["good.txt", "bad.txt"])
    command = ('if [ <<stem>> = bad ]; then for i in $(seq 1 30); do echo "line $i" >&2; done; exit 3; fi; '
               "cp <<input>> <<stem>>.out")
    spec = write_spec(command, outputs=["<<stem>>.out"])
    code, output = invoke(spec)
    assert code == 1, output
    assert "FAILED: 1 succeeded, 1 failed of 2 tasks" in output
    assert "exit code 3" in output
    assert "last 20 lines of stderr" in output
    assert "| line 30" in output and "| line 11" in output and "| line 10\n" not in output
    assert (tmp_path / "out" / "good.out").exists()


def test_timeout_kills_the_whole_process_group(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    # A background grandchild records its pid; the timeout must kill it too.
    spec = write_spec("(sleep 30 & echo $! > $AZ_BATCH_TASK_DIR/child.pid; wait) ; echo done", timeout="1s",
                      retries=2)
    code, output = invoke(spec)
    assert code == 1, output
    assert "timed out after 1s" in output
    (state,) = states(spec).values()
    assert state[0] == "failed" and state[2] == 1  # a timeout is not retried
    pid = int(next(job_dir(spec).glob("*/child.pid")).read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_missing_output_fails_the_task(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write_spec("true", outputs=["<<stem>>.mp3"])
    code, output = invoke(spec)
    assert code == 1, output
    assert "output 'a.mp3' was not produced" in output


def test_retries_rerun_a_failing_task(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    # Fails on the first two attempts (the working directory persists across attempts, as on a node).
    spec = write_spec("echo x >> tries; [ $(wc -l < tries) -ge 3 ] && cp tries result.txt", outputs=["result.txt"],
                      retries=2)
    code, output = invoke(spec)
    assert code == 0, output
    assert "after 3 attempts" in output
    assert (tmp_path / "out" / "result.txt").read_text() == "x\nx\nx\n"
    assert list(states(spec).values()) == [("succeeded", 0, 3)]


def test_retries_exhausted(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write_spec("echo attempt >> $AZ_BATCH_TASK_DIR/count; exit 7", retries=1)
    code, _ = invoke(spec)
    assert code == 1
    assert (next(job_dir(spec).glob("*/count"))).read_text() == "attempt\nattempt\n"
    assert list(states(spec).values()) == [("failed", 7, 2)]


def test_rerun_skips_finished_tasks_and_force_reruns(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt", "c.txt"])
    spec = write_spec("echo run >> $AZ_BATCH_NODE_SHARED_DIR/../runs.log; cp <<input>> <<stem>>.out",
                      outputs=["<<stem>>.out"])
    runs_log = tmp_path / "run" / "runs.log"
    assert invoke(spec)[0] == 0
    assert len(runs_log.read_text().splitlines()) == 3
    code, output = invoke(spec)
    assert code == 0 and "3 skipped (done earlier)" in output
    assert len(runs_log.read_text().splitlines()) == 3
    (tmp_path / "out" / "b.out").unlink()  # a missing output makes its task run again
    code, output = invoke(spec)
    assert code == 0 and "2 skipped" in output
    assert len(runs_log.read_text().splitlines()) == 4
    code, output = invoke(spec, "--force")
    assert code == 0 and "skipped" not in output
    assert len(runs_log.read_text().splitlines()) == 7


def test_spec_change_gives_a_new_job(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write_spec("cp <<input>> <<stem>>.out", outputs=["<<stem>>.out"], params={"level": 1})
    assert invoke(spec)[0] == 0
    assert invoke(spec, "--set", "level=2")[0] == 0
    jobs = sorted(d.name for d in (tmp_path / "run").iterdir() if d.is_dir() and d.name not in ("shared", "downloads"))
    assert len(jobs) == 2 and all(j.startswith("job-") for j in jobs)


def test_json_events(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt", "b.txt"])
    spec = write_spec("exit 0")
    code, output = invoke(spec, "--json")
    assert code == 0
    events = [json.loads(line) for line in output.splitlines()]
    assert events[0] == {"event": "backend", "backend": "local", "reason": events[0]["reason"]}
    assert [e["task_id"] for e in events if e["event"] == "task"].__len__() == 2
    final = events[-1]
    assert final["event"] == "finished" and final["succeeded"] == 2 and final["exit_code"] == 0


def test_first_line_names_the_backend_and_why(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write_spec("true")
    code, output = invoke(spec)
    assert code == 0
    assert output.splitlines()[0].startswith("backend: local (no Azure Batch account configured")


def test_missing_required_tool_is_a_clear_error(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write_spec("true", requires=["no-such-tool-xyz"])
    code, output = invoke(spec)
    assert code == 2
    assert "required tool not found on PATH: no-such-tool-xyz" in output
    assert "Traceback" not in output


def test_bundled_ffmpeg_when_not_on_path(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write_spec("ffmpeg -version | head -1 > version.txt", outputs=["version.txt"], requires=["ffmpeg"])
    # A PATH with the basic tools but no ffmpeg.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "head", "env"):
        os.symlink(f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else f"/bin/{tool}", bin_dir / tool)
    code, output = invoke(spec, env={"PATH": str(bin_dir)})
    assert code == 0, output
    assert "using the one bundled with imageio-ffmpeg" in output
    assert (tmp_path / "out" / "version.txt").read_text().startswith("ffmpeg version")


def test_program_not_found_fails_cleanly(tmp_path: Path, write_spec: SpecWriter) -> None:
    make_inputs(tmp_path, ["a.txt"])
    spec = write_spec("definitely-not-a-program-xyz <<input>>")
    code, output = invoke(spec)
    assert code == 1
    assert "exit code 127" in output and "definitely-not-a-program-xyz" in output


def test_inputs_that_vanish_after_planning_stop_the_run(tmp_path: Path, write_spec: SpecWriter,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from batchspec.backends.local import LocalBackend

    make_inputs(tmp_path, ["a.txt", "b.txt"])
    spec = write_spec("cp <<input>> <<stem>>.out", outputs=["<<stem>>.out"])
    prepare = LocalBackend.prepare

    def prepare_then_lose_an_input(self: LocalBackend, plan: object, ctx: object) -> None:
        prepare(self, plan, ctx)  # type: ignore[arg-type]
        (tmp_path / "inputs" / "b.txt").unlink()

    monkeypatch.setattr(LocalBackend, "prepare", prepare_then_lose_an_input)
    code, output = invoke(spec)
    assert code == 2
    assert "input files disappeared since planning: inputs/b.txt" in output
