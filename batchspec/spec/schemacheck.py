"""The spec schema compiled once into plain Python checks that answer one question fast: is this
document valid?

``batchspec validate`` runs in other people's CI and before every ``run``; nearly every spec it
sees is valid. Importing jsonschema (with its referencing stack) costs more than the whole rest
of a validation, so a valid document is judged by the closures :func:`compile_schema` builds
from the schema (references resolved and patterns compiled ahead), and jsonschema is imported
only to explain an invalid one, with its full list of errors.

The checks follow jsonschema's Draft 2020-12 semantics keyword by keyword (``bool`` is not an
``integer``, ``1.0`` is; ``enum`` and ``uniqueItems`` compare as :func:`jsonschema._utils.equal`
does; ``pattern`` is ``re.search``). A keyword outside the supported set makes
:func:`compile_schema` raise :class:`Unsupported`, and the caller then uses jsonschema for every
document: a schema change can make validation slower, never laxer.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Check = Callable[[Any], bool]

#: Keywords that annotate and never fail (``format`` asserts nothing without a format checker,
#: as batchspec's jsonschema validator has none).
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "definitions", "title", "description", "default",
                         "examples", "deprecated", "readOnly", "writeOnly", "format", "contentMediaType",
                         "contentEncoding"})


class Unsupported(ValueError):
    """The schema uses a keyword (or a form of one) these checks do not implement."""


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


def _is_integer(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


_TYPES: dict[str, Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": _is_integer,
    "number": _is_number,
}


def _unbool(x: Any) -> Any:
    return ("\0bool", x) if isinstance(x, bool) else x


def equal(one: Any, two: Any) -> bool:
    """JSON equality as jsonschema compares: ``True`` is not ``1``, ``1`` is ``1.0``."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(k in two and equal(v, two[k]) for k, v in one.items())
    return bool(_unbool(one) == _unbool(two))


def _unique(items: list[Any]) -> bool:
    if all(type(i) is str for i in items):
        return len(set(items)) == len(items)
    return not any(equal(a, b) for i, a in enumerate(items) for b in items[i + 1 :])


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def node(self, schema: Any) -> Check:
        if schema is True:
            return lambda x: True
        if schema is False:
            return lambda x: False
        if not isinstance(schema, Mapping):
            raise Unsupported(f"a schema must be an object or a boolean, not {schema!r}")
        unknown = set(schema) - ANNOTATIONS - _KEYWORDS
        if unknown:
            raise Unsupported(f"unsupported keyword(s): {', '.join(sorted(unknown))}")
        checks: list[Check] = []
        if "type" in schema:
            checks.append(self.type(schema["type"]))
        for keywords, build in ((_OBJECT, self.object), (_ARRAY, self.array), (_STRING, self.string),
                                (_NUMBER, self.number)):
            if not keywords.isdisjoint(schema):
                checks.append(build(schema))
        if "enum" in schema:
            choices = list(schema["enum"])
            checks.append(lambda x: any(equal(c, x) for c in choices))
        if "const" in schema:
            const = schema["const"]
            checks.append(lambda x: equal(x, const))
        if "$ref" in schema:
            checks.append(self.ref(schema["$ref"]))
        checks += self.logic(schema)
        if not checks:
            return lambda x: True
        if len(checks) == 1:
            return checks[0]
        return lambda x: all(check(x) for check in checks)

    def type(self, kinds: str | list[str]) -> Check:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if any(n not in _TYPES for n in names):
            raise Unsupported(f"unknown type in {kinds!r}")
        if names == ["object"]:
            return lambda x: isinstance(x, dict)
        if names == ["string"]:
            return lambda x: isinstance(x, str)
        tests = [_TYPES[n] for n in names]
        return lambda x: any(t(x) for t in tests)

    def object(self, schema: Mapping[str, Any]) -> Check:
        properties = {k: self.node(v) for k, v in schema.get("properties", {}).items()}
        patterns = [(re.compile(p), self.node(v)) for p, v in schema.get("patternProperties", {}).items()]
        joined = re.compile("|".join(schema["patternProperties"])) if patterns else None
        extra = self.node(schema["additionalProperties"]) if "additionalProperties" in schema else None
        names = self.node(schema["propertyNames"]) if "propertyNames" in schema else None
        required = list(schema.get("required", ()))
        low, high = schema.get("minProperties"), schema.get("maxProperties")
        dependent = {k: list(v) for k, v in schema.get("dependentRequired", {}).items()}

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            for key in required:
                if key not in x:
                    return False
            for key, value in x.items():
                sub = properties.get(key)
                if sub is not None:
                    if not sub(value):
                        return False
                    matched = True
                else:
                    matched = False
                if patterns:
                    for rx, pattern_check in patterns:
                        if rx.search(key) and not pattern_check(value):
                            return False
                if extra is not None and not matched and not (joined and joined.search(key)) and not extra(value):
                    return False
                if names is not None and not names(key):
                    return False
            if (low is not None and len(x) < low) or (high is not None and len(x) > high):
                return False
            return all(all(d in x for d in needs) for key, needs in dependent.items() if key in x)

        return check

    def array(self, schema: Mapping[str, Any]) -> Check:
        prefix = [self.node(s) for s in schema.get("prefixItems", ())]
        rest = self.node(schema["items"]) if "items" in schema else None
        low, high = schema.get("minItems"), schema.get("maxItems")
        unique = bool(schema.get("uniqueItems"))

        def check(x: Any) -> bool:
            if not isinstance(x, list):
                return True
            if (low is not None and len(x) < low) or (high is not None and len(x) > high):
                return False
            for sub, item in zip(prefix, x, strict=False):
                if not sub(item):
                    return False
            if rest is not None:
                for item in x[len(prefix):]:
                    if not rest(item):
                        return False
            return not unique or _unique(x)

        return check

    def string(self, schema: Mapping[str, Any]) -> Check:
        rx = re.compile(schema["pattern"]) if "pattern" in schema else None
        low, high = schema.get("minLength"), schema.get("maxLength")

        def check(x: Any) -> bool:
            if not isinstance(x, str):
                return True
            if rx is not None and not rx.search(x):
                return False
            return (low is None or len(x) >= low) and (high is None or len(x) <= high)

        return check

    def number(self, schema: Mapping[str, Any]) -> Check:
        low, high = schema.get("minimum"), schema.get("maximum")
        above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")

        def check(x: Any) -> bool:
            if not _is_number(x):
                return True
            return ((low is None or x >= low) and (high is None or x <= high)
                    and (above is None or x > above) and (below is None or x < below))

        return check

    def logic(self, schema: Mapping[str, Any]) -> list[Check]:
        checks: list[Check] = []
        if "allOf" in schema:
            all_of = [self.node(s) for s in schema["allOf"]]
            checks.append(lambda x: all(c(x) for c in all_of))
        if "anyOf" in schema:
            any_of = [self.node(s) for s in schema["anyOf"]]
            checks.append(lambda x: any(c(x) for c in any_of))
        if "oneOf" in schema:
            one_of = [self.node(s) for s in schema["oneOf"]]
            checks.append(lambda x: sum(1 for c in one_of if c(x)) == 1)
        if "not" in schema:
            negated = self.node(schema["not"])
            checks.append(lambda x: not negated(x))
        if "if" in schema:
            condition = self.node(schema["if"])
            then = self.node(schema.get("then", True))
            otherwise = self.node(schema.get("else", True))
            checks.append(lambda x: then(x) if condition(x) else otherwise(x))
        return checks

    def ref(self, ref: str) -> Check:
        if not ref.startswith("#") or (len(ref) > 1 and not ref.startswith("#/")):
            raise Unsupported(f"only references within the schema are supported, not {ref!r}")
        if ref not in self.refs:
            self.refs[ref] = lambda x: True  # replaced below; a recursive reference reads the table
            target: Any = self.root
            for escaped in ref[2:].split("/") if len(ref) > 1 else ():
                part = escaped.replace("~1", "/").replace("~0", "~")
                try:
                    target = target[int(part)] if isinstance(target, list) else target[part]
                except (KeyError, IndexError, ValueError, TypeError):
                    raise Unsupported(f"unresolvable reference {ref!r}") from None
            self.refs[ref] = self.node(target)
        table = self.refs
        return lambda x: table[ref](x)  # noqa: PLW0108 (read when called: the reference may be recursive)


_OBJECT = frozenset({"properties", "patternProperties", "additionalProperties", "propertyNames", "required",
                     "minProperties", "maxProperties", "dependentRequired"})
_ARRAY = frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems"})
_STRING = frozenset({"pattern", "minLength", "maxLength"})
_NUMBER = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_KEYWORDS = (_OBJECT | _ARRAY | _STRING | _NUMBER
             | {"type", "enum", "const", "$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else"})


def compile_schema(schema: Mapping[str, Any]) -> Check:
    """A function telling whether a document is valid against ``schema`` (Draft 2020-12, with
    references only within ``schema``); raises :class:`Unsupported` for a schema it cannot judge."""
    if schema.get("$schema", "https://json-schema.org/draft/2020-12/schema") != \
            "https://json-schema.org/draft/2020-12/schema":
        raise Unsupported(f"only Draft 2020-12 is supported, not {schema['$schema']}")
    return _Compiler(schema).node(schema)
