"""The JSON Schema: draft 2020-12, closed objects, described properties, examples; shipped in the package."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from batchspec.spec import schema

REPO = Path(__file__).resolve().parents[2]


def objects(node: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema that describes an object, with where it is."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield where, node
        for key, value in node.items():
            if key != "examples":
                yield from objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from objects(value, f"{where}/{i}")


def test_draft_2020_12_with_id() -> None:
    doc = schema()
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"].endswith("batchspec.schema.json")
    Draft202012Validator.check_schema(doc)


def test_every_object_is_closed_and_every_property_described() -> None:
    found = list(objects(schema()))
    assert len(found) > 10
    for where, node in found:
        if "properties" in node:
            assert node.get("additionalProperties") is False, where
            for name, prop in node["properties"].items():
                assert prop.get("description"), f"{where}/properties/{name} has no description"
        else:  # a map of names (params, env, matrix): its values are described
            assert isinstance(node.get("additionalProperties"), dict), where
            assert node["additionalProperties"].get("description"), where


def test_examples_are_valid() -> None:
    doc = schema()
    assert doc["examples"]
    for example in doc["examples"]:
        jsonschema.validate(example, doc)
    examples = [w for w, n in objects(doc) for p in n.get("properties", {}).values() if "examples" in p]
    assert len(examples) > 10


def test_shipped_in_the_package_and_linked_from_schemas_dir() -> None:
    shipped = resources.files("batchspec.spec").joinpath("batchspec.schema.json").read_text("utf-8")
    assert json.loads(shipped) == schema()
    assert json.loads((REPO / "schemas" / "batchspec.schema.json").read_text("utf-8")) == schema()


@pytest.mark.parametrize("spec", sorted((REPO / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_specs_satisfy_the_bare_schema(spec: Path) -> None:
    """What editors check through the yaml-language-server comment."""
    text = spec.read_text("utf-8")
    assert text.startswith("# yaml-language-server: $schema=../schemas/batchspec.schema.json\n")
    jsonschema.validate(YAML(typ="safe").load(text), schema())
