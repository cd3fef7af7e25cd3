"""The spec model: typed and validated, with the schema's defaults filled in.

Built by :func:`batchspec.spec.load_spec` from a document that passed validation and went
through :func:`~batchspec.spec.defaults.fill_defaults`, so the constructors here trust their
input and hold no defaults of their own (the schema is the one place they are written).
Templates stay as source text: the planner renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Scalar = str | int | float | bool | None
CleanupAction = Literal["delete", "keep"]
ParamType = Literal["string", "integer", "number", "boolean"]
OutputWhen = Literal["success", "failure", "always"]
Group = Literal["file", "input", "all"]
Workdir = Literal["task", "image"]
#: A count that may be a template over params (``spot: <<params.nodes>>``).
Count = int | str


@dataclass(frozen=True)
class Param:
    """A parameter. ``default`` is None with ``required`` when it has no default."""

    name: str
    type: ParamType
    default: Scalar
    required: bool
    choices: tuple[Scalar, ...] | None
    description: str
    minimum: float | None
    maximum: float | None
    declared: bool  # written in the typed form (a mapping), not as a bare default


@dataclass(frozen=True)
class Image:
    publisher: str
    offer: str
    sku: str
    version: str


@dataclass(frozen=True)
class Autoscale:
    formula: str
    interval_seconds: int


@dataclass(frozen=True)
class FileSource:
    """A file (or storage folder) to put in a working directory. Exactly one of ``path``,
    ``url`` and ``container`` is set; every text may be a template."""

    path: str | None
    url: str | None
    container: str | None
    prefix: str
    to: str | None
    mode: str | None


@dataclass(frozen=True)
class StartTask:
    command: str  # template over params
    elevated: bool
    wait_for_success: bool
    retries: int
    env: dict[str, str]
    files: tuple[FileSource, ...]


@dataclass(frozen=True)
class Registry:
    """A private container registry; credentials are read from the environment, never the spec."""

    server: str
    username_env: str | None
    password_env: str | None
    identity: str | None  # ARM resource id of a user-assigned managed identity (Azure only)


@dataclass(frozen=True)
class PoolContainers:
    """``pool.container``: images every node pulls as it starts, and registries."""

    prefetch: tuple[str, ...]  # templates over params
    registries: tuple[Registry, ...]


@dataclass(frozen=True)
class Pool:
    id: str
    vm_size: str  # template over params
    image: Image
    node_agent_sku: str
    dedicated: Count
    spot: Count
    autoscale: Autoscale | None
    task_slots_per_node: int
    start_task: StartTask | None
    container: PoolContainers | None
    ready_timeout_seconds: float  # waiting for a node that can run tasks, when none runs any


@dataclass(frozen=True)
class Inputs:
    paths: tuple[str, ...]  # every text here may be a template over params
    exclude: tuple[str, ...]
    container: str | None
    prefix: str
    items: tuple[str | dict[str, object], ...] | None  # `list:`
    allow_empty: bool


@dataclass(frozen=True)
class Axis:
    """A matrix axis: listed ``values``, or a range whose bounds may be templates."""

    values: tuple[Scalar, ...] | None
    start: str | None
    stop: str | None
    step: str
    range: str | None  # "A-B" or "A-B:STEP"
    pad: int


@dataclass(frozen=True)
class OutputRule:
    path: str  # glob pattern template, relative to the working directory
    when: OutputWhen
    to: str | None  # destination template: a directory ending in '/', or a new name


@dataclass(frozen=True)
class Container:
    """``task.container``: the image a task runs in."""

    image: str  # template over params
    options: str  # Batch containerRunOptions, as written
    workdir: Workdir


@dataclass(frozen=True)
class TaskBody:
    """What a task runs: shared by ``task``, ``merge`` and each stage."""

    command: str
    outputs: tuple[OutputRule, ...]
    id: str | None
    retries: int
    timeout_seconds: int | None
    # expected_duration: only for cost estimates, so not part of the job's identity (plan hash).
    expected_seconds: float | None = field(compare=False)
    env: dict[str, str]
    files: tuple[FileSource, ...]
    container: Container | None


@dataclass(frozen=True)
class Stage:
    """One step of the job. The first fans out over ``inputs``; a later one over the outputs of
    stage ``source`` (one task per file, per first-stage task, or one for all: ``group``)."""

    name: str
    task: TaskBody
    source: str | None
    group: Group
    match: tuple[str, ...]
    publish: bool
    with_source: bool  # its tasks also get the job input their files descend from
    json_path: str  # where its task body is in the spec, e.g. $.stages[1].task


@dataclass(frozen=True)
class Job:
    id: str | None  # template over params and name
    env: dict[str, str]
    timeout_seconds: int | None


@dataclass(frozen=True)
class Outputs:
    container: str  # templates over params
    download: str


@dataclass(frozen=True)
class Cleanup:
    job: CleanupAction
    pool: CleanupAction
    inputs: CleanupAction
    pool_given: bool  # the spec says cleanup.pool (a run's error then keeps a pool it made only if so)


@dataclass(frozen=True)
class Spec:
    """A validated spec. ``path`` is the file it came from; relative paths resolve against ``base_dir``."""

    path: Path
    name: str
    description: str
    params: dict[str, Param]
    pool: Pool
    requires: tuple[str, ...]
    inputs: Inputs | None  # None: no inputs, one task per matrix combination
    matrix: dict[str, Axis]
    files: tuple[FileSource, ...]
    stages: tuple[Stage, ...]  # at least one; `task` is one stage, `merge` a last one
    job: Job
    outputs: Outputs
    cleanup: Cleanup
    # Line of each templated field, by JSON path, for error messages raised while planning.
    lines: dict[str, int] = field(compare=False, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def task(self) -> TaskBody:
        """The first stage's task body (the whole job for a one-stage spec)."""
        return self.stages[0].task

    @property
    def expected_task_seconds(self) -> float | None:
        """How long one task usually runs (``task.expected_duration``), for cost estimates."""
        return self.task.expected_seconds

    def defaults(self) -> dict[str, Scalar]:
        """Every parameter's default (required ones are absent)."""
        return {name: p.default for name, p in self.params.items() if not p.required}

    def where(self, json_path: str) -> str:
        """``file:line`` of a field, for messages."""
        line = self.lines.get(json_path)
        return f"{self.path}:{line}" if line else str(self.path)
