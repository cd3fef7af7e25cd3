"""Validate spec documents: the JSON Schema first, then the rules a schema cannot express.

Every problem becomes a :class:`~batchspec.errors.Diagnostic` with the file, line, column and
JSON path; validation never stops at the first problem. :func:`load_spec` turns a valid file into
the :class:`~batchspec.spec.model.Spec` model or raises :class:`~batchspec.errors.SpecError`.
"""

from __future__ import annotations

import bisect
import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from .. import autoscale
from ..errors import Diagnostic, SpecError
from ..limits import MAX_TASKS
from ..sandbox import MAX_TEXT, budget
from ..templating import SCALAR, VariableProblem, check_shell, check_variables, is_template, variables_used
from .document import Document, JsonPath, read_document
from .values import batch_id_problem, container_problem, parse_duration

#: Variables every task template may use (the planner provides exactly these).
TASK_VARIABLES = ("input", "name", "stem", "ext", "dir", "item", "index", "count", "params", "matrix",
                  "task_id", "job_id")
#: Those that are a single value (text or a number): ``<< input.encode >>`` is a mistake.
SCALAR_VARIABLES = frozenset({"input", "name", "stem", "ext", "dir", "index", "count", "task_id", "job_id"})
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@cache
def schema() -> dict[str, Any]:
    """The spec JSON Schema shipped in the package."""
    text = resources.files("batchspec.spec").joinpath("batchspec.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
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
        if isinstance(value, str) and (problem := container_problem(value, "container")):
            yield doc.diagnostic(path, problem)
    yield from _check_pool(doc)
    yield from _check_inputs(doc)
    yield from _check_durations(doc)
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
    if not isinstance(matrix, dict) or math.prod(len(v) for v in matrix.values() if isinstance(v, list)) < 2:
        return
    example = next(iter(matrix), "NAME")
    outputs = _get(doc.data, "task", "outputs")
    for i, pattern in enumerate(outputs if isinstance(outputs, list) else []):
        if isinstance(pattern, str) and not variables_used(pattern) & _PER_COMBINATION:
            yield doc.diagnostic(("task", "outputs", i), f"every matrix combination of an input would produce "
                                                          f"the same '{pattern}': put << matrix.{example} >> in it")
    task_id = _get(doc.data, "task", "id")
    if isinstance(task_id, str) and not variables_used(task_id) & _PER_COMBINATION:
        yield doc.diagnostic(("task", "id"), f"every matrix combination of an input would get the same task id: "
                                             f"put << matrix.{example} >> or << index >> in it")


def _check_counts(doc: Document) -> Iterator[Diagnostic]:
    """A plan's task count, as far as the spec alone tells it (matrix combinations, listed
    inputs), against the limit, so a spec that validates cannot be refused for its size later."""
    matrix = _get(doc.data, "matrix")
    combos = math.prod(len(v) for v in matrix.values() if isinstance(v, list)) if isinstance(matrix, dict) else 1
    listed = _get(doc.data, "inputs", "list")
    inputs = len(listed) if isinstance(listed, list) and listed else 1
    if combos > MAX_TASKS:
        yield doc.diagnostic(("matrix",), f"the matrix has {combos:,} combinations, more than the limit of "
                                          f"{MAX_TASKS:,} tasks in one plan", key=True)
    elif inputs * combos > MAX_TASKS:
        yield doc.diagnostic(("inputs", "list"), f"{inputs:,} listed inputs x {combos:,} matrix combinations make "
                                                 f"{inputs * combos:,} tasks, more than the limit of "
                                                 f"{MAX_TASKS:,} tasks in one plan", key=True)


def _check_pool(doc: Document) -> Iterator[Diagnostic]:
    pool = _get(doc.data, "pool")
    if not isinstance(pool, dict):
        return
    nodes, autoscale = pool.get("nodes"), pool.get("autoscale")
    if nodes is not None and autoscale is not None:
        yield doc.diagnostic(("pool", "autoscale"), "give either 'nodes' or 'autoscale', not both", key=True)
    elif autoscale is None:
        counts = nodes if isinstance(nodes, dict) else {}
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
    if "prefix" in inputs and "container" not in inputs:
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


def _check_durations(doc: Document) -> Iterator[Diagnostic]:
    for path, minimum in ((("task", "timeout"), 1.0), (("task", "expected_duration"), 1.0),
                          (("pool", "autoscale", "interval"), 300.0), (("pool", "ready_timeout"), 1.0)):
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


def templated_fields(data: Any) -> Iterator[tuple[JsonPath, str, bool, tuple[str, ...]]]:
    """Every templated field: (path, source, shell-quoted?, variables it may use)."""
    task_vars = TASK_VARIABLES
    if isinstance(command := _get(data, "task", "command"), str):
        yield ("task", "command"), command, True, task_vars
    outputs = _get(data, "task", "outputs")
    if isinstance(outputs, list):
        for i, pattern in enumerate(outputs):
            if isinstance(pattern, str):
                yield ("task", "outputs", i), pattern, False, task_vars
    if isinstance(task_id := _get(data, "task", "id"), str):
        yield ("task", "id"), task_id, False, tuple(v for v in task_vars if v != "task_id")
    env = _get(data, "task", "env")
    if isinstance(env, dict):
        for key, value in env.items():
            if isinstance(value, str):
                yield ("task", "env", key), value, False, task_vars
    if isinstance(start := _get(data, "pool", "start_task", "command"), str):
        yield ("pool", "start_task", "command"), start, True, ("params",)
    if isinstance(job_id := _get(data, "job", "id"), str):
        yield ("job", "id"), job_id, False, ("params", "name")


def _check_templates(doc: Document) -> Iterator[Diagnostic]:
    params = _get(doc.data, "params")
    matrix = _get(doc.data, "matrix")
    attrs: dict[str, frozenset[str] | None] = {
        "params": frozenset(params) if isinstance(params, dict) else frozenset(),
        "matrix": frozenset(matrix) if isinstance(matrix, dict) else frozenset(),
        **dict.fromkeys(SCALAR_VARIABLES, SCALAR),
    }
    templated: set[JsonPath] = set()
    with budget():  # one work budget for all the spec's templates' constant parts
        for path, source, shell, names in templated_fields(doc.data):
            templated.add(path)
            if len(source) > MAX_TEXT:
                yield doc.diagnostic(path, f"the template is {len(source):,} characters long, more than the limit of "
                                           f"{MAX_TEXT:,} (128 KiB) for a template")
                continue
            yield from _template_problems(doc, path, source, shell, names, attrs)
    yield from _untemplated(doc, doc.data, (), templated, schema())


def _template_problems(doc: Document, path: JsonPath, source: str, shell: bool, names: tuple[str, ...],
                       attrs: dict[str, frozenset[str] | None]) -> Iterator[Diagnostic]:
    known = {name: attrs.get(name) for name in names}
    problems = check_variables(source, known, shell=shell) + _foreign_syntax(source, names)
    if shell:
        problems += check_shell(source)
    for problem in problems:
        yield doc.template_diagnostic(path, problem.line, problem.token, problem.message)


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
TEMPLATED = "task.command, task.outputs, task.id, task.env, pool.start_task.command and job.id"


def _untemplated(doc: Document, data: Any, path: JsonPath, templated: set[JsonPath],
                 node: Any = None) -> Iterator[Diagnostic]:
    """``<< >>`` in a field that is not a template: it would be taken literally. ``node`` is the
    field's schema (keys the schema does not know are reported as unknown already)."""
    if path in templated or path in _DATA_KEYS:
        return
    node = node if isinstance(node, dict) else {}
    if isinstance(data, dict):
        known, extra = node.get("properties"), node.get("additionalProperties")
        for key, value in data.items():
            if known is not None and key not in known and not isinstance(extra, dict):
                continue
            sub = known.get(key, extra) if known is not None else extra
            yield from _untemplated(doc, value, (*path, key), templated, sub)
    elif isinstance(data, list):
        items = node.get("items") or next((a["items"] for a in node.get("anyOf", node.get("oneOf", []))
                                           if isinstance(a, dict) and "items" in a), None)
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


def _check_outputs(doc: Document) -> Iterator[Diagnostic]:
    outputs = _get(doc.data, "task", "outputs")
    if not isinstance(outputs, list):
        return
    for i, pattern in enumerate(outputs):
        if isinstance(pattern, str) and not is_template(pattern) and (problem := output_pattern_problem(pattern)):
            yield doc.diagnostic(("task", "outputs", i), problem)


_DRIVE = re.compile(r"[A-Za-z]:(?:[/\\]|$)")  # C:\x, C:/x or C: (but a:b.mp3 is a relative name)


def output_pattern_problem(pattern: str) -> str | None:
    """Why a (rendered) output pattern is unsafe, or None."""
    if not pattern.strip():
        return "empty output pattern"
    if pattern.startswith(("/", "\\")) or _DRIVE.match(pattern):
        return f"output pattern '{pattern}' must be relative to the task's working directory"
    if ".." in pattern.replace("\\", "/").split("/"):
        return f"output pattern '{pattern}' must not contain '..'"
    return None


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
    """Read and validate ``path``; raise :class:`SpecError` with every problem found."""
    doc, problems = validate_file(path)
    if problems or doc is None:
        raise SpecError(problems, hint=f"run `batchspec validate {path}` after fixing it")
    return doc
