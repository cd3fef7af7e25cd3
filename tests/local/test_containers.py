"""Tasks in container images on the local backend (podman or docker and the test image): the
task's directory where Batch mounts it, inputs read-only, the Batch environment and nothing of
this machine's, stages and merges in images, resume by image id, and clear errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchspec.cli import cli
from batchspec.containers import find_runtime
from tests.containers import leftover_containers

from .conftest import POOL, SpecWriter, make_inputs

CONTAINER_POOL = {**POOL, "image": {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204"},
                  "node_agent_sku": "batch.node.ubuntu 22.04"}


Writer = Callable[..., Path]


@pytest.fixture
def write(write_spec: SpecWriter) -> Writer:
    """A spec over inputs/* whose task runs in ``container`` on a container pool."""

    def spec(container: Any, command: str, **extra: Any) -> Path:
        return write_spec(command, container=container, pool=CONTAINER_POOL, **extra)

    return spec


def invoke(spec: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["run", str(spec), "--backend", "local", "--run-dir", str(spec.parent / "run"), "--slots", "2", *args],
        env=env or {}, catch_exceptions=False)
    return result.exit_code, result.output


def job_dir(spec: Path) -> Path:
    (found,) = [d for d in (spec.parent / "run").iterdir() if d.is_dir() and d.name.startswith("job-")]
    return found


def test_a_task_sees_what_a_batch_container_task_sees(tmp_path: Path, container_image: str, write: Writer) -> None:
    make_inputs(tmp_path, ["a.txt"])
    command = ("env | sort > env.txt; pwd > pwd.txt; cat <<input>> > copy.txt; "
               "(echo changed > <<input>>) 2> write.txt; echo shared > $AZ_BATCH_NODE_SHARED_DIR/s.txt")
    spec = write(container_image, command, outputs=["env.txt", "pwd.txt", "copy.txt", "write.txt"],
                 env={"GREETING": "hello <<stem>>"}, job={"env": {"JOBWIDE": "1"}})
    code, output = invoke(spec, env={"AZURE_STORAGE_KEY": "must-not-leak", "HOST_ONLY": "no"})
    assert code == 0, output
    out = tmp_path / "out"
    env = dict(line.split("=", 1) for line in (out / "env.txt").read_text().splitlines() if "=" in line)
    task_dir = job_dir(spec) / next(p.name for p in job_dir(spec).iterdir() if p.name.startswith("a-"))
    assert env["AZ_BATCH_TASK_DIR"] == str(task_dir)
    assert env["AZ_BATCH_TASK_WORKING_DIR"] == str(task_dir / "wd")
    assert env["GREETING"] == "hello a" and env["JOBWIDE"] == "1"
    assert env["PATH"] == "/usr/local/bin:/bin"  # the image's, not this machine's
    assert "AZURE_STORAGE_KEY" not in env and "HOST_ONLY" not in env
    assert (out / "pwd.txt").read_text().strip() == str(task_dir / "wd")  # mounted where Batch mounts it
    assert (out / "copy.txt").read_text() == "x\n"
    assert "Read-only file system" in (out / "write.txt").read_text()  # inputs are read-only
    assert (tmp_path / "inputs" / "a.txt").read_text() == "x\n"
    assert (tmp_path / "run" / "shared" / "s.txt").read_text() == "shared\n"
    assert "container runtime: " in output and leftover_containers() == []


def test_hostile_input_names_are_mounted_read_only_and_run_nothing(
    tmp_path: Path, container_image: str, write: Writer,
) -> None:
    names = ['a,b:c "q".txt', "new\nline.txt", "$(touch pwned).txt", "-dash.txt"]
    make_inputs(tmp_path, names)
    spec = write(container_image, "cat <<input>> > <<stem>>.out; (echo x >> <<input>>) 2>/dev/null "
                                            "&& echo WRITABLE >> <<stem>>.out || true", outputs=["<<stem>>.out"])
    code, output = invoke(spec)
    assert code == 0, output
    for name in names:
        assert (tmp_path / "out" / name.replace(".txt", ".out")).read_text() == "x\n"
        assert (tmp_path / "inputs" / name).read_text() == "x\n"
    assert not list(tmp_path.rglob("pwned"))


def test_run_options_and_the_images_working_directory(tmp_path: Path, container_image: str, write: Writer) -> None:
    make_inputs(tmp_path, ["a.txt"])
    container = {"image": container_image, "options": "--hostname in-a-box --env FROM_OPTIONS=yes",
                 "workdir": "image"}
    spec = write(container, "cd $AZ_BATCH_TASK_WORKING_DIR; (pwd -P; hostname; echo $FROM_OPTIONS) "
                                      "> here.txt; echo $OLDPWD >> here.txt", outputs=["here.txt"])
    code, output = invoke(spec)
    assert code == 0, output
    assert (tmp_path / "out" / "here.txt").read_text().splitlines()[1:] == ["in-a-box", "yes", "/srv"]


def test_stages_and_a_merge_in_images_produce_real_media(tmp_path: Path, container_image: str) -> None:
    from tests.media import decodes_cleanly, make_mp4, probe_duration

    (tmp_path / "inputs").mkdir()
    for name in ("one.mp4", "two's [x].mp4"):
        make_mp4(tmp_path / "inputs" / name, seconds=1.0, size="64x48")
    spec: dict[str, Any] = {
        "batchspec": 1, "name": "job", "pool": CONTAINER_POOL, "requires": ["ffmpeg"],
        "inputs": {"path": "inputs/*.mp4"},
        "task": {"container": container_image, "outputs": ["<<stem>>.mp3"],
                 "command": "ffmpeg -v error -y -i <<input>> -vn <<stem>>.mp3"},
        "merge": {"container": {"image": container_image}, "outputs": ["all.mp3"],
                  "command": "ffmpeg -v error -y <% for f in inputs %>-i <<f>> <% endfor %>"
                             "-filter_complex concat=n=<<inputs | length>>:v=0:a=1 all.mp3"},
        "outputs": {"download": "out"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))
    code, output = invoke(path)
    assert code == 0, output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["all.mp3", "one.mp3", "two's [x].mp3"]
    assert all(decodes_cleanly(p) for p in out.iterdir())
    assert probe_duration(out / "one.mp3") == pytest.approx(1.0, abs=0.1)
    assert probe_duration(out / "all.mp3") == pytest.approx(2.0, abs=0.2)


def test_resume_keys_on_the_image_id_not_only_its_name(tmp_path: Path, container_image: str, write: Writer) -> None:
    runtime = find_runtime()
    tag = "localhost/batchspec-test-retag:1"
    assert runtime.command("tag", container_image, tag).returncode == 0
    try:
        make_inputs(tmp_path, ["a.txt", "b.txt"])
        spec = write(tag, "echo ran >> $AZ_BATCH_NODE_SHARED_DIR/<<stem>>.log; cp <<input>> <<stem>>.out",
                     outputs=["<<stem>>.out"])
        assert invoke(spec)[0] == 0
        code, output = invoke(spec)
        assert code == 0 and "2 task(s) already succeeded" in output
        # The same name, another image: every task runs again.
        made = runtime.command("create", *runtime.options, container_image, "/bin/true")
        name = made.stdout.strip()
        committed = runtime.command("commit", "--change", "LABEL rebuilt=yes", name, tag)
        runtime.remove(name)
        assert committed.returncode == 0, committed.stderr
        code, output = invoke(spec)
        assert code == 0 and "2 task(s) changed since they last succeeded" in output
        assert (tmp_path / "run" / "shared" / "a.log").read_text() == "ran\nran\n"
    finally:
        runtime.command("rmi", "--force", tag)


def test_a_failing_or_timed_out_task_in_a_container(tmp_path: Path, container_image: str, write: Writer) -> None:
    make_inputs(tmp_path, ["bad.txt", "slow.txt"])
    command = 'if [ <<stem>> = bad ]; then echo "broken here" >&2; exit 4; fi; sleep 60'
    spec = write(container_image, command, timeout="1s")
    code, output = invoke(spec)
    assert code == 1
    assert "exit code 4" in output and "broken here" in output
    assert "timed out after 1s" in output
    assert leftover_containers() == []


def test_clear_errors_before_any_task_runs(tmp_path: Path, container_image: str, write: Writer) -> None:
    make_inputs(tmp_path, ["a.txt"])
    missing = write("127.0.0.1:1/batchspec/missing:1", "true")
    code, output = invoke(missing)
    assert code == 2
    assert "error: image 127.0.0.1:1/batchspec/missing:1: cannot pull" in output and "hint:" in output
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("job-*/*/stdout.txt"))
    spec = write(container_image, "true", requires=["ffmpeg", "sox"])
    code, output = invoke(spec)
    assert code == 2 and f"image {container_image} has no sox" in output
    code, output = invoke(spec, env={"BATCHSPEC_CONTAINER_RUNTIME": "no-such-runtime"})
    assert code == 2
    assert "the tasks run in container images, and BATCHSPEC_CONTAINER_RUNTIME=no-such-runtime" in output
    assert "install podman" in output


def test_an_image_without_bash_is_named(tmp_path: Path, container_image: str, write: Writer) -> None:
    runtime = find_runtime()
    tag = "localhost/batchspec-test-nobash:1"
    made = runtime.command("create", *runtime.options, container_image, "/bin/true")
    name = made.stdout.strip()
    try:
        committed = runtime.command("commit", name, "localhost/batchspec-test-tmp:1")
        assert committed.returncode == 0, committed.stderr
        # An image whose /bin/bash is gone: a layer that removes it.
        build = subprocess.run([runtime.program, "run", "--name", "batchspec-nobash", *runtime.options,
                                "localhost/batchspec-test-tmp:1", "/bin/sh", "-c", "rm /bin/bash"],
                               capture_output=True, text=True, check=False)
        assert build.returncode == 0, build.stderr
        assert runtime.command("commit", "batchspec-nobash", tag).returncode == 0
        make_inputs(tmp_path, ["a.txt"])
        code, output = invoke(write(tag, "true"))
        assert code == 2 and f"image {tag}: " in output, output
        assert "hint: batchspec runs task commands with /bin/bash -c: use an image that has bash" in output
    finally:
        for container in (name, "batchspec-nobash"):
            runtime.remove(container)
        runtime.command("rmi", "--force", tag, "localhost/batchspec-test-tmp:1")
