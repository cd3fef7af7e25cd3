"""The spec reference in README.md, generated from the JSON Schema so the two cannot drift.

``python -m batchspec.spec.reference README.md`` rewrites the block between the markers; a test
fails when the README's block differs from what the schema gives.

A definition used in several places (the task body of ``task``, ``merge`` and each stage; the
file list of ``files``, ``task.files`` and ``pool.start_task.files``) gets its rows once, at its
shallowest place (``task``, ``files``); the other places say whose keys they share.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .defaults import resolve_ref
from .validate import schema

START = "<!-- spec-reference:start (generated from the schema: python -m batchspec.spec.reference README.md) -->"
END = "<!-- spec-reference:end -->"


def _type(node: dict[str, Any]) -> str:
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return " \\| ".join(json.dumps(v) for v in node["enum"])
    kind = node.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    items = node.get("items")
    if "array" in kinds and isinstance(items, dict):
        inner = items.get("type", "")
        inner_text = "/".join(inner) if isinstance(inner, list) else inner
        kinds = [f"list of {inner_text}" if k == "array" else k for k in kinds]
    if kinds == ["object"] and isinstance(node.get("additionalProperties"), dict):
        return "mapping"
    return " or ".join(k for k in kinds if k)


def _escape(text: str) -> str:
    """Markdown table cell text: pipes escaped, angle brackets shown rather than read as HTML."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _row(key: str, node: dict[str, Any], required: bool) -> str:
    default = f" (default: `{json.dumps(node['default'])}`)" if "default" in node else ""
    flag = " **required**" if required else ""
    return f"| `{key}` | {_type(node)}{flag} | {_escape(node.get('description', ''))}{default} |"


def _children(node: dict[str, Any], key: str, walk: _Walk) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """What is inside ``node``: its properties, a list's items, a mapping's values."""
    if isinstance(node.get("properties"), dict):
        yield from _rows(node, key, walk)
    items = node.get("items")
    if isinstance(items, dict):
        items = resolve_ref(items, walk.root)
        if isinstance(items.get("properties"), dict):
            yield from _rows(items, f"{key}[]", walk)
    values = node.get("additionalProperties")
    if isinstance(values, dict) and isinstance(values.get("properties"), dict):
        yield from _rows(values, f"{key}.NAME", walk)


class _Walk:
    """The schema being walked, and where each shared definition's rows go (its home)."""

    def __init__(self, root: dict[str, Any], homes: dict[str, str] | None) -> None:
        self.root = root
        self.homes = homes  # None while finding them: every place is walked
        self.places: dict[str, list[str]] = {}


def _rows(node: dict[str, Any], path: str, walk: _Walk) -> Iterator[tuple[str, dict[str, Any], bool]]:
    required = set(node.get("required", []))
    for name, raw in node.get("properties", {}).items():
        if name == "$schema":
            continue
        key = f"{path}.{name}" if path else name
        child = resolve_ref(raw, walk.root)
        yield key, child, name in required
        ref = raw.get("$ref")
        if isinstance(ref, str):
            walk.places.setdefault(ref, []).append(key)
            if walk.homes is not None and walk.homes.get(ref) != key:
                continue  # listed at its home
            if walk.homes is None and len(walk.places[ref]) > 1:
                continue
        yield from _children(child, key, walk)


def markdown() -> str:
    """The reference table, one row per property."""
    root = schema()
    finding = _Walk(root, None)
    for _ in _rows(root, "", finding):
        pass
    homes = {ref: min(keys, key=lambda k: (k.count("."), k.count("[]"))) for ref, keys in finding.places.items()}
    lines = ["| key | type | meaning |", "|---|---|---|"]
    lines.extend(_row(key, node, required) for key, node, required in _rows(root, "", _Walk(root, homes)))
    return "\n".join(lines)


def block() -> str:
    return f"{START}\n{markdown()}\n{END}"


def update(readme: Path) -> bool:
    """Rewrite the generated block in ``readme``; returns True when it changed."""
    text = readme.read_text()
    start, end = text.index(START), text.index(END) + len(END)
    new = text[:start] + block() + text[end:]
    if new != text:
        readme.write_text(new)
    return new != text


if __name__ == "__main__":
    print("updated" if update(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")) else "up to date")
