"""Read a spec file (YAML or JSON) into plain data plus the line and column of every node.

Everything that can go wrong with the *file* (missing, unreadable, too large, binary, not UTF-8,
empty, malformed, duplicate keys, alias bombs) becomes a :class:`~batchspec.errors.Diagnostic`,
never an exception from the YAML library.
"""

from __future__ import annotations

import datetime as _dt
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.main import CParser  # type: ignore[attr-defined]
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver

from ..errors import Diagnostic

#: Specs are small; anything bigger is a mistake (a video passed as the spec, say).
MAX_SPEC_BYTES = 1024 * 1024
#: YAML nodes, also after expanding aliases (against "billion laughs" documents). Counted while
#: parsing, which stops at the limit: a spec of the largest size is refused in about a second.
MAX_NODES = 100_000
MAX_DEPTH = 64

JsonPath = tuple[str | int, ...]

#: libyaml's parser is there (ruamel.yaml.clib): specs are read with it.
LIBYAML = CParser is not None


def format_path(path: JsonPath) -> str:
    """``("pool", "nodes", "spot")`` -> ``$.pool.nodes.spot``; list indexes as ``[0]``."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


@dataclass
class Document:
    """A parsed spec file: plain ``data`` and 1-based positions of values and mapping keys."""

    file: str
    data: Any
    values: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    # Lines a literal block scalar (|) starts below its indicator, by path.
    block_offset: dict[JsonPath, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the source text, for columns inside values

    def position(self, path: JsonPath, *, key: bool = False) -> tuple[int, int]:
        """Line and column of ``path`` (of its key when ``key``); the nearest ancestor if unknown."""
        probe = path
        while probe:
            if key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return (1, 1)

    def diagnostic(self, path: JsonPath, message: str, *, key: bool = False, severity: str = "error") -> Diagnostic:
        line, col = self.position(path, key=key)
        return Diagnostic(self.file, line, col, format_path(path), message, severity)

    def template_line(self, path: JsonPath, template_line: int) -> int:
        """The file line of line ``template_line`` (1-based) of the template at ``path``."""
        line, _ = self.position(path)
        return line + self.block_offset.get(path, 0) + template_line - 1

    def template_diagnostic(self, path: JsonPath, template_line: int, token: str, message: str) -> Diagnostic:
        """A problem inside the template at ``path``: point at ``token`` on its line when found.

        A literal block scalar (``|``) keeps the template's lines, so ``template_line`` names the
        file line. A plain, quoted or folded (``>``) scalar joins its lines, so the token is
        searched from the value's start to the next node instead.
        """
        value_line, value_col = self.position(path)
        line = self.template_line(path, template_line)
        if path in self.block_offset:
            candidates = [line]
        else:
            end = min((pos[0] for pos in (*self.keys.values(), *self.values.values())
                       if pos > (value_line, value_col)), default=len(self.lines))
            candidates = list(range(value_line, max(end, value_line) + 1))
        if token:
            for candidate in candidates:
                text = self.lines[candidate - 1] if 0 < candidate <= len(self.lines) else ""
                found = _find_token(text, token, value_col - 1 if candidate == value_line else 0)
                if found >= 0:
                    return Diagnostic(self.file, candidate, found + 1, format_path(path), message)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        # Not found (a syntax error, say): the start of the template's text on that line.
        column = value_col if line == value_line else len(text) - len(text.lstrip()) + 1
        return Diagnostic(self.file, line, column, format_path(path), message)


_TAG = re.compile(r"<<.*?(?:>>|$)|<%.*?(?:%>|$)", re.DOTALL)


def _find_token(text: str, token: str, start: int) -> int:
    """Index of ``token`` as a whole name in ``text`` from ``start``, preferring template tags."""
    word = re.compile(rf"(?<![\w]){re.escape(token)}(?![\w])" if token[:1].isidentifier() else re.escape(token))
    for tag in _TAG.finditer(text, start):
        if match := word.search(text, tag.start(), tag.end()):
            return match.start()
    match = word.search(text, start)
    return match.start() if match else -1


class _TooBig(Exception):
    pass


class _Resolver12(VersionedResolver):
    """YAML 1.2's resolver with its table of implicit tags looked up once. libyaml's parser
    asks the resolver about every scalar, and ruamel finds the YAML version anew each time
    (through exceptions): a fifth of reading a spec. The C path reads no ``%YAML`` directive
    (those documents go to the pure parser), so its version is always 1.2."""

    _table: Any = None

    @property
    def versioned_resolver(self) -> Any:
        if _Resolver12._table is None:
            _Resolver12._table = super().versioned_resolver
        return _Resolver12._table


def _yaml(*, pure: bool = True) -> YAML:
    # The "safe" pipeline: no comment bookkeeping (the round-trip loader's scanner costs about
    # twice as much). Duplicate keys and merge keys are handled while converting the nodes.
    # ``pure=False`` composes with libyaml's parser (ruamel.yaml.clib, when installed): a
    # seventh of the time, the same nodes, tags and positions (tests compare both).
    yaml = YAML(typ="safe", pure=pure)
    if pure:
        yaml.Composer = _CountingComposer
    else:
        yaml.Resolver = _Resolver12
    return yaml


class _CountingComposer(Composer):
    """Stops parsing at :data:`MAX_NODES` nodes, instead of parsing all of a huge document first."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.count = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(f"too many YAML nodes (over {MAX_NODES:,})")
        return super().compose_node(parent, index)


def _compose(text: str) -> tuple[Node | None, Any]:
    """The node tree of ``text`` and the constructor for its scalars. The C parser's when it
    reads the text alike; anything it rejects is read again by the pure parser, whose errors
    (and positions) are the ones reported, and so are the two things the parsers tell apart: a
    ``%YAML`` directive (the pure parser honours 1.1) and an empty value (placed at the next
    token by the pure parser, at the end of its key by libyaml). libyaml composes a whole
    document before it can be counted, so only a text too short to hold :data:`MAX_NODES`
    nodes (one per character at most) is given to it; longer ones are counted as they are read."""
    if LIBYAML and len(text) <= MAX_NODES // 2 and not _DIRECTIVE.search(text):
        fast = _yaml(pure=False)
        try:
            root = fast.compose(text)
        except Exception:  # read again below, for the pure parser's message and position
            root = None
        if root is not None and not _has_empty_value(root):
            return root, fast.constructor
    yaml = _yaml()
    return yaml.compose(text), yaml.constructor


_DIRECTIVE = re.compile(r"^%", re.MULTILINE)


def _has_empty_value(root: Node) -> bool:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            if node.value == "" and not node.style:
                return True
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            stack.extend(item for pair in node.value for item in pair)
    return False


def read_document(path: Path, display: str | None = None) -> Document | Diagnostic:
    """Read and parse ``path``; a :class:`Diagnostic` says why the file is not a spec at all."""
    name = display or str(path)

    def fail(message: str, line: int = 0, column: int = 0) -> Diagnostic:
        return Diagnostic(name, line, column, "$", message)

    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            return fail("is a directory, not a spec file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
            return fail("not a regular file")
        too_big = f"; a spec file may be at most {MAX_SPEC_BYTES // 1024} KiB"
        if info.st_size > MAX_SPEC_BYTES:
            return fail(f"file is {info.st_size / 1e6:.1f} MB{too_big}")
        with path.open("rb") as stream:
            raw = stream.read(MAX_SPEC_BYTES + 1)  # the file may have grown since stat
        if len(raw) > MAX_SPEC_BYTES:
            return fail(f"file is larger than {MAX_SPEC_BYTES // 1024} KiB{too_big}")
    except FileNotFoundError:
        return fail("no such file")
    except OSError as exc:
        return fail(f"cannot read the file: {exc.strerror or exc}")
    return parse_document(raw, name)


def parse_document(raw: bytes, name: str) -> Document | Diagnostic:
    def fail(message: str, line: int = 0, column: int = 0) -> Diagnostic:
        return Diagnostic(name, line, column, "$", message)

    if b"\x00" in raw:
        return fail("not a text file (it contains binary data)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return fail(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})", line, 1)
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        return fail("empty file: a spec needs at least batchspec, name, pool, inputs and task")
    if (depth := _flow_depth(text)) > MAX_DEPTH:
        # Checked before parsing: the YAML scanner slows down sharply with flow nesting.
        return fail(f"document nests deeper than {MAX_DEPTH} levels ({depth} levels of [ and {{)")
    try:
        root, constructor = _compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return fail(f"invalid YAML/JSON: {problem}", line, col)
    except (YAMLError, ValueError, TypeError) as exc:
        return fail(f"invalid YAML/JSON: {exc}")
    except RecursionError:
        return fail(f"document nests deeper than {MAX_DEPTH} levels")
    except _TooBig as exc:
        return fail(f"{exc}; a spec may have at most {MAX_NODES:,}")
    if not isinstance(root, MappingNode):
        kind = "list" if isinstance(root, SequenceNode) else "empty" if root is None else "scalar"
        if isinstance(root, ScalarNode) and root.tag == _NULL_TAG:
            kind = "empty"
        article = "an" if kind == "empty" else "a"
        return fail(f"a spec must be a mapping of keys to values, not {article} {kind} value", 1, 1)
    doc = Document(name, None, lines=text.splitlines())
    try:
        doc.data = _Converter(doc, constructor).value(root, (), 0)
    except _TooBig as exc:
        return fail(str(exc))
    except _Invalid as exc:
        return Diagnostic(name, exc.line, exc.column, format_path(exc.path), exc.message)
    doc.values.setdefault((), (1, 1))
    return doc


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` (an upper bound: brackets in strings count too)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    depth = deepest = 0
    for bracket in _BRACKETS.findall(text):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


_BRACKETS = re.compile(r"[\[\]{}]")


class _Invalid(Exception):
    """A structural problem found while converting (a duplicate key, a bad merge), with its place."""

    def __init__(self, path: JsonPath, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.path, self.line, self.column, self.message = path, line, column, message


_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Converter:
    """YAML nodes to plain Python values, recording positions; bounded work.

    Works on the composed node graph (not ruamel's round-trip objects): the parse is cheaper and
    every node carries its position. An alias is the same node reached again, so expanding
    aliases counts towards :data:`MAX_NODES`.
    """

    def __init__(self, doc: Document, constructor: Any) -> None:
        self.doc = doc
        self.constructor = constructor
        self.count = 0

    def value(self, node: Node, path: JsonPath, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(f"too many YAML nodes (over {MAX_NODES:,} after expanding aliases)")
        if depth > MAX_DEPTH:
            raise _TooBig(f"document nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                child = (*path, i)
                self.doc.values[child] = _position(item)
                items.append(self.value(item, child, depth + 1))
            return items
        return self.scalar(node)

    def mapping(self, node: MappingNode, path: JsonPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merges: list[tuple[Node, Node]] = []  # (the << key, a mapping to merge)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *base` (merged after the explicit keys)
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                merges.extend((key_node, source) for source in sources)
                continue
            key = self.key(key_node, path, depth)
            child = (*path, key)
            if key in out:
                line, column = _position(key_node)
                first = node.start_mark.line + 1
                raise _Invalid(child, line, column,
                                 f"duplicate key '{key}' (mapping starts on line {first}): each key may appear once")
            self.entry(out, child, key_node, value_node, depth)
        for merge_key, merged in merges:
            if not isinstance(merged, MappingNode):
                line, column = _position(merge_key)
                raise _Invalid(path, line, column, "a merge key (<<) must refer to a mapping")
            for key_node, value_node in merged.value:
                key = self.key(key_node, path, depth)
                if key not in out:
                    self.entry(out, (*path, key), key_node, value_node, depth)
        return out

    def entry(self, out: dict[str, Any], child: JsonPath, key_node: Node, value_node: Node, depth: int) -> None:
        self.doc.keys[child] = _position(key_node)
        self.doc.values[child] = _position(value_node)
        if isinstance(value_node, ScalarNode) and value_node.style == "|":  # literal: lines kept
            self.doc.block_offset[child] = 1
        out[str(child[-1])] = self.value(value_node, child, depth + 1)

    def key(self, node: Node, path: JsonPath, depth: int) -> str:
        key = self.value(node, path, depth + 1)
        return key if isinstance(key, str) else _scalar_text(key)

    def scalar(self, node: Node) -> Any:
        try:
            value = self.constructor.construct_object(node)
        except (YAMLError, ValueError, TypeError):  # e.g. a custom tag: keep the text
            return str(node.value)
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return _scalar_text(value)


def _position(node: Node) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1)


def _scalar_text(value: Any) -> str:
    if isinstance(value, _dt.date | _dt.datetime):
        return value.isoformat()
    return str(value)
