"""Expand a spec into a plan: inputs x matrix combinations, rendered templates, ids.

Planning has no side effects and needs no network (except listing blobs for ``inputs.container``,
through a lister the caller supplies), so ``batchspec plan`` is a faithful dry run.
"""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import itertools
import json
import math
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..limits import MAX_TASKS
from ..sandbox import plan_budget
from ..spec.model import Scalar, Spec
from ..spec.validate import output_pattern_problem
from ..spec.values import batch_id_problem
from ..templating import Namespace, PathValue, Template, TemplateError, compile_template
from .ids import HASH_CHARS, MAX_ID, TaskIds
from .inputs import BlobLister, InputItem, PlanError, resolve_inputs
from .model import Plan, PlannedTask

_MAX_ID = MAX_ID
_HASH_CHARS = HASH_CHARS


def parse_overrides(pairs: Iterable[str], params: Mapping[str, Scalar]) -> dict[str, Scalar]:
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
        except YAMLError:
            value = text
        if isinstance(value, dict | list | set):
            raise PlanError(f"--set {key}: the value must be a single value, not a list or mapping")
        if isinstance(value, _dt.date):  # as in a spec file: a date reads as its ISO text
            value = value.isoformat()
        elif not isinstance(value, str | int | float | bool | None):  # e.g. !!binary: keep the text
            value = text
        out[key] = value
    return out


def build_plan(
    spec: Spec, overrides: Iterable[str] = (), blob_lister: BlobLister | None = None
) -> Plan:
    """The plan for ``spec`` with ``--set`` overrides applied."""
    params: dict[str, Scalar] = {**spec.params, **parse_overrides(overrides, spec.params)}
    with _gc_paused(), plan_budget():
        try:
            items, warnings = resolve_inputs(spec.inputs, spec.base_dir, blob_lister)
        except PlanError as exc:  # located at the spec's inputs
            raise type(exc)(f"{spec.where('$.inputs')}: {exc.message}", exc.hint, exit_code=exc.exit_code) from None
        check_task_count(spec, len(items), math.prod(len(values) for values in spec.matrix.values()))
        combos = _combinations(spec.matrix)
        job_id = _job_id(spec, params, items, combos)
        tasks = _expand(spec, params, job_id, items, combos)
    pool = spec.pool
    if pool.start_task is not None:
        start = pool.start_task
        command = _render(spec, "$.pool.start_task.command", start.command, True, {"params": Namespace(params)})
        pool = replace(pool, start_task=replace(start, command=command))
    return Plan(
        spec_path=str(spec.path),
        name=spec.name,
        description=spec.description,
        job_id=job_id,
        pool=pool,
        requires=spec.requires,
        retries=spec.task.retries,
        timeout_seconds=spec.task.timeout_seconds,
        outputs=spec.outputs,
        cleanup=spec.cleanup,
        params=params,
        tasks=tuple(tasks),
        warnings=tuple(warnings),
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Expansion allocates hundreds of thousands of acyclic objects; the cyclic garbage
    collector would rescan them again and again for nothing (a third of the time at 100k)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _combinations(matrix: Mapping[str, tuple[Scalar, ...]]) -> list[dict[str, Scalar]]:
    if not matrix:
        return [{}]
    names = list(matrix)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*matrix.values())]


def _job_id(spec: Spec, params: dict[str, Scalar], items: list[InputItem], combos: list[dict[str, Scalar]]) -> str:
    if spec.job_id is not None:
        job_id = _render(spec, "$.job.id", spec.job_id, False, {"params": Namespace(params), "name": spec.name})
        if problem := batch_id_problem(job_id, "job id"):
            raise PlanError(f"{spec.where('$.job.id')}: $.job.id renders to an invalid id: {problem}")
        return job_id
    # Same spec, inputs and params -> same id (a rerun resumes); any change -> a new id.
    digest = hashlib.sha256()
    model = {k: v for k, v in asdict(spec).items() if k not in ("path", "lines", "expected_task_seconds")}
    # Settings that do not shape what the job does keep its id (an older version's runs resume).
    model["pool"].pop("ready_timeout_seconds", None)
    model["cleanup"].pop("pool_given", None)
    model["params"] = params
    digest.update(json.dumps(model, sort_keys=True, default=str).encode())
    for item in items:
        digest.update(b"\0" + item.key.encode("utf-8", "surrogateescape"))
    digest.update(json.dumps(combos, sort_keys=True, default=str).encode())
    prefix = spec.name[: _MAX_ID - _HASH_CHARS - 1]
    return f"{prefix}-{digest.hexdigest()[:_HASH_CHARS]}"


def _expand(
    spec: Spec, params: dict[str, Scalar], job_id: str, items: list[InputItem], combos: list[dict[str, Scalar]]
) -> list[PlannedTask]:
    task = spec.task
    # What every task shares is rendered once (Template.bind); per task only input values remain.
    base = {"params": Namespace(params), "count": len(items) * len(combos), "job_id": job_id}
    command_t = _compile(spec, "$.task.command", task.command, shell=True).bind(base)
    output_ts = [
        (f"$.task.outputs[{i}]", _compile(spec, f"$.task.outputs[{i}]", o, shell=False, glob=True).bind(base))
        for i, o in enumerate(task.outputs)
    ]
    id_t = _compile(spec, "$.task.id", task.id, shell=False).bind(base) if task.id else None
    env_ts = [(k, f"$.task.env.{k}", _compile(spec, f"$.task.env.{k}", v, shell=False).bind(base))
              for k, v in task.env.items()]
    tasks: list[PlannedTask] = []
    ids = TaskIds()
    owners: dict[str, int] = {}  # casefolded task.id -> index of the task that has it
    produced: dict[str, str] = {}  # output pattern -> task id
    matrices = [Namespace(combo) for combo in combos]
    field = "$.task.command"  # the field being rendered, for error messages
    try:
        for item in items:
            item_vars = _path_variables(base, item)
            stem = item_vars.get("stem", "item")
            inputs = (item.file,) if item.file else ()
            for combo, matrix in zip(combos, matrices, strict=True):
                index = len(tasks)
                variables = {**item_vars, "matrix": matrix, "index": index}
                if id_t is not None:
                    field = "$.task.id"
                    task_id = id_t.render(variables)
                    if problem := batch_id_problem(task_id, "task id"):
                        where = _where(items, combos, index)
                        raise PlanError(f"{spec.where(field)}: {field} for {where}: {problem}")
                    if ids.claim(task_id) is not None:
                        previous = owners[task_id.casefold()]
                        raise PlanError(
                            f"task id '{task_id}' is used twice (ids are compared ignoring case): "
                            f"by {_where(items, combos, previous)} and {_where(items, combos, index)}",
                            "make task.id unique, e.g. include << index >> or a matrix value",
                        )
                    owners[task_id.casefold()] = index
                else:
                    task_id = ids.default(stem, _task_key(item, combo))
                variables["task_id"] = task_id
                field = "$.task.command"
                command = command_t.render(variables)
                outputs: list[str] = []
                for field, template in output_ts:
                    outputs.append(_output(spec, field, template.render(variables), task_id, produced))
                env: list[tuple[str, str]] = []
                for key, env_field, template in env_ts:
                    field = env_field
                    env.append((key, template.render(variables)))
                tasks.append(PlannedTask(task_id, command, inputs, tuple(outputs), tuple(env)))
    except TemplateError as exc:
        where = _where(items, combos, len(tasks))
        raise PlanError(f"{spec.where(field)}: {field} for {where}: {exc.message}") from None
    return tasks


def _where(items: list[InputItem], combos: list[dict[str, Scalar]], index: int) -> str:
    """Which input (and matrix combination) task ``index`` comes from, for messages."""
    item, combo = items[index // len(combos)], combos[index % len(combos)]
    text = f"input '{item.key}'"
    if combo:
        text += " with " + ", ".join(f"{k}={v}" for k, v in combo.items())
    return text


def _item_value(value: Any) -> Any:
    """An input's ``item``: its text (a path, or a list entry) and the text values of a list
    entry's mapping are guarded like file names (``-x`` or ``pipe:x`` never begins an argument)."""
    if isinstance(value, str):
        return PathValue(value)
    if isinstance(value, dict):
        return Namespace({k: PathValue(v) if isinstance(v, str) else v for k, v in value.items()})
    return value


def _path_variables(base: Mapping[str, Any], item: InputItem) -> dict[str, Any]:
    if item.file is None:
        return {**base, "item": _item_value(item.item)}
    path = item.file.path
    directory, _, name = path.rpartition("/")
    stem, ext = posixpath.splitext(name)
    return {
        **base,
        "item": _item_value(item.item),
        "input": PathValue(path),
        "name": PathValue(name),
        "stem": PathValue(stem),
        "ext": PathValue(ext),
        "dir": PathValue(directory or "."),
    }


def _task_key(item: InputItem, combo: dict[str, Scalar]) -> str:
    """What makes a task unique, for its default id: the input's key and matrix combination."""
    return item.key if not combo else item.key + "\0" + json.dumps(combo, sort_keys=True, default=str)


def check_task_count(spec: Spec, inputs: int, combinations: int) -> None:
    """Refuse a plan of more than :data:`MAX_TASKS` tasks from the counts, before expanding it."""
    if inputs * combinations > MAX_TASKS:
        what = f"{inputs:,} inputs x {combinations:,} matrix combinations" if spec.matrix else f"{inputs:,} inputs"
        raise PlanError(f"{spec.where('$.inputs')}: the plan would have {inputs * combinations:,} tasks "
                        f"({what}), more than the limit of {MAX_TASKS:,} tasks in one plan",
                        "split the work into several specs or runs (e.g. with inputs.exclude or a narrower "
                        "pattern), or make each task handle several files")


def _output(spec: Spec, field: str, rendered: str, task_id: str, produced: dict[str, str]) -> str:
    pattern = rendered
    # A plain file name (the common case) is already normal and safe; anything else is checked.
    if "/" in rendered or "\\" in rendered or ":" in rendered or rendered in (".", "..") or not rendered.strip():
        # As rendered (no '..' even where normalising would remove it), then normalised.
        problem = output_pattern_problem(rendered)
        if problem is None:
            pattern = posixpath.normpath(rendered)
            problem = output_pattern_problem("" if pattern == "." else pattern)
        if problem:
            raise PlanError(f"{spec.where(field)}: {field} of task '{task_id}': {problem}")
    other = produced.setdefault(pattern, task_id)
    if other != task_id:
        raise PlanError(
            f"{spec.where(field)}: tasks '{other}' and '{task_id}' would both produce '{pattern}'",
            "make the output name depend on the input, e.g. << stem >> or << dir >>/<< stem >>",
        )
    return pattern


def _compile(spec: Spec, field: str, source: str, *, shell: bool, glob: bool = False) -> Template:
    try:
        return compile_template(source, shell=shell, glob=glob)
    except TemplateError as exc:
        raise PlanError(f"{spec.where(field)}: {field}: {exc.message}") from None


def _render_t(spec: Spec, field: str, template: Template, variables: dict[str, Any], where: object) -> str:
    try:
        return template.render(variables)
    except TemplateError as exc:
        raise PlanError(f"{spec.where(field)}: {field} for {where}: {exc.message}") from None


def _render(spec: Spec, field: str, source: str, shell: bool, variables: Mapping[str, Any]) -> str:
    return _render_t(spec, field, _compile(spec, field, source, shell=shell), dict(variables), "the spec")
