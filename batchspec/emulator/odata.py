"""OData query options of Batch list operations: ``$filter``, ``$select``, ``maxresults`` and paging.

``$filter`` supports what Batch clients send: comparisons (``eq ne gt ge lt le``) on property paths
such as ``state`` or ``executionInfo/result``, ``and``/``or``/``not``, parentheses,
``startswith(prop,'x')``/``endswith``, and string, number, boolean, ``null`` and ``datetime'...'``
literals. Paging uses an opaque ``$skiptoken`` naming the last id served, so a page boundary
survives concurrent inserts.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from batchspec.emulator.errors import ApiError, error
from batchspec.emulator.wire import parse_iso

#: Default and maximum page size of a list.
MAX_RESULTS = 1000

#: Properties whose string values are enums: compared case-insensitively, as the service does.
ENUM_PATHS = frozenset(
    {
        "state",
        "previousState",
        "allocationState",
        "schedulingState",
        "executionInfo/result",
        "executionInfo/failureInfo/category",
        "onAllTasksComplete",
        "onTaskFailure",
        "startTaskInfo/state",
        "startTaskInfo/result",
    }
)


def bad_query(name: str, value: str, reason: str) -> ApiError:
    return error(
        400,
        "InvalidQueryParameterValue",
        ("QueryParameterName", name),
        ("QueryParameterValue", value),
        ("Reason", reason),
    )


# --------------------------------------------------------------------------------------------
# $filter

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<dt>datetime'[^']*')|(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)|(?P<word>[A-Za-z_$][A-Za-z0-9_$./]*))",
    re.IGNORECASE,
)
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})

Predicate = Callable[[Mapping[str, Any]], bool]
Operand = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


@dataclass(frozen=True)
class _DateTime:
    ticks: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"unexpected text at position {pos}")
        kind = match.lastgroup or ""
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    return out


def _lookup(item: Mapping[str, Any], path: str) -> Any:
    value: Any = item
    for part in path.split("/"):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _compare(op: str, left: Any, right: Any, enum: bool) -> bool:
    if isinstance(right, _DateTime) or isinstance(left, _DateTime):
        try:
            left = left.ticks if isinstance(left, _DateTime) else parse_iso(str(left)) if left else None
            right = right.ticks if isinstance(right, _DateTime) else parse_iso(str(right)) if right else None
        except ValueError:
            return False
    elif enum and isinstance(left, str) and isinstance(right, str):
        left, right = left.lower(), right.lower()
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        if op == "gt":
            return bool(left > right)
        if op == "ge":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None, word: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end of expression")
        if kind and tok.kind != kind:
            raise ValueError(f"expected {kind}, found {tok.text!r}")
        if word and tok.text.lower() != word:
            raise ValueError(f"expected {word!r}, found {tok.text!r}")
        self.pos += 1
        return tok

    def is_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "word" and tok.text.lower() in words

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek().text!r}")  # type: ignore[union-attr]
        return pred

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda item: any(p(item) for p in parts)

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while self.is_word("and"):
            self.take()
            parts.append(self.not_expr())
        if len(parts) == 1:
            return parts[0]
        return lambda item: all(p(item) for p in parts)

    def not_expr(self) -> Predicate:
        if self.is_word("not"):
            self.take()
            inner = self.not_expr()
            return lambda item: not inner(item)
        return self.comparison()

    def comparison(self) -> Predicate:
        tok = self.peek()
        if tok is not None and tok.kind == "lp":
            self.take()
            inner = self.or_expr()
            self.take("rp")
            return inner
        if tok is not None and tok.kind == "word" and tok.text.lower() in ("startswith", "endswith"):
            return self.function()
        left, left_path = self.operand()
        if not self.is_word(*_COMPARISONS):
            raise ValueError("expected a comparison operator (eq, ne, gt, ge, lt, le)")
        op = self.take().text.lower()
        right, right_path = self.operand()
        enum = (left_path or right_path or "") in ENUM_PATHS
        return lambda item: _compare(op, left(item), right(item), enum)

    def function(self) -> Predicate:
        name = self.take().text.lower()
        self.take("lp")
        target, _ = self.operand()
        self.take("comma")
        prefix, _ = self.operand()
        self.take("rp")

        def check(item: Mapping[str, Any]) -> bool:
            value, fix = target(item), prefix(item)
            if not isinstance(value, str) or not isinstance(fix, str):
                return False
            return value.startswith(fix) if name == "startswith" else value.endswith(fix)

        return check

    def operand(self) -> tuple[Operand, str | None]:
        tok = self.take()
        if tok.kind == "str":
            text = tok.text[1:-1].replace("''", "'")
            return (lambda _item: text), None
        if tok.kind == "dt":
            stamp = _DateTime(parse_iso(tok.text[len("datetime'") : -1]))
            return (lambda _item: stamp), None
        if tok.kind == "num":
            number = float(tok.text) if "." in tok.text else int(tok.text)
            return (lambda _item: number), None
        if tok.kind == "word":
            low = tok.text.lower()
            if low in ("true", "false"):
                flag = low == "true"
                return (lambda _item: flag), None
            if low == "null":
                return (lambda _item: None), None
            path = tok.text
            return (lambda item: _lookup(item, path)), path
        raise ValueError(f"unexpected {tok.text!r}")


def compile_filter(text: str | None) -> Predicate | None:
    """A predicate for an OData ``$filter``; None when there is no filter."""
    if not text or not text.strip():
        return None
    try:
        return _Parser(_tokenize(text)).parse()
    except ValueError as exc:
        raise bad_query("$filter", text, f"The $filter clause is not valid: {exc}.") from None


# --------------------------------------------------------------------------------------------
# $select


def parse_select(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    return names or None


def project(body: Mapping[str, Any], select: Sequence[str] | None) -> dict[str, Any]:
    """Only the selected properties (``a`` or ``a/b`` paths), in the body's own order."""
    if not select:
        return dict(body)
    wanted: dict[str, list[str] | None] = {}
    for name in select:
        head, _, rest = name.partition("/")
        if rest:
            current = wanted.get(head, [])
            if current is not None:
                current.append(rest)
                wanted[head] = current
        else:
            wanted[head] = None
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key not in wanted:
            continue
        sub = wanted[key]
        out[key] = project(value, sub) if sub is not None and isinstance(value, Mapping) else value
    return out


# --------------------------------------------------------------------------------------------
# Paging


def page_size(text: str | None) -> int:
    if text is None or text == "":
        return MAX_RESULTS
    try:
        size = int(text)
    except ValueError:
        raise bad_query("maxresults", text, "The value must be an integer.") from None
    if size < 1:
        raise bad_query("maxresults", text, "The value must be at least 1.")
    return min(size, MAX_RESULTS)


def encode_token(last_id: str) -> str:
    raw = json.dumps({"after": last_id}).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        after = json.loads(raw)["after"]
    except (ValueError, KeyError, TypeError):
        raise bad_query("$skiptoken", token, "The continuation token is not valid.") from None
    if not isinstance(after, str):
        raise bad_query("$skiptoken", token, "The continuation token is not valid.")
    return after


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_link: str | None


def paginate(
    items: Iterable[tuple[str, Mapping[str, Any]]],
    query: Mapping[str, str],
    list_url: str,
    render: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> Page:
    """One page of ``items`` (``(id, body)`` sorted by id) under ``$filter``/``$select``/paging.

    ``odata.nextLink`` repeats the query (api-version, maxresults, $filter, $select) plus the
    ``$skiptoken``, as the service does.
    """
    pred = compile_filter(query.get("$filter"))
    select = parse_select(query.get("$select"))
    size = page_size(query.get("maxresults"))
    after = decode_token(query.get("$skiptoken"))
    out: list[dict[str, Any]] = []
    last: str | None = None
    more = False
    for item_id, body in items:
        if after is not None and item_id <= after:
            continue
        if pred is not None and not pred(body):
            continue
        if len(out) == size:
            more = True
            break
        shown = render(body) if render else dict(body)
        out.append(project(shown, select))
        last = item_id
    next_link = None
    if more and last is not None:
        params = [("api-version", query.get("api-version", ""))]
        params += [(k, query[k]) for k in ("maxresults", "$filter", "$select", "$expand") if query.get(k)]
        params.append(("$skiptoken", encode_token(last)))
        next_link = list_url + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    return Page(out, next_link)
