"""JSON-schema rules the providers enforce on structured-output and strict tool schemas.

OpenAI strict mode (``response_format.json_schema.strict`` and ``tools[].function.strict``),
as documented for Structured Outputs and as its 400 messages word it:

- the root is an object schema, and not an ``anyOf``;
- every object schema sets ``additionalProperties: false`` and lists every property in
  ``required`` (optional fields are expressed as a union with ``null``);
- ``allOf``, ``oneOf``, ``not``, ``if``/``then``/``else``, ``dependentRequired``,
  ``dependentSchemas``, ``patternProperties``, ``propertyNames``, ``minProperties`` and
  ``maxProperties`` are "not permitted";
- ``$ref`` points inside the schema (``#/$defs/...``) at something that exists;
- at most 10 levels of object nesting and 1000 enum values.

``default`` is accepted (the OpenAI API does; only some Azure deployments refuse it).

Anthropic structured outputs (``output_config.format``) require ``additionalProperties: false``
on every object schema, which is the one rule its 400s report most; the Anthropic SDK strips the
constraints the API does not support before sending, so the stub does not check those.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

MAX_OBJECT_DEPTH = 10
MAX_ENUM_VALUES = 1000
_NOT_PERMITTED = (
    "allOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
)

Path = tuple[str, ...]


def _is_object_schema(schema: dict[str, Any]) -> bool:
    declared = schema.get("type")
    if declared == "object" or (isinstance(declared, list) and "object" in declared):
        return True
    return "properties" in schema and declared is None


def _children(schema: dict[str, Any], path: Path) -> Iterator[tuple[Path, Any]]:
    """Every sub-schema with its context path, in the order the API reports them."""
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            yield (*path, "properties", name), sub
    items = schema.get("items")
    if isinstance(items, dict):
        yield (*path, "items"), items
    for keyword in ("anyOf", "prefixItems"):
        options = schema.get(keyword)
        if isinstance(options, list):
            for index, sub in enumerate(options):
                yield (*path, keyword, str(index)), sub
    for keyword in ("$defs", "definitions"):
        definitions = schema.get(keyword)
        if isinstance(definitions, dict):
            for name, sub in definitions.items():
                yield (*path, keyword, name), sub


def _resolve(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def openai_strict_problem(schema: Any) -> str | None:
    """The first rule a strict schema breaks, worded like the API (after "Invalid schema …: ")."""
    if not isinstance(schema, dict):
        return "schema must be a JSON Schema object"
    if "anyOf" in schema and "type" not in schema:
        return "In context=(), 'anyOf' is not permitted at the root; the root must be an object."
    if not _is_object_schema(schema):
        got = schema.get("type", "None")
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."
    return _strict_problem_at(schema, schema, (), depth=0)


def _strict_problem_at(root: dict[str, Any], schema: Any, path: Path, depth: int) -> str | None:
    context = repr(path)
    if not isinstance(schema, dict):
        return f"In context={context}, schema must be a JSON Schema object."
    for keyword in _NOT_PERMITTED:
        if keyword in schema:
            return f"In context={context}, '{keyword}' is not permitted."
    ref = schema.get("$ref")
    if isinstance(ref, str) and _resolve(root, ref) is None:
        return f"In context={context}, reference to component '{ref}' which was not found."
    enum = schema.get("enum")
    if isinstance(enum, list) and len(enum) > MAX_ENUM_VALUES:
        return f"In context={context}, enum has {len(enum)} values; at most {MAX_ENUM_VALUES}."
    if _is_object_schema(schema):
        depth += 1
        if depth > MAX_OBJECT_DEPTH:
            return f"In context={context}, object nesting exceeds {MAX_OBJECT_DEPTH} levels."
        if schema.get("additionalProperties") is not False:
            return (
                f"In context={context}, 'additionalProperties' is required to be supplied "
                "and to be false."
            )
        properties = schema.get("properties") or {}
        required = schema.get("required")
        listed = required if isinstance(required, list) else []
        missing = [name for name in properties if name not in listed]
        if not isinstance(required, list) or missing:
            shown = f" Missing '{missing[0]}'." if missing else ""
            return (
                f"In context={context}, 'required' is required to be supplied and to be an "
                f"array including every key in properties.{shown}"
            )
        extra = [name for name in listed if name not in properties]
        if extra:
            return f"In context={context}, Extra required key '{extra[0]}' supplied."
    for child_path, child in _children(schema, path):
        problem = _strict_problem_at(root, child, child_path, depth)
        if problem:
            return problem
    return None


def anthropic_output_schema_problem(schema: Any, path: str = "schema") -> str | None:
    """The first object schema without ``additionalProperties: false``, worded like the API."""
    if not isinstance(schema, dict):
        return f"{path}: Input should be a valid dictionary"
    if _is_object_schema(schema) and schema.get("additionalProperties") is not False:
        return f"{path}: For 'object' type, 'additionalProperties' must be explicitly set to false"
    for child_path, child in _children(schema, ()):
        problem = anthropic_output_schema_problem(child, ".".join((path, *child_path)))
        if problem:
            return problem
    return None
