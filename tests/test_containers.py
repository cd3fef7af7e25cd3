"""The container runtime code (batchspec/containers.py) that the local backend and the emulator
share: finding a runtime, pulling with credentials, and one attempt of a task in a container
(mounts, environment, working directory, failures, stop and timeout) with the real runtime and
the test image."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

import pytest

from batchspec.containers import (
    INVALID_IMAGE,
    INVALID_SETTINGS,
    NO_RUNTIME,
    PROGRAM_NOT_FOUND,
    ContainerError,
    ContainerProcess,
    Credentials,
    Mount,
    Runtime,
    container_environment,
    find_runtime,
    registry_of,
    runtime_environment,
)
from batchspec.runner import TaskPaths
from tests.containers import leftover_containers


def test_find_runtime_prefers_podman_and_honours_the_environment(tmp_path: Path) -> None:
    for name in ("podman", "docker"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert find_runtime({"PATH": str(tmp_path)}).name == "podman"
    chosen = find_runtime({"PATH": str(tmp_path), "BATCHSPEC_CONTAINER_RUNTIME": "docker",
                           "BATCHSPEC_CONTAINER_OPTIONS": "--runtime runc --ulimit 'nofile=1024:1024'"})
    assert (chosen.name, chosen.program) == ("docker", str(tmp_path / "docker"))
    assert chosen.options == ("--runtime", "runc", "--ulimit", "nofile=1024:1024")


def test_no_runtime_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="neither podman nor docker is on PATH") as caught:
        find_runtime({"PATH": str(tmp_path)})
    assert caught.value.code == NO_RUNTIME
    with pytest.raises(ContainerError, match="BATCHSPEC_CONTAINER_RUNTIME=nerdctl: no such program"):
        find_runtime({"PATH": str(tmp_path), "BATCHSPEC_CONTAINER_RUNTIME": "nerdctl"})


@pytest.mark.parametrize(("image", "registry"), [
    ("ubuntu", "docker.io"), ("library/ubuntu:22.04", "docker.io"), ("ghcr.io/o/r:1", "ghcr.io"),
    ("localhost/x:1", "localhost"), ("127.0.0.1:5000/a/b", "127.0.0.1:5000"),
    ("MyAcr.azurecr.io/a", "MyAcr.azurecr.io"),
])
def test_registry_of(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_mount_fields_are_quoted_as_csv() -> None:
    assert Mount(Path("/a/b")).argument() == "type=bind,source=/a/b,target=/a/b"
    text = Mount(Path('/w/a,b "c":d.mp4'), read_only=True).argument()
    assert text == 'type=bind,"source=/w/a,b ""c"":d.mp4","target=/w/a,b ""c"":d.mp4",readonly'


def test_container_environment_keeps_batch_variables_and_own_settings() -> None:
    env = {"PATH": "/host/bin", "HOME": "/root", "LANG": "C", "AZ_BATCH_TASK_ID": "t", "MINE": "1", "AZURE_X": "k"}
    assert container_environment(env, ["MINE"]) == {"AZ_BATCH_TASK_ID": "t", "MINE": "1"}
    assert container_environment(env, ["PATH"])["PATH"] == "/host/bin"  # set by the spec: it goes in


FAKE = """#!/bin/sh
# A stand-in runtime: records each call (argv, one per line) and the auth file a pull gets.
log="$(dirname "$0")/calls"
printf '%s\\n' "$@" >> "$log"; echo --- >> "$log"
case "$1" in
  image) [ -f "$(dirname "$0")/pulled" ] && echo sha256:abc || { echo "Error: no such image" >&2; exit 125; } ;;
  pull) cat "$REGISTRY_AUTH_FILE" > "$(dirname "$0")/auth.json"; ls -l "$REGISTRY_AUTH_FILE" > "$(dirname "$0")/mode"
        touch "$(dirname "$0")/pulled" ;;
esac
"""


def fake_runtime(tmp_path: Path) -> Runtime:
    program = tmp_path / "podman"
    program.write_text(FAKE)
    program.chmod(0o755)
    return Runtime(str(program), "podman")


def test_a_pull_logs_in_through_a_private_auth_file_never_the_command_line(tmp_path: Path) -> None:
    runtime = fake_runtime(tmp_path)
    credentials = Credentials("myacr.azurecr.io", "robot", "s3cret-token")
    assert runtime.ensure_image("myacr.azurecr.io/ffmpeg:7", pull=True, credentials=credentials) == "sha256:abc"
    calls = (tmp_path / "calls").read_text()
    assert "pull" in calls and "s3cret-token" not in calls and "robot" not in calls
    auth = json.loads((tmp_path / "auth.json").read_text())
    token = auth["auths"]["myacr.azurecr.io"]["auth"]
    assert base64.b64decode(token).decode() == "robot:s3cret-token"
    assert (tmp_path / "mode").read_text().startswith("-rw-------")
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("batchspec-auth-*/config.json"))  # removed after


def test_a_missing_image_is_not_pulled_unless_asked(tmp_path: Path) -> None:
    runtime = fake_runtime(tmp_path)
    with pytest.raises(ContainerError, match="no such image on this machine: x/y:1") as caught:
        runtime.ensure_image("x/y:1", pull=False)
    assert caught.value.code == INVALID_IMAGE
    assert "pull" not in (tmp_path / "calls").read_text().split("---")


def test_task_values_pass_by_name_and_only_a_runtime_clash_is_spelled_out(tmp_path: Path) -> None:
    runtime = fake_runtime(tmp_path)
    (tmp_path / "pulled").touch()
    paths = TaskPaths(tmp_path / "task").create()
    env = {"AZ_BATCH_TASK_ID": "t1", "SECRETISH": "value-not-in-argv", "PATH": "/task/path"}
    process = ContainerProcess(runtime, image="img:1", argv=["/bin/bash", "-c", "true"], paths=paths, env=env,
                               mounts=[Mount(paths.root)], workdir=str(paths.wd), run_options="--memory 1g")
    process.run()
    (create,) = [c.splitlines() for c in (tmp_path / "calls").read_text().split("---\n") if c.startswith("create")]
    assert "--rm" in create and "--init" in create and create[create.index("--pull") + 1] == "never"
    assert "value-not-in-argv" not in create and "--env" in create and "SECRETISH" in create
    assert "PATH=/task/path" in create  # differs from the runtime's own PATH: given as a value
    assert create[create.index("--workdir") + 1] == str(paths.wd)
    assert create[-6:] == ["--memory", "1g", "img:1", "/bin/bash", "-c", "true"]


# --- with the real runtime and the test image ------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> TaskPaths:
    return TaskPaths(tmp_path / "task").create()


def attempt(image: str, paths: TaskPaths, script: str, *, env: dict[str, str] | None = None,
            mounts: list[Mount] | None = None, workdir: str | bool | None = True,
            run_options: str = "") -> ContainerProcess:
    """An attempt of ``bash -c script``; ``workdir`` True: the task's working directory."""
    return ContainerProcess(find_runtime(), image=image, argv=["/bin/bash", "-c", script], paths=paths,
                            env=env or {}, mounts=mounts or [Mount(paths.root)],
                            workdir=str(paths.wd) if workdir is True else workdir or None, run_options=run_options)


def test_a_task_runs_in_its_working_directory_with_its_variables(container_image: str, paths: TaskPaths) -> None:
    (paths.wd / "in,put.txt").write_text("hello\n")
    env = {"AZ_BATCH_TASK_WORKING_DIR": str(paths.wd), "MULTI": "one\ntwo 'three'"}
    script = 'pwd; printf "%s\\n" "$MULTI"; cat "in,put.txt"; echo made > out.txt; ffmpeg -version | head -n 1; exit 3'
    mounts = [Mount(paths.root), Mount(paths.wd / "in,put.txt", read_only=True)]
    result = attempt(container_image, paths, script, env=env, mounts=mounts).run()
    assert result.exit_code == 3 and result.error is None
    out = paths.stdout.read_text().splitlines()
    assert out[:4] == [str(paths.wd), "one", "two 'three'", "hello"]
    assert out[4].startswith("ffmpeg version")
    assert (paths.wd / "out.txt").read_text() == "made\n"
    assert leftover_containers() == []


def test_inputs_mounted_read_only_cannot_be_changed(container_image: str, paths: TaskPaths) -> None:
    (paths.wd / "in.txt").write_text("original\n")
    mounts = [Mount(paths.root), Mount(paths.wd / "in.txt", read_only=True)]
    result = attempt(container_image, paths, "echo changed > in.txt", mounts=mounts).run()
    assert result.exit_code == 1
    assert "Read-only file system" in paths.stderr.read_text()
    assert (paths.wd / "in.txt").read_text() == "original\n"


def test_the_images_working_directory_when_asked(container_image: str, paths: TaskPaths) -> None:
    result = attempt(container_image, paths, "pwd; echo $AZ_BATCH_X", workdir=None, env={"AZ_BATCH_X": "y"}).run()
    assert result.exit_code == 0
    assert paths.stdout.read_text().splitlines() == ["/srv", "y"]  # the test image's WORKDIR


def test_failures_to_start_are_errors_with_batch_codes(container_image: str, paths: TaskPaths) -> None:
    missing = ContainerProcess(find_runtime(), image=container_image, argv=["/no/such/program"], paths=paths,
                               env={}, mounts=[Mount(paths.root)], workdir=str(paths.wd)).run()
    assert (missing.exit_code, missing.failure_code) == (None, PROGRAM_NOT_FOUND)
    options = attempt(container_image, paths, "true", run_options="--no-such-option").run()
    assert options.failure_code == INVALID_SETTINGS and "no-such-option" in (options.error or "")
    image = attempt("localhost/batchspec-no-such-image:1", paths, "true").run()
    assert image.failure_code == INVALID_IMAGE and "no such image" in (image.error or "")
    assert "no such image on this machine: localhost/batchspec-no-such-image:1" in paths.stderr.read_text()
    quoting = attempt(container_image, paths, "true", run_options="--label 'unclosed").run()
    assert quoting.failure_code == INVALID_SETTINGS
    assert leftover_containers() == []


def test_a_command_exiting_like_the_runtime_keeps_its_exit_code(container_image: str, paths: TaskPaths) -> None:
    result = attempt(container_image, paths, "exit 125").run()
    assert (result.exit_code, result.error) == (125, None)


def test_stop_and_timeout_end_the_container(container_image: str, paths: TaskPaths) -> None:
    process = attempt(container_image, paths, "sleep 30")
    threading.Timer(1.0, process.stop).start()
    began = time.monotonic()
    stopped = process.run()
    assert stopped.stopped and time.monotonic() - began < 10
    stubborn = attempt(container_image, paths, "trap '' TERM; sleep 30")
    began = time.monotonic()
    timed_out = stubborn.run(timeout=1.0)
    assert timed_out.timed_out and timed_out.exit_code == 137 and time.monotonic() - began < 15
    assert leftover_containers() == []


def test_a_container_a_killed_run_left_is_replaced(container_image: str, paths: TaskPaths) -> None:
    runtime = find_runtime()
    first = attempt(container_image, paths, "sleep 30")
    leftover = runtime.command("create", "--name", first.name, *runtime.options, container_image, "/bin/true")
    assert leftover.returncode == 0, leftover.stderr
    assert attempt(container_image, paths, "echo again").run().exit_code == 0
    assert paths.stdout.read_text() == "again\n"


def test_probe_names_the_tools_an_image_lacks(container_image: str) -> None:
    assert find_runtime().probe(container_image, ["ffmpeg", "bash", "sox"]) == ["sox"]


def test_runtime_commands_never_get_azure_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_KEY", "secret-key")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1")
    env = runtime_environment()
    assert "AZURE_STORAGE_KEY" not in env and env["XDG_RUNTIME_DIR"] == "/run/user/1"
