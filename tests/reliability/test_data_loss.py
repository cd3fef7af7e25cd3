"""Issue 9, data loss: a run never loses or changes a user's file.

1. Output collection never follows a link out of the task's directory, never moves what the task
   did not create there.
2. Inputs reach a task as copies: writing to them (also through a symlinked input) never changes
   the user's file.
3. Resume counts a task as done only while what produced it is unchanged (see test_resume.py).
5. The download directory: system directories and home are refused; files batchspec did not
   write are never overwritten without --overwrite.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import AzureWorld, make_inputs, run_local, write_spec

# --- 1. output collection and symbolic links ---------------------------------------------------


def test_a_link_to_a_directory_outside_is_not_followed(tmp_path: Path, project: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "notes.log").write_text("the user's notes\n")
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, f"ln -s {outside} logs; echo made > own.log", outputs=["**/*.log"])
    result = run_local(spec)
    assert result.exit_code == 0, result.output
    assert (outside / "notes.log").read_text() == "the user's notes\n"  # not moved away
    assert sorted(p.name for p in (project / "out").rglob("*")) == ["own.log"]


def test_a_link_to_a_file_outside_fails_the_task_and_leaves_the_file(tmp_path: Path, project: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me\n")
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, f"ln -s {secret} result.txt", outputs=["result.txt"])
    result = run_local(spec)
    assert result.exit_code == 1
    assert "is a symbolic link to" in result.output and "outside the task's working directory" in result.output
    assert secret.read_text() == "keep me\n"
    assert not (project / "out" / "result.txt").exists()


def test_a_link_through_a_directory_link_is_not_followed(tmp_path: Path, project: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.mp3").write_text("not the task's\n")
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, f"ln -s {outside} sub", outputs=["sub/x.mp3"])
    result = run_local(spec)
    assert result.exit_code == 1 and "was not produced" in result.output
    assert (outside / "x.mp3").read_text() == "not the task's\n"


def test_a_hard_link_to_a_file_outside_is_copied_not_moved(tmp_path: Path, project: Path) -> None:
    original = project / "data.bin"  # same filesystem as the task directory
    project.mkdir(parents=True)
    original.write_text("original\n")
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, f"ln {original} out.bin", outputs=["out.bin"])
    assert run_local(spec).exit_code == 0
    collected = project / "out" / "out.bin"
    assert collected.read_text() == "original\n"
    assert collected.stat().st_ino != original.stat().st_ino  # its own file: editing it cannot reach the user's
    collected.write_text("edited\n")
    assert original.read_text() == "original\n"


def test_a_link_within_the_working_directory_is_collected_as_a_file(project: Path) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "echo content > real.txt; ln -s real.txt alias.txt", outputs=["alias.txt"])
    assert run_local(spec).exit_code == 0
    alias = project / "out" / "alias.txt"
    assert not alias.is_symlink() and alias.read_text() == "content\n"


# --- 2. inputs reach tasks as copies -------------------------------------------------------------


def test_a_task_writing_to_its_input_does_not_change_the_users_file(project: Path) -> None:
    make_inputs(project, {"a.txt": "original\n"})
    spec = write_spec(project, "echo appended >> <<input>>; chmod 000 <<input>>; cp /dev/null x.out",
                      outputs=["x.out"])
    assert run_local(spec).exit_code == 0
    user_file = project / "inputs" / "a.txt"
    assert user_file.read_text() == "original\n"
    assert os.access(user_file, os.R_OK)


def test_a_symlinked_input_outside_the_spec_is_not_changed(tmp_path: Path, project: Path) -> None:
    target = tmp_path / "library" / "clip.txt"
    target.parent.mkdir()
    target.write_text("library copy\n")
    (project / "inputs").mkdir(parents=True)
    (project / "inputs" / "clip.txt").symlink_to(target)
    spec = write_spec(project, "echo scribbled > <<input>>; truncate -s 0 <<input>>")
    assert run_local(spec).exit_code == 0
    assert target.read_text() == "library copy\n"


# --- 5. the download directory ----------------------------------------------------------------


@pytest.mark.parametrize("download", ["/", "/usr", "~", "/etc"])
def test_system_directories_and_home_are_refused(project: Path, download: str) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "echo x > a.out", outputs=["a.out"])
    data = json.loads(spec.read_text())
    data["outputs"]["download"] = download
    spec.write_text(json.dumps(data))
    result = run_local(spec)
    assert result.exit_code == 2, result.output
    assert "outputs.download is" in result.output and "batchspec does not put outputs there" in result.output
    assert not (project / "run").exists()  # refused before anything ran


def test_existing_files_are_named_and_kept_unless_overwrite(project: Path) -> None:
    make_inputs(project, {"a.txt": "a\n", "b.txt": "b\n"})
    (project / "out").mkdir(parents=True)
    (project / "out" / "a.out").write_text("the user's own a.out\n")
    spec = write_spec(project, "echo new > <<stem>>.out", outputs=["<<stem>>.out"])
    refused = run_local(spec)
    assert refused.exit_code == 2, refused.output
    assert "already holds 1 file(s) that batchspec did not write" in refused.output and "a.out" in refused.output
    assert "--overwrite" in refused.output
    assert (project / "out" / "a.out").read_text() == "the user's own a.out\n"
    assert not (project / "out" / "b.out").exists()  # refused before any task ran
    assert run_local(spec, "--overwrite").exit_code == 0
    assert (project / "out" / "a.out").read_text() == "new\n"


def test_a_wildcard_output_over_a_users_file_fails_that_task_only(project: Path) -> None:
    make_inputs(project, {"a.txt": "a\n", "b.txt": "b\n"})
    (project / "out").mkdir(parents=True)
    (project / "out" / "a-1.jpg").write_text("a photo of the user's\n")
    spec = write_spec(project, "echo frame > <<stem>>-1.jpg", outputs=["<<stem>>-*.jpg"])
    result = run_local(spec)
    assert result.exit_code == 1
    assert "did not write" in result.output and "a-1.jpg" in result.output
    assert (project / "out" / "a-1.jpg").read_text() == "a photo of the user's\n"
    assert (project / "out" / "b-1.jpg").read_text() == "frame\n"


def test_a_rerun_replaces_its_own_outputs_without_overwrite(project: Path) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "echo <<params.v>> > <<stem>>.out", outputs=["<<stem>>.out"], params={"v": 1})
    assert run_local(spec).exit_code == 0
    assert run_local(spec, "--set", "v=2").exit_code == 0  # another job, same download directory
    assert (project / "out" / "a.out").read_text() == "2\n"


def test_an_output_the_user_edited_is_not_overwritten(project: Path) -> None:
    make_inputs(project, {"a.txt": "a\n"})
    spec = write_spec(project, "echo <<params.v>> > <<stem>>.out", outputs=["<<stem>>.out"], params={"v": 1})
    assert run_local(spec).exit_code == 0
    (project / "out" / "a.out").write_text("hand-tuned by the user\n")
    result = run_local(spec, "--set", "v=2")
    assert result.exit_code == 2 and "did not write" in result.output
    assert (project / "out" / "a.out").read_text() == "hand-tuned by the user\n"


def test_download_on_azure_never_overwrites_a_users_file(project: Path, world: AzureWorld) -> None:
    make_inputs(project, {"a.txt": "a\n", "b.txt": "b\n"})
    (project / "out").mkdir(parents=True)
    (project / "out" / "a-1.jpg").write_text("a photo of the user's\n")
    (project / "out" / "b.out").write_text("the user's b.out\n")
    spec = write_spec(project, "echo frame > <<stem>>-1.jpg; echo out > <<stem>>.out",
                      outputs=["<<stem>>-*.jpg", "<<stem>>.out"], name="relaz")
    refused = world.run("run", str(spec), "--backend", "azure")
    assert refused.exit_code == 2 and "b.out" in refused.output, refused.output
    assert world.emulator.request_counts().get("create_pool", 0) == 0  # refused before the pool
    (project / "out" / "b.out").unlink()
    result = world.run("run", str(spec), "--backend", "azure")
    assert result.exit_code == 1, result.output  # the wildcard output that would overwrite a-1.jpg
    assert "did not write" in result.output and "a-1.jpg" in result.output
    assert (project / "out" / "a-1.jpg").read_text() == "a photo of the user's\n"
    assert (project / "out" / "b-1.jpg").read_text() == "frame\n"
    assert world.run("run", str(spec), "--backend", "azure", "--overwrite").exit_code == 0
    assert (project / "out" / "a-1.jpg").read_text() == "frame\n"
