"""The spec model: typed, validated, defaults filled in.

Built by :func:`batchspec.spec.load_spec` from a document that passed validation, so the
constructors here trust their input. Templates stay as source text (the planner renders them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Scalar = str | int | float | bool | None
CleanupAction = Literal["delete", "keep"]


@dataclass(frozen=True)
class Image:
    publisher: str
    offer: str
    sku: str
    version: str = "latest"


@dataclass(frozen=True)
class Autoscale:
    formula: str
    interval_seconds: int = 15 * 60


@dataclass(frozen=True)
class StartTask:
    command: str  # template over params
    elevated: bool = False
    wait_for_success: bool = True
    retries: int = 0
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pool:
    id: str
    vm_size: str
    image: Image
    node_agent_sku: str
    dedicated: int = 0
    spot: int = 0
    autoscale: Autoscale | None = None
    task_slots_per_node: int = 1
    start_task: StartTask | None = None
    ready_timeout_seconds: float = 1800.0  # waiting for a node that can run tasks, when none runs any


@dataclass(frozen=True)
class Inputs:
    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    container: str | None = None
    prefix: str = ""
    items: tuple[str | dict[str, Any], ...] | None = None  # `list:`
    allow_empty: bool = False


@dataclass(frozen=True)
class Task:
    command: str
    outputs: tuple[str, ...] = ()
    id: str | None = None
    retries: int = 0
    timeout_seconds: int | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outputs:
    container: str
    download: str


@dataclass(frozen=True)
class Cleanup:
    job: CleanupAction = "keep"
    pool: CleanupAction = "keep"
    inputs: CleanupAction = "keep"
    pool_given: bool = False  # the spec says cleanup.pool (a run's error then keeps a pool it made only if so)


@dataclass(frozen=True)
class Spec:
    """A validated spec. ``path`` is the file it came from; relative paths resolve against ``base_dir``."""

    path: Path
    name: str
    pool: Pool
    inputs: Inputs
    task: Task
    outputs: Outputs
    description: str = ""
    params: dict[str, Scalar] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    matrix: dict[str, tuple[Scalar, ...]] = field(default_factory=dict)
    job_id: str | None = None  # template over params and name
    cleanup: Cleanup = field(default_factory=Cleanup)
    # task.expected_duration: only for cost estimates, so not part of the job's identity (plan hash).
    expected_task_seconds: float | None = None
    # Line of each templated field, by JSON path, for error messages raised while planning.
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def where(self, json_path: str) -> str:
        """``file:line`` of a field, for messages."""
        line = self.lines.get(json_path)
        return f"{self.path}:{line}" if line else str(self.path)
