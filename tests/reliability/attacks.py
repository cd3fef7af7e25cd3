"""Runs the attack corpus (``attacks.yaml``) through ``validate`` and ``plan``, one attack at a time.

Each attack is a template put into one field of an otherwise valid spec. What happened to it is
printed as JSON: where it was stopped (``validate``, ``plan``, or ``none`` when both accepted
it), the message, how long it took, and any exception that is not a user error (a traceback
is a defect). Run as a process of its own, so its memory can be limited:

    python -m tests.reliability.attacks tests/reliability/attacks.yaml
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from batchspec.errors import BatchspecError
from batchspec.plan import build_plan
from batchspec.spec import load_spec, validate_file

BASE: dict[str, Any] = {
    "batchspec": 1,
    "name": "attack",
    "params": {"bitrate": "192k"},
    "pool": {"id": "attack-pool", "vm_size": "standard_a1_v2",
             "image": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
             "node_agent_sku": "batch.node.ubuntu 24.04", "nodes": {"dedicated": 1},
             "start_task": {"command": "true"}},
    "inputs": {"path": "inputs/*.mp4"},
    "task": {"command": "cp <<input>> <<stem>>.out", "outputs": ["<<stem>>.out"], "env": {}},
}


def load(path: Path) -> list[dict[str, Any]]:
    attacks: list[dict[str, Any]] = YAML(typ="safe", pure=True).load(path.read_text("utf-8"))
    return attacks


def spec_with(field: str, template: str) -> dict[str, Any]:
    """BASE with ``field`` (``task.command``, ``task.env.X``, ``task.outputs[0]``, ...) set."""
    spec: dict[str, Any] = json.loads(json.dumps(BASE))
    *parents, last = field.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if last.endswith("[0]"):
        node[last[:-3]] = [template]
    else:
        node[last] = template
    return spec


def attempt(folder: Path, attack: dict[str, Any]) -> dict[str, Any]:
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec_with(attack["field"], attack["template"])))
    started = time.perf_counter()
    out: dict[str, Any] = {"name": attack["name"]}
    try:
        _, problems = validate_file(path)
        if problems:
            out.update(stopped="validate", message=problems[0].format())
        else:
            try:
                build_plan(load_spec(path))
                out.update(stopped="none", message="")
            except BatchspecError as exc:
                out.update(stopped="plan", message=exc.message)
    except Exception:
        out.update(stopped="crash", message=traceback.format_exc(limit=-3))
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out


def main(corpus: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "inputs").mkdir()
        (folder / "inputs" / "clip.mp4").write_bytes(b"x")
        results = [attempt(folder, attack) for attack in load(Path(corpus))]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
