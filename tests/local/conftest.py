"""Fixtures for local-backend tests: a spec writer and a CLI runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

POOL = {
    "id": "test-pool",
    "vm_size": "standard_a1_v2",
    "image": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
    "node_agent_sku": "batch.node.ubuntu 24.04",
    "nodes": {"dedicated": 1},
}

SpecWriter = Callable[..., Path]


@pytest.fixture
def write_spec(tmp_path: Path) -> SpecWriter:
    """Write a spec (JSON is YAML) into tmp_path and return its path; inputs are created by the test."""

    def write(command: str, *, outputs: list[str] | None = None, name: str = "job", **extra: Any) -> Path:
        spec: dict[str, Any] = {
            "batchspec": 1,
            "name": name,
            "pool": POOL,
            "inputs": {"path": "inputs/*"},
            "task": {"command": command, "outputs": outputs or []},
            "outputs": {"download": "out"},
        }
        for key, value in extra.items():
            if key in ("retries", "timeout", "env", "id", "container"):
                spec["task"][key] = value
            else:
                spec[key] = value
        path = tmp_path / "spec.yaml"
        path.write_text(json.dumps(spec, indent=2))
        return path

    return write


def make_inputs(tmp_path: Path, names: list[str], content: str = "x\n") -> list[Path]:
    folder = tmp_path / "inputs"
    folder.mkdir(exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.write_text(content)
        paths.append(path)
    return paths
