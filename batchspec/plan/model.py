"""The plan: what a spec expands to, consumed unchanged by the engine and every backend.

A plan is plain data (frozen dataclasses) with a stable JSON form (:meth:`Plan.to_json`,
:meth:`Plan.from_json`) so ``batchspec plan --format json`` can be diffed in code review.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..display import json_safe
from ..spec.model import Autoscale, Cleanup, Image, Outputs, Pool, Scalar, StartTask

PLAN_FORMAT = 1


@dataclass(frozen=True, slots=True)
class InputFile:
    """One file a task needs in its working directory.

    ``source`` is a local path relative to the spec's directory (or absolute) when
    ``container`` is None, otherwise a blob name in ``container``. ``path`` is where the file
    goes inside the task's working directory (POSIX, relative).
    """

    source: str
    path: str
    container: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedTask:
    id: str
    command: str  # rendered shell command (shell-quoted values)
    inputs: tuple[InputFile, ...] = ()
    outputs: tuple[str, ...] = ()  # rendered output patterns, relative to the working directory
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Plan:
    """A spec expanded over its inputs."""

    spec_path: str  # as given; relative paths in the plan resolve against its directory
    name: str
    job_id: str
    pool: Pool  # start task command rendered
    requires: tuple[str, ...]
    retries: int
    timeout_seconds: int | None
    outputs: Outputs
    cleanup: Cleanup
    params: dict[str, Scalar]
    tasks: tuple[PlannedTask, ...]
    description: str = ""
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def base_dir(self) -> Path:
        return Path(self.spec_path).parent

    def resolve(self, relative: str) -> Path:
        """A path from the spec (input source, download dir) on this machine."""
        return self.base_dir / relative

    def local_inputs(self) -> list[str]:
        """Every input file on this machine (not in a storage container), once, sorted."""
        return sorted({f.source for t in self.tasks for f in t.inputs if f.container is None})

    @property
    def download_dir(self) -> Path:
        """``outputs.download``: relative to the spec's directory; ``~`` is the home directory."""
        return self.resolve(os.path.expanduser(self.outputs.download))

    # --- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (what :meth:`to_json` writes)."""
        return {
            "format": PLAN_FORMAT,
            "spec": self.spec_path,
            "name": self.name,
            "description": self.description,
            "job_id": self.job_id,
            "pool": asdict(self.pool),
            "requires": list(self.requires),
            "retries": self.retries,
            "timeout_seconds": self.timeout_seconds,
            "outputs": asdict(self.outputs),
            "cleanup": asdict(self.cleanup),
            "params": self.params,
            "task_count": len(self.tasks),
            "tasks": [_task_dict(t) for t in self.tasks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The plan as JSON. Indented, it puts one task per line: diffs show changed tasks,
        and large plans encode fast (the per-task lines use the C encoder)."""
        if indent is None:
            return json.dumps(self.to_dict(), ensure_ascii=False)
        return "".join(self._json_chunks(indent))

    def write_json(self, out: TextIO) -> None:
        """:meth:`to_json` written piece by piece (a 100,000-task plan is never one string)."""
        out.writelines(self._json_chunks(2))

    def _json_chunks(self, indent: int) -> Iterator[str]:
        head = self.to_dict()
        del head["tasks"]
        text = json_safe(json.dumps(head, indent=indent, ensure_ascii=False))
        pad = " " * indent
        yield text[: text.rfind("}")].rstrip() + f',\n{pad}"tasks": ['
        for i, task in enumerate(self.tasks):
            yield ("," if i else "") + f"\n{pad}{pad}" + json_safe(json.dumps(_task_dict(task), ensure_ascii=False))
        yield f"\n{pad}]\n}}" if self.tasks else "]\n}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        if d.get("format") != PLAN_FORMAT:
            raise ValueError(f"unsupported plan format {d.get('format')!r}")
        pool_d = dict(d["pool"])
        pool_d["image"] = Image(**pool_d["image"])
        pool_d["autoscale"] = Autoscale(**pool_d["autoscale"]) if pool_d.get("autoscale") else None
        pool_d["start_task"] = StartTask(**pool_d["start_task"]) if pool_d.get("start_task") else None
        return cls(
            spec_path=d["spec"],
            name=d["name"],
            description=d.get("description", ""),
            job_id=d["job_id"],
            pool=Pool(**pool_d),
            requires=tuple(d["requires"]),
            retries=d["retries"],
            timeout_seconds=d["timeout_seconds"],
            outputs=Outputs(**d["outputs"]),
            cleanup=Cleanup(**d["cleanup"]),
            params=dict(d["params"]),
            tasks=tuple(_task_from_dict(t) for t in d["tasks"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


def _task_dict(task: PlannedTask) -> dict[str, Any]:
    out: dict[str, Any] = {"id": task.id, "command": task.command}
    out["inputs"] = [
        {"source": f.source, "path": f.path, **({"container": f.container} if f.container else {})}
        for f in task.inputs
    ]
    out["outputs"] = list(task.outputs)
    if task.env:
        out["env"] = dict(task.env)
    return out


def _task_from_dict(d: dict[str, Any]) -> PlannedTask:
    return PlannedTask(
        id=d["id"],
        command=d["command"],
        inputs=tuple(InputFile(f["source"], f["path"], f.get("container")) for f in d["inputs"]),
        outputs=tuple(d["outputs"]),
        env=tuple(d.get("env", {}).items()),
    )
