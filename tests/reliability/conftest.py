"""Helpers for the reliability suite: specs in a temporary project, runs on either backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batchspec.cli import cli
from tests.azure.conftest import AzureWorld, world
from tests.local.conftest import POOL as LOCAL_POOL
from tests.local.test_interrupts import alive

__all__ = ["AzureWorld", "alive", "world"]

POOL = {**LOCAL_POOL, "id": "rel-pool"}
NO_AZURE = {"AZURE_BATCH_ENDPOINT": "", "AZURE_BATCH_ACCOUNT": ""}


def write_spec(folder: Path, command: str, *, outputs: list[str] | None = None, name: str = "rel",
               inputs: dict[str, Any] | None = None, **extra: Any) -> Path:
    """A spec (JSON, which is YAML) in ``folder``; task keys (retries, env, id, ...) go under task."""
    spec: dict[str, Any] = {
        "batchspec": 1,
        "name": name,
        "pool": POOL,
        "inputs": inputs or {"path": "inputs/*"},
        "task": {"command": command, "outputs": outputs or []},
        "outputs": {"download": "out", "container": f"{name}-output"},
    }
    for key, value in extra.items():
        if key in ("retries", "timeout", "env", "id"):
            spec["task"][key] = value
        elif isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec, indent=2))
    return path


def make_inputs(folder: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = folder / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def run_local(spec: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """``batchspec run`` on the local backend, in this process."""
    return CliRunner().invoke(cli, ["run", str(spec), "--backend", "local", "--run-dir", str(spec.parent / "run"),
                                    "--slots", "2", *args], env={**NO_AZURE, **(env or {})}, catch_exceptions=False)


def runner_process(spec: Path, *args: str, env: dict[str, str] | None = None,
                   backend: str = "local") -> subprocess.Popen[str]:
    """``batchspec run`` as a process of its own (to be killed)."""
    argv = [sys.executable, "-m", "batchspec", "run", str(spec), "--backend", backend, *args]
    if backend == "local":
        argv += ["--run-dir", str(spec.parent / "run"), "--slots", "2"]
    full_env = {**os.environ, **(NO_AZURE if backend == "local" else {}), **(env or {})}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)


def files_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return tmp_path / "project"
