"""Fixtures for planning tests: write a spec (as JSON, which is YAML) next to some input files."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchspec.plan import Plan, PlannedTask, build_plan
from batchspec.spec import Spec, load_spec

BASE: dict[str, Any] = {
    "batchspec": 1,
    "name": "demo",
    "params": {"bitrate": "192k"},
    "pool": {
        "id": "demo-pool",
        "vm_size": "standard_a1_v2",
        "image": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
        "node_agent_sku": "batch.node.ubuntu 24.04",
        "nodes": {"dedicated": 0, "spot": 2},
    },
    "inputs": {"path": "inputs/*.mp4"},
    "task": {
        "command": "ffmpeg -i <<input>> -b:a <<params.bitrate>> <<stem>>.mp3",
        "outputs": ["<<stem>>.mp3"],
    },
}

SpecMaker = Callable[..., Spec]


def touch(root: Path, *names: str) -> None:
    """Create empty files (and their directories) under ``root``."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: nested dicts merge, a value of None removes the key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_spec(tmp_path: Path) -> SpecMaker:
    """Write BASE with ``changes`` as ``spec.yaml`` in tmp_path and load it."""

    def make(changes: dict[str, Any] | None = None, *, name: str = "spec.yaml") -> Spec:
        path = tmp_path / name
        path.write_text(json.dumps(merged(BASE, changes or {}), indent=2))
        return load_spec(path)

    return make


def plan_of(spec: Spec, *overrides: str) -> Plan:
    return build_plan(spec, overrides)


def patterns(task: PlannedTask) -> tuple[str, ...]:
    """A task's output patterns."""
    return tuple(o.pattern for o in task.outputs)
