"""Expand a spec into a plan: inputs x matrix combinations, rendered templates, ids, stages.

Planning has no side effects and needs no network (except listing blobs for ``inputs.container``,
through a lister the caller supplies), so ``batchspec plan`` is a faithful dry run.

:class:`Planner` expands the first stage at once, and each later stage as soon as the files it
reads are known: at planning time when they are named in advance (outputs without wildcards),
otherwise when the engine hands it the outputs of the finished stage (:meth:`Planner.expand`).
"""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import itertools
import json
import math
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any
from urllib.parse import unquote, urlparse

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..globs import Glob, compile_glob, has_magic, literal_head, normalize
from ..limits import MAX_NODE_COUNT, MAX_TASKS, plan_budget
from ..spec.model import Axis, FileSource, Inputs, Param, Scalar, Spec, Stage, TaskBody
from ..spec.validate import output_pattern_problem, param_value_problem, parse_range, relative_path_problem
from ..spec.values import batch_id_problem, container_pool_warning, container_problem, image_problem
from ..templating import Namespace, PathValue, Template, TemplateError, compile_template
from .ids import HASH_CHARS, MAX_ID, TaskIds
from .inputs import BlobLister, InputItem, PlanError, resolve_inputs
from .model import (
    InputFile,
    Output,
    Plan,
    PlannedContainer,
    PlannedPool,
    PlannedPoolContainers,
    PlannedStartTask,
    PlannedTask,
    StagePlan,
)

_MAX_ID = MAX_ID
_HASH_CHARS = HASH_CHARS
#: A matrix range longer than this is a mistake (a typo in a bound), not a job.
MAX_AXIS_VALUES = MAX_TASKS


def parse_overrides(pairs: Iterable[str], params: Mapping[str, object]) -> dict[str, Scalar]:
    """``["bitrate=320k", "fast=true"]`` -> values parsed as YAML scalars; keys must be known."""
    yaml = YAML(typ="safe", pure=True)
    out: dict[str, Scalar] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PlanError(f"--set expects KEY=VALUE, got '{pair}'")
        if key not in params:
            known = ", ".join(sorted(params)) or "none (the spec has no params)"
            raise PlanError(f"--set {key}: unknown parameter '{key}'; known parameters: {known}")
        try:
            value = yaml.load(text) if text.strip() else ""
        except (YAMLError, ValueError, TypeError):  # as in a spec file (e.g. 5,000 digits): the text
            value = text
        if isinstance(value, dict | list | set):
            raise PlanError(f"--set {key}: the value must be a single value, not a list or mapping")
        if isinstance(value, _dt.date):  # as in a spec file: a date reads as its ISO text
            value = value.isoformat()
        elif not isinstance(value, str | int | float | bool | None):  # e.g. !!binary: keep the text
            value = text
        out[key] = value
    return out


def resolve_params(spec: Spec, overrides: Iterable[str] = ()) -> dict[str, Scalar]:
    """Every parameter's value: its default or its ``--set`` value, checked against a typed
    declaration (a string parameter takes the text as written)."""
    pairs = list(overrides)
    given = parse_overrides(pairs, spec.params)
    texts = {k.strip(): v for k, _, v in (p.partition("=") for p in pairs)}
    values: dict[str, Scalar] = {}
    missing: list[str] = []
    for name, param in spec.params.items():
        if name not in given:
            if param.required:
                missing.append(name)
            else:
                values[name] = param.default
            continue
        value = given[name]
        if param.declared:
            value = _coerce(param, value, texts[name])
        values[name] = value
    if missing:
        raise PlanError(f"required parameter{'s' if len(missing) > 1 else ''} not given: {', '.join(missing)}",
                        "pass " + " ".join(f"--set {m}=VALUE" for m in missing)
                        + f" (`batchspec params {spec.path}` lists them)")
    return values


def _coerce(param: Param, value: Scalar, text: str) -> Scalar:
    if param.type == "string":
        value = value if isinstance(value, str) else text
    elif param.type == "number" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    declared: dict[str, Any] = {"type": param.type, "minimum": param.minimum, "maximum": param.maximum}
    if param.choices is not None:
        declared["enum"] = list(param.choices)
    if value is None or (problem := param_value_problem(declared, value)):
        problem = "a value is needed" if value is None else problem
        allowed = f" (one of: {', '.join(map(str, param.choices))})" if param.choices else ""
        raise PlanError(f"--set {param.name}: {problem}{allowed}")
    return value


def build_plan(spec: Spec, overrides: Iterable[str] = (), blob_lister: BlobLister | None = None) -> Plan:
    """The plan for ``spec`` with ``--set`` overrides applied."""
    return Planner(spec, overrides, blob_lister).plan


@contextmanager
def gc_paused() -> Iterator[None]:
    """Expansion allocates hundreds of thousands of acyclic objects; the cyclic garbage
    collector would rescan them again and again for nothing (a third of the time at 100k).
    A command that only shows a plan pauses it until the plan is freed, so it is never scanned."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Planner:
    """Expands one spec with one set of params: :attr:`plan` at once, later stages on request."""

    def __init__(self, spec: Spec, overrides: Iterable[str] = (), blob_lister: BlobLister | None = None) -> None:
        self.spec = spec
        self.params = resolve_params(spec, overrides)
        # What job-wide templates see (outputs.container, job.env, files): params, name, job_id.
        self.constants: dict[str, Any] = {"params": Namespace(self.params), "name": spec.name}
        self.origins: dict[str, Namespace] = {}  # first-stage task id -> its variables, for `source`
        self.origin_files: dict[str, InputFile] = {}  # first-stage task id -> its input file
        self.ids = TaskIds()  # every stage's task ids, each handed out once
        with gc_paused(), plan_budget():
            warnings: list[str] = []
            if spec.inputs is None:  # a sweep (or a single task): one item, no file
                items = [InputItem("", None, None)]
            else:
                try:
                    items, warnings = resolve_inputs(self._inputs(spec.inputs), spec.base_dir, blob_lister)
                except PlanError as exc:  # located at the spec's inputs
                    raise type(exc)(f"{spec.where('$.inputs')}: {exc.message}", exc.hint,
                                    exit_code=exc.exit_code) from None
            combos = self._combinations(len(items))
            self.job_id = self._job_id(items, combos)
            self.constants["job_id"] = self.job_id
            first = self._expand_first(items, combos)
        self.produced: dict[str, str] = {}  # output destination -> the task that writes it
        self._claim_all(spec.stages[0], first)
        stages = [self._stage(spec.stages[0], tuple(first))]
        stages += [self._stage(s, None) for s in spec.stages[1:]]
        plan = Plan(
            spec_path=str(spec.path),
            name=spec.name,
            description=spec.description,
            job_id=self.job_id,
            pool=self._pool(),
            requires=spec.requires,
            outputs=replace(spec.outputs, container=self._container("$.outputs.container", spec.outputs.container),
                            download=self._text("$.outputs.download", spec.outputs.download)),
            cleanup=spec.cleanup,
            params=self.params,
            stages=tuple(stages),
            files=self._files("$.files", spec.files, self.constants, "the job"),
            env=tuple((k, self._text(f"$.job.env.{k}", v)) for k, v in spec.job.env.items()),
            timeout_seconds=spec.job.timeout_seconds,
            warnings=tuple(warnings) + self._pool_warnings(),
        )
        self.plan = self.expand(plan, {})

    # --- the job-wide parts --------------------------------------------------------------------

    def _text(self, field: str, source: str, variables: Mapping[str, Any] | None = None, *, shell: bool = False,
              where: object = "the spec") -> str:
        template = _compile(self.spec, field, source, shell=shell)
        try:
            return template.render(dict(variables if variables is not None else self.constants))
        except TemplateError as exc:
            raise PlanError(f"{self.spec.where(field)}: {field} for {where}: {exc.message}") from None

    def _container(self, field: str, source: str) -> str:
        name = self._text(field, source)
        if problem := container_problem(name, "container"):
            raise PlanError(f"{self.spec.where(field)}: {field} renders to an invalid name: {problem}")
        return name

    def _count(self, field: str, value: int | str) -> int:
        if isinstance(value, int):
            return value
        text = self._text(field, value).strip()
        # ASCII digits only (str.isdigit takes '²'), and no more than Batch's 32-bit counts hold.
        if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_NODE_COUNT:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise PlanError(f"{self.spec.where(field)}: {field} renders to '{shown}', not a node count "
                            f"(0 to {MAX_NODE_COUNT:,})")
        return int(text)

    def _pool(self) -> PlannedPool:
        pool = self.spec.pool
        start = None
        if pool.start_task is not None:
            st = pool.start_task
            start = PlannedStartTask(
                command=self._text("$.pool.start_task.command", st.command, shell=True),
                elevated=st.elevated, wait_for_success=st.wait_for_success, retries=st.retries, env=st.env,
                files=self._files("$.pool.start_task.files", st.files, self.constants, "the start task"),
            )
        planned = PlannedPool(
            id=pool.id, vm_size=self._text("$.pool.vm_size", pool.vm_size), image=pool.image,
            node_agent_sku=pool.node_agent_sku,
            dedicated=self._count("$.pool.nodes.dedicated", pool.dedicated),
            spot=self._count("$.pool.nodes.spot", pool.spot),
            autoscale=pool.autoscale, task_slots_per_node=pool.task_slots_per_node, start_task=start,
            container=self._pool_containers(),
            ready_timeout_seconds=pool.ready_timeout_seconds,
        )
        if planned.autoscale is None and planned.dedicated + planned.spot == 0:
            raise PlanError(f"{self.spec.where('$.pool.nodes')}: the pool has no nodes with these params: "
                            "set nodes.dedicated or nodes.spot to at least 1")
        return planned

    def _image(self, field: str, source: str) -> str:
        image = self._text(field, source).strip()
        if problem := image_problem(image):
            raise PlanError(f"{self.spec.where(field)}: {field} renders to an invalid image: {problem}")
        return image

    def _stage_container(self, stage: Stage) -> PlannedContainer | None:
        container = stage.task.container
        if container is None:
            return None
        field = f"{stage.json_path}.container" + (".image" if f"{stage.json_path}.container.image" in self.spec.lines
                                                   else "")
        return PlannedContainer(self._image(field, container.image), container.options, container.workdir)

    def _pool_containers(self) -> PlannedPoolContainers | None:
        """The pool's container configuration: when tasks run in images (or the spec sets one)."""
        wanted = self.spec.pool.container
        images = [c.image for s in self.spec.stages if (c := self._stage_container(s)) is not None]
        if wanted is None and not images:
            return None
        if wanted is not None:
            images += [self._image(f"$.pool.container.prefetch[{i}]", image) for i, image in enumerate(wanted.prefetch)]
        return PlannedPoolContainers(tuple(dict.fromkeys(images)), wanted.registries if wanted else ())

    def _pool_warnings(self) -> tuple[str, ...]:
        image = self.spec.pool.image
        if self._pool_containers() is None:
            return ()
        warning = container_pool_warning(image.publisher, image.offer, image.sku)
        return (f"{self.spec.where('$.pool.image')}: $.pool.image: {warning}",) if warning else ()

    def _inputs(self, inputs: Inputs) -> Inputs:
        def each(key: str, values: tuple[str, ...]) -> tuple[str, ...]:
            if len(values) == 1:
                return (self._text(f"$.inputs.{key}", values[0]),)
            return tuple(self._text(f"$.inputs.{key}[{i}]", v) for i, v in enumerate(values))

        container = inputs.container
        return replace(
            inputs, paths=each("path", inputs.paths), exclude=each("exclude", inputs.exclude),
            container=self._container("$.inputs.container", container) if container is not None else None,
            prefix=self._text("$.inputs.prefix", inputs.prefix),
        )

    def _combinations(self, inputs: int) -> list[dict[str, Scalar]]:
        matrix = {name: self._axis(name, axis) for name, axis in self.spec.matrix.items()}
        check_task_count(self.spec, inputs, math.prod(len(values) for values in matrix.values()))
        if not matrix:
            return [{}]
        names = list(matrix)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*matrix.values())]

    def _axis(self, name: str, axis: Axis) -> tuple[Scalar, ...]:
        if axis.values is not None:
            return axis.values
        field = f"$.matrix.{name}"
        try:
            if axis.range is not None:
                start, stop, step = parse_range(self._text(f"{field}.range", axis.range))
            else:
                assert axis.start is not None and axis.stop is not None
                start, stop, step = (self._int(f"{field}.{k}", v)
                                     for k, v in (("start", axis.start), ("stop", axis.stop), ("step", axis.step)))
        except ValueError as exc:
            raise PlanError(f"{self.spec.where(field)}: {field}: {exc}") from None
        if step == 0:
            raise PlanError(f"{self.spec.where(field)}: {field}: the step must not be 0")
        values = range(start, stop + (1 if step > 0 else -1), step)
        if not values:
            raise PlanError(f"{self.spec.where(field)}: {field}: the range from {start} to {stop} by {step} is empty")
        if len(values) > MAX_AXIS_VALUES:
            raise PlanError(f"{self.spec.where(field)}: {field}: the range has {len(values):,} values; "
                            f"at most {MAX_AXIS_VALUES:,} are allowed")
        if axis.pad:
            return tuple(f"{v:0{axis.pad + (v < 0)}d}" for v in values)
        return tuple(values)

    def _int(self, field: str, text: str) -> int:
        rendered = self._text(field, text).strip()
        try:
            return int(rendered)
        except ValueError:
            raise ValueError(f"{field} renders to '{rendered}', not an integer") from None

    def _job_id(self, items: list[InputItem], combos: list[dict[str, Scalar]]) -> str:
        spec = self.spec
        if spec.job.id is not None:
            job_id = self._text("$.job.id", spec.job.id)
            if problem := batch_id_problem(job_id, "job id"):
                raise PlanError(f"{spec.where('$.job.id')}: $.job.id renders to an invalid id: {problem}")
            return job_id
        # Same spec, inputs and params -> same id (a rerun resumes); any change -> a new id.
        digest = hashlib.sha256()
        model = {k: v for k, v in asdict(spec).items() if k not in ("path", "lines")}
        # Settings that do not shape what the job does keep its id (an older version's runs resume).
        model["pool"].pop("ready_timeout_seconds", None)
        model["cleanup"].pop("pool_given", None)
        for stage in model["stages"]:  # only for cost estimates, not part of what the job does
            del stage["task"]["expected_seconds"]
            if stage["task"]["container"] is None:  # absent: the same id as before containers existed
                del stage["task"]["container"]
        if model["pool"]["container"] is None:
            del model["pool"]["container"]
        model["params"] = self.params
        digest.update(json.dumps(model, sort_keys=True, default=str).encode())
        digest.update("".join(["\0" + item.key for item in items]).encode("utf-8", "surrogateescape"))
        digest.update(json.dumps(combos, sort_keys=True, default=str).encode())
        prefix = spec.name[: _MAX_ID - _HASH_CHARS - 1]
        return f"{prefix}-{digest.hexdigest()[:_HASH_CHARS]}"

    def _files(self, field: str, files: Sequence[FileSource], variables: Mapping[str, Any],
               where: object) -> tuple[InputFile, ...]:
        return tuple(self._file(f"{field}[{i}]", f, variables, where) for i, f in enumerate(files))

    def _file(self, field: str, f: FileSource, variables: Mapping[str, Any], where: object) -> InputFile:
        def text(key: str, value: str) -> str:
            return self._text(f"{field}.{key}", value, variables, where=where)

        to = text("to", f.to) if f.to is not None else None
        if f.container is not None:
            container = text("container", f.container)
            if problem := container_problem(container, "container"):
                raise PlanError(f"{self.spec.where(field)}: {field}.container for {where}: {problem}")
            dest = normalize(to) if to else ""
            found = InputFile(text("prefix", f.prefix), dest, container, "blobs", f.mode)
        elif f.url is not None:
            url = text("url", f.url)
            parsed = urlparse(url)
            if parsed.scheme.lower() not in ("http", "https") or not parsed.netloc:
                raise PlanError(f"{self.spec.where(field)}: {field}.url for {where}: '{url}' is not an http(s) URL")
            name = to or posixpath.basename(unquote(parsed.path))
            if not name:
                raise PlanError(f"{self.spec.where(field)}: {field}: the URL '{url}' names no file; give 'to'")
            found = InputFile(url, normalize(name), None, "url", f.mode)
        else:
            assert f.path is not None
            source = normalize(text("path", f.path))
            if not self.spec.base_dir.joinpath(source).is_file():
                raise PlanError(f"{self.spec.where(field)}: {field}.path for {where}: no such file "
                                f"'{source}' (relative to {self.spec.base_dir})")
            found = InputFile(source, normalize(to or posixpath.basename(source)), None, "local", f.mode)
        if found.path and (problem := relative_path_problem(found.path, allow_dir=found.kind == "blobs")):
            raise PlanError(f"{self.spec.where(field)}: {field}.to for {where}: {problem}")
        return found

    # --- stages --------------------------------------------------------------------------------

    def _stage(self, stage: Stage, tasks: tuple[PlannedTask, ...] | None) -> StagePlan:
        consumed = any(s.source == stage.name for s in self.spec.stages)
        body = stage.task
        return StagePlan(stage.name, stage.source, stage.group, stage.match, stage.publish, consumed, body.retries,
                         body.timeout_seconds, body.command, tuple(o.path for o in body.outputs), tasks,
                         self._stage_container(stage))

    def expand(self, plan: Plan, listings: Mapping[str, Sequence[str]]) -> Plan:
        """``plan`` with every stage expanded whose input files are now known: named in advance
        by the tasks of the stage it reads, or listed in ``listings`` (the outputs the backend
        holds for a finished stage, by stage name)."""
        stages = list(plan.stages)
        if not any(not stage.known and stage.source is not None for stage in stages):
            return plan  # nothing left to expand (a one-stage plan): no id to take
        for task in plan.tasks:
            self.ids.claim(task.id)
        for i, stage in enumerate(stages):
            if stage.known or stage.source is None:
                continue
            source = next(s for s in stages if s.name == stage.source)
            if source.tasks is None:
                continue
            if stage.source in listings:
                files = self._owned(source.tasks, listings[stage.source])
            elif (named := _named_outputs(source.tasks)) is not None:
                files = named
            else:
                continue
            spec_stage = next(s for s in self.spec.stages if s.name == stage.name)
            matchers = [compile_glob(normalize(m)) for m in spec_stage.match]
            if matchers:
                files = [(t, n) for t, n in files if any(rx.match(n) for rx in matchers)]
            with gc_paused(), plan_budget():
                tasks = self._expand_later(spec_stage, source.tasks, files)
            stages[i] = replace(stage, tasks=tuple(tasks))
        return plan.with_stages(tuple(stages)) if stages != list(plan.stages) else plan

    def _owned(self, producers: Sequence[PlannedTask], names: Sequence[str]) -> list[tuple[PlannedTask, str]]:
        """Each listed name with the task that wrote it (names no task declares are left out:
        a file an earlier, different run left behind)."""
        index = OutputIndex(producers, succeeded=True)
        found: list[tuple[PlannedTask, str]] = []
        for name in sorted(names):
            owner = index.owner(name)
            if owner is not None:
                found.append((owner, name))
        order = {t.id: i for i, t in enumerate(producers)}
        found.sort(key=lambda pair: (order[pair[0].id], pair[1]))
        return found

    def _claim(self, stage: Stage, task: PlannedTask) -> None:
        """Two tasks must not write the same destination (they would overwrite each other)."""
        self._claim_all(stage, (task,))

    def _claim_all(self, stage: Stage, tasks: Iterable[PlannedTask]) -> None:
        """:meth:`_claim` for each of ``tasks``, in one loop (a stage can have 100,000)."""
        produced = self.produced
        for task in tasks:
            for i, output in enumerate(task.outputs):
                key = output.destination_pattern
                other = produced.setdefault(key, task.id)
                if other != task.id:
                    field = f"{stage.json_path}.outputs[{i}]"
                    raise PlanError(
                        f"{self.spec.where(field)}: tasks '{other}' and '{task.id}' would both produce '{key}'",
                        "make the output name depend on the input, e.g. << stem >> or << dir >>/<< stem >>",
                    )

    def _expand_first(self, items: list[InputItem], combos: list[dict[str, Scalar]]) -> list[PlannedTask]:
        spec, stage = self.spec, self.spec.stages[0]
        base = {"params": self.constants["params"], "job_id": self.job_id, "count": len(items) * len(combos)}
        render = _BodyRenderer(self, stage, base)
        keep_origins = len(spec.stages) > 1
        tasks: list[PlannedTask] = []
        owners: dict[str, int] = {}  # casefolded task.id -> index of the task that has it
        pairs = [(combo, Namespace(combo)) for combo in combos]
        single = len(combos) == 1  # no matrix: the item's variables are the task's, not copied
        uses = None if keep_origins else render.uses
        shared = base if uses is None else {k: v for k, v in base.items() if k in uses}
        try:
            for item in items:
                item_vars = _path_variables(shared, item, uses)
                stem = item_vars["stem"] if "stem" in item_vars else _stem(item) if item.file else "item"
                inputs = (item.file,) if item.file else ()
                for combo, matrix in pairs:
                    index = len(tasks)
                    variables = item_vars if single else dict(item_vars)
                    variables["matrix"] = matrix
                    variables["index"] = index
                    readable = stem if item.file or not combo else "-".join(str(v) for v in combo.values())
                    task_id = render.task_id(variables) if render.id is not None else None
                    if task_id is None:
                        task_id = self.ids.default(readable, _task_key(item.key, combo))
                    elif self.ids.claim(task_id) is not None:
                        previous = owners[task_id.casefold()]
                        raise PlanError(
                            f"task id '{task_id}' is used twice (ids are compared ignoring case): "
                            f"by {_where(items, combos, previous)} and {_where(items, combos, index)}",
                            "make task.id unique, e.g. include << index >> or a matrix value",
                        )
                    else:
                        owners[task_id.casefold()] = index
                    variables["task_id"] = task_id
                    tasks.append(render.task(task_id, variables, inputs, origin=task_id))
                    if keep_origins:
                        if item.file is not None:
                            self.origin_files[task_id] = item.file
                        self.origins[task_id] = Namespace(
                            {k: item_vars[k] for k in ("input", "name", "stem", "ext", "dir", "item") if k in item_vars}
                            | {"matrix": matrix, "task_id": task_id})
        except TemplateError as exc:
            where = _where(items, combos, len(tasks))
            raise PlanError(f"{spec.where(render.field)}: {render.field} for {where}: {exc.message}") from None
        return tasks

    def _expand_later(self, stage: Stage, producers: Sequence[PlannedTask],
                      files: list[tuple[PlannedTask, str]]) -> list[PlannedTask]:
        """The tasks of a later stage over ``files`` (each with the task that produced it); their
        ids are taken from :attr:`ids`, unique with every stage's."""
        groups: list[tuple[str, list[tuple[PlannedTask, str]], tuple[str, ...]]] = []
        if stage.group == "file":
            groups = [(pair[0].origin, [pair], (pair[0].id,)) for pair in files]
        elif stage.group == "input":
            by_origin: dict[str, list[tuple[PlannedTask, str]]] = {}
            for pair in files:
                by_origin.setdefault(pair[0].origin, []).append(pair)
            after: dict[str, list[str]] = {}
            for task in producers:
                after.setdefault(task.origin, []).append(task.id)
            groups = [(origin, pairs, tuple(after[origin])) for origin, pairs in by_origin.items()]
        elif producers:
            groups = [("", files, tuple(t.id for t in producers))]
        base = {"params": self.constants["params"], "job_id": self.job_id, "count": len(groups)}
        render = _BodyRenderer(self, stage, base)
        tasks: list[PlannedTask] = []
        try:
            for index, (origin, pairs, depends) in enumerate(groups):
                inputs = tuple(InputFile(n, n, None, "output", None, stage.source, t.id) for t, n in pairs)
                if stage.with_source and origin in self.origin_files:
                    source_file = self.origin_files[origin]
                    if any(f.path == source_file.path for f in inputs):
                        raise PlanError(f"stage '{stage.name}': the job input '{source_file.path}' (with_source) has "
                                        f"the name of an output of stage '{stage.source}'",
                                        "rename that output, e.g. put it in a directory")
                    inputs = (source_file, *inputs)
                variables: dict[str, Any] = {**base, "index": index}
                if origin in self.origins:
                    variables["source"] = self.origins[origin]
                if stage.group == "file":
                    producer, name = pairs[0]
                    variables.update(_name_variables(name))
                    readable, key = str(variables["stem"]), f"{producer.id}\0{name}"
                else:
                    variables["inputs"] = [PathValue(name) for _, name in pairs]
                    readable, key = str(self.origins[origin].get("stem", "")) if origin in self.origins else "", origin
                task_id = render.task_id(variables)
                if task_id is None and stage.group != "all":
                    task_id = self.ids.default(readable, key, prefix=f"{stage.name}-")
                elif self.ids.claim(task_id or stage.name) is not None:
                    raise PlanError(f"task id '{task_id or stage.name}' of stage '{stage.name}' is used twice (ids are "
                                    "compared ignoring case)", "give the stage's task an id template that makes it "
                                    "unique")
                task_id = task_id or stage.name
                variables["task_id"] = task_id
                task = render.task(task_id, variables, inputs, origin=origin, depends_on=depends)
                self._claim(stage, task)
                tasks.append(task)
        except TemplateError as exc:
            raise PlanError(f"{self.spec.where(render.field)}: {render.field} of stage '{stage.name}': "
                            f"{exc.message}") from None
        return tasks


class _BodyRenderer:
    """Renders one stage's task body for each set of variables. What every task shares is
    rendered once (:meth:`Template.bind`); per task only the per-task values remain."""

    def __init__(self, planner: Planner, stage: Stage, base: dict[str, Any]) -> None:
        self.planner = planner
        self.spec = planner.spec
        self.stage = stage
        body: TaskBody = stage.task
        at = stage.json_path
        self.field = f"{at}.command"  # the field being rendered, for error messages
        self.command = self._compile(f"{at}.command", body.command, shell=True).bind(base)
        self.outputs = [
            (f"{at}.outputs[{i}]", o.when,
             self._compile(f"{at}.outputs[{i}]", o.path, glob=True).bind(base),
             self._compile(f"{at}.outputs[{i}]", o.to).bind(base) if o.to is not None else None)
            for i, o in enumerate(body.outputs)
        ]
        self.id = self._compile(f"{at}.id", body.id).bind(base) if body.id else None
        self.env = [(k, f"{at}.env.{k}", self._compile(f"{at}.env.{k}", v).bind(base)) for k, v in body.env.items()]
        self.files = body.files
        self.retries, self.timeout = body.retries, body.timeout_seconds
        self.stage_name = "" if stage is self.spec.stages[0] else stage.name
        self.command_field, self.id_field = f"{at}.command", f"{at}.id"
        templates = [self.command, *(t for _, _, p, to in self.outputs for t in (p, to) if t is not None),
                     *((self.id,) if self.id else ()), *(t for _, _, t in self.env)]
        used = [t.variables for t in templates]
        # The variables the templates read, when known (no Jinja template, no files): per task,
        # only those are made.
        self.uses: frozenset[str] | None = (None if self.files or any(u is None for u in used)
                                            else frozenset().union(*(u for u in used if u is not None)))

    def _compile(self, field: str, source: str, *, shell: bool = False, glob: bool = False) -> Template:
        return _compile(self.spec, field, source, shell=shell, glob=glob)

    def task_id(self, variables: dict[str, Any]) -> str | None:
        if self.id is None:
            return None
        self.field = self.id_field
        task_id = self.id.render(variables)
        if problem := batch_id_problem(task_id, "task id"):
            raise TemplateError(problem)
        return task_id

    def task(self, task_id: str, variables: dict[str, Any], inputs: tuple[InputFile, ...], *, origin: str,
             depends_on: tuple[str, ...] = ()) -> PlannedTask:
        self.field = self.command_field
        command = self.command.render(variables)
        outputs: tuple[Output, ...] = ()
        for field, when, pattern_t, to_t in self.outputs:
            self.field = field
            outputs += (self._output(field, when, pattern_t.render(variables),
                                     to_t.render(variables) if to_t is not None else None, task_id),)
        env: tuple[tuple[str, str], ...] = ()
        if self.env:
            for key, field, template in self.env:
                self.field = field
                env += ((key, template.render(variables)),)
        if self.files:
            self.field = f"{self.stage.json_path}.files"
            inputs = inputs + self.planner._files(self.field, self.files, variables, f"task '{task_id}'")
        return PlannedTask(task_id, command, inputs, outputs, env, self.stage_name, depends_on, origin,
                           self.retries, self.timeout)

    def _output(self, field: str, when: Any, rendered: str, to: str | None, task_id: str) -> Output:
        pattern = rendered
        # A plain file name (the common case) is already normal and safe; anything else is checked.
        if "/" in rendered or "\\" in rendered or ":" in rendered or rendered in (".", "..") or not rendered.strip():
            # As rendered (no '..' even where normalising would remove it), then normalised.
            problem = output_pattern_problem(rendered)
            if problem is None:
                pattern = posixpath.normpath(rendered)
                problem = output_pattern_problem("" if pattern == "." else pattern)
            if problem:
                raise PlanError(f"{self.spec.where(field)}: {field} of task '{task_id}': {problem}")
        if to is not None:
            problem = relative_path_problem(to, allow_dir=True)
            output = Output(pattern, when, to if to.endswith("/") else posixpath.normpath(to))
            if problem is None and not to.endswith("/") and output.name is None:
                problem = f"'{pattern}' has wildcards, so 'to' must be a directory ending in '/'"
            elif problem is None and not to.endswith("/") and has_magic(pattern):
                problem = (f"'{output.name}' has glob characters ([ ] * ?) in its name, which Batch output patterns "
                           "cannot rename; give 'to' as a directory (ending in '/')")
            if problem:
                raise PlanError(f"{self.spec.where(field)}: {field}.to of task '{task_id}': {problem}")
            return output
        return Output(pattern, when)


class OutputIndex:
    """Which task's output rules a file name belongs to, by destination. Rules without
    wildcards are looked up by name; wildcard rules are indexed by their literal head, so a name
    is only checked against the few rules that could match it."""

    def __init__(self, tasks: Iterable[PlannedTask], *, succeeded: bool | None = None,
                 keep: Callable[[PlannedTask, Output], bool] | None = None) -> None:
        self.names: dict[str, PlannedTask] = {}
        self.heads: dict[str, list[tuple[Glob, PlannedTask]]] = {}
        for task in tasks:
            for output in task.outputs:
                if succeeded is not None and not output.applies(succeeded):
                    continue
                if keep is not None and not keep(task, output):
                    continue
                dest = output.destination
                if dest is not None:
                    self.names.setdefault(dest, task)
                else:
                    pattern = normalize(output.destination_pattern)
                    self.heads.setdefault(literal_head(pattern), []).append((compile_glob(pattern), task))

    def owner(self, name: str) -> PlannedTask | None:
        found = self.names.get(name)
        if found is not None or not self.heads:
            return found
        for i in range(len(name) + 1):
            for rx, task in self.heads.get(name[:i], ()):
                if rx.match(name):
                    return task
        return None

    def __contains__(self, name: str) -> bool:
        return self.owner(name) is not None


def _named_outputs(tasks: Sequence[PlannedTask]) -> list[tuple[PlannedTask, str]] | None:
    """The files a stage's tasks write when they succeed, if every name is known in advance."""
    found: list[tuple[PlannedTask, str]] = []
    for task in tasks:
        seen: set[str] = set()
        for output in task.outputs:
            if not output.applies(True):
                continue
            dest = output.destination
            if dest is None:
                return None
            if dest not in seen:
                seen.add(dest)
                found.append((task, dest))
    return found


def _where(items: list[InputItem], combos: list[dict[str, Scalar]], index: int) -> str:
    """Which input (and matrix combination) task ``index`` comes from, for messages."""
    item, combo = items[index // len(combos)], combos[index % len(combos)]
    values = ", ".join(f"{k}={v}" for k, v in combo.items())
    if not item.key:  # no inputs: a sweep
        return f"matrix {values}" if values else "the task"
    return f"input '{item.key}'" + (f" with {values}" if values else "")


def _name_variables(path: str) -> dict[str, PathValue]:
    directory, _, name = path.rpartition("/")
    stem, ext = posixpath.splitext(name)
    return {"input": PathValue(path), "name": PathValue(name), "stem": PathValue(stem), "ext": PathValue(ext),
            "dir": PathValue(directory or ".")}


def _item_value(value: Any) -> Any:
    """An input's ``item``: its text (a path, or a list entry) and the text values of a list
    entry's mapping are guarded like file names (``-x`` or ``pipe:x`` never begins an argument)."""
    if isinstance(value, str):
        return PathValue(value)
    if isinstance(value, dict):
        return Namespace({k: PathValue(v) if isinstance(v, str) else v for k, v in value.items()})
    return value


def _path_variables(base: Mapping[str, Any], item: InputItem, uses: frozenset[str] | None = None) -> dict[str, Any]:
    """An input's variables over ``base``: all of them, or those in ``uses`` (what the stage's
    templates read)."""
    if item.file is None:
        return {**base, "item": _item_value(item.item)} if item.key else dict(base)
    # As _name_variables, in one dict: this runs for every input of a large plan.
    path = item.file.path
    directory, _, name = path.rpartition("/")
    if uses is None:
        stem, ext = split_ext(name)
        return {**base, "item": _item_value(item.item), "input": PathValue(path), "name": PathValue(name),
                "stem": PathValue(stem), "ext": PathValue(ext), "dir": PathValue(directory or ".")}
    out = dict(base)
    if "input" in uses:
        out["input"] = PathValue(path)
    if "stem" in uses or "ext" in uses:
        stem, ext = split_ext(name)
        out["stem"] = PathValue(stem)
        if "ext" in uses:
            out["ext"] = PathValue(ext)
    if "name" in uses:
        out["name"] = PathValue(name)
    if "dir" in uses:
        out["dir"] = PathValue(directory or ".")
    if "item" in uses:
        out["item"] = _item_value(item.item)
    return out


def _stem(item: InputItem) -> str:
    """The stem of an input file's name (the readable part of its default task id)."""
    assert item.file is not None
    return split_ext(item.file.path.rpartition("/")[2])[0]


def split_ext(name: str) -> tuple[str, str]:
    """``posixpath.splitext`` of a name without '/' (a file's last part), in a third of its
    time: the extension starts at the last '.' unless only dots come before it."""
    dot = name.rfind(".")
    if dot > 0 and name[:dot].lstrip("."):
        return name[:dot], name[dot:]
    return name, ""


def _task_key(key: str, combo: dict[str, Scalar]) -> str:
    """What makes a first-stage task unique, for its default id: its input's key and matrix values."""
    return key if not combo else key + "\0" + json.dumps(combo, sort_keys=True, default=str)


def check_task_count(spec: Spec, inputs: int, combinations: int) -> None:
    """Refuse a plan of more than :data:`MAX_TASKS` tasks from the counts, before expanding it."""
    if inputs * combinations > MAX_TASKS:
        what = f"{inputs:,} inputs x {combinations:,} matrix combinations" if spec.matrix else f"{inputs:,} inputs"
        where = spec.where("$.matrix" if spec.matrix else "$.inputs")
        raise PlanError(f"{where}: the plan would have {inputs * combinations:,} tasks ({what}), more than the limit "
                        f"of {MAX_TASKS:,} tasks in one plan",
                        "split the work into several specs or runs (e.g. with inputs.exclude or a narrower pattern), "
                        "or make each task handle several files")


def _compile(spec: Spec, field: str, source: str, *, shell: bool, glob: bool = False) -> Template:
    try:
        return compile_template(source, shell=shell, glob=glob)
    except TemplateError as exc:
        raise PlanError(f"{spec.where(field)}: {field}: {exc.message}") from None


__all__ = ["OutputIndex", "Planner", "build_plan", "gc_paused", "parse_overrides", "resolve_params"]
