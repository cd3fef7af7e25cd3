"""Issue 9, item 3: a task counts as done only while what produced it is unchanged.

Its fingerprint (batchspec.plan.fingerprint) covers the rendered command, the environment, the
inputs' content (size and time locally, MD5 on Azure) and the settings that shape the task; its
outputs must be exactly what it left. A changed task's outputs are replaced, never mixed with
stale ones, and the summary says how many changed. The same rules hold for the Azure backend's
records in the output container.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from batchspec.backends.local.state import RunState
from tests.azure.conftest import copy_spec
from tests.media import make_mp4

from .conftest import AzureWorld, make_inputs, run_local, write_spec


def test_the_issue_scenario_with_ffmpeg(tmp_path: Path) -> None:
    """run, --set bitrate=96k, run again: the last run's MP3s are 192k again, not skipped."""
    spec = copy_spec("mp4-to-mp3.yaml", tmp_path / "specs")
    for stem in ("a", "b"):
        make_mp4(spec.parent / "inputs" / f"{stem}.mp4", 1.0)
    out = spec.parent / "out" / "mp4-to-mp3"
    assert run_local(spec).exit_code == 0
    first = {p.name: p.read_bytes() for p in out.glob("*.mp3")}
    assert run_local(spec, "--set", "bitrate=96k").exit_code == 0
    low = {p.name: p.read_bytes() for p in out.glob("*.mp3")}
    again = run_local(spec)
    assert again.exit_code == 0, again.output
    assert "skipped" not in again.output.split("OK:")[1]
    assert "outputs are missing or were modified since" in again.output
    assert {p.name: p.read_bytes() for p in out.glob("*.mp3")} == first != low
    assert run_local(spec).output.count("2 skipped (done earlier)") == 1  # and now it is done


def test_replaced_input_content_runs_the_task_again(project: Path) -> None:
    make_inputs(project, {"a.txt": "one\n", "b.txt": "bee\n"})
    spec = write_spec(project, "cat <<input>> > <<stem>>.out", outputs=["<<stem>>.out"])
    assert run_local(spec).exit_code == 0
    src = project / "inputs" / "a.txt"
    src.write_text("two\n")  # same name, same size, new content
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 1_000_000))
    result = run_local(spec)
    assert result.exit_code == 0, result.output
    assert "2 succeeded, 0 failed, 1 skipped (done earlier)" in result.output
    assert "1 task(s) ran again because their command, environment, inputs or settings changed" in result.output
    assert (project / "out" / "a.out").read_text() == "two\n"


@pytest.mark.parametrize("change", ["env", "command", "output pattern"])
def test_any_change_to_what_shapes_a_task_runs_it_again(project: Path, change: str) -> None:
    """With a fixed job id (so the same job and run record) every kind of change is noticed."""
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "echo $GREETING > <<stem>>.out", outputs=["<<stem>>.out"], env={"GREETING": "hi"},
                      job={"id": "fixed"})
    assert run_local(spec).exit_code == 0
    data = json.loads(spec.read_text())
    if change == "env":
        data["task"]["env"]["GREETING"] = "hello"
    elif change == "command":
        data["task"]["command"] = "echo $GREETING there > <<stem>>.out"
    else:
        data["task"]["command"] = "echo $GREETING > <<stem>>.txt"
        data["task"]["outputs"] = ["<<stem>>.txt"]
    spec.write_text(json.dumps(data))
    result = run_local(spec)
    assert result.exit_code == 0, result.output
    assert "1 task(s) changed since they last succeeded" in result.output
    assert "skipped" not in result.output.split("OK:")[1]


def test_settings_that_do_not_shape_outputs_keep_tasks_done(project: Path) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "echo x > <<stem>>.out", outputs=["<<stem>>.out"], job={"id": "fixed"})
    assert run_local(spec).exit_code == 0
    data = json.loads(spec.read_text())
    data["task"]["retries"] = 3
    data["pool"]["vm_size"] = "standard_d2_v3"
    spec.write_text(json.dumps(data))
    assert "1 skipped (done earlier)" in run_local(spec).output


def test_a_changed_tasks_outputs_are_replaced_not_mixed(project: Path) -> None:
    """A wildcard output: frames from the earlier version must not stay beside the new ones."""
    make_inputs(project, {"clip.txt": "3\n"})
    spec = write_spec(project, "for i in $(seq $(cat <<input>>)); do echo $i > <<stem>>-$i.jpg; done",
                      outputs=["<<stem>>-*.jpg"], job={"id": "frames"})
    assert run_local(spec).exit_code == 0
    assert sorted(p.name for p in (project / "out").iterdir()) == ["clip-1.jpg", "clip-2.jpg", "clip-3.jpg"]
    (project / "inputs" / "clip.txt").write_text("1\n")
    result = run_local(spec)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (project / "out").iterdir()) == ["clip-1.jpg"]


def test_a_state_db_from_before_fingerprints_is_migrated(project: Path) -> None:
    job = project / "run" / "job-old"
    job.mkdir(parents=True)
    with sqlite3.connect(job / "state.db") as db:
        db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, state TEXT NOT NULL, exit_code INTEGER, "
                   "attempts INTEGER NOT NULL DEFAULT 0, seconds REAL, reason TEXT, outputs TEXT, pgid INTEGER, "
                   "pgid_ticks INTEGER, updated REAL NOT NULL)")
        db.execute("INSERT INTO tasks (id, state, attempts, outputs, updated) VALUES ('t', 'succeeded', 1, '[]', 0)")
    state = RunState(job)
    (record,) = state.records()
    assert (record.id, record.state, record.fingerprint) == ("t", "succeeded", None)  # so it runs again once
    state.close()


# --- Azure: the same rules for the records in the output container -------------------------------


def test_azure_rerun_after_another_job_overwrote_the_outputs(project: Path, world: AzureWorld) -> None:
    make_inputs(project, {"a.txt": "a\n", "b.txt": "b\n"})
    spec = write_spec(project, "echo <<params.v>> > <<stem>>.out", outputs=["<<stem>>.out"], params={"v": "one"},
                      name="relaz", cleanup={"job": "delete"})
    assert world.run("run", str(spec), "--backend", "azure").exit_code == 0
    assert world.run("run", str(spec), "--backend", "azure", "--set", "v=two").exit_code == 0
    assert (project / "out" / "a.out").read_text() == "two\n"
    again = world.run("run", str(spec), "--backend", "azure")
    assert again.exit_code == 0, again.output
    assert "outputs are missing or were modified since" in again.output
    assert (project / "out" / "a.out").read_text() == "one\n"
    assert "nothing to add" in world.run("run", str(spec), "--backend", "azure").output


def test_azure_changed_input_in_the_same_job(project: Path, world: AzureWorld) -> None:
    make_inputs(project, {"clip.txt": "3\n", "other.txt": "1\n"})
    # The changed task is deleted and added again: it starts in an empty directory, as on the
    # service; the stale frames must go from the container and out/ too.
    spec = write_spec(project, "for i in $(seq $(cat <<input>>)); do echo $i > <<stem>>-$i.jpg; done",
                      outputs=["<<stem>>-*.jpg"], name="relaz", job={"id": "frames"})
    assert world.run("run", str(spec), "--backend", "azure").exit_code == 0
    (project / "inputs" / "clip.txt").write_text("1\n")
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert "1 task(s) changed since they last succeeded" in result.output
    assert "1 task(s) ran again because" in result.output
    assert sorted(p.name for p in (project / "out").iterdir()) == ["clip-1.jpg", "other-1.jpg"]
    outputs = [n for n in world.blob_names("relaz-output") if not n.startswith(".batchspec/")]
    assert outputs == ["clip-1.jpg", "other-1.jpg"]  # the stale frames are gone from the container too
    assert "nothing to add" in world.run("run", str(spec), "--backend", "azure").output


def test_azure_failed_tasks_run_again_on_a_rerun(project: Path, world: AzureWorld) -> None:
    make_inputs(project, {"a.txt": "a\n", "b.txt": "b\n"})
    flag = project / "broken"
    flag.touch()
    spec = write_spec(project, f"[ -e {flag} ] && [ <<stem>> = b ] && exit 3; echo ok > <<stem>>.out",
                      outputs=["<<stem>>.out"], name="relaz")
    assert world.run("run", str(spec), "--backend", "azure").exit_code == 1
    flag.unlink()
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 0, result.output
    assert (project / "out" / "b.out").read_text() == "ok\n"
