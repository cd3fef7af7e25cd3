"""Validate spec documents: the JSON Schema first, then the rules a schema cannot express.

Every problem becomes a :class:`~batchspec.errors.Diagnostic` with the file, line, column and
JSON path; validation never stops at the first problem. :func:`load_spec` turns a valid file into
the :class:`~batchspec.spec.model.Spec` model or raises :class:`~batchspec.errors.SpecError`.
"""

from __future__ import annotations

import bisect
import difflib
import json
import os
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BatchspecError, Diagnostic, SpecError
from ..globs import has_magic
from ..limits import MAX_TASKS, MAX_TEXT, budget
from ..templating import SCALAR, VariableProblem, check_shell, check_variables, is_template, variables_used
from .defaults import resolve_ref
from .document import Document, JsonPath, format_path, read_document
from .schemacheck import Check, Unsupported, compile_schema
from .values import batch_id_problem, container_pool_warning, container_problem, image_problem, parse_duration

if TYPE_CHECKING:
    import jsonschema

#: Variables of the first stage's templates (the planner provides exactly these).
TASK_VARIABLES = ("input", "name", "stem", "ext", "dir", "item", "index", "count", "params", "matrix",
                  "task_id", "job_id")
#: The first stage of a spec without inputs (a sweep over its matrix), and what it lacks.
SWEEP_VARIABLES = ("index", "count", "params", "matrix", "task_id", "job_id")
INPUT_VARIABLES = ("input", "name", "stem", "ext", "dir", "item")
#: A later stage with one task per file it reads.
FILE_STAGE_VARIABLES = ("input", "name", "stem", "ext", "dir", "index", "count", "params", "source",
                        "task_id", "job_id")
#: A later stage with one task per first-stage task (group: input), and the merge (group: all).
GROUP_VARIABLES = ("inputs", "index", "count", "params", "source", "task_id", "job_id")
MERGE_VARIABLES = ("inputs", "index", "count", "params", "task_id", "job_id")
#: What ``source`` holds in a later stage: the first-stage task the files descend from.
SOURCE_KEYS = ("input", "name", "stem", "ext", "dir", "item", "matrix", "task_id")
PARAM_VARIABLES = ("params",)
#: Those that are a single value (text or a number): ``<< input.encode >>`` is a mistake.
SCALAR_VARIABLES = frozenset({"input", "name", "stem", "ext", "dir", "index", "count", "task_id", "job_id"})
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@cache
def schema() -> dict[str, Any]:
    """The spec JSON Schema shipped in the package."""
    # Next to this module (the wheel installs files; importlib.resources costs more to import
    # than reading the schema).
    text = Path(__file__).with_name("batchspec.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def schema_check() -> Check | None:
    """The schema compiled into a fast valid-or-not check (None if it uses a keyword the
    compiler lacks: then jsonschema judges every document)."""
    try:
        return compile_schema(schema())
    except Unsupported:
        return None


@cache
def _validator() -> jsonschema.Draft202012Validator:
    # Imported only to explain an invalid document: jsonschema costs more to import than a
    # whole validation of a valid spec.
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


def validate_document(doc: Document) -> list[Diagnostic]:
    """All problems in ``doc``, sorted by position."""
    found = list(_schema_diagnostics(doc)) + list(_semantic_diagnostics(doc))
    unique = dict.fromkeys(found)  # the same problem may be reached twice
    return sorted(unique, key=lambda d: (d.line, d.column, d.path, d.message))


#: From this many files on, validation uses every CPU (a process pool costs ~0.1 s to start).
PARALLEL_FROM = 64


def validate_files(paths: Sequence[Path]) -> list[tuple[str, list[Diagnostic]]]:
    """``(name, problems)`` for each file, in order; many files are checked in parallel."""
    workers = min(os.cpu_count() or 1, len(paths) // (PARALLEL_FROM // 2))
    if len(paths) < PARALLEL_FROM or workers < 2:
        return [_problems(p) for p in paths]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_problems, paths, chunksize=max(1, len(paths) // (workers * 8))))


def _problems(path: Path) -> tuple[str, list[Diagnostic]]:
    return str(path), validate_file(path, str(path))[1]


def validate_file(path: Path, display: str | None = None) -> tuple[Document | None, list[Diagnostic]]:
    doc = read_document(path, display)
    if isinstance(doc, Diagnostic):
        return None, [doc]
    return doc, validate_document(doc)


# --- schema ----------------------------------------------------------------------------------


def _schema_diagnostics(doc: Document) -> Iterator[Diagnostic]:
    check = schema_check()
    if check is not None and check(doc.data):
        return
    for error in _validator().iter_errors(doc.data):
        yield from _explain(doc, error)


def _explain(doc: Document, error: jsonschema.ValidationError) -> Iterator[Diagnostic]:
    path: JsonPath = tuple(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
        for key in error.instance:
            if key in allowed:
                continue
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            message = f"unknown key '{key}'"
            message += f"; did you mean '{hint[0]}'?" if hint else f" (allowed: {', '.join(allowed)})"
            yield doc.diagnostic((*path, key), message, key=True)
    elif kind == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        where = "the spec" if not path else f"'{path[-1]}'"
        yield doc.diagnostic(path, f"missing required key '{missing}' in {where}", key=bool(path))
    elif kind == "const" and path == ("batchspec",):
        yield doc.diagnostic(
            path, f"unsupported spec format version {error.instance!r}; this batchspec reads `batchspec: 1`"
        )
    elif kind == "propertyNames" or (kind == "pattern" and list(error.schema_path)[-2:-1] == ["propertyNames"]):
        # jsonschema reports a bad key as the key (the instance) failing the pattern, at the mapping
        key = str(error.instance)
        yield doc.diagnostic(
            (*path, key), f"'{key}' is not a valid name: use letters, digits and '_', not starting with a digit",
            key=True,
        )
    elif kind == "enum" and isinstance(error.instance, str) and isinstance(error.validator_value, list):
        hint = difflib.get_close_matches(error.instance, [str(c) for c in error.validator_value], n=1, cutoff=0.5)
        yield doc.diagnostic(path, str(error.message) + (f"; did you mean '{hint[0]}'?" if hint else ""))
    else:
        yield doc.diagnostic(path, str(error.message))


# --- rules beyond the schema -----------------------------------------------------------------


def _get(data: Any, *path: str | int) -> Any:
    for part in path:
        if isinstance(part, str) and isinstance(data, dict):
            data = data.get(part)
        elif isinstance(part, int) and isinstance(data, list) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _semantic_diagnostics(doc: Document) -> Iterator[Diagnostic]:
    data = doc.data
    for path, what in ((("name",), "name"), (("pool", "id"), "pool id")):
        value = _get(data, *path)
        if isinstance(value, str) and (problem := batch_id_problem(value, what)):
            yield doc.diagnostic(path, problem)
    job_id = _get(data, "job", "id")
    if isinstance(job_id, str) and not is_template(job_id) and (problem := batch_id_problem(job_id, "job id")):
        yield doc.diagnostic(("job", "id"), problem)
    for path in (("inputs", "container"), ("outputs", "container")):
        value = _get(data, *path)
        if isinstance(value, str) and not is_template(value) and (problem := container_problem(value, "container")):
            yield doc.diagnostic(path, problem)
    yield from _check_params(doc)
    yield from _check_pool(doc)
    yield from _check_inputs(doc)
    yield from _check_matrix(doc)
    yield from _check_steps(doc)
    for files_path, _ in _file_lists(data):
        yield from _check_files(doc, files_path)
    yield from _check_durations(doc)
    yield from _check_containers(doc)
    yield from _check_templates(doc)
    yield from _check_outputs(doc)
    yield from _check_counts(doc)
    yield from _check_combinations(doc)


#: Variables whose value differs between the matrix combinations of one input.
_PER_COMBINATION = frozenset({"matrix", "index", "task_id"})


def _check_combinations(doc: Document) -> Iterator[Diagnostic]:
    """With a matrix, each input has several tasks: an output name or a task id that does not
    depend on the combination would be the same for all of them, which planning would refuse
    for any input (so it is known without the input files)."""
    matrix = _get(doc.data, "matrix")
    if not isinstance(matrix, dict) or _combination_count(matrix) < 2:
        return
    example = next(iter(matrix), "NAME")
    first = next(task_bodies(doc.data), None)
    if first is None:
        return
    where, body, _ = first
    outputs = body.get("outputs")
    for i, output in enumerate(outputs if isinstance(outputs, list) else []):
        pattern = output if isinstance(output, str) else output.get("to") or output.get("path") if isinstance(
            output, dict) else None
        if isinstance(pattern, str) and not variables_used(pattern) & _PER_COMBINATION:
            yield doc.diagnostic((*where, "outputs", i), f"every matrix combination of an input would produce the "
                                                         f"same '{pattern}': put << matrix.{example} >> in it")
    task_id = body.get("id")
    if isinstance(task_id, str) and not variables_used(task_id) & _PER_COMBINATION:
        yield doc.diagnostic((*where, "id"), f"every matrix combination of an input would get the same task id: "
                                             f"put << matrix.{example} >> or << index >> in it")


def _combination_count(matrix: dict[str, Any]) -> int:
    """Matrix combinations, as far as the spec alone tells (a range over params counts as one)."""
    count = 1
    for axis in matrix.values():
        if isinstance(axis, list):
            count *= len(axis)
        elif isinstance(axis, dict):
            count *= _range_size(axis)
    return count


def _range_size(axis: dict[str, Any]) -> int:
    if "range" in axis and ("start" in axis or "stop" in axis):
        return 1  # reported as such; its size is unknown
    try:
        if isinstance(axis.get("range"), str) and not is_template(axis["range"]):
            start, stop, step = parse_range(axis["range"])
        elif all(isinstance(axis.get(k, 1), int) for k in ("start", "stop", "step")) and "start" in axis:
            start, stop, step = axis["start"], axis.get("stop", axis["start"]), axis.get("step", 1)
        else:
            return 1
    except ValueError:
        return 1
    return len(range(start, stop + (1 if step > 0 else -1), step)) if step else 1


def _check_counts(doc: Document) -> Iterator[Diagnostic]:
    """A plan's task count, as far as the spec alone tells it (matrix combinations, listed
    inputs), against the limit, so a spec that validates cannot be refused for its size later."""
    matrix = _get(doc.data, "matrix")
    combos = _combination_count(matrix) if isinstance(matrix, dict) else 1
    listed = _get(doc.data, "inputs", "list")
    inputs = len(listed) if isinstance(listed, list) and listed else 1
    if combos > MAX_TASKS:
        yield doc.diagnostic(("matrix",), f"the matrix has {combos:,} combinations, more than the limit of "
                                          f"{MAX_TASKS:,} tasks in one plan", key=True)
    elif inputs * combos > MAX_TASKS:
        yield doc.diagnostic(("inputs", "list"), f"{inputs:,} listed inputs x {combos:,} matrix combinations make "
                                                 f"{inputs * combos:,} tasks, more than the limit of "
                                                 f"{MAX_TASKS:,} tasks in one plan", key=True)


def task_bodies(data: Any) -> Iterator[tuple[JsonPath, dict[str, Any], tuple[str, ...]]]:
    """Every task body with its place and the variables its templates may use."""
    first_variables = TASK_VARIABLES if not isinstance(data, dict) or "inputs" in data else SWEEP_VARIABLES
    stages = _get(data, "stages")
    if isinstance(stages, list):
        known = set(schema()["properties"]["stages"]["items"]["properties"])
        for i, stage in enumerate(stages):
            body = _get(stage, "task")
            if not isinstance(body, dict):
                continue
            group = _get(stage, "group")
            if i and (group not in (None, "file", "input", "all") or not set(stage) <= known):
                # A stage with a mistake of its own is reported as such; its templates get
                # every variable a later stage may have, so one mistake is not reported twice.
                variables = tuple(dict.fromkeys((*FILE_STAGE_VARIABLES, *GROUP_VARIABLES)))
            else:
                variables = first_variables if i == 0 else stage_variables(False, group)
            yield ("stages", i, "task"), body, variables
    elif isinstance(body := _get(data, "task"), dict):
        yield ("task",), body, first_variables
    if isinstance(body := _get(data, "merge"), dict):
        yield ("merge",), body, stage_variables(False, "all")


def stage_variables(first: bool, group: object) -> tuple[str, ...]:
    """The variables of a stage's templates: the first stage's are about its input; a later
    stage's about the file it reads (group: file) or the files it gets (input, all)."""
    if first:
        return TASK_VARIABLES
    if group == "all":
        return MERGE_VARIABLES
    return GROUP_VARIABLES if group == "input" else FILE_STAGE_VARIABLES


def _file_lists(data: Any) -> Iterator[tuple[JsonPath, tuple[str, ...]]]:
    """Every `files` list, with the variables its templates may use."""
    yield ("files",), PARAM_VARIABLES
    yield ("pool", "start_task", "files"), PARAM_VARIABLES
    for path, _, variables in task_bodies(data):
        yield (*path, "files"), variables


def _check_params(doc: Document) -> Iterator[Diagnostic]:
    params = _get(doc.data, "params")
    if not isinstance(params, dict):
        return
    for name, declared in params.items():
        if isinstance(declared, dict):
            for path, problem in param_problems(declared):
                yield doc.diagnostic(("params", name, *path), problem, key=path[-1] in ("minimum", "maximum"))


_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                       "boolean": (bool,)}


def param_value_problem(declared: dict[str, Any], value: object) -> str | None:
    """Why ``value`` does not fit a declared parameter (type, allowed values, range), or None."""
    kind = declared.get("type")
    if kind is None and "default" in declared:
        kind = {bool: "boolean", int: "integer", float: "number"}.get(type(declared["default"]), "string")
    kind = kind or "string"
    if value is None or kind not in _TYPES:  # an unknown type is reported by the schema
        return None
    wanted = _TYPES[kind]
    if isinstance(value, bool) != (kind == "boolean") or not isinstance(value, wanted):
        return f"{value!r} is not {'an' if kind == 'integer' else 'a'} {kind}"
    choices = declared.get("enum")
    if isinstance(choices, list) and value not in choices:
        return f"{value!r} is not one of {', '.join(repr(c) for c in choices)}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = declared.get("minimum"), declared.get("maximum")
        if isinstance(low, int | float) and value < low:
            return f"{value!r} is less than the minimum of {low}"
        if isinstance(high, int | float) and value > high:
            return f"{value!r} is more than the maximum of {high}"
    return None


def param_problems(declared: dict[str, Any]) -> Iterator[tuple[JsonPath, str]]:
    """Problems within a typed parameter declaration, by path inside it."""
    kind = declared.get("type")
    if kind is None and "default" in declared:
        kind = {bool: "boolean", int: "integer", float: "number"}.get(type(declared["default"]), "string")
    if kind in ("string", "boolean"):
        for bound in ("minimum", "maximum"):
            if bound in declared:
                yield (bound,), f"'{bound}' only applies to integer and number parameters"
    choices = declared.get("enum")
    if isinstance(choices, list):
        check = {k: v for k, v in declared.items() if k in ("type", "default")}
        for i, choice in enumerate(choices):
            if problem := param_value_problem(check, choice):
                yield ("enum", i), problem
    if "default" in declared and (problem := param_value_problem(declared, declared["default"])):
        yield ("default",), f"the default {problem}"


def _check_pool(doc: Document) -> Iterator[Diagnostic]:
    pool = _get(doc.data, "pool")
    if not isinstance(pool, dict):
        return
    nodes, autoscale = pool.get("nodes"), pool.get("autoscale")
    counts = nodes if isinstance(nodes, dict) else {}
    for key, count in counts.items():
        if isinstance(count, str) and not is_template(count):
            yield doc.diagnostic(("pool", "nodes", key),
                                 f"'{count}' is not a node count: give an integer or a template over params")
    if nodes is not None and autoscale is not None:
        yield doc.diagnostic(("pool", "autoscale"), "give either 'nodes' or 'autoscale', not both", key=True)
    elif autoscale is None:
        dedicated, spot = counts.get("dedicated", 0), counts.get("spot", 0)
        if isinstance(dedicated, int) and isinstance(spot, int) and dedicated + spot == 0:
            path: JsonPath = ("pool", "nodes") if nodes is not None else ("pool",)
            yield doc.diagnostic(
                path, "the pool has no nodes: set nodes.dedicated or nodes.spot to at least 1, or use autoscale",
                key=True,
            )
    formula = _get(autoscale, "formula")
    if isinstance(formula, str) and not formula.strip():
        yield doc.diagnostic(("pool", "autoscale", "formula"), "the autoscale formula is empty")
    elif isinstance(formula, str):
        yield from _check_formula(doc, formula)


def _check_formula(doc: Document, formula: str) -> Iterator[Diagnostic]:
    """The formula through the same parser the emulator evaluates it with (batchspec.autoscale)."""
    from .. import autoscale

    try:
        autoscale.check(formula)
    except autoscale.FormulaError as exc:
        lines = formula.splitlines() or [""]
        text = lines[exc.line - 1] if 0 < exc.line <= len(lines) else ""
        token = re.match(r"\$?\w+|\S", text[exc.column - 1 :])
        message = f"autoscale formula, line {exc.line} column {exc.column}: {exc.message}"
        yield doc.template_diagnostic(("pool", "autoscale", "formula"), exc.line, token.group() if token else "",
                                      message)


def _check_inputs(doc: Document) -> Iterator[Diagnostic]:
    inputs = _get(doc.data, "inputs")
    if not isinstance(inputs, dict):
        return
    sources = [k for k in ("path", "container", "list") if k in inputs]
    if len(sources) != 1:
        message = (
            "give exactly one of 'path', 'container' or 'list'"
            + (f" (found {', '.join(sources)})" if sources else "")
        )
        yield doc.diagnostic(("inputs",), message, key=True)
    if "exclude" in inputs and "path" not in inputs:
        yield doc.diagnostic(("inputs", "exclude"), "'exclude' only applies to 'path' patterns", key=True)
    if inputs.get("prefix") and "container" not in inputs:
        yield doc.diagnostic(("inputs", "prefix"), "'prefix' only applies to 'container'", key=True)
    for key in ("path", "exclude"):
        value = inputs.get(key)
        patterns = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        if isinstance(value, list) and not value:
            yield doc.diagnostic(("inputs", key), "give at least one pattern")
        for i, pattern in enumerate(patterns):
            where: JsonPath = ("inputs", key) if isinstance(value, str) else ("inputs", key, i)
            if isinstance(pattern, str) and not pattern.strip():
                yield doc.diagnostic(where, "empty pattern")
    items = inputs.get("list")
    if isinstance(items, list):
        for i, item in enumerate(items):
            if isinstance(item, dict) and "path" in item and not isinstance(item["path"], str):
                yield doc.diagnostic(("inputs", "list", i, "path"), "'path' of a list item must be a string")
            if isinstance(item, dict):
                for key in item:
                    if not str(key).isidentifier():
                        yield doc.diagnostic(("inputs", "list", i, key),
                                             f"'{key}' is not a valid name: use letters, digits and '_'", key=True)


def _check_matrix(doc: Document) -> Iterator[Diagnostic]:
    matrix = _get(doc.data, "matrix")
    if not isinstance(matrix, dict):
        return
    for name, axis in matrix.items():
        if not isinstance(axis, dict):
            continue
        where: JsonPath = ("matrix", name)
        bounds = [k for k in ("start", "stop") if k in axis]
        if "range" in axis and (bounds or "step" in axis):
            yield doc.diagnostic(where, "give either 'range' or 'start' and 'stop', not both", key=True)
        elif "range" not in axis and len(bounds) != 2:
            yield doc.diagnostic(where, "a range axis needs 'start' and 'stop' (or 'range': \"1-240\")", key=True)
        for key in ("start", "stop", "step"):
            value = axis.get(key)
            if isinstance(value, str) and not is_template(value):
                yield doc.diagnostic((*where, key), f"'{value}' is not an integer or a template over params")
        if axis.get("step") == 0:
            yield doc.diagnostic((*where, "step"), "the step must not be 0")
        text = axis.get("range")
        if isinstance(text, str) and not is_template(text) and (problem := range_problem(text)):
            yield doc.diagnostic((*where, "range"), problem)


_RANGE = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?$")


def parse_range(text: str) -> tuple[int, int, int]:
    """``"1-240"`` -> (1, 240, 1); ``"1-240:2"`` -> (1, 240, 2). Raises ValueError."""
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a range; write e.g. 1-240 or 1-240:2")
    step = int(match.group(3) or 1)
    if step == 0:
        raise ValueError(f"range '{text}' has a step of 0")
    return int(match.group(1)), int(match.group(2)), step


def range_problem(text: str) -> str | None:
    try:
        parse_range(text)
    except ValueError as exc:
        return str(exc)
    return None


def _check_steps(doc: Document) -> Iterator[Diagnostic]:
    """`task` or `stages`, and the stages' names and sources."""
    data = doc.data
    if not isinstance(data, dict):
        return
    has_task, stages = "task" in data, data.get("stages")
    if has_task and stages is not None:
        yield doc.diagnostic(("stages",), "give either 'task' (one step) or 'stages', not both", key=True)
    elif not has_task and stages is None:
        yield doc.diagnostic((), "missing required key 'task' in the spec (or 'stages' for several steps)")
    if not isinstance(stages, list):
        return
    names: list[str] = []
    reserved = {"merge"} if "merge" in data else set()
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            continue
        name = stage.get("name")
        if isinstance(name, str):
            if problem := batch_id_problem(name, "stage name"):
                yield doc.diagnostic(("stages", i, "name"), problem)
            elif name in names or name in reserved:
                yield doc.diagnostic(("stages", i, "name"), f"stage name '{name}' is used twice"
                                     + (" (the merge step is called 'merge')" if name in reserved else ""))
        if stage.get("with_source") and (i == 0 or stage.get("group") == "all"):
            yield doc.diagnostic(("stages", i, "with_source"),
                                 "'with_source' needs a later stage with group file or input (one job input per task)",
                                 key=True)
        if i == 0:
            for key in ("from", "match", "group"):
                if key in stage:
                    yield doc.diagnostic(("stages", 0, key),
                                         f"'{key}' does not apply to the first stage: it fans out over 'inputs'",
                                         key=True)
        source = stage.get("from")
        if isinstance(source, str) and i and source not in names:
            hint = difflib.get_close_matches(source, names, n=1, cutoff=0.6)
            known = f"; did you mean '{hint[0]}'?" if hint else f" (earlier stages: {', '.join(names) or 'none'})"
            yield doc.diagnostic(("stages", i, "from"), f"'{source}' is not an earlier stage{known}")
        elif i and isinstance(producer := _stage_named(stages, source or names[-1] if names else None), dict):
            outputs = _get(producer, "task", "outputs")
            if not outputs:
                yield doc.diagnostic(("stages", i), f"stage '{producer.get('name')}' declares no outputs for this "
                                     "stage to read", key=True)
        if isinstance(name, str):
            names.append(name)
    last = stages[-1] if stages else None
    if isinstance(last, dict) and last.get("publish") is False and "merge" not in data:
        yield doc.diagnostic((*(("stages", len(stages) - 1)), "publish"),
                             "the last stage's outputs are the job's results: they cannot be unpublished")


def _stage_named(stages: list[Any], name: object) -> Any:
    return next((s for s in stages if isinstance(s, dict) and s.get("name") == name), None)


def _check_files(doc: Document, path: JsonPath) -> Iterator[Diagnostic]:
    files = _get(doc.data, *path)
    if not isinstance(files, list):
        return
    for i, item in enumerate(files):
        if not isinstance(item, dict):
            continue
        where: JsonPath = (*path, i)
        kinds = [k for k in ("path", "url", "container") if k in item]
        if len(kinds) != 1:
            found = f" (found {', '.join(kinds)})" if kinds else ""
            yield doc.diagnostic(where, f"give exactly one of 'path', 'url' or 'container'{found}", key=True)
        if item.get("prefix") and "container" not in item:
            yield doc.diagnostic((*where, "prefix"), "'prefix' only applies to 'container'", key=True)
        for key in ("path", "to"):
            value = item.get(key)
            if isinstance(value, str) and not is_template(value):
                problem = relative_path_problem(value, allow_dir=key == "to") if key == "to" or value else None
                if key == "path" and not value.strip():
                    problem = "empty path"
                if problem:
                    yield doc.diagnostic((*where, key), problem)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Run options batchspec sets itself for every task's container.
_OWN_OPTIONS = ("--name", "--rm", "--init")


def _check_containers(doc: Document) -> Iterator[Diagnostic]:
    """Images and run options of ``task.container``, ``pool.container``, and the rule that a
    container pool runs every task in a container (as Batch requires of tasks on such a pool)."""
    data = doc.data
    bodies = list(task_bodies(data))
    pool = _get(data, "pool", "container")
    used = [where for where, body, _ in bodies if body.get("container") is not None]
    for where, body, _ in bodies:
        container = body.get("container")
        if container is None:
            if used or pool is not None:
                because = "pool.container is set" if not used else f"{format_path((*used[0], 'container'))} is set"
                yield doc.diagnostic(
                    where, f"this task runs no container image, but {because}: on Azure Batch every task of a "
                    "container pool runs in a container; give it a container too (e.g. the same image)", key=True)
            continue
        image_path: JsonPath = (*where, "container") if isinstance(container, str) else (*where, "container", "image")
        image = _get(data, *image_path)
        if isinstance(image, str) and not is_template(image) and (problem := image_problem(image)):
            yield doc.diagnostic(image_path, problem)
        options = _get(container, "options")
        if isinstance(options, str):
            yield from _check_run_options(doc, (*where, "container", "options"), options)
    for i, image in enumerate(_get(pool, "prefetch") or []):
        if isinstance(image, str) and not is_template(image) and (problem := image_problem(image)):
            yield doc.diagnostic(("pool", "container", "prefetch", i), problem)
    servers: set[str] = set()
    for i, registry in enumerate(_get(pool, "registries") or []):
        if isinstance(registry, dict):
            yield from _check_registry(doc, ("pool", "container", "registries", i), registry, servers)
    image_d = _get(data, "pool", "image")
    if (used or pool is not None) and isinstance(image_d, dict):
        names = [str(image_d.get(k)) for k in ("publisher", "offer", "sku")]
        if warning := container_pool_warning(*names):
            yield doc.diagnostic(("pool", "image"), warning, key=True, severity="warning")


def _check_run_options(doc: Document, path: JsonPath, options: str) -> Iterator[Diagnostic]:
    try:
        words = shlex.split(options)
    except ValueError as exc:
        yield doc.diagnostic(path, f"run options are not valid shell words: {exc}")
        return
    for word in words:
        flag = word.split("=", 1)[0]
        if flag in _OWN_OPTIONS:
            yield doc.diagnostic(path, f"'{flag}' is set by batchspec for every task's container; leave it out")


def _check_registry(doc: Document, where: JsonPath, registry: dict[str, Any],
                    servers: set[str]) -> Iterator[Diagnostic]:
    server = registry.get("server")
    if isinstance(server, str):
        if "://" in server or "/" in server.strip("/") or not server.strip():
            yield doc.diagnostic((*where, "server"), f"'{server}' is not a registry host: write e.g. "
                                                     "myregistry.azurecr.io (no scheme, no path)")
        elif server.lower() in servers:
            yield doc.diagnostic((*where, "server"), f"registry '{server}' is listed twice")
        servers.add(server.lower())
    login = [k for k in ("username_env", "password_env") if k in registry]
    if "identity" in registry and login:
        yield doc.diagnostic(where, "give either 'identity' or 'username_env' and 'password_env', not both", key=True)
    elif "identity" not in registry and len(login) != 2:
        missing = "password_env" if login == ["username_env"] else "username_env"
        what = f"'{missing}' is missing" if login else "how to log in is missing"
        yield doc.diagnostic(where, f"{what}: give 'username_env' and 'password_env' (names of environment "
                                    "variables), or 'identity' (a managed identity)", key=True)
    for key in login:
        name = registry[key]
        if isinstance(name, str) and not _ENV_NAME.match(name):
            yield doc.diagnostic((*where, key), f"'{name}' is not an environment variable name: it names the "
                                                "variable holding the value, never the value itself")
    identity = registry.get("identity")
    if isinstance(identity, str) and not identity.lower().startswith("/subscriptions/"):
        yield doc.diagnostic((*where, "identity"), "'identity' is the ARM resource id of a user-assigned managed "
                                                   "identity: /subscriptions/<id>/resourceGroups/<group>/providers/"
                                                   "Microsoft.ManagedIdentity/userAssignedIdentities/<name>")


def _check_durations(doc: Document) -> Iterator[Diagnostic]:
    paths: list[tuple[JsonPath, float]] = [(("pool", "autoscale", "interval"), 300.0), (("job", "timeout"), 1.0),
                                           (("pool", "ready_timeout"), 1.0)]
    for where, _, _ in task_bodies(doc.data):
        paths += [((*where, "timeout"), 1.0), ((*where, "expected_duration"), 1.0)]
    for path, minimum in paths:
        value = _get(doc.data, *path)
        if not isinstance(value, str):
            continue
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            yield doc.diagnostic(path, str(exc))
            continue
        if seconds < minimum:
            yield doc.diagnostic(path, f"'{value}' is shorter than the minimum of {int(minimum)} seconds")
        if path[-1] == "interval" and seconds > 168 * 3600:
            yield doc.diagnostic(path, f"'{value}' is longer than the maximum of 168 hours")


def _strings(data: Any, path: JsonPath) -> Iterator[tuple[JsonPath, str]]:
    """The string at ``path``, or each string of the list there."""
    value = _get(data, *path)
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield (*path, i), item


def _output_fields(outputs: Any, where: JsonPath) -> Iterator[tuple[JsonPath, str, str]]:
    """(path, text, kind) of each output's pattern and destination; kind is 'path' or 'to'."""
    if not isinstance(outputs, list):
        return
    for i, output in enumerate(outputs):
        if isinstance(output, str):
            yield (*where, i), output, "path"
        elif isinstance(output, dict):
            for key in ("path", "to"):
                if isinstance(output.get(key), str):
                    yield (*where, i, key), output[key], key


def templated_fields(data: Any) -> Iterator[tuple[JsonPath, str, bool, tuple[str, ...]]]:
    """Every templated field: (path, source, shell-quoted?, variables it may use)."""
    for where, body, variables in task_bodies(data):
        if isinstance(command := body.get("command"), str):
            yield (*where, "command"), command, True, variables
        for path, text, _ in _output_fields(body.get("outputs"), (*where, "outputs")):
            yield path, text, False, variables
        if isinstance(task_id := body.get("id"), str):
            yield (*where, "id"), task_id, False, tuple(v for v in variables if v != "task_id")
        env = body.get("env")
        if isinstance(env, dict):
            for key, value in env.items():
                if isinstance(value, str):
                    yield (*where, "env", key), value, False, variables
        container = body.get("container")
        if isinstance(container, str):
            yield (*where, "container"), container, False, PARAM_VARIABLES
        elif isinstance(image := _get(container, "image"), str):
            yield (*where, "container", "image"), image, False, PARAM_VARIABLES
    for i, image in enumerate(_get(data, "pool", "container", "prefetch") or []):
        if isinstance(image, str):
            yield ("pool", "container", "prefetch", i), image, False, PARAM_VARIABLES
    for path, variables in _file_lists(data):
        files = _get(data, *path)
        for i, item in enumerate(files if isinstance(files, list) else []):
            for key in ("path", "url", "container", "prefix", "to"):
                if isinstance(value := _get(item, key), str):
                    yield (*path, i, key), value, False, variables
    if isinstance(start := _get(data, "pool", "start_task", "command"), str):
        yield ("pool", "start_task", "command"), start, True, PARAM_VARIABLES
    for path in (("pool", "vm_size"), ("pool", "nodes", "dedicated"), ("pool", "nodes", "spot"),
                 ("inputs", "path"), ("inputs", "exclude"), ("inputs", "container"), ("inputs", "prefix")):
        yield from ((p, text, False, PARAM_VARIABLES) for p, text in _strings(data, path))
    matrix = _get(data, "matrix")
    for name, axis in (matrix.items() if isinstance(matrix, dict) else ()):
        for key in ("start", "stop", "step", "range"):
            if isinstance(value := _get(axis, key), str):
                yield ("matrix", name, key), value, False, PARAM_VARIABLES
    for path in (("outputs", "container"), ("outputs", "download"), ("job", "id")):
        if isinstance(value := _get(data, *path), str):
            yield path, value, False, ("params", "name")
    env = _get(data, "job", "env")
    if isinstance(env, dict):
        for key, value in env.items():
            if isinstance(value, str):
                yield ("job", "env", key), value, False, ("params", "name", "job_id")


def _check_templates(doc: Document) -> Iterator[Diagnostic]:
    params = _get(doc.data, "params")
    matrix = _get(doc.data, "matrix")
    attrs: dict[str, frozenset[str] | None] = {
        "params": frozenset(params) if isinstance(params, dict) else frozenset(),
        "matrix": frozenset(matrix) if isinstance(matrix, dict) else frozenset(),
        "source": frozenset(SOURCE_KEYS),
        **dict.fromkeys(SCALAR_VARIABLES, SCALAR),
    }
    sweep = isinstance(doc.data, dict) and "inputs" not in doc.data
    templated: set[JsonPath] = set()
    with budget():  # one work budget for all the spec's templates' constant parts
        for path, source, shell, names in templated_fields(doc.data):
            templated.add(path)
            if len(source) > MAX_TEXT:
                yield doc.diagnostic(path, f"the template is {len(source):,} characters long, more than the limit of "
                                           f"{MAX_TEXT:,} (128 KiB) for a template")
                continue
            yield from _template_problems(doc, path, source, shell, names, attrs, sweep)
    yield from _untemplated(doc, doc.data, (), templated, schema())


def _template_problems(doc: Document, path: JsonPath, source: str, shell: bool, names: tuple[str, ...],
                       attrs: dict[str, frozenset[str] | None], sweep: bool) -> Iterator[Diagnostic]:
    known = {name: attrs.get(name) for name in names}
    problems = check_variables(source, known, shell=shell) + _foreign_syntax(source, names)
    if shell:
        problems += check_shell(source)
    for problem in problems:
        message = problem.message
        if sweep and names is SWEEP_VARIABLES and problem.token in INPUT_VARIABLES:
            message = (f"'{problem.token}' is a variable of a task over an input, and the spec has no 'inputs' "
                       "(its tasks are one per matrix combination)")
        yield doc.template_diagnostic(path, problem.line, problem.token, message)


# Jinja's usual delimiters, which batchspec does not use (a shell command has its own braces).
# (Bounded repetitions: matching stays linear in the text, whatever it holds.)
_JINJA_VARIABLE = re.compile(
    r"\{\{-?\s{0,80}([A-Za-z_][A-Za-z0-9_]{0,80})((?:\.[A-Za-z_][A-Za-z0-9_]{0,80}){0,8})[^{}\n]{0,200}?-?\}\}")
_JINJA_BLOCK = re.compile(
    r"\{%-?\s{0,80}(if|elif|else|endif|for|endfor|set|raw|endraw|macro|filter|with)\b[^%\n]{0,200}%\}")


def _foreign_syntax(source: str, names: Sequence[str]) -> list[VariableProblem]:
    """``{{ input }}`` and ``{% if %}`` in a template: Jinja's usual syntax, left as text here."""
    problems: list[VariableProblem] = []
    if "{{" not in source and "{%" not in source:
        return problems
    starts = [0] + [m.end() for m in re.finditer("\n", source)]  # where each line starts

    def line(offset: int) -> int:
        return bisect.bisect_right(starts, offset)

    for match in _JINJA_VARIABLE.finditer(source):
        if match.group(1) in names:
            expr = match.group(1) + match.group(2)
            problems.append(VariableProblem(
                f"'{match.group(0)}' is not replaced: batchspec templates write values as << {expr} >>",
                line(match.start()), match.group(0)))
    for match in _JINJA_BLOCK.finditer(source):
        body = match.group(0)[2:-2].strip("- ")
        problems.append(VariableProblem(
            f"'{match.group(0)}' is not a block here: batchspec templates write blocks as <% {body} %>",
            line(match.start()), match.group(0)))
    return problems


#: Where a value is data for templates, not a spec setting: text there is never checked.
_DATA_KEYS = {("params",), ("matrix",), ("description",), ("inputs", "list")}
TEMPLATED = ("a task's command, outputs, id, env, files and container image; pool.start_task.command, "
             "pool.vm_size, the node counts and pool.container.prefetch; inputs; matrix ranges; files; "
             "outputs.container and .download; job.id and job.env")


def _untemplated(doc: Document, data: Any, path: JsonPath, templated: set[JsonPath],
                 node: Any = None) -> Iterator[Diagnostic]:
    """``<< >>`` in a field that is not a template: it would be taken literally. ``node`` is the
    field's schema (keys the schema does not know are reported as unknown already)."""
    if path in templated or path in _DATA_KEYS:
        return
    node = resolve_ref(node, schema()) if isinstance(node, dict) else {}
    if isinstance(data, dict):
        known, extra = node.get("properties"), node.get("additionalProperties")
        if known is None and extra is None:
            known, extra = _branch(node, "properties", data)
        for key, value in data.items():
            if known is not None and key not in known and not isinstance(extra, dict):
                continue
            sub = known.get(key, extra) if known is not None else extra
            yield from _untemplated(doc, value, (*path, key), templated, sub)
    elif isinstance(data, list):
        items = node.get("items")
        if items is None:
            items = _branch(node, "items", data)[0]
        for i, value in enumerate(data):
            yield from _untemplated(doc, value, (*path, i), templated, items)
    elif isinstance(data, str) and (tag := _first_tag(data)):
        field = "$." + ".".join(str(p) for p in path)
        yield doc.diagnostic(path, f"'{tag}' is not replaced in {field}, which is not a template "
                                   f"(only {TEMPLATED} are); write the value itself")


def _first_tag(text: str) -> str | None:
    """The first ``<< … >>`` or ``<% … %>`` in ``text`` (found in linear time), or None."""
    found: list[tuple[int, str]] = []
    for opener, closer in (("<<", ">>"), ("<%", "%>")):
        start = text.find(opener)
        end = text.find(closer, start + 2) if start >= 0 else -1
        if end >= 0:
            found.append((start, text[start : end + 2]))
    return min(found)[1] if found else None


def _branch(node: dict[str, Any], keyword: str, data: Any) -> tuple[Any, Any]:
    """The ``anyOf``/``oneOf`` alternative of ``node`` that describes ``data``'s kind: its
    ``properties`` and ``additionalProperties`` (``keyword`` "properties") or its ``items``."""
    for branch in node.get("anyOf", node.get("oneOf", [])):
        alternative = resolve_ref(branch, schema()) if isinstance(branch, dict) else {}
        if keyword in alternative or (keyword == "properties" and "additionalProperties" in alternative):
            if keyword == "items":
                return alternative["items"], None
            return alternative.get("properties"), alternative.get("additionalProperties")
    return None, None


def _check_outputs(doc: Document) -> Iterator[Diagnostic]:
    for where, body, _ in task_bodies(doc.data):
        outputs = body.get("outputs")
        patterns: dict[int, str] = {}
        for path, text, kind in _output_fields(outputs, (*where, "outputs")):
            index = path[len(where) + 1]
            assert isinstance(index, int)
            if kind == "path":
                patterns[index] = text
            if is_template(text):
                continue
            problem = output_pattern_problem(text) if kind == "path" else relative_path_problem(text, allow_dir=True)
            if problem:
                yield doc.diagnostic(path, problem)
        for index, output in enumerate(outputs if isinstance(outputs, list) else []):
            to = _get(output, "to")
            pattern = patterns.get(index, "")
            if isinstance(to, str) and not to.endswith("/") and has_magic(pattern) and not is_template(to):
                yield doc.diagnostic((*where, "outputs", index, "to"),
                                     f"'{pattern}' has wildcards, so 'to' must be a directory ending in '/'")


def relative_path_problem(path: str, *, allow_dir: bool = False, what: str = "",
                          within: str = "") -> str | None:
    """Why a path that must stay inside a directory (a working directory, the download
    directory) is unsafe, or None. ``what`` and ``within`` name it and the directory in messages."""
    label = f"{what} '{path}'" if what else f"'{path}'"
    if not path.strip():
        return f"empty {what or 'path'}"
    if path.startswith(("/", "\\")) or _DRIVE.match(path):
        return f"{label} must be relative to {within}" if within else f"{label} must be a relative path"
    if ".." in path.replace("\\", "/").split("/"):
        return f"{label} must not contain '..'"
    if path.endswith("/") and not allow_dir:
        return f"{label} must name a file, not a directory"
    return None


_DRIVE = re.compile(r"[A-Za-z]:(?:[/\\]|$)")  # C:\x, C:/x or C: (but a:b.mp3 is a relative name)


def output_pattern_problem(pattern: str) -> str | None:
    """Why a (rendered) output pattern is unsafe, or None."""
    return relative_path_problem(pattern, allow_dir=True, what="output pattern", within="the task's working directory")


# --- discovery -------------------------------------------------------------------------------


def discover(paths: Iterable[Path]) -> list[Path]:
    """Spec files named by ``paths``: files as given, directories searched recursively."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix.lower() in SPEC_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
            )
        else:
            found.append(path)
    return found


def load_document(path: Path) -> Document:
    """Read and validate ``path``; raise :class:`SpecError` with every problem found (warnings
    do not stop it)."""
    if not path.exists():  # not a spec with problems: no spec at all
        raise BatchspecError(f"no such spec file: {path}", f"check the path (from {Path.cwd()}); "
                             "`batchspec validate DIR` lists the specs a directory holds")
    doc, found = validate_file(path)
    problems = [d for d in found if d.is_error]
    if problems or doc is None:
        raise SpecError(problems, hint=f"run `batchspec validate {path}` after fixing it")
    return doc
