"""The compiled schema check (the fast path of ``batchspec validate``) judges exactly as jsonschema.

A valid document never reaches jsonschema, so a document the check calls valid must be one
jsonschema calls valid: both are run over every example spec and thousands of damaged copies of
them (each value replaced by values of every JSON type, keys dropped, keys added), and over
small schemas for each keyword the compiler implements.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from batchspec.spec import schema
from batchspec.spec.document import Document, read_document
from batchspec.spec.schemacheck import Unsupported, compile_schema, equal
from batchspec.spec.validate import schema_check

REPO = Path(__file__).resolve().parents[2]
#: One value of each kind, and the edge cases of JSON Schema's types (bool is no integer, 1.0 is).
SAMPLES: list[Any] = [None, True, False, 0, 1, -1, 1.0, 2.5, "", "x", "-x", "ffmpeg-pool", "a b", "0755",
                      [], ["x"], [1, 1], ["a", "a"], {}, {"a": 1}, {"name": "x"}]


def specs() -> list[Any]:
    docs = []
    for path in sorted((REPO / "specs").glob("*.yaml")):
        doc = read_document(path)
        assert isinstance(doc, Document), path
        docs.append(doc.data)
    return docs


def paths(node: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield where
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*where, i))


def damaged(doc: Any) -> Iterator[Any]:
    """Copies of ``doc`` with one thing changed: a value replaced (by a third of the samples,
    a different third at each place), a key removed or added."""
    text = json.dumps(doc)
    for n, path in enumerate(list(paths(doc))[1:]):
        parent_path, last = path[:-1], path[-1]
        for sample in SAMPLES[n % 3 :: 3]:
            out = json.loads(text)
            parent = out
            for part in parent_path:
                parent = parent[part]
            parent[last] = copy.deepcopy(sample)
            yield out
        if isinstance(last, str):
            out = json.loads(text)
            parent = out
            for part in parent_path:
                parent = parent[part]
            del parent[last]
            yield out
            parent["unknown_key"] = 1
            yield out


def test_the_shipped_schema_compiles() -> None:
    assert schema_check() is not None


def test_every_example_spec_and_thousands_of_damaged_copies_are_judged_as_jsonschema_judges_them() -> None:
    check = schema_check()
    assert check is not None
    validator = Draft202012Validator(schema())
    judged = valid = 0
    seen: set[str] = set()
    for doc in specs():
        for candidate in [doc, *damaged(doc)]:
            key = json.dumps(candidate, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            expected = validator.is_valid(candidate)
            assert check(candidate) == expected, key
            judged += 1
            valid += expected
    assert judged > 1500 and 100 < valid < judged - 500, (judged, valid)  # both verdicts well represented


KEYWORD_CASES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"type": "integer"}, [1, 1.0, 1.5, True, "1", None]),
    ({"type": "number"}, [1, 1.5, True, "1"]),
    ({"type": ["string", "null"]}, ["x", None, 1]),
    ({"enum": [1, "a", None, [1], {"a": 1}]}, [1, 1.0, True, "a", None, [1], [True], {"a": 1}, {"a": True}, 2]),
    ({"const": False}, [False, 0, None]),
    ({"const": 0}, [0, 0.0, False]),
    ({"minimum": 1, "maximum": 3}, [0, 1, 3, 3.5, True, "x"]),
    ({"exclusiveMinimum": 1, "exclusiveMaximum": 3}, [1, 2, 3]),
    ({"pattern": "^a"}, ["ab", "ba", 1]),
    ({"pattern": "b$"}, ["ab", "ab\n", "ba"]),  # re.search: $ matches before a final newline, as jsonschema's
    ({"minLength": 2, "maxLength": 3}, ["a", "ab", "abcd", 5]),
    ({"minItems": 1, "maxItems": 2, "uniqueItems": True}, [[], [1], [1, 2], [1, 1], [1, True], [1, 1.0],
                                                           [[1], [1]], [{"a": 1}, {"a": 1}], [1, 2, 3], "x"]),
    ({"prefixItems": [{"type": "string"}], "items": {"type": "integer"}}, [["a", 1], [1, 1], ["a", "b"], []]),
    ({"required": ["a"], "properties": {"a": {"type": "string"}}, "additionalProperties": False},
     [{"a": "x"}, {"a": 1}, {}, {"a": "x", "b": 1}, []]),
    ({"patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
     [{"x_a": 1}, {"x_a": "s"}, {"y": "s"}, {"y": 1}]),
    ({"propertyNames": {"pattern": "^[a-z]+$"}, "minProperties": 1, "maxProperties": 2},
     [{"a": 1}, {"A": 1}, {}, {"a": 1, "b": 2, "c": 3}]),
    ({"dependentRequired": {"a": ["b"]}}, [{"a": 1}, {"a": 1, "b": 2}, {"b": 2}]),
    ({"anyOf": [{"type": "string"}, {"minimum": 2}]}, ["x", 1, 3]),
    ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, [1, 3, 2.5]),
    ({"allOf": [{"type": "integer"}, {"minimum": 2}], "not": {"const": 3}}, [1, 2, 3]),
    ({"if": {"type": "string"}, "then": {"minLength": 2}, "else": {"type": "integer"}}, ["a", "ab", 1, 1.5]),
    ({"$defs": {"n": {"type": "integer"}, "list": {"type": "array", "items": {"$ref": "#/$defs/list"}}},
      "properties": {"a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#/$defs/list"}}},
     [{"a": 1}, {"a": "x"}, {"b": [[[]]]}, {"b": [[1]]}]),
    ({"format": "email", "description": "annotations assert nothing", "default": 1}, ["not an email"]),
]


@pytest.mark.parametrize(("keywords", "instances"), KEYWORD_CASES)
def test_each_keyword_as_jsonschema(keywords: dict[str, Any], instances: list[Any]) -> None:
    node = {"$schema": "https://json-schema.org/draft/2020-12/schema", **keywords}
    check = compile_schema(node)
    validator = Draft202012Validator(node)
    for instance in instances:
        assert check(instance) == validator.is_valid(instance), instance


@pytest.mark.parametrize("node", [
    {"contains": {"type": "string"}},
    {"multipleOf": 3},
    {"unevaluatedProperties": False},
    {"properties": {"a": {"$ref": "https://example.com/other.json"}}},
    {"$ref": "#/$defs/missing"},
    {"x-vendor": 1},
    {"$schema": "http://json-schema.org/draft-07/schema#"},
])
def test_what_it_cannot_judge_is_refused_so_jsonschema_judges_everything(node: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        compile_schema(node)


def test_equality_is_jsonschemas() -> None:
    assert equal(1, 1.0) and equal([1, {"a": "x"}], [1.0, {"a": "x"}])
    assert not equal(True, 1) and not equal([False], [0]) and not equal({"a": 1}, {"b": 1}) and not equal("1", 1)
