"""Our schemas of Discord's payloads agree with Discord's official OpenAPI spec, where a copy lies beside the repo."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from tests.sandbox.discord_schemas import RESPONSES, registry, schema_names

REPO_ROOT = Path(__file__).resolve().parents[2]
# CI runs with the project's shared folder beside the clone, so the test runs there; a lone clone skips it.
OFFICIAL_SPEC = REPO_ROOT.parent / "shared" / "discord-api-spec" / "openapi.json"

# Marks a node of ours that differs from the official spec on purpose; its value says why.
DIFFERS = "x-openapi-differs"


@dataclass
class Node:
    """A schema object, with the way to follow a `$ref` from where it stands."""

    schema: dict[str, Any]
    resolve: Callable[[str], Node]

    def at(self, schema: dict[str, Any]) -> Node:
        """A schema object inside this one (its refs resolve from the same place)."""
        return Node(schema, self.resolve)


@dataclass
class Shape:
    """What a node allows, flattened through `$ref`, `allOf`, `oneOf` and `anyOf`; None allows anything."""

    types: set[str] | None = None
    values: list[tuple[str, Any]] | None = None
    pattern: str | None = None
    properties: dict[str, Node] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    items: Node | None = None
    # Several object alternatives: nothing one set of properties can be compared with.
    opaque: bool = False

    def both(self, other: Shape) -> Shape:
        """What this and `other` allow together (allOf)."""
        types, values = self.types, self.values
        if other.types is not None:
            types = other.types if types is None else types & other.types
        if other.values is not None:
            values = other.values if values is None else [v for v in values if v in other.values]
        return Shape(
            types,
            values,
            self.pattern or other.pattern,
            {**self.properties, **other.properties},
            self.required | other.required,
            self.items or other.items,
            self.opaque or other.opaque,
        )


def json_type(value: Any) -> str:
    """The JSON type of a decoded JSON value (a bool is no integer there)."""
    for python, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, python):
            return name
    return {type(None): "null", list: "array", dict: "object"}[type(value)]


def either(shapes: list[Shape]) -> Shape:
    """What any one of `shapes` allows (oneOf, anyOf): structure only from a lone non-null alternative."""
    types: set[str] | None = set()
    for s in shapes:
        types = None if types is None or s.types is None else types | s.types
    values = None if any(s.values is None for s in shapes) else [v for s in shapes for v in s.values or []]
    structured = [
        s for s in shapes if s.types != {"null"} and (s.properties or s.required or s.items or s.opaque)
    ]
    if len(structured) == 1:
        lone = structured[0]
        return Shape(types, values, lone.pattern, lone.properties, lone.required, lone.items, lone.opaque)
    patterns = {s.pattern for s in shapes if s.types != {"null"}}
    pattern = patterns.pop() if len(patterns) == 1 else None
    return Shape(types, values, pattern, opaque=len(structured) > 1)


def shape(node: Node) -> Shape:
    """Flatten one node (not its properties) into what it allows."""
    s = node.schema
    own = Shape(
        types={s["type"]} if isinstance(s.get("type"), str) else set(s["type"]) if "type" in s else None,
        pattern=s.get("pattern"),
        properties={name: node.at(sub) for name, sub in s.get("properties", {}).items()},
        required=set(s.get("required", [])),
        items=node.at(s["items"]) if "items" in s else None,
    )
    listed = [s["const"]] if "const" in s else s.get("enum")
    if listed is not None:
        own = own.both(
            Shape(types={json_type(v) for v in listed}, values=[(json_type(v), v) for v in listed])
        )
    parts = ([node.resolve(s["$ref"])] if "$ref" in s else []) + [node.at(sub) for sub in s.get("allOf", [])]
    for part in parts:
        own = own.both(shape(part))
    for key in ("oneOf", "anyOf"):
        if key in s:
            own = own.both(either([shape(node.at(sub)) for sub in s[key]]))
    return own


def drift(ours: Node, official: Node, where: str) -> Iterator[str]:
    """Every way our node could accept what the official one does not, or miss what it requires."""
    if DIFFERS in ours.schema:
        return
    mine, theirs = shape(ours), shape(official)
    if theirs.types is not None:
        if mine.types is None:
            yield f"{where}: no type, the official spec has {sorted(theirs.types)}"
        elif wrong := {
            t for t in mine.types - theirs.types if not (t == "integer" and "number" in theirs.types)
        }:
            yield f"{where}: type {sorted(wrong)}, the official spec has {sorted(theirs.types)}"
    if mine.values is not None and theirs.values is not None:
        extra = [value for kind, value in mine.values if (kind, value) not in theirs.values]
        if extra:
            yield f"{where}: values {extra} the official spec does not list"
    if theirs.pattern is not None and mine.pattern != theirs.pattern:
        yield f"{where}: pattern {mine.pattern!r}, the official spec has {theirs.pattern!r}"
    if mine.properties or mine.required:
        if theirs.opaque or not (theirs.properties or theirs.required):
            yield f"{where}: declares properties, the official schema has none to compare them with"
            return
        for name in sorted(mine.required - mine.properties.keys()):
            yield f"{where}.{name}: required but not declared"
        for name, node in sorted(mine.properties.items()):
            if name in theirs.properties:
                yield from drift(node, theirs.properties[name], f"{where}.{name}")
            elif name not in theirs.required:  # the spec requires a few properties it never declares
                yield f"{where}.{name}: not in the official schema"
        for name in sorted(theirs.required - mine.required):
            yield f"{where}.{name}: required by the official spec, optional here"
    if mine.items is not None:
        if theirs.items is None:
            yield f"{where}[]: items declared, the official schema has none"
        else:
            yield from drift(mine.items, theirs.items, f"{where}[]")


def our_node(schema: dict[str, Any], base: str = "") -> Node:
    """One of our schemas, found under the file name `base`; its refs are followed through our files."""

    def resolve(ref: str) -> Node:
        uri = urljoin(base, ref)
        return our_node(registry().resolver().lookup(uri).contents, uri.partition("#")[0])

    return Node(schema, resolve)


def official_node(spec: dict[str, Any], pointer: str) -> Node:
    """The official spec's object at a `#/...` JSON pointer, its refs followed within the spec."""
    target: Any = spec
    for part in pointer.removeprefix("#/").split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return Node(target, lambda ref: official_node(spec, ref))


def official_response(spec: dict[str, Any], path: str, status: str) -> Node | None:
    """The JSON schema the official spec gives `path`'s `status` response (GET, or "PUT /path"), or None."""
    method, _, path = path.rpartition(" ")
    operation = spec["paths"].get(path, {}).get(method.lower() or "get", {})
    response = operation.get("responses", {}).get(status)
    while response is not None and "$ref" in response:
        response = official_node(spec, response["$ref"]).schema
    if response is None or "application/json" not in response.get("content", {}):
        return None
    return Node(response["content"]["application/json"]["schema"], lambda ref: official_node(spec, ref))


def problems_against(spec: dict[str, Any]) -> list[str]:
    """Every disagreement between our schemas (files and endpoints) and the official spec."""
    problems = []
    for name in schema_names():
        schema = registry().resolver().lookup(name).contents
        component = schema.get("x-openapi-schema", "")
        if component not in spec["components"]["schemas"]:
            problems.append(f"{name}: names {component!r}, which the official spec does not have")
            continue
        problems += drift(
            our_node(schema, name), official_node(spec, f"#/components/schemas/{component}"), name
        )
    for (path, status), schema in RESPONSES.items():
        official = official_response(spec, path, status)
        if official is None:
            problems.append(f"{path} {status}: not in the official spec")
            continue
        problems += drift(our_node(schema), official, f"{path} {status}")
    return problems


@pytest.mark.skipif(
    not OFFICIAL_SPEC.is_file(),
    reason=f"Discord's official OpenAPI spec is not at {OFFICIAL_SPEC} (CI has it beside the clone)",
)
def test_our_schemas_agree_with_discords_official_spec() -> None:
    spec = json.loads(OFFICIAL_SPEC.read_text())
    problems = problems_against(spec)
    assert not problems, "our schemas drifted from the official spec:\n" + "\n".join(problems)


def test_drift_is_found_in_each_way_a_schema_can_differ() -> None:
    official = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "count": {"type": ["integer", "null"]},
            "level": {"type": "integer", "oneOf": [{"const": 0}, {"const": 1}]},
            "owner": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/User"}]},
        },
        "required": ["id", "level"],
    }
    spec = {
        "components": {"schemas": {"Thing": official, "User": {"properties": {"name": {"type": "string"}}}}}
    }
    theirs = official_node(spec, "#/components/schemas/Thing")

    def ours(schema: dict[str, Any]) -> list[str]:
        return list(drift(our_node(schema), theirs, "thing"))

    agreeing = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "count": {"type": "integer"},
            "level": {"type": "integer", "enum": [1]},
            "owner": {"type": ["object", "null"], "properties": {"name": {"type": "string"}}},
        },
        "required": ["id", "level", "count"],
    }
    assert ours(agreeing) == []
    drifted = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "count": {"type": "string"},
            "level": {"type": "integer", "enum": [0, 2]},
            "owner": {
                "type": "object",
                "properties": {"name": {"type": "boolean"}, "age": {"type": "integer"}},
            },
            "extra": {"type": "boolean"},
        },
        "required": ["id", "missing"],
    }
    assert ours(drifted) == [
        "thing.missing: required but not declared",
        "thing.count: type ['string'], the official spec has ['integer', 'null']",
        "thing.extra: not in the official schema",
        "thing.id: pattern None, the official spec has '^[0-9]+$'",
        "thing.level: values [2] the official spec does not list",
        "thing.owner.age: not in the official schema",
        "thing.owner.name: type ['boolean'], the official spec has ['string']",
        "thing.level: required by the official spec, optional here",
    ]
    assert ours({**drifted, DIFFERS: "a difference on purpose, said here"}) == []
