"""Pytest plugin: a container runtime and the test image, for tests of tasks in containers.

Fixture ``container_image`` (session): the image ``scripts/build-test-image`` builds (cached by
the script: built once per machine), with ``BATCHSPEC_CONTAINER_OPTIONS`` set for the session
when it is not set and this machine's runtime refuses its defaults but starts containers with
:data:`SANDBOX_OPTIONS` (as on the CI machines). Tests are skipped, saying why, only when there is
no runtime or it cannot start a container at all; an image that fails to build fails them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchspec.containers import ENV_OPTIONS, ContainerError, find_runtime

REPO = Path(__file__).resolve().parents[1]
TEST_IMAGE = "localhost/batchspec-test-ffmpeg:1"
#: What sandboxes that refuse podman's default runtime and limits accept (see README).
SANDBOX_OPTIONS = "--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"


@pytest.fixture(scope="session")
def container_image() -> Iterator[str]:
    try:
        runtime = find_runtime()
    except ContainerError as exc:
        pytest.skip(f"container tests need podman or docker: {exc.message}")
    build = subprocess.run([str(REPO / "scripts" / "build-test-image")], capture_output=True, text=True,
                           check=False, env={**os.environ, "BATCHSPEC_TEST_IMAGE": TEST_IMAGE})
    assert build.returncode == 0, f"scripts/build-test-image failed:\n{build.stdout}{build.stderr}"
    with pytest.MonkeyPatch.context() as patch:
        try:
            runtime.probe(TEST_IMAGE)
        except ContainerError as exc:
            if os.environ.get(ENV_OPTIONS) is not None:
                pytest.skip(f"{runtime.name} cannot start a container with {ENV_OPTIONS}="
                            f"{os.environ[ENV_OPTIONS]!r}: {exc.message}")
            patch.setenv(ENV_OPTIONS, SANDBOX_OPTIONS)
            try:
                find_runtime().probe(TEST_IMAGE)
            except ContainerError as again:
                pytest.skip(f"{runtime.name} cannot start a container here, with its defaults ({exc.message}) "
                            f"or with {SANDBOX_OPTIONS!r} ({again.message})")
        yield TEST_IMAGE


def leftover_containers() -> list[str]:
    """Containers of batchspec tasks that still exist (there should be none after a task)."""
    runtime = find_runtime()
    done = runtime.command("ps", "--all", "--filter", "label=batchspec.task", "--format", "{{.Names}}")
    return done.stdout.split()
