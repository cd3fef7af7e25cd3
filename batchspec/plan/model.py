"""The plan: what a spec expands to, consumed unchanged by the engine and every backend.

A plan is plain data (frozen dataclasses) with a stable JSON form (:meth:`Plan.to_json`,
:meth:`Plan.from_json`) so ``batchspec plan --format json`` can be diffed in code review.

A plan has one or more stages. The first stage's tasks are known when planning; a later stage's
tasks are known too when every file it reads is named in advance (a merge over outputs without
wildcards), otherwise they are ``None`` until the stage it reads has finished, and the engine
asks the planner to expand it then.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

from ..display import json_safe
from ..globs import escape, has_magic, literal_path, split_fixed
from ..spec.model import Autoscale, Cleanup, Group, Image, Outputs, OutputWhen, Registry, Scalar, Workdir
from .deps import longest

PLAN_FORMAT = 1

_T = TypeVar("_T")


def _quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an ``__init__`` that stores each field through its slot
    (what the generated one does too, after looking ``object.__setattr__`` up for every field).
    For the classes a plan makes once per task: half their cost, a tenth of planning's."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    namespace: dict[str, Any] = {f"_set_{f.name}": cls.__dict__[f.name].__set__ for f in fields}
    params = []
    for f in fields:
        assert f.default_factory is dataclasses.MISSING and f.init, f"{cls.__name__}.{f.name}"
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"\n    _set_{f.name}(self, {f.name})" for f in fields)
    exec(f"def __init__(self, {', '.join(params)}):{body}", namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls

#: Where an input file comes from: a local path, a blob, every blob under a prefix, an http(s)
#: URL, or an output of an earlier stage (as the backend keeps it).
FileKind = Literal["local", "blob", "blobs", "url", "output"]


@_quick_init
@dataclass(frozen=True, slots=True)
class InputFile:
    """One file (or storage folder) a task needs in its working directory.

    ``source`` is, by ``kind``: a local path relative to the spec's directory (or absolute); a
    blob name in ``container``; a blob name prefix in ``container`` (``blobs``: each blob lands
    under ``path`` keeping its name, as Batch does); a URL; or the name of an output of task
    ``task`` of stage ``stage``. ``path`` is where it goes inside the working directory (POSIX,
    relative; a directory for ``blobs``, "" meaning the working directory itself).
    """

    source: str
    path: str
    container: str | None = None
    kind: FileKind = "local"
    mode: str | None = None  # octal file mode, e.g. "0755"
    stage: str | None = None
    task: str | None = None


@_quick_init
@dataclass(frozen=True, slots=True)
class Output:
    """An output rule of a task: files matching ``pattern`` (relative to the working
    directory) are kept when the task ends as ``when`` says, under their destination."""

    pattern: str
    when: OutputWhen = "success"
    to: str | None = None  # a directory ending in '/', or a new name for a literal pattern

    def applies(self, succeeded: bool) -> bool:
        return self.when == "always" or (self.when == "success") == succeeded

    @property
    def name(self) -> str | None:
        """The one file this rule matches, when its pattern has no wildcard (else None)."""
        return literal_path(self.pattern)

    def target(self, rel: str) -> str:
        """Where the matched file ``rel`` (relative to the working directory) goes."""
        if self.to is None:
            return rel
        if not self.to.endswith("/"):
            return self.to
        fixed, rest = split_fixed(self.pattern)
        if self.name is not None or not rest:
            return self.to + posixpath.basename(rel)
        return self.to + (rel[len(fixed) + 1 :] if fixed else rel)

    @property
    def destination(self) -> str | None:
        """Where the one file of a literal rule goes (None for a wildcard rule)."""
        name = self.name
        return None if name is None else self.target(name)

    @property
    def destination_pattern(self) -> str:
        """A glob pattern matching where every file of this rule goes."""
        if self.to is None:  # the common case: files stay where the pattern finds them
            return self.pattern
        if (dest := self.destination) is not None:
            return escape(dest)
        fixed, rest = split_fixed(self.pattern)
        return escape(self.to) + (rest if fixed else self.pattern)

    @property
    def upload_path(self) -> str:
        """Batch's ``OutputFileBlobContainerDestination.path`` for this rule: the blob name for a
        pattern without glob characters, else the virtual directory its matches go under (Batch
        appends each match's path below the pattern's fixed directory; a name whose glob
        characters are escaped is such a pattern too)."""
        if not has_magic(self.pattern):
            return self.target(self.pattern)
        fixed, _ = split_fixed(self.pattern)
        return self.to.rstrip("/") if self.to is not None else fixed


@_quick_init
@dataclass(frozen=True, slots=True)
class PlannedTask:
    id: str
    command: str  # rendered shell command (shell-quoted values)
    inputs: tuple[InputFile, ...] = ()
    outputs: tuple[Output, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    stage: str = ""
    depends_on: tuple[str, ...] = ()  # tasks that must succeed first (also: the tasks whose outputs it reads)
    origin: str = ""  # the first-stage task this one descends from ("" for a merge of everything)
    retries: int = 0
    timeout_seconds: int | None = None


@dataclass(frozen=True)
class PlannedStartTask:
    command: str  # rendered
    elevated: bool
    wait_for_success: bool
    retries: int
    env: dict[str, str]
    files: tuple[InputFile, ...]


@dataclass(frozen=True)
class PlannedContainer:
    """The image a stage's tasks run in (its template rendered), with its run options."""

    image: str
    options: str = ""  # Batch containerRunOptions, as written
    workdir: Workdir = "task"  # task: the task's working directory; image: the image's WORKDIR


@dataclass(frozen=True)
class PlannedPoolContainers:
    """The pool's container configuration: every image its nodes pull as they start (the tasks'
    and ``pool.container.prefetch``), and the registries to log in to."""

    images: tuple[str, ...]
    registries: tuple[Registry, ...] = ()


@dataclass(frozen=True)
class PlannedPool:
    """The pool with its templates (VM size, node counts) rendered."""

    id: str
    vm_size: str
    image: Image
    node_agent_sku: str
    dedicated: int
    spot: int
    autoscale: Autoscale | None
    task_slots_per_node: int
    start_task: PlannedStartTask | None
    container: PlannedPoolContainers | None = None  # set when tasks run in images
    ready_timeout_seconds: float = 1800.0  # pool.ready_timeout

    @property
    def slots(self) -> int:
        return max(1, (self.dedicated + self.spot) * self.task_slots_per_node)


@dataclass(frozen=True)
class StagePlan:
    """One stage: how it fans out and, once known, its tasks."""

    name: str
    source: str | None  # the stage it reads; None for the first (it reads the job's inputs)
    group: Group
    match: tuple[str, ...]
    publish: bool  # its outputs are delivered to the download directory / output container
    consumed: bool  # a later stage reads its outputs
    retries: int
    timeout_seconds: int | None
    command: str  # the command template, shown while the tasks are not known
    outputs: tuple[str, ...]  # the output pattern templates
    tasks: tuple[PlannedTask, ...] | None  # None until `source` has finished
    container: PlannedContainer | None = None  # the image its tasks run in

    @property
    def known(self) -> bool:
        return self.tasks is not None


@dataclass(frozen=True)
class Plan:
    """A spec expanded over its inputs."""

    spec_path: str  # as given; relative paths in the plan resolve against its directory
    name: str
    job_id: str
    pool: PlannedPool
    requires: tuple[str, ...]
    outputs: Outputs  # rendered
    cleanup: Cleanup
    params: dict[str, Scalar]
    stages: tuple[StagePlan, ...]
    files: tuple[InputFile, ...] = ()  # every task of the job gets these
    env: tuple[tuple[str, str], ...] = ()  # job-level environment (a task's own env overrides it)
    timeout_seconds: int | None = None  # the job's wall-clock limit
    description: str = ""
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @cached_property
    def tasks(self) -> tuple[PlannedTask, ...]:
        """Every task known so far, stage by stage."""
        if len(self.stages) == 1:
            return self.stages[0].tasks or ()
        return tuple(t for s in self.stages for t in (s.tasks or ()))

    @property
    def base_dir(self) -> Path:
        return Path(self.spec_path).parent

    def resolve(self, relative: str) -> Path:
        """A path from the spec (input source, download dir) on this machine."""
        return self.base_dir / relative

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.name == name)

    def stage_of(self, task: PlannedTask) -> StagePlan:
        return self.stage(task.stage) if task.stage else self.stages[0]

    @property
    def complete(self) -> bool:
        """Every stage's tasks are known."""
        return all(s.known for s in self.stages)

    def with_stages(self, stages: tuple[StagePlan, ...]) -> Plan:
        return replace(self, stages=stages)

    def local_inputs(self) -> list[str]:
        """Every file on this machine that tasks read (not in storage or on the web), once, sorted."""
        files = [*self.files, *(self.pool.start_task.files if self.pool.start_task else ())]
        return sorted({f.source for f in (*files, *(f for t in self.tasks for f in t.inputs)) if f.kind == "local"})

    @property
    def download_dir(self) -> Path:
        """``outputs.download``: relative to the spec's directory; ``~`` is the home directory."""
        return self.resolve(os.path.expanduser(self.outputs.download))

    # --- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (what :meth:`to_json` writes)."""
        out = self._head()
        out["tasks"] = [_task_dict(t) for t in self.tasks]
        return out

    def _head(self) -> dict[str, Any]:
        """:meth:`to_dict` without the tasks."""
        out: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "spec": self.spec_path,
            "name": self.name,
            "description": self.description,
            "job_id": self.job_id,
            "pool": _pool_dict(self.pool),
            "requires": list(self.requires),
            "outputs": asdict(self.outputs),
            "cleanup": asdict(self.cleanup),
            "params": self.params,
        }
        if self.files:
            out["files"] = [_file_dict(f) for f in self.files]
        if self.env:
            out["env"] = dict(self.env)
        if self.timeout_seconds is not None:
            out["timeout_seconds"] = self.timeout_seconds
        out["stages"] = [_stage_dict(s) for s in self.stages]
        out["task_count"] = len(self.tasks)
        return out

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
        text = json_safe(json.dumps(self._head(), indent=indent, ensure_ascii=False))
        pad = " " * indent
        yield text[: text.rfind("}")].rstrip() + f',\n{pad}"tasks": ['
        tasks = self.tasks
        between = f",\n{pad}{pad}"
        for start in range(0, len(tasks), 1000):  # a thousand lines per chunk: fewer, larger writes
            yield json_safe(("\n" + pad + pad if not start else between) + between.join(
                [task_json(task) for task in tasks[start : start + 1000]]))
        yield f"\n{pad}]\n}}" if tasks else "]\n}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        if d.get("format") != PLAN_FORMAT:
            raise ValueError(f"unsupported plan format {d.get('format')!r}")
        pool_d = dict(d["pool"])
        pool_d["image"] = Image(**pool_d["image"])
        pool_d["autoscale"] = Autoscale(**pool_d["autoscale"]) if pool_d.get("autoscale") else None
        containers = pool_d.get("container")
        pool_d["container"] = PlannedPoolContainers(
            tuple(containers["images"]), tuple(Registry(**r) for r in containers["registries"])
        ) if containers else None
        start = pool_d.get("start_task")
        pool_d["start_task"] = (
            PlannedStartTask(**{**start, "files": tuple(_file_from_dict(f) for f in start["files"])})
            if start else None
        )
        tasks: dict[str, list[PlannedTask]] = {}
        stage_dicts = d["stages"]
        limits = {s["name"]: (s["retries"], s["timeout_seconds"]) for s in stage_dicts}
        first = stage_dicts[0]["name"]
        for t in d["tasks"]:
            task = _task_from_dict(t, first, limits)
            tasks.setdefault(task.stage or first, []).append(task)
        stages = tuple(_stage_from_dict(s, tasks.get(s["name"], [])) for s in stage_dicts)
        return cls(
            spec_path=d["spec"],
            name=d["name"],
            description=d.get("description", ""),
            job_id=d["job_id"],
            pool=PlannedPool(**pool_d),
            requires=tuple(d["requires"]),
            outputs=Outputs(**d["outputs"]),
            cleanup=Cleanup(**d["cleanup"]),
            params=dict(d["params"]),
            stages=stages,
            files=tuple(_file_from_dict(f) for f in d.get("files", [])),
            env=tuple(d.get("env", {}).items()),
            timeout_seconds=d.get("timeout_seconds"),
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


def _pool_dict(pool: PlannedPool) -> dict[str, Any]:
    out = asdict(pool)
    if pool.start_task is not None:
        out["start_task"]["files"] = [_file_dict(f) for f in pool.start_task.files]
    if pool.container is None:
        del out["container"]  # absent, as before containers
    return out


def _stage_dict(stage: StagePlan) -> dict[str, Any]:
    waits = longest(stage.tasks or ())
    return {
        "name": stage.name,
        "from": stage.source,
        "group": stage.group,
        "match": list(stage.match),
        "publish": stage.publish,
        "consumed": stage.consumed,
        "retries": stage.retries,
        "timeout_seconds": stage.timeout_seconds,
        "command": stage.command,
        "outputs": list(stage.outputs),
        "task_count": None if stage.tasks is None else len(stage.tasks),
        **({"container": asdict(stage.container)} if stage.container is not None else {}),
        # How its tasks wait on Azure Batch (derived: shown for review, not read back).
        "dependencies": None if waits is None else {"form": waits.form, "count": waits.count,
                                                    "characters": waits.chars, "gates": len(waits.gates)},
    }


def _stage_from_dict(d: dict[str, Any], tasks: list[PlannedTask]) -> StagePlan:
    return StagePlan(d["name"], d["from"], d["group"], tuple(d["match"]), d["publish"], d["consumed"], d["retries"],
                     d["timeout_seconds"], d["command"], tuple(d["outputs"]),
                     None if d["task_count"] is None else tuple(tasks),
                     PlannedContainer(**d["container"]) if d.get("container") else None)


def _file_dict(f: InputFile) -> dict[str, Any]:
    out: dict[str, Any] = {"source": f.source, "path": f.path}
    if f.container is not None:
        out["container"] = f.container
    if f.mode is not None:
        out["mode"] = f.mode
    if f.stage is not None:
        out["stage"] = f.stage
    if f.task is not None:
        out["task"] = f.task
    if f.kind not in ("local", "blob"):  # those two are told apart by `container`
        out["kind"] = f.kind
    return out


def _file_from_dict(d: dict[str, Any]) -> InputFile:
    kind: FileKind = d.get("kind") or ("blob" if d.get("container") else "local")
    return InputFile(d["source"], d["path"], d.get("container"), kind, d.get("mode"), d.get("stage"), d.get("task"))


def _output_value(o: Output) -> str | dict[str, Any]:
    if o.when == "success" and o.to is None:
        return o.pattern
    return {"path": o.pattern, "when": o.when, **({"to": o.to} if o.to is not None else {})}


def _task_dict(task: PlannedTask) -> dict[str, Any]:
    out: dict[str, Any] = {"id": task.id, "command": task.command}
    if task.stage:
        out["stage"] = task.stage
    out["inputs"] = [_file_dict(f) for f in task.inputs]
    out["outputs"] = [_output_value(o) for o in task.outputs]
    if task.env:
        out["env"] = dict(task.env)
    if task.depends_on:
        out["depends_on"] = list(task.depends_on)
    if task.origin and task.origin != task.id:
        out["origin"] = task.origin
    return out


_text = json.encoder.encode_basestring  # a JSON string, as json.dumps(ensure_ascii=False) writes it


def task_json(task: PlannedTask) -> str:
    """``json.dumps(_task_dict(task), ensure_ascii=False)``, written straight from the task: a
    large plan prints one of these per task, and a dict per task only to be thrown away costs
    more than the rest of its line."""
    files, rules = task.inputs, task.outputs
    inputs = _file_json(files[0]) if len(files) == 1 else ", ".join([_file_json(f) for f in files])
    outputs = ", ".join([_output_json(o) for o in rules]) if len(rules) != 1 else _output_json(rules[0])
    line = f'{{"id": {_text(task.id)}, "command": {_text(task.command)}, '
    if task.stage:
        line += f'"stage": {_text(task.stage)}, '
    line += f'"inputs": [{inputs}], "outputs": [{outputs}]'
    if task.env:
        line += ', "env": ' + json.dumps(dict(task.env), ensure_ascii=False)
    if task.depends_on:
        line += ', "depends_on": ' + json.dumps(list(task.depends_on), ensure_ascii=False)
    if task.origin and task.origin != task.id:
        line += f', "origin": {_text(task.origin)}'
    return line + "}"


def _output_json(o: Output) -> str:
    if o.when == "success" and o.to is None:
        return _text(o.pattern)
    return json.dumps(_output_value(o), ensure_ascii=False)


def _file_json(f: InputFile) -> str:
    if f.container is None and f.mode is None and f.stage is None and f.task is None and f.kind == "local":
        return f'{{"source": {_text(f.source)}, "path": {_text(f.path)}}}'
    return json.dumps(_file_dict(f), ensure_ascii=False)


def _task_from_dict(d: dict[str, Any], first: str, limits: dict[str, tuple[int, int | None]]) -> PlannedTask:
    stage = d.get("stage", "")
    retries, timeout = limits[stage or first]
    return PlannedTask(
        id=d["id"],
        command=d["command"],
        inputs=tuple(_file_from_dict(f) for f in d["inputs"]),
        outputs=tuple(Output(o) if isinstance(o, str) else Output(o["path"], o["when"], o.get("to"))
                      for o in d["outputs"]),
        env=tuple(d.get("env", {}).items()),
        stage=stage,
        depends_on=tuple(d.get("depends_on", ())),
        origin=d.get("origin", d["id"] if not stage or stage == first else ""),
        retries=retries,
        timeout_seconds=timeout,
    )
