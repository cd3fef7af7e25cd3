"""The spec reference in README.md, generated from the JSON Schema so the two cannot drift.

``python -m batchspec.spec.reference README.md`` rewrites the block between the markers; a test
fails when the README's block differs from what the schema gives.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    if "array" in kinds and isinstance(node.get("items"), dict) and node["items"].get("type"):
        inner = node["items"]["type"]
        inner_text = "/".join(inner) if isinstance(inner, list) else inner
        kinds = [f"list of {inner_text}" if k == "array" else k for k in kinds]
    if kinds == ["object"] and isinstance(node.get("additionalProperties"), dict):
        return "mapping"
    return " or ".join(k for k in kinds if k)


def _escape(text: str) -> str:
    """Markdown table cell text: pipes escaped, angle brackets shown rather than read as HTML."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _rows(node: dict[str, Any], path: str, required: set[str]) -> Iterator[str]:
    for name, child in node.get("properties", {}).items():
        if name == "$schema":
            continue
        key = f"{path}.{name}" if path else name
        default = f" (default: `{json.dumps(child['default'])}`)" if "default" in child else ""
        flag = " **required**" if name in required else ""
        text = _escape(child.get("description", "")) + default
        yield f"| `{key}` | {_type(child)}{flag} | {text} |"
        if child.get("type") == "object" and "properties" in child:
            yield from _rows(child, key, set(child.get("required", [])))


def markdown() -> str:
    """The reference table, one row per property."""
    root = schema()
    lines = ["| key | type | meaning |", "|---|---|---|"]
    lines.extend(_rows(root, "", set(root.get("required", []))))
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
