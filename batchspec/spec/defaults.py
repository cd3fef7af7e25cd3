"""The schema's defaults, filled into a spec document: the one place defaults are written down.

The model (:mod:`batchspec.spec.model`) has no defaults of its own; :func:`build_spec` reads
every value from the document after :func:`fill_defaults`, so a default changed in the schema
changes what runs, what ``batchspec validate`` documents and what README's reference says.
Defaults that depend on other values (``outputs.container`` from ``name``, a parameter's type
from its default) are computed by the builder and described in the schema's text.
"""

from __future__ import annotations

import copy
from typing import Any


def fill_defaults(data: Any, schema: dict[str, Any]) -> Any:
    """A copy of ``data`` with every absent property that has a schema ``default`` filled in,
    at any depth (through ``$ref``, list items and mapping values), and every whole float where
    the schema asks for an integer made an ``int``: JSON Schema counts ``2.0`` as an integer, so
    ``spot: 2.0`` is valid, and the model then holds the integer it means."""
    return _fill(copy.deepcopy(data), schema, schema)


def resolve_ref(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` (to a definition in ``root``) followed."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    # Keywords beside $ref (a description, a default) take precedence over the target's.
    return {**resolve_ref(target, root), **{k: v for k, v in node.items() if k != "$ref"}}


def _fill(value: Any, node: dict[str, Any], root: dict[str, Any]) -> Any:
    node = resolve_ref(node, root)
    if isinstance(value, float) and value.is_integer() and _integer_only(node.get("type")):
        return int(value)
    if isinstance(value, dict):
        properties: dict[str, Any] = node.get("properties", {})
        for key, raw in properties.items():
            sub = resolve_ref(raw, root)
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _fill(value[key], sub, root)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in properties:
                    value[key] = _fill(value[key], extra, root)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_fill(item, node["items"], root) for item in value]
    return value


def _integer_only(types: Any) -> bool:
    """Does a schema ``type`` admit integers and no other numbers?"""
    kinds = {types} if isinstance(types, str) else set(types) if isinstance(types, list) else set()
    return "integer" in kinds and "number" not in kinds


def schema_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Every ``default`` in the schema by dotted path (``pool.nodes.spot``; list items as
    ``stages[]``, mapping values as ``*``), for tests and the reference."""
    found: dict[str, Any] = {}

    def walk(node: dict[str, Any], path: str) -> None:  # the schema has no recursive $ref
        node = resolve_ref(node, schema)
        if "default" in node and path:
            found[path] = node["default"]
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}" if path else key)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    return found
