"""Issue 10, item 10 (the smaller ones) and the leftovers handed over with it.

- one exit-code rule across commands (README "Exit codes");
- a missing spec file is named as such, exit 2;
- the run summary shows the last attempt's stderr (not every retry's again), names the kept task
  directory, says "outputs:" only when there are outputs, and after ``--force`` does not tell
  the user to rerun the same command (which would start over);
- the emulator uploads what an output pattern matches in the task directory, never through a
  link out of it;
- a missing task log (a simulated task's stderr.txt) is no SDK traceback.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from azure.batch import models as m
from click.testing import CliRunner

from batchspec.cli import cli
from batchspec.emulator.execution import Simulation
from batchspec.emulator.testing import batch_client, running_emulator
from batchspec.engine.reporters import summary_text
from batchspec.events import RunFinished
from tests.emulator.helpers import create_job, create_pool

from .conftest import NO_AZURE, make_inputs, run_local, write_spec


def test_a_missing_spec_file_is_named_and_exits_2(tmp_path: Path) -> None:
    for command in (["run"], ["plan"], ["status"]):
        result = CliRunner().invoke(cli, [*command, str(tmp_path / "nope.yaml")], env=NO_AZURE)
        assert result.exit_code == 2, result.output
        assert f"no such spec file: {tmp_path / 'nope.yaml'}" in result.output
        assert "$:" not in result.output and "batchspec validate" in result.output  # the hint lists specs


def test_exit_codes_follow_one_rule(project: Path) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    good = write_spec(project / "good", "cp <<input>> <<stem>>.out", outputs=["<<stem>>.out"])
    make_inputs(project / "good", {"a.txt": "a\n"})
    runner = CliRunner()
    assert runner.invoke(cli, ["status", str(good), "--backend", "local"], env=NO_AZURE).exit_code == 2  # never run
    assert run_local(good).exit_code == 0  # yes
    assert runner.invoke(cli, ["status", str(good), "--backend", "local", "--run-dir", str(good.parent / "run")],
                         env=NO_AZURE).exit_code == 0
    bad = write_spec(project / "bad", "exit 3")
    make_inputs(project / "bad", {"a.txt": "a\n"})
    assert run_local(bad).exit_code == 1  # no: a task failed
    empty = write_spec(project / "empty", "true", inputs={"path": "nothing/*"})
    assert run_local(empty).exit_code == 2  # could not: nothing to run
    assert runner.invoke(cli, ["validate", str(empty)]).exit_code == 0
    (project / "broken.yaml").write_text("batchspec: 1\n")
    assert runner.invoke(cli, ["validate", str(project / "broken.yaml")]).exit_code == 1  # no: invalid


def test_the_failure_summary_shows_the_last_attempt_and_the_kept_directory(project: Path) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "echo attempt-$(ls ../ | wc -l)-$RANDOM >&2; exit 1", retries=2)
    result = run_local(spec)
    assert result.exit_code == 1
    tail = [line for line in result.output.splitlines() if line.startswith("  | attempt-")]
    assert len(tail) == 1, result.output  # once: every retry's stderr again
    assert "full stdout and stderr: " in result.output and str(project / "run") in result.output
    assert "outputs:" not in result.output  # nothing was produced


def test_after_force_the_interrupt_hint_does_not_say_rerun_the_same_command() -> None:
    def finished(forced: bool) -> RunFinished:
        return RunFinished(job_id="j", backend="local", total=2, succeeded=1, failed=0, skipped=0, seconds=3.0,
                           outputs="", exit_code=130, interrupted=True, forced=forced)

    assert "rerun the same command to resume" in summary_text(finished(False))
    forced = summary_text(finished(True))
    assert "without --force to resume" in forced and "rerun the same command" not in forced


@pytest.mark.e2e
def test_the_emulator_never_uploads_through_a_link_out_of_the_task_directory(project: Path,
                                                                               world: object) -> None:
    from .conftest import AzureWorld

    assert isinstance(world, AzureWorld)
    secret = project / "secret"
    secret.mkdir(parents=True)
    (secret / "key.out").write_text("do not upload\n")
    make_inputs(project, {"a.txt": "a\n"})
    command = f"cp <<input>> mine.out && ln -s {secret} linked && ln -s {secret / 'key.out'} file.out"
    spec = write_spec(project, command, outputs=["**/*.out"], name="links")
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    uploaded = [n for n in world.blob_names("links-output") if not n.startswith(".batchspec/")]
    assert uploaded == ["mine.out"]  # neither linked/key.out nor file.out (a link out)


def test_a_missing_task_log_is_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from batchspec.backends.azure import _log_tail

    simulation = Simulation(mean=0.1, distribution="fixed", failure_rate=1.0, seed=1)
    with running_emulator(simulation=simulation) as emulator:
        client = batch_client(emulator)
        create_pool(client, dedicated=1)
        create_job(client)
        client.create_task("job", m.BatchTaskCreateOptions(id="t", command_line="true"))
        deadline = time.monotonic() + 30
        while client.get_task("job", "t").state != m.BatchTaskState.COMPLETED and time.monotonic() < deadline:
            time.sleep(0.1)
        logging.lastResort = logging.StreamHandler()  # what prints a library's warning without config
        assert _log_tail(lambda: client.download_task_file("job", "t", "stderr.txt")) == ()
    captured = capsys.readouterr()
    assert "deserialization" not in captured.err and "Traceback" not in captured.err
