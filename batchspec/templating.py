"""Jinja templating for spec fields: sandboxed, strict, and shell-safe for commands.

Spec templates use ``<< value >>``, ``<% block %>`` and ``<# comment #>`` so they never clash
with shell syntax (``${VAR}``, ``{a,b}``) or YAML. Two environments exist:

* the **shell** environment (``task.command``, ``pool.start_task.command``) quotes every
  interpolated value with :func:`shlex.quote` unless the template says ``| raw``, and renders a
  path value that starts with ``-`` as ``./-x`` when it begins a shell word, so a file name can
  never become an option or run code;
* the **glob** environment (``task.outputs``, which are glob patterns) escapes the glob
  characters ``*``, ``?`` and ``[`` in path values, so ``Clip [1].mp4`` yields an output pattern
  that matches ``Clip [1].mp3`` and nothing else;
* the **text** environment (ids, env values) renders values as they are.

All are :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` with ``StrictUndefined``: an
unknown variable, an attempt to reach Python internals, or to change shared values (one task's
render must not alter the next's ``params``) is an error, never a crash or an escape.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import shlex
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .globs import escape as escape_glob


class Raw(str):
    """A value the template marked ``| raw``: inserted into a command without quoting."""

    __slots__ = ()


class Namespace(dict[str, Any]):
    """A read-only mapping whose keys also read as attributes (``params.bitrate``).

    Jinja reads ``a.b`` as ``getattr(a, "b")`` first and falls back to ``a["b"]``; on a plain
    dict that fallback raises and catches an exception per lookup, the bulk of the cost of a
    short template. Keeping the keys in the instance ``__dict__`` too makes it a plain lookup.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.__dict__.update(values)


class PathValue(str):
    """A path-like variable (input, name, stem, dir): guarded against reading as an option."""

    __slots__ = ()


# Markers around a dash-leading path value; NUL cannot occur in a file name, and a rendered
# command containing NUL is rejected anyway (exec cannot pass it).
_MARK_OPEN, _MARK_CLOSE = "\x00", "\x01"
_MARKED = re.compile("\x00(.*?)\x01", re.DOTALL)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _finalize_shell(value: Any) -> str:
    cls = type(value)
    if cls is str:  # the common cases first: this runs for every value of every task
        return shlex.quote(value)
    if cls is PathValue and value[:1] != "-":
        return shlex.quote(value)
    if isinstance(value, Raw):
        return str.__str__(value)
    text = _text(value)
    if isinstance(value, PathValue) and text.startswith("-"):
        return f"{_MARK_OPEN}{text}{_MARK_CLOSE}"
    return shlex.quote(text)


def _finalize_glob(value: Any) -> str:
    if isinstance(value, PathValue):  # a file name: its glob characters are literal
        return escape_glob(value)
    return _text(value)


def _unmark(rendered: str) -> str:
    """Quote marked dash-leading paths, adding ``./`` where the value starts a shell word."""

    def repl(match: re.Match[str]) -> str:
        start = match.start()
        at_word_start = start == 0 or rendered[start - 1] in " \t\n;|&()<>"
        return shlex.quote(("./" if at_word_start else "") + match.group(1))

    return _MARKED.sub(repl, rendered)


def _raw(value: Any) -> Raw:
    return Raw(_text(value))


def _shell_quote(value: Any) -> Raw:
    """``<< x | quote >>``: explicit quoting, e.g. inside a ``| raw`` expression's parts."""
    return Raw(shlex.quote(_text(value)))


def _make_env(finalize: Callable[[Any], Any]) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        variable_start_string="<<",
        variable_end_string=">>",
        block_start_string="<%",
        block_end_string="%>",
        comment_start_string="<#",
        comment_end_string="#>",
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        finalize=finalize,
    )
    env.filters["raw"] = _raw
    env.filters["quote"] = _shell_quote
    return env


SHELL_ENV = _make_env(_finalize_shell)
TEXT_ENV = _make_env(_text)
GLOB_ENV = _make_env(_finalize_glob)
_GLOBALS = dict(SHELL_ENV.globals)  # range, dict, ... (the same in both environments)


class TemplateError(Exception):
    """A template could not be parsed or rendered; ``line`` is 1-based within the template."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# A template that is only text and ``<< name >>`` / ``<< name.attr >>`` substitutions (nearly
# every real one) renders through a precomputed list of parts instead of Jinja's generated code:
# the same sandboxed attribute access and finalize function, without a Context per call.
_Part = str | tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class Template:
    """A compiled spec template."""

    source: str
    shell: bool
    _template: jinja2.Template
    _parts: tuple[_Part, ...] | None  # the fast path, when the template is simple enough
    # Derived from _parts: the text as a str.format string with one {} per substitution.
    _format: str = field(init=False, repr=False, compare=False)
    _subs: tuple[tuple[str, tuple[str, ...]], ...] = field(init=False, repr=False, compare=False)
    _finalize: Callable[[Any], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = self._parts or ()
        text = "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{}" for p in parts)
        object.__setattr__(self, "_format", text)
        object.__setattr__(self, "_subs", tuple(p for p in parts if not isinstance(p, str)))
        object.__setattr__(self, "_finalize", self._template.environment.finalize)

    def render(self, variables: dict[str, Any]) -> str:
        """Render with ``variables`` (Jinja's globals such as ``range`` are added as needed)."""
        try:
            out = self._render_parts(variables) if self._parts is not None else self._render_jinja(variables)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"undefined variable: {exc.message}") from None
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"not allowed in a template: {exc}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(str(exc), getattr(exc, "lineno", None)) from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None
        if self.shell:
            if _MARK_OPEN in out:
                out = _unmark(out)
            if "\x00" in out:
                raise TemplateError("the rendered command contains a NUL character")
        return out

    def _render_jinja(self, variables: dict[str, Any]) -> str:
        template = self._template
        # One merged dict as the context's parent: Template.render copies the globals ChainMap
        # into fresh dicts and sets on every call.
        context = Context(template.environment, {**_GLOBALS, **variables}, template.name, template.blocks)
        return "".join(template.root_render_func(context))

    def _render_parts(self, variables: dict[str, Any]) -> str:
        getattr_ = self._template.environment.getattr
        finalize = self._finalize
        values: list[str] = []
        for name, attrs in self._subs:
            try:
                value = variables[name]
            except KeyError:
                raise jinja2.UndefinedError(f"'{name}' is undefined") from None
            for attr in attrs:
                # A Namespace key is user data, never a Python internal: no sandbox check needed.
                value = value[attr] if type(value) is Namespace and attr in value else getattr_(value, attr)
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            values.append(finalize(value))
        return self._format.format(*values)

    def bind(self, constants: Mapping[str, Any]) -> Template:
        """This template with the substitutions that read only ``constants`` rendered once.

        The planner binds the variables every task shares (``params``, ``job_id``, ``count``),
        so per task only the per-input values are looked up. A substitution that fails here is
        left as it is, to fail (with its usual message) when a task renders it.
        """
        if not self._parts:
            return self
        parts: list[_Part] = []
        for part in self._parts:
            bound = part
            if type(part) is not str and part[0] in constants:
                with contextlib.suppress(Exception):  # rendered again, and reported, per task
                    bound = replace(self, _parts=(part,))._render_parts(dict(constants))
            if type(bound) is str and parts and type(parts[-1]) is str:
                parts[-1] = f"{parts[-1]}{bound}"
            else:
                parts.append(bound)
        return replace(self, _parts=tuple(parts))


def _simple_parts(ast: jinja2.nodes.Template) -> tuple[_Part, ...] | None:
    """The parts of a text-and-substitutions template, or None when it needs Jinja proper."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], jinja2.nodes.Output):
        return None if ast.body else ()
    parts: list[_Part] = []
    for output in ast.body[0].nodes:
        if isinstance(output, jinja2.nodes.TemplateData):
            parts.append(output.data)
            continue
        attrs: list[str] = []
        node = output
        while isinstance(node, jinja2.nodes.Getattr):
            attrs.append(node.attr)
            node = node.node
        if not isinstance(node, jinja2.nodes.Name) or node.ctx != "load":
            return None
        parts.append((node.name, tuple(reversed(attrs))))
    return tuple(parts)


@cache
def compile_template(source: str, *, shell: bool, glob: bool = False) -> Template:
    """Parse and compile ``source`` (cached: a plan renders the same few templates many times).

    ``shell`` quotes values for a shell command; ``glob`` escapes glob characters in path
    values for an output pattern.
    """
    env = SHELL_ENV if shell else GLOB_ENV if glob else TEXT_ENV
    try:
        parts = _simple_parts(env.parse(source))
        return Template(source, shell, env.from_string(source), parts)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}", exc.lineno) from None


def is_template(source: str) -> bool:
    return "<<" in source or "<%" in source or "<#" in source


@dataclass(frozen=True)
class VariableProblem:
    message: str
    line: int  # 1-based within the template
    token: str = ""  # the text at fault, to point at its column


def check_variables(
    source: str, known: Mapping[str, Collection[str] | None], *, shell: bool
) -> list[VariableProblem]:
    """Problems with the variables a template uses, found without rendering it.

    ``known`` maps each allowed variable to the names of its allowed attributes (for
    ``params`` and ``matrix``), or to None when any attribute is fine. Attribute names starting
    with ``_`` are reported as sandbox escapes.
    """
    simple = _check_simple(source, known)
    if simple is not None:
        return simple
    env = SHELL_ENV if shell else TEXT_ENV
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [VariableProblem(f"template syntax error: {exc.message}", exc.lineno or 1)]
    problems: list[VariableProblem] = []
    for call in ast.find_all((jinja2.nodes.Filter, jinja2.nodes.Test)):
        is_filter = isinstance(call, jinja2.nodes.Filter)
        table = env.filters if is_filter else env.tests
        kind = "filter" if is_filter else "test"
        if call.name not in table:
            close = difflib.get_close_matches(call.name, sorted(table), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(VariableProblem(f"unknown {kind} '{call.name}'{hint}", call.lineno, call.name))
        elif is_filter and call.name == "attr" and call.args and isinstance(call.args[0], jinja2.nodes.Const):
            attr = call.args[0].value
            if isinstance(attr, str) and attr.startswith("_"):
                problems.append(VariableProblem(f"template may not access '{attr}' (sandboxed)", call.lineno, attr))
    try:
        undeclared = jinja2.meta.find_undeclared_variables(ast)
    except jinja2.TemplateSyntaxError as exc:  # TemplateAssertionError: found while compiling
        return problems or [VariableProblem(f"template error: {exc.message}", exc.lineno or 1)]
    for name in sorted(undeclared - set(known)):
        line = next((n.lineno for n in _names(ast) if n.name == name), 1)
        problems.append(_unknown_variable(name, known, line))
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        attr = _attr_name(node)
        if attr is None:
            continue
        if attr.startswith("_"):
            problems.append(VariableProblem(f"template may not access '{attr}' (sandboxed)", node.lineno, attr))
            continue
        base = node.node  # type: ignore[attr-defined]  # Getattr and Getitem both have .node
        if isinstance(base, jinja2.nodes.Name) and base.name in undeclared:
            allowed = known.get(base.name)
            if allowed is not None and attr not in allowed:
                problems.append(_unknown_key(base.name, attr, allowed, node.lineno))
    return problems


# ``<< name >>`` and ``<< name.attr.attr >>``: what nearly every template consists of.
_SIMPLE_TAG = re.compile(r"<<\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*>>")
# Words the Jinja parser reads as constants or operators, never as variables.
_JINJA_WORDS = frozenset({"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is",
                          "if", "else"})


def _check_simple(source: str, known: Mapping[str, Collection[str] | None]) -> list[VariableProblem] | None:
    """:func:`check_variables` for a text-and-substitutions template without running Jinja's
    parser and compiler (most of the cost of validating a spec); None for any other template."""
    if "<%" in source or "<#" in source:
        return None
    tags = list(_SIMPLE_TAG.finditer(source))
    if "<<" in _SIMPLE_TAG.sub("", source):
        return None
    uses: list[tuple[str, tuple[str, ...], int]] = []
    for tag in tags:
        name, *attrs = tag.group(1).split(".")
        if name in _JINJA_WORDS or any(a in _JINJA_WORDS for a in attrs):
            return None
        uses.append((name, tuple(attrs), source.count("\n", 0, tag.start(1)) + 1))
    problems: list[VariableProblem] = []
    undeclared = {name for name, _, _ in uses if name not in _GLOBALS}
    first_line: dict[str, int] = {}
    for name, _, line in uses:
        first_line.setdefault(name, line)
    for name in sorted(undeclared - set(known)):
        problems.append(_unknown_variable(name, known, first_line[name]))
    for name, attrs, line in uses:
        for i, attr in enumerate(attrs):
            if attr.startswith("_"):
                problems.append(VariableProblem(f"template may not access '{attr}' (sandboxed)", line, attr))
            elif i == 0 and name in undeclared:
                allowed = known.get(name)
                if allowed is not None and attr not in allowed:
                    problems.append(_unknown_key(name, attr, allowed, line))
    return problems


def _unknown_variable(name: str, known: Mapping[str, object], line: int) -> VariableProblem:
    return VariableProblem(f"unknown template variable '{name}'{_suggest(name, known)}", line, name)


def _unknown_key(name: str, attr: str, allowed: Collection[str], line: int) -> VariableProblem:
    return VariableProblem(f"unknown {name} key '{attr}' in '{name}.{attr}'{_suggest(attr, allowed)}", line, attr)


def _suggest(name: str, choices: Iterable[str]) -> str:
    """A "did you mean" hint, or the list of choices when nothing is close."""
    options = sorted(choices)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f" (known: {', '.join(options) or 'none'})"


def _names(ast: jinja2.nodes.Node) -> Iterator[jinja2.nodes.Name]:
    return ast.find_all(jinja2.nodes.Name)


def _attr_name(node: jinja2.nodes.Node) -> str | None:
    if isinstance(node, jinja2.nodes.Getattr):
        return str(node.attr)
    if isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const):
        value = node.arg.value
        return value if isinstance(value, str) else None
    return None
