"""The bounded Jinja sandbox that spec templates run in: limited work, limited sizes.

Jinja's sandbox keeps a template away from Python's internals, but not from asking for a
gigabyte (``'a' * 10**9``), a 30,000-digit number (``2**100000``) or ten billion loop
iterations. Specs come from other people (``batchspec validate`` runs in their CI), so every
template here is bounded, whatever it says:

* **text**: no value a template makes, and no rendered template, is longer than
  :data:`MAX_TEXT` characters (or items, for a list), the most Linux passes as one argument
  (``bash -c`` gets the whole command as one). Operations that could grow a value are checked
  *before* they run: ``*``, ``+``, ``%`` and ``str.format`` (field widths and precisions too),
  the filters and methods that pad, repeat, join or replace, ``lipsum``, ``range``;
* **numbers**: no integer longer than :data:`MAX_INT_BITS` bits;
* **work**: one render does at most :data:`MAX_STEPS` steps: a loop iteration, a call, a
  filter or an operator is one, and making text costs one more per 64 characters;
* **nothing runs at compile time**: Jinja folds constant expressions while compiling (``'a' *
  10**9`` used to take 10 s and 1 GB in ``validate``); here the operators are intercepted and
  the filters take the render context, so constants are computed when rendering, under the
  limits. :func:`constant_problems` evaluates a template's constant parts under the same limits
  so ``validate`` reports them with their line without rendering anything.

Only a known set of methods may be called (text methods such as ``upper`` and ``split``,
``dict.items`` and the like, macros and Jinja's own helpers); anything else is refused as the
sandbox refuses ``__class__``.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import FilterArgumentError, SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Cycler, Joiner, Namespace, generate_lorem_ipsum, pass_context
from jinja2.visitor import NodeTransformer

from .limits import (
    MAX_INT_BITS,
    MAX_PLAN_STEPS,
    MAX_STEPS,
    MAX_TEXT,
    LimitError,
    _budget,  # loops spend it inline, item by item
    budget,
    charge,
    need,
    plan_budget,
)

__all__ = ["MAX_INT_BITS", "MAX_PLAN_STEPS", "MAX_STEPS", "MAX_TEXT", "BoundedEnvironment", "LimitError", "budget",
           "charge", "constant_problems", "is_callable_name", "need", "parse_guard", "plan_budget"]


def size(value: Any, limit: int = MAX_TEXT) -> int:
    """Characters or items in ``value``, nested lists and mappings included, as the text it
    would make; counting stops once past ``limit`` (so a list holding itself a thousand times
    over costs no more than ``limit`` to measure)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if not isinstance(value, list | tuple | dict | set | frozenset | range):
        return 24  # a float, a macro, an Undefined: as text, a few characters
    total = 0
    stack: list[Any] = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, range):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item) * 2 + 2
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item) * 4 + 2
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            total += size(item)
    return total


def checked(value: Any, what: str = "the result") -> Any:
    """``value`` once made, refused when it is too big; making it is paid for."""
    if isinstance(value, str):
        need(len(value), what)
        charge(1 + (len(value) >> 6))
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise _too_big_int(value.bit_length(), what)
    elif isinstance(value, list | tuple | dict | set | frozenset):
        n = size(value)
        need(n, what)
        charge(1 + (n >> 6))
    return value


def _too_big_int(bits: int, what: str) -> LimitError:
    return LimitError(f"{what} would be a number of {bits:,} bits, more than the limit of {MAX_INT_BITS:,} bits "
                      "for a number in a template")


# --- operators -----------------------------------------------------------------------------

_SEQUENCE = (str, list, tuple)


def _mul(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, _SEQUENCE):
        a, b = b, a
    if isinstance(a, _SEQUENCE) and isinstance(b, int) and not isinstance(b, bool):
        need(size(a) * max(b, 0), "the product")
        charge(1 + (len(a) * max(b, 0) >> 6))
        return a * b
    if isinstance(a, int) and isinstance(b, int):
        bits = a.bit_length() + b.bit_length()
        if bits > MAX_INT_BITS + 1:
            raise _too_big_int(bits, "the product")
    return checked(a * b, "the product")


def _pow(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        bits = (abs(a).bit_length() - 1) * b + 1  # at least this many
        if bits > MAX_INT_BITS:
            raise _too_big_int(bits, "the power")
    return checked(a**b, "the power")


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, _SEQUENCE) and isinstance(b, _SEQUENCE):
        need(size(a) + size(b), "the sum")
    return checked(a + b, "the sum")


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):
        return percent_format(a, b)
    return checked(a % b)


# A %-conversion: mapping key, flags, width, precision, length modifier, type.
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)", re.DOTALL)


def percent_format(template: str, args: Any) -> str:
    """``template % args`` (and the ``format`` filter), refused when the result could be too
    long: widths and precisions count in full, a float's ``%f`` up to 310 digits more."""
    bound = len(template) + size(args)
    stars = [abs(a) for a in (args if isinstance(args, tuple) else (args,)) if isinstance(a, int)]
    for match in _PERCENT.finditer(template):
        for number in match.group(1, 2):
            if number == "*":
                bound += sum(stars)
            elif number:
                bound += int(number) if len(number) < 8 else MAX_TEXT + 1
        if match.group(3) in ("f", "F"):
            bound += 310
    need(bound, "the formatted text")
    return str(checked(template % args, "the formatted text"))


class _Formatter(SandboxedFormatter):
    """``str.format`` in a template: each field's width and precision, and the total, bounded."""

    _NUMBER = re.compile(r"[0-9]+")

    def __init__(self, env: jinja2.Environment) -> None:
        super().__init__(env)
        self.total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in self._NUMBER.findall(format_spec):
            need(int(number) if len(number) < 8 else MAX_TEXT + 1, "a formatted field")
        need(size(value), "a formatted field")
        text = super().format_field(value, format_spec)
        self.total += len(text)
        need(self.total, "the formatted text")
        return text


# --- filters, functions and methods ----------------------------------------------------------


def _text_of(value: Any) -> str:
    need(size(value), "the text")
    return str(value)


def _pre_center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    need(max(size(value), width if isinstance(width, int) else 0), "the centred text")


def _pre_indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    text = _text_of(value)
    step = width if isinstance(width, int) else len(str(width))
    need(len(text) + max(step, 0) * (text.count("\n") + 1), "the indented text")


def _pre_replace(value: Any, old: Any = "", new: Any = "", count: Any = None, *_: Any, **__: Any) -> None:
    text, old, new = _text_of(value), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    need(len(text) + times * max(len(new) - len(old), 0), "the replaced text")


def _pre_join(value: Any, separator: Any = "", *_: Any, **__: Any) -> None:
    need(size(value) + len(str(separator)) * (len(value) if hasattr(value, "__len__") else 0), "the joined text")


def _pre_str_join(separator: Any, items: Any, *_: Any, **__: Any) -> None:
    _pre_join(items, separator)


def _pre_count(value: Any, count: Any = 1, *_: Any, **__: Any) -> None:
    need(max(count, 0) if isinstance(count, int) else 0, "the result")


def _pre_expandtabs(value: Any, tabsize: Any = 8, *_: Any, **__: Any) -> None:
    text = _text_of(value)
    need(len(text) + text.count("\t") * (max(tabsize, 0) if isinstance(tabsize, int) else 0), "the expanded text")


def _pre_wordwrap(value: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                  *_: Any, **kwargs: Any) -> None:
    text = _text_of(value)
    joint = kwargs.get("wrapstring", wrapstring)
    joint = "\n" if joint is None else str(joint)
    need(len(text) * (1 + len(joint)) if len(joint) > 1 else 2 * len(text) + 1, "the wrapped text")


def _pre_sum(value: Any, attribute: Any = None, start: Any = 0, *_: Any, **kwargs: Any) -> None:
    start = kwargs.get("start", start)
    if not isinstance(start, int | float):
        raise TypeError("sum adds numbers in a template; join text with | join")


#: Checks run before a filter or method, on its arguments as given (the value first).
_PRECHECKS: dict[str, Callable[..., None]] = {
    "center": _pre_center, "ljust": _pre_center, "rjust": _pre_center, "zfill": _pre_center,
    "indent": _pre_indent, "replace": _pre_replace, "join": _pre_join, "batch": _pre_count,
    "slice": _pre_count, "expandtabs": _pre_expandtabs, "wordwrap": _pre_wordwrap, "sum": _pre_sum,
}
#: The same for methods of text (``sep.join(items)`` takes its arguments the other way round).
_METHOD_PRECHECKS = {**_PRECHECKS, "join": _pre_str_join}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a Jinja filter) with its checks; it takes the render context, so Jinja never
    runs it while compiling."""
    pre = _PRECHECKS.get(name)
    passes = getattr(func, "jinja_pass_arg", None)
    passes = passes.name if passes is not None else None

    @pass_context
    def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        charge()
        if isinstance(value, Iterator):  # a generator (from map, select, ...): measured as a list
            value = list(_counted(value))
        n = size(value)
        need(n, f"the value given to the {name} filter")
        charge(n >> 6)
        if pre is not None:
            pre(value, *args, **kwargs)
        if passes == "context":
            result = func(context, value, *args, **kwargs)
        elif passes == "eval_context":
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif passes == "environment":
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return checked(result, f"the result of the {name} filter")

    guarded.__name__ = name
    return guarded


@pass_context
def _format_filter(context: Context, value: Any, *args: Any, **kwargs: Any) -> str:
    """``"%s, %s!"|format(greeting, name)``, as Jinja's, with the % bounds."""
    charge()
    if args and kwargs:
        raise FilterArgumentError("can't handle positional and keyword arguments at the same time")
    return percent_format(_text_of(value), kwargs or args)


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, each paid for: nested loops cannot multiply past the budget."""
    state = _budget
    for item in iterable:
        state.left -= 1
        if state.left < 0:
            charge(0)
        yield item


@pass_context
def _loop_items(context: Context, iterable: Any) -> Iterator[Any]:
    return _counted(iterable)


@pass_context
def _concat(context: Context, values: list[Any]) -> str:
    """``a ~ b``: the parts as text, refused when too long."""
    charge()
    total = 0
    parts: list[str] = []
    for value in values:
        text = value if isinstance(value, str) else _text_of(value)
        total += len(text)
        need(total, "the joined text")
        parts.append(text)
    charge(total >> 6)
    return "".join(parts)


def _bounded_concat(pieces: Iterable[str]) -> str:
    """The output of a macro, a ``set`` block or a filter block, refused when too long."""
    total = 0
    parts: list[str] = []
    for piece in pieces:
        total += len(piece)
        need(total, "the block's text")
        parts.append(piece)
    charge(total >> 6)
    return "".join(parts)


def _range(*args: int) -> range:
    charge()
    items = range(*args)
    need(len(items), "the range")
    return items


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    charge()
    need(max * n * 14 if isinstance(n, int) and isinstance(max, int) else 0, "the lorem ipsum text")
    return str(checked(generate_lorem_ipsum(n, html, min, max), "the lorem ipsum text"))


_STR_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "format", "format_map",
    "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
    "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "partition",
    "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip",
    "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper", "zfill",
})
_OTHER_METHODS: dict[type, frozenset[str]] = {
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
    int: frozenset({"bit_length"}),
    float: frozenset({"is_integer"}),
}
#: Methods of Jinja's helpers (loop.cycle, cycler.next, ...).
_HELPER_METHODS = frozenset({"cycle", "changed", "next", "reset", "current", "super"})


def is_callable_name(name: str) -> bool:
    """May a template call a method of this name (on some value)? For validation."""
    return (name in _STR_METHODS or name in _HELPER_METHODS or name in ("format", "format_map")
            or any(name in names for names in _OTHER_METHODS.values()))


#: Jinja's own objects a template may call (macros, loop helpers, cycler, joiner, namespace).
_JINJA_CALLABLES = (Macro, LoopContext, Cycler, Joiner, Namespace, jinja2.runtime.BlockReference)


@contextmanager
def parse_guard() -> Iterator[None]:
    """What parsing or compiling a template can raise besides a syntax error (nesting deeper than
    Python's stack, a number literal of thousands of digits), as a syntax error."""
    try:
        yield
    except RecursionError:
        raise jinja2.TemplateSyntaxError("the template nests too deeply (brackets, filters, blocks or "
                                         "operators inside one another)", 1) from None
    except (ValueError, OverflowError, MemoryError, SyntaxError) as exc:
        what = "a number in it has more than 4,300 digits" if "digits" in str(exc) else str(exc)
        raise jinja2.TemplateSyntaxError(f"the template cannot be compiled: {what}", 1) from None


class _Bounds(NodeTransformer):
    """Rewrites a parsed template so that loops pay per item and ``~`` is bounded, and refuses
    number literals past the limits (``1e999`` is infinite; Jinja would write it as ``inf``)."""

    def visit_Const(self, node: nodes.Const) -> nodes.Node:
        value = node.value
        if isinstance(value, float) and not math.isfinite(value):
            raise jinja2.TemplateSyntaxError(f"the number {value} is out of range", node.lineno)
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise jinja2.TemplateSyntaxError(str(_too_big_int(value.bit_length(), "a number in the template")),
                                             node.lineno)
        return node

    def visit_For(self, node: nodes.For) -> nodes.Node:
        loop = self.generic_visit(node)
        assert isinstance(loop, nodes.For)
        loop.iter = nodes.Filter(loop.iter, "_loop_items", [], [], None, None, lineno=loop.lineno)
        return loop

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        concat = self.generic_visit(node)
        assert isinstance(concat, nodes.Concat)
        return nodes.Filter(nodes.List(concat.nodes, lineno=concat.lineno), "_concat", [], [], None, None,
                            lineno=concat.lineno)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the limits of this module."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    #: Filters batchspec adds for its own use (loops, ``~``), not for templates to name.
    internal_filters = frozenset({"_loop_items", "_concat"})

    def __init__(self, **options: Any) -> None:
        super().__init__(optimized=False, **options)
        self.binop_table = {**self.binop_table, "*": _mul, "**": _pow, "+": _add, "%": _mod}
        self.filters = {name: _guard_filter(name, func) for name, func in FILTERS.items()}
        self.filters.update({"format": _format_filter, "_loop_items": _loop_items, "_concat": _concat})
        self.globals.update(range=_range, lipsum=_lipsum)
        self.concat = _bounded_concat  # type: ignore[method-assign]

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        self.filters[name] = _guard_filter(name, func)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        with parse_guard():
            ast = super()._parse(source, name, filename)
            bounded: nodes.Template = _Bounds().visit(ast)
        return bounded

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        with parse_guard():
            return super()._generate(source, name, filename, defer_init)

    def _compile(self, source: str, filename: str) -> types.CodeType:
        with parse_guard():
            return super()._compile(source, filename)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        charge()
        return self.binop_table[operator](left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if (not isinstance(value, types.MethodType | types.BuiltinMethodType)
                or value.__name__ not in ("format", "format_map") or not isinstance(value.__self__, str)):
            return None
        template: str = value.__self__
        by_name = value.__name__ == "format_map"

        def format_bounded(*args: Any, **kwargs: Any) -> str:
            charge()
            if by_name:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return str(_Formatter(self).vformat(template, (), args[0]))
            return str(_Formatter(self).vformat(template, args, kwargs))

        format_bounded.__name__ = value.__name__
        format_bounded.bounded = True  # type: ignore[attr-defined]
        return format_bounded

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        charge(16 if isinstance(__obj, Macro) else 4)  # measured: a macro call takes ~16 loop iterations' time
        if isinstance(__obj, jinja2.Undefined):
            __obj._fail_with_undefined_error()
        name = _method_name(__obj)
        if name is not None:
            if args and isinstance(args[0], Iterator):  # "-".join(a generator): measured as a list
                args = (list(_counted(args[0])), *args[1:])
            pre = _METHOD_PRECHECKS.get(name)
            if pre is not None:
                pre(__obj.__self__, *args, **kwargs)
        elif not (getattr(__obj, "bounded", False) or __obj in (_range, _lipsum, dict)
                  or isinstance(__obj, _JINJA_CALLABLES)
                  or (isinstance(__obj, types.MethodType) and isinstance(__obj.__self__, _JINJA_CALLABLES))
                  or __obj in _JINJA_CALLABLES):
            raise SecurityError(f"{_describe(__obj)} cannot be called in a template")
        return checked(__context.call(__obj, *args, **kwargs))


def _method_name(obj: Any) -> str | None:
    """The name of ``obj`` when it is a method templates may call on a value, else None."""
    if not isinstance(obj, types.BuiltinMethodType):
        return None
    owner = getattr(obj, "__self__", None)
    name: str = obj.__name__
    if isinstance(owner, str):
        return name if name in _STR_METHODS else None
    for kind, names in _OTHER_METHODS.items():
        if isinstance(owner, kind) and not isinstance(owner, bool):
            return name if name in names else None
    return None


def _describe(obj: Any) -> str:
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", type(obj).__name__)
    if owner is not None and not isinstance(owner, types.ModuleType):
        return f"the method '{name}' of a {type(owner).__name__}"
    return f"'{name}'"


# --- validation: the constant parts of a template ----------------------------------------------

_UNKNOWN = object()


def constant_problems(env: BoundedEnvironment, ast: nodes.Template) -> list[tuple[int, str]]:
    """``(line, message)`` for each limit a template's constant parts go past, and for loops
    over constant ranges that multiply past the work limit: what ``validate`` can know about
    a template's size without rendering it (``<< 'a' * 10**9 >>``, ``<< 2**100000 >>``,
    ``<< 'x'|center(10**9) >>``, ``lipsum(10**6)``, nested ``range(100000)`` loops)."""
    evaluator = _Constants(env)
    with budget(fresh=False):
        for node in ast.find_all(nodes.Expr):
            evaluator.value(node)
        evaluator.loops(ast, 1)
    return evaluator.problems


class _Constants:
    def __init__(self, env: BoundedEnvironment) -> None:
        self.env = env
        self.context = Context(env, {}, None, {})
        self.known: dict[int, Any] = {}
        self.problems: list[tuple[int, str]] = []

    def value(self, node: nodes.Node) -> Any:
        key = id(node)
        if key not in self.known:
            self.known[key] = _UNKNOWN
            try:
                self.known[key] = self._value(node)
            except LimitError as exc:
                self.problems.append((node.lineno or 1, str(exc)))
            except Exception:
                pass
        return self.known[key]

    def _value(self, node: nodes.Node) -> Any:
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, nodes.List | nodes.Tuple):
            items = [self.value(n) for n in node.items]
            if any(i is _UNKNOWN for i in items):
                return _UNKNOWN
            return checked(items if isinstance(node, nodes.List) else tuple(items))
        if isinstance(node, nodes.BinExpr):
            left, right = self.value(node.left), self.value(node.right)
            if left is _UNKNOWN or right is _UNKNOWN:
                return _UNKNOWN
            if node.operator in self.env.intercepted_binops:
                return self.env.call_binop(self.context, node.operator, left, right)
            return checked(self.env.binop_table[node.operator](left, right))
        if isinstance(node, nodes.Filter) and node.node is not None and node.name in self.env.filters:
            args = self._arguments(node)
            subject = self.value(node.node)
            if args is None or subject is _UNKNOWN:
                return _UNKNOWN
            return self.env.filters[node.name](self.context, subject, *args[0], **args[1])
        if isinstance(node, nodes.Call):
            args = self._arguments(node)
            if args is None:
                return _UNKNOWN
            if isinstance(node.node, nodes.Name) and node.node.name in ("range", "lipsum"):
                return self.env.call(self.context, self.env.globals[node.node.name], *args[0], **args[1])
            if isinstance(node.node, nodes.Getattr):
                subject = self.value(node.node.node)
                if subject is _UNKNOWN or not isinstance(subject, str | int | float | list | tuple | dict):
                    return _UNKNOWN
                method = self.env.getattr(subject, node.node.attr)
                return self.env.call(self.context, method, *args[0], **args[1])
        return _UNKNOWN

    def _arguments(self, node: nodes.Filter | nodes.Call) -> tuple[list[Any], dict[str, Any]] | None:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            return None
        args = [self.value(a) for a in node.args]
        kwargs = {str(k.key): self.value(k.value) for k in node.kwargs}
        if any(a is _UNKNOWN for a in args) or any(v is _UNKNOWN for v in kwargs.values()):
            return None
        return args, kwargs

    def loops(self, node: nodes.Node, outer: int) -> None:
        """Loops over constant ranges or lists, nested: their iterations multiplied."""
        for child in node.iter_child_nodes():
            times = outer
            if isinstance(child, nodes.For):
                iterable = child.iter.node if isinstance(child.iter, nodes.Filter) else child.iter
                items = self.known.get(id(iterable), _UNKNOWN)
                if items is not _UNKNOWN and hasattr(items, "__len__"):
                    times = outer * max(len(items), 1)
                    if times > MAX_STEPS:
                        self.problems.append((child.lineno, (
                            f"these nested loops would run {times:,} times, more than the limit of {MAX_STEPS:,} "
                            "steps of work in one render")))
                        continue
            self.loops(child, times)
