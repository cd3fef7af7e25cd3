"""Read a spec file (YAML or JSON) into plain data plus the line and column of every node.

Everything that can go wrong with the *file* (missing, unreadable, too large, binary, not UTF-8,
empty, malformed, duplicate keys, alias bombs) becomes a :class:`~batchspec.errors.Diagnostic`,
never an exception from the YAML library.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from ..errors import Diagnostic

#: Specs are small; anything bigger is a mistake (a video passed as the spec, say).
MAX_SPEC_BYTES = 1024 * 1024
#: Nodes after expanding YAML aliases; guards against "billion laughs" documents.
MAX_NODES = 100_000
MAX_DEPTH = 64

JsonPath = tuple[str | int, ...]


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
    # Lines a block scalar (| or >) starts below its indicator, by path.
    block_offset: dict[JsonPath, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the source text, for columns inside values

    def position(self, path: JsonPath, *, key: bool = False) -> tuple[int, int]:
        """Line and column of ``path`` (of its key when ``key``); the nearest ancestor if unknown."""
        table = self.keys if key else self.values
        probe = path
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return (1, 1)

    def diagnostic(self, path: JsonPath, message: str, *, key: bool = False, line_offset: int = 0) -> Diagnostic:
        line, col = self.position(path, key=key)
        return Diagnostic(self.file, line + line_offset, col, format_path(path), message)

    def template_line(self, path: JsonPath, template_line: int) -> int:
        """The file line of line ``template_line`` (1-based) of the template at ``path``."""
        line, _ = self.position(path)
        return line + self.block_offset.get(path, 0) + template_line - 1

    def template_diagnostic(self, path: JsonPath, template_line: int, token: str, message: str) -> Diagnostic:
        """A problem inside the template at ``path``: point at ``token`` on its line when found."""
        value_line, value_col = self.position(path)
        line = self.template_line(path, template_line)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        start = value_col - 1 if line == value_line else 0
        found = text.find(token, start) if token else -1
        column = found + 1 if found >= 0 else (value_col if line == value_line else 1)
        return Diagnostic(self.file, line, column, format_path(path), message)


class _TooBig(Exception):
    pass


def _yaml() -> YAML:
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    return yaml


def read_document(path: Path, display: str | None = None) -> Document | Diagnostic:
    """Read and parse ``path``; a :class:`Diagnostic` says why the file is not a spec at all."""
    name = display or str(path)

    def fail(message: str, line: int = 0, column: int = 0) -> Diagnostic:
        return Diagnostic(name, line, column, "$", message)

    try:
        size = path.stat().st_size
        if path.is_dir():
            return fail("is a directory, not a spec file")
        if size > MAX_SPEC_BYTES:
            return fail(f"file is {size / 1e6:.1f} MB; a spec file may be at most {MAX_SPEC_BYTES // 1024} KiB")
        raw = path.read_bytes()
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
    try:
        loaded = _yaml().load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        key = _duplicate_key_name(str(exc.problem))
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        first = exc.context_mark.line + 1 if exc.context_mark else None
        where = f" (mapping starts on line {first})" if first else ""
        return fail(f"duplicate key {key}{where}: each key may appear once", line, col)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return fail(f"invalid YAML/JSON: {problem}", line, col)
    except (YAMLError, ValueError, TypeError) as exc:
        return fail(f"invalid YAML/JSON: {exc}")
    except RecursionError:
        return fail(f"document nests deeper than {MAX_DEPTH} levels")
    if not isinstance(loaded, CommentedMap):
        kind = "empty" if loaded is None else type(loaded).__name__.replace("Commented", "").lower()
        return fail(f"a spec must be a mapping of keys to values, not a {kind} value", 1, 1)
    doc = Document(name, None, lines=text.splitlines())
    counter = [0]
    try:
        doc.data = _plain(loaded, (), doc, counter, 0)
    except _TooBig as exc:
        return fail(str(exc))
    doc.values.setdefault((), (1, 1))
    return doc


def _duplicate_key_name(problem: str) -> str:
    # ruamel says: found duplicate key "a" with value "2" (original value: "1")
    start = problem.find('"')
    end = problem.find('"', start + 1)
    return f"'{problem[start + 1 : end]}'" if 0 <= start < end else "(unknown)"


def _plain(node: Any, path: JsonPath, doc: Document, counter: list[int], depth: int) -> Any:
    """Convert ruamel nodes to plain Python values, recording positions; bounded work."""
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise _TooBig(f"too many YAML nodes (over {MAX_NODES:,} after expanding aliases)")
    if depth > MAX_DEPTH:
        raise _TooBig(f"document nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            skey = key if isinstance(key, str) else _scalar_text(key)
            child = (*path, skey)
            try:
                kl, kc = node.lc.key(key)
                vl, vc = node.lc.value(key)
                doc.keys[child] = (kl + 1, kc + 1)
                doc.values[child] = (vl + 1, vc + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            if isinstance(value, LiteralScalarString | FoldedScalarString):
                doc.block_offset[child] = 1
            out[skey] = _plain(value, child, doc, counter, depth + 1)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            child = (*path, i)
            try:
                il, ic = node.lc.item(i)
                doc.values[child] = (il + 1, ic + 1)
            except (KeyError, TypeError, AttributeError, IndexError):
                pass
            items.append(_plain(value, child, doc, counter, depth + 1))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, _dt.date | _dt.datetime):
        return node.isoformat()
    return _scalar_text(node)


def _scalar_text(value: Any) -> str:
    if isinstance(value, _dt.date | _dt.datetime):
        return value.isoformat()
    return str(value)
