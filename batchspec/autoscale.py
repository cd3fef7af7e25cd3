"""The Azure Batch autoscale formula language: parser and evaluator.

One implementation serves ``batchspec validate`` (a formula that cannot parse is a located error)
and the emulator (which evaluates a pool's formula on its interval and for
``evaluateautoscale``). The language is the service's: ``;``-separated statements (up to 100, at
most 8,192 characters) assigning variables (``$Name`` or ``name``), ``//`` comments, numbers,
``"strings"``, the operators ``+ - * / < <= == != >= > && || !`` and ``? :``, the functions
``avg len lg ln log max min norm percentile rand range std stop sum time val``, the
``TimeInterval_*`` constants, timestamp members (``time().hour``, ``.weekday`` ...), and the
sampled system variables (``$PendingTasks``, ``$ActiveTasks``, ``$RunningTasks``, ``$CPUPercent``
...) with ``GetSample``, ``GetSamplePercent``, ``GetSamplePeriod``, ``Count`` and
``HistoryBeginTime``. ``$TargetDedicatedNodes``, ``$TargetLowPriorityNodes`` (aliases
``$TargetDedicated``, ``$TargetLowPriority``) and ``$NodeDeallocationOption`` are what a formula
sets; the evaluation's ``results`` string is written as the service writes it
(``$TargetDedicatedNodes=1;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$x=...``).

Errors carry the line and column of the formula where they arose, as the service reports them
(``Line 9, Col 43: Insufficient data from data set: $PendingTasks wanted 70%, received 0%``).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Union

MAX_LENGTH = 8192
MAX_STATEMENTS = 100
#: The service takes a sample of each metric every 30 seconds.
SAMPLE_PERIOD = 30.0

TARGETS = {
    "$TargetDedicatedNodes": "$TargetDedicatedNodes",
    "$TargetDedicated": "$TargetDedicatedNodes",
    "$TargetLowPriorityNodes": "$TargetLowPriorityNodes",
    "$TargetLowPriority": "$TargetLowPriorityNodes",
    "$NodeDeallocationOption": "$NodeDeallocationOption",
}
#: Read-only system variables that are plain values.
VALUES = ("$CurrentDedicatedNodes", "$CurrentLowPriorityNodes", "$TaskSlotsPerNode", "$UsableNodeCount")
#: Read-only system variables that are sample sets (read through GetSample and friends).
METRICS = (
    "$CPUPercent", "$WallClockSeconds", "$MemoryBytes", "$DiskBytes", "$DiskReadBytes", "$DiskWriteBytes",
    "$DiskReadOps", "$DiskWriteOps", "$NetworkInBytes", "$NetworkOutBytes", "$SampleNodeCount", "$ActiveTasks",
    "$RunningTasks", "$PendingTasks", "$SucceededTasks", "$FailedTasks", "$PreemptedNodeCount",
)
DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")
INTERVALS = {
    "TimeInterval_Zero": 0.0,
    "TimeInterval_100ns": 1e-7,
    "TimeInterval_Microsecond": 1e-6,
    "TimeInterval_Millisecond": 1e-3,
    "TimeInterval_Second": 1.0,
    "TimeInterval_Minute": 60.0,
    "TimeInterval_Hour": 3600.0,
    "TimeInterval_Day": 86400.0,
    "TimeInterval_Week": 7 * 86400.0,
    "TimeInterval_Year": 365 * 86400.0,
}


class FormulaError(Exception):
    """A formula that cannot be parsed or evaluated; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, line: int = 1, column: int = 1, *, kind: str = "syntax") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.kind = kind  # syntax | evaluation | samples

    def __str__(self) -> str:
        return f"Line {self.line}, Col {self.column}: {self.message}"


# ---- values


@dataclass(frozen=True)
class Interval:
    seconds: float


@dataclass(frozen=True)
class Timestamp:
    when: datetime

    def member(self, name: str) -> float:
        w = self.when
        members = {
            "year": w.year, "month": w.month, "day": w.day, "hour": w.hour, "minute": w.minute, "second": w.second,
            "weekday": (w.weekday() + 1) % 7,  # .NET DayOfWeek: Sunday 0, Monday 1
        }
        if name not in members:
            raise KeyError(name)
        return float(members[name])


@dataclass(frozen=True)
class Metric:
    name: str


Value = Union[float, tuple[float, ...], str, Interval, Timestamp, Metric]  # noqa: UP007 (a runtime alias on 3.10)


def render(value: Value) -> str:
    """A value as the service writes it in ``results``."""
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, tuple):
        return "[" + ",".join(_number(v) for v in value) + "]"
    if isinstance(value, Timestamp):
        when = value.when.astimezone(timezone.utc)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    if isinstance(value, Interval):
        return _timespan(value.seconds)
    if isinstance(value, Metric):
        return value.name
    return value


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _timespan(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{int(hours):02d}:{int(minutes):02d}:{int(secs):02d}"
    if secs != int(secs):
        text += f".{round((secs - int(secs)) * 1e7):07d}"
    return sign + (f"{int(days)}." if days else "") + text


# ---- syntax

_TOKEN = re.compile(
    r"(?P<ws>[ \t\r\n]+)|(?P<comment>//[^\n]*)|(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<str>\"[^\"\n]*\")|(?P<name>\$?[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|[-+*/<>!?:;=(),.\[\]])"
)


@dataclass(frozen=True)
class Token:
    kind: str  # num | str | name | op | end
    text: str
    line: int
    column: int


def tokenize(formula: str) -> list[Token]:
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(formula):
        match = _TOKEN.match(formula, pos)
        if match is None:
            raise FormulaError(f"Unexpected character '{formula[pos]}'", line, pos - line_start + 1)
        kind = match.lastgroup or ""
        text = match.group()
        if kind not in ("ws", "comment"):
            tokens.append(Token(kind, text, line, pos - line_start + 1))
        for i, char in enumerate(text):
            if char == "\n":
                line, line_start = line + 1, pos + i + 1
        pos = match.end()
    tokens.append(Token("end", "", line, pos - line_start + 1))
    return tokens


@dataclass(frozen=True)
class Node:
    kind: str  # num str var call method member unary binary ternary
    text: str
    line: int
    column: int
    children: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Statement:
    target: str | None  # the assigned variable, or None for a bare expression (e.g. stop())
    expr: Node
    line: int
    column: int


@dataclass(frozen=True)
class Program:
    statements: tuple[Statement, ...]


_BINARY = [("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/")]


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def take(self, text: str | None = None) -> Token:
        tok = self.tok
        if text is not None and tok.text != text:
            found = "the end of the formula" if tok.kind == "end" else f"'{tok.text}'"
            raise FormulaError(f"Expected '{text}' but found {found}", tok.line, tok.column)
        self.pos += 1
        return tok

    def program(self) -> Program:
        statements: list[Statement] = []
        while self.tok.kind != "end":
            if self.tok.text == ";":
                self.take()
                continue
            statements.append(self.statement())
            if self.tok.kind != "end":
                self.take(";")
        if len(statements) > MAX_STATEMENTS:
            raise FormulaError(f"A formula may hold at most {MAX_STATEMENTS} statements, found {len(statements)}")
        return Program(tuple(statements))

    def statement(self) -> Statement:
        tok = self.tok
        if tok.kind == "name" and self.tokens[self.pos + 1].text == "=":
            self.take()
            self.take("=")
            if tok.text in VALUES or tok.text in METRICS:
                raise FormulaError(f"{tok.text} is read-only", tok.line, tok.column)
            return Statement(tok.text, self.expr(), tok.line, tok.column)
        return Statement(None, self.expr(), tok.line, tok.column)

    def expr(self) -> Node:
        cond = self.binary(0)
        if self.tok.text == "?":
            tok = self.take()
            yes = self.expr()
            self.take(":")
            no = self.expr()
            return Node("ternary", "?", tok.line, tok.column, (cond, yes, no))
        return cond

    def binary(self, level: int) -> Node:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.tok.kind == "op" and self.tok.text in _BINARY[level]:
            tok = self.take()
            left = Node("binary", tok.text, tok.line, tok.column, (left, self.binary(level + 1)))
        return left

    def unary(self) -> Node:
        if self.tok.text in ("-", "!"):
            tok = self.take()
            return Node("unary", tok.text, tok.line, tok.column, (self.unary(),))
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while self.tok.text == ".":
            self.take()
            name = self.take()
            if name.kind != "name":
                raise FormulaError("Expected a method or member name after '.'", name.line, name.column)
            if self.tok.text == "(":
                node = Node("method", name.text, name.line, name.column, (node, *self.arguments()))
            else:
                node = Node("member", name.text, name.line, name.column, (node,))
        return node

    def arguments(self) -> tuple[Node, ...]:
        self.take("(")
        args: list[Node] = []
        if self.tok.text != ")":
            args.append(self.expr())
            while self.tok.text == ",":
                self.take()
                args.append(self.expr())
        self.take(")")
        return tuple(args)

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "num":
            self.take()
            return Node("num", tok.text, tok.line, tok.column)
        if tok.kind == "str":
            self.take()
            return Node("str", tok.text[1:-1], tok.line, tok.column)
        if tok.kind == "name":
            self.take()
            if self.tok.text == "(":
                if tok.text not in FUNCTIONS:
                    raise FormulaError(f"Unknown function '{tok.text}'", tok.line, tok.column)
                return Node("call", tok.text, tok.line, tok.column, self.arguments())
            return Node("var", tok.text, tok.line, tok.column)
        if tok.text == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        found = "the end of the formula" if tok.kind == "end" else f"'{tok.text}'"
        raise FormulaError(f"Expected an expression but found {found}", tok.line, tok.column)


def parse(formula: str) -> Program:
    """The parsed formula; raises :class:`FormulaError` at the first problem."""
    if len(formula) > MAX_LENGTH:
        raise FormulaError(f"The formula is {len(formula)} characters long; at most {MAX_LENGTH} are allowed")
    return _Parser(tokenize(formula)).program()


def check(formula: str) -> Program:
    """:func:`parse`, then the static checks: every variable is read only after it is assigned
    (or is a system variable, a ``TimeInterval_*`` constant or a deallocation option)."""
    program = parse(formula)
    assigned: set[str] = set()

    def walk(node: Node) -> None:
        if node.kind == "var":
            name = node.text
            known = (
                name in assigned or name in TARGETS or name in VALUES or name in METRICS or name in INTERVALS
                or name.lower() in DEALLOCATION_OPTIONS
            )
            if not known:
                raise FormulaError(f"Undefined variable {name}", node.line, node.column, kind="evaluation")
        for child in node.children:
            walk(child)

    for statement in program.statements:
        walk(statement.expr)
        if statement.target is not None:
            assigned.add(statement.target)
    return program


# ---- evaluation


@dataclass
class Context:
    """What a formula sees of its pool when evaluated."""

    now: datetime
    current_dedicated: int = 0
    current_low_priority: int = 0
    target_dedicated: int = 0
    target_low_priority: int = 0
    task_slots_per_node: int = 1
    usable_nodes: int = 0
    #: Each metric's history as (time, value), oldest first.
    history: Callable[[str], Sequence[tuple[datetime, float]]] = lambda _name: ()
    rng: random.Random = field(default_factory=random.Random)


@dataclass
class Evaluation:
    target_dedicated: int
    target_low_priority: int
    deallocation: str
    variables: dict[str, Value]

    @property
    def results(self) -> str:
        parts = [
            f"$TargetDedicatedNodes={self.target_dedicated}",
            f"$TargetLowPriorityNodes={self.target_low_priority}",
            f"$NodeDeallocationOption={self.deallocation}",
        ]
        names = sorted(self.variables, key=str.lower)
        parts += [f"{name}={render(self.variables[name])}" for name in names]
        return ";".join(parts)


class _Stop(Exception):
    pass


def evaluate(formula: str | Program, context: Context) -> Evaluation:
    """Evaluate a formula against ``context``; raises :class:`FormulaError`."""
    program = parse(formula) if isinstance(formula, str) else formula
    variables: dict[str, Value] = {}
    env = _Env(context, variables)
    try:
        for statement in program.statements:
            value = env.eval(statement.expr)
            if statement.target is not None:
                variables[statement.target] = value
    except _Stop:
        pass
    targets = {name: variables.pop(alias) for alias, name in TARGETS.items() if alias in variables and alias != name}
    for name in TARGETS.values():
        if name in variables:
            targets[name] = variables.pop(name)  # the full name wins over its alias
    dedicated = _target(targets.get("$TargetDedicatedNodes", float(context.target_dedicated)), "$TargetDedicatedNodes")
    low = _target(targets.get("$TargetLowPriorityNodes", float(context.target_low_priority)), "$TargetLowPriorityNodes")
    option = targets.get("$NodeDeallocationOption", "requeue")
    if not isinstance(option, str) or option.lower() not in DEALLOCATION_OPTIONS:
        raise FormulaError(
            f"$NodeDeallocationOption must be one of {', '.join(DEALLOCATION_OPTIONS)}", kind="evaluation"
        )
    return Evaluation(dedicated, low, option.lower(), variables)


def _target(value: Value, name: str) -> int:
    if not isinstance(value, float) or math.isnan(value) or math.isinf(value):
        raise FormulaError(f"{name} must be a number, not {render(value)}", kind="evaluation")
    if value < 0:
        raise FormulaError(f"{name} must not be negative ({_number(value)})", kind="evaluation")
    return math.floor(value + 0.5)


def _bool(value: float) -> float:
    return 1.0 if value else 0.0


class _Env:
    def __init__(self, context: Context, variables: dict[str, Value]) -> None:
        self.context = context
        self.variables = variables

    def fail(self, node: Node, message: str, kind: str = "evaluation") -> FormulaError:
        return FormulaError(message, node.line, node.column, kind=kind)

    def eval(self, node: Node) -> Value:
        kind = node.kind
        if kind == "num":
            return float(node.text)
        if kind == "str":
            return node.text
        if kind == "var":
            return self.variable(node)
        if kind == "ternary":
            cond = self.number(node.children[0])
            return self.eval(node.children[1] if cond else node.children[2])
        if kind == "unary":
            value = self.eval(node.children[0])
            if node.text == "!":
                return _bool(not self.as_number(node, value))
            if isinstance(value, Interval):
                return Interval(-value.seconds)
            if isinstance(value, tuple):
                return tuple(-v for v in value)
            return -self.as_number(node, value)
        if kind == "binary":
            return self.binary(node)
        if kind == "call":
            return self.call(node)
        if kind == "method":
            return self.method(node)
        if kind == "member":
            target = self.eval(node.children[0])
            if not isinstance(target, Timestamp):
                raise self.fail(node, f"'{node.text}' is a member of timestamps only")
            try:
                return target.member(node.text)
            except KeyError:
                raise self.fail(node, f"A timestamp has no member '{node.text}'") from None
        raise self.fail(node, f"Unexpected '{node.text}'")

    def variable(self, node: Node) -> Value:
        name = node.text
        if name in self.variables:
            return self.variables[name]
        if name in TARGETS and TARGETS[name] in self.variables:
            return self.variables[TARGETS[name]]
        ctx = self.context
        plain: dict[str, Value] = {
            "$CurrentDedicatedNodes": float(ctx.current_dedicated),
            "$CurrentLowPriorityNodes": float(ctx.current_low_priority),
            "$TaskSlotsPerNode": float(ctx.task_slots_per_node),
            "$UsableNodeCount": float(ctx.usable_nodes),
            "$TargetDedicatedNodes": float(ctx.target_dedicated),
            "$TargetDedicated": float(ctx.target_dedicated),
            "$TargetLowPriorityNodes": float(ctx.target_low_priority),
            "$TargetLowPriority": float(ctx.target_low_priority),
            "$NodeDeallocationOption": "requeue",
        }
        if name in plain:
            return plain[name]
        if name in METRICS:
            return Metric(name)
        if name in INTERVALS:
            return Interval(INTERVALS[name])
        if name.lower() in DEALLOCATION_OPTIONS:
            return name.lower()
        raise self.fail(node, f"Undefined variable {name}")

    def as_number(self, node: Node, value: Value) -> float:
        if isinstance(value, (float, int)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, tuple) and len(value) == 1:
            return value[0]
        if isinstance(value, Metric):
            raise self.fail(node, f"{value.name} is a sample set: read it with GetSample()")
        raise self.fail(node, f"Expected a number but found {render(value)}")

    def number(self, node: Node) -> float:
        return self.as_number(node, self.eval(node))

    def binary(self, node: Node) -> Value:
        op = node.text
        if op in ("&&", "||"):
            left = self.number(node.children[0])
            if op == "&&" and not left:
                return 0.0
            if op == "||" and left:
                return 1.0
            return _bool(self.number(node.children[1]))
        a, b = self.eval(node.children[0]), self.eval(node.children[1])
        if op in ("<", "<=", "==", "!=", ">=", ">"):
            return self.compare(node, op, a, b)
        if isinstance(a, Timestamp) or isinstance(b, Timestamp):
            return self.time_arithmetic(node, op, a, b)
        if isinstance(a, Interval) or isinstance(b, Interval):
            return self.interval_arithmetic(node, op, a, b)
        if isinstance(a, tuple) or isinstance(b, tuple):
            va = a if isinstance(a, tuple) else None
            vb = b if isinstance(b, tuple) else None
            if va is not None and vb is not None:
                if len(va) != len(vb):
                    raise self.fail(node, f"Vectors of different lengths ({len(va)} and {len(vb)})")
                return tuple(self.arith(node, op, x, y) for x, y in zip(va, vb, strict=True))
            if va is not None:
                y = self.as_number(node, b)
                return tuple(self.arith(node, op, x, y) for x in va)
            x = self.as_number(node, a)
            return tuple(self.arith(node, op, x, y) for y in vb or ())
        return self.arith(node, op, self.as_number(node, a), self.as_number(node, b))

    def arith(self, node: Node, op: str, x: float, y: float) -> float:
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if y == 0:
            raise self.fail(node, "Division by zero")
        return x / y

    def compare(self, node: Node, op: str, a: Value, b: Value) -> float:
        left: object
        right: object
        if isinstance(a, str) and isinstance(b, str):
            left, right = a, b
        elif isinstance(a, Timestamp) and isinstance(b, Timestamp):
            left, right = a.when, b.when
        elif isinstance(a, Interval) and isinstance(b, Interval):
            left, right = a.seconds, b.seconds
        else:
            left, right = self.as_number(node, a), self.as_number(node, b)
        result = {
            "<": left < right, "<=": left <= right, "==": left == right,  # type: ignore[operator]
            "!=": left != right, ">=": left >= right, ">": left > right,  # type: ignore[operator]
        }[op]
        return _bool(result)

    def time_arithmetic(self, node: Node, op: str, a: Value, b: Value) -> Value:
        if isinstance(a, Timestamp) and isinstance(b, Interval) and op in "+-":
            delta = timedelta(seconds=b.seconds)
            return Timestamp(a.when + delta if op == "+" else a.when - delta)
        if isinstance(a, Interval) and isinstance(b, Timestamp) and op == "+":
            return Timestamp(b.when + timedelta(seconds=a.seconds))
        if isinstance(a, Timestamp) and isinstance(b, Timestamp) and op == "-":
            return Interval((a.when - b.when).total_seconds())
        raise self.fail(node, f"Operator '{op}' does not apply to {render(a)} and {render(b)}")

    def interval_arithmetic(self, node: Node, op: str, a: Value, b: Value) -> Value:
        if isinstance(a, Interval) and isinstance(b, Interval) and op in "+-":
            return Interval(a.seconds + b.seconds if op == "+" else a.seconds - b.seconds)
        if isinstance(a, Interval) and op in "*/":
            return Interval(self.arith(node, op, a.seconds, self.as_number(node, b)))
        if isinstance(b, Interval) and op == "*":
            return Interval(self.as_number(node, a) * b.seconds)
        raise self.fail(node, f"Operator '{op}' does not apply to {render(a)} and {render(b)}")

    def flatten(self, node: Node, values: Sequence[Value]) -> list[float]:
        out: list[float] = []
        for value in values:
            if isinstance(value, tuple):
                out.extend(value)
            else:
                out.append(self.as_number(node, value))
        return out

    def call(self, node: Node) -> Value:
        name = node.text
        args = [self.eval(child) for child in node.children]
        if name == "stop":
            raise _Stop
        if name == "rand":
            return self.context.rng.random()
        if name == "time":
            if not args:
                return Timestamp(self.context.now)
            if not isinstance(args[0], str):
                raise self.fail(node, "time() takes a date and time string")
            return Timestamp(self.parse_time(node, args[0]))
        if name == "percentile":
            if len(args) != 2:
                raise self.fail(node, "percentile(v, p) takes a vector and a percentage")
            vec = sorted(self.flatten(node, [args[0]]))
            if not vec:
                raise self.fail(node, "percentile() of an empty vector")
            p = self.as_number(node, args[1])
            return vec[min(len(vec) - 1, max(0, math.ceil(p / 100 * len(vec)) - 1))]
        if name == "val":
            vec = self.flatten(node, [args[0]]) if args else []
            index = int(self.as_number(node, args[1])) if len(args) > 1 else -1
            if not 0 <= index < len(vec):
                raise self.fail(node, f"val(): index {index} is outside the vector of {len(vec)} values")
            return vec[index]
        values = self.flatten(node, args)
        if name in ("lg", "ln", "log"):
            fn = {"lg": math.log2, "ln": math.log, "log": math.log10}[name]
            try:
                if len(args) == 1 and isinstance(args[0], float):
                    return fn(args[0])
                return tuple(fn(v) for v in values)
            except ValueError:
                raise self.fail(node, f"{name}() of a value that is not positive") from None
        if name == "len":
            return float(len(values))
        if name == "sum":
            return float(sum(values))
        if not values:
            raise self.fail(node, f"{name}() of an empty vector")
        if name == "avg":
            return sum(values) / len(values)
        if name == "max":
            return max(values)
        if name == "min":
            return min(values)
        if name == "range":
            return max(values) - min(values)
        if name == "norm":
            return math.sqrt(sum(v * v for v in values))
        if name == "std":
            if len(values) < 2:
                return 0.0
            mean = sum(values) / len(values)
            return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        raise self.fail(node, f"Unknown function '{name}'")

    def parse_time(self, node: Node, text: str) -> datetime:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError):
                raise self.fail(node, f"time(): '{text}' is neither a W3C-DTF nor an RFC 1123 time") from None
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)

    def method(self, node: Node) -> Value:
        target = self.eval(node.children[0])
        if not isinstance(target, Metric):
            raise self.fail(node, f"{node.text}() applies to sampled system variables such as $PendingTasks")
        args = [self.eval(child) for child in node.children[1:]]
        history = [(when, float(v)) for when, v in self.context.history(target.name)]
        name = node.text
        if name == "Count":
            return float(len(history))
        if name == "GetSamplePeriod":
            return Interval(SAMPLE_PERIOD)
        if name == "HistoryBeginTime":
            return Timestamp(history[0][0] if history else self.context.now)
        if name in ("GetSample", "GetSamplePercent"):
            if name == "GetSample" and len(args) == 1 and isinstance(args[0], float):
                count = int(args[0])
                return tuple(v for _, v in history[-count:]) if count > 0 else ()
            window, required = self.window(node, args, percent_allowed=name == "GetSample")
            start, end = window
            values = tuple(v for when, v in history if start <= when <= end)
            possible = max(1.0, (end - start).total_seconds() / SAMPLE_PERIOD)
            percent = min(100.0, 100.0 * len(values) / possible)
            if name == "GetSamplePercent":
                return percent
            if required is not None and percent < required:
                raise self.fail(
                    node,
                    f"Insufficient data from data set: {target.name} wanted {_number(required)}%, "
                    f"received {int(percent)}%",
                    kind="samples",
                )
            return values
        raise self.fail(node, f"Unknown method '{name}'")

    def window(
        self, node: Node, args: list[Value], *, percent_allowed: bool
    ) -> tuple[tuple[datetime, datetime], float | None]:
        now = self.context.now

        def point(value: Value) -> datetime:
            if isinstance(value, Interval):
                return now - timedelta(seconds=value.seconds)
            if isinstance(value, Timestamp):
                return value.when
            raise self.fail(node, f"Expected a time interval or a timestamp but found {render(value)}")

        if not args:
            raise self.fail(node, f"{node.text}() needs a time interval")
        required: float | None = None
        times = [a for a in args if isinstance(a, (Interval, Timestamp))]
        rest = [a for a in args if not isinstance(a, (Interval, Timestamp))]
        if rest:
            if not percent_allowed or len(rest) > 1:
                raise self.fail(node, f"{node.text}(): unexpected argument {render(rest[0])}")
            required = self.as_number(node, rest[0])
        if not 1 <= len(times) <= 2:
            raise self.fail(node, f"{node.text}() takes one or two times")
        points = sorted(point(t) for t in times)
        return (points[0], points[1] if len(points) == 2 else now), required


FUNCTIONS = frozenset(
    {"avg", "len", "lg", "ln", "log", "max", "min", "norm", "percentile", "rand", "range", "std", "stop", "sum",
     "time", "val"}
)
