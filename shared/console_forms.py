"""Forms generated from a JSON schema (a request record, an outcome), and back to records.

A flat schema (numbers, whole numbers, booleans, words from a list, free text, lists of
words) becomes one field each; a value left empty is a missing field, as in the API. A
schema this cannot draw (nested objects) has no form: the console then takes JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["number", "integer", "boolean", "choice", "text", "list"]
_SCALARS = {"number": "number", "integer": "integer", "boolean": "boolean", "string": "text"}


@dataclass
class FormField:
    """One field of a form: `name` is the JSON key (a column's name, an alias)."""

    name: str
    kind: Kind
    description: str = ""
    options: tuple[str, ...] = ()
    default: Any = None
    values: tuple[Any, ...] = ()  # a choice's values as the schema types them (0, 1)


def form_fields(schema: dict[str, Any], skip: tuple[str, ...] = ()) -> list[FormField] | None:
    """The fields of a flat object schema (pydantic's JSON schema), in its order; None when
    a field is not a scalar or a list of scalars."""
    fields = []
    for name, given in schema.get("properties", {}).items():
        if name in skip:
            continue
        prop = _resolve(given, schema.get("$defs", {}))
        kind: Kind | None
        options: tuple[str, ...] = ()
        values: tuple[Any, ...] = ()
        if "enum" in prop:
            values = tuple(prop["enum"])
            kind, options = "choice", tuple(str(v) for v in values)
        elif prop.get("type") == "array":
            item = _resolve(prop.get("items", {}), schema.get("$defs", {}))
            kind = "list" if item.get("type") in _SCALARS else None
        else:
            kind = _SCALARS.get(prop.get("type", ""))  # type: ignore[assignment]
        if kind is None:
            return None
        description = str(given.get("description") or prop.get("description") or "")
        fields.append(FormField(name, kind, description, options, given.get("default"), values))
    return fields


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A property without its `$ref` and its `null` alternative (an optional field)."""
    if "$ref" in prop:
        ref = prop["$ref"].rsplit("/", 1)[-1]
        prop = {**defs.get(ref, {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    options = [p for p in prop.get("anyOf", []) if p.get("type") != "null"]
    rest = {k: v for k, v in prop.items() if k != "anyOf"}
    if len(options) == 1:
        return _resolve({**rest, **options[0]}, defs)
    types = {p.get("type") for p in options}
    if options and "string" in types and types <= {"string", "integer", "number"}:
        return {**rest, "type": "string"}  # an id given as a word or a number: a word
    return prop


def record_of(fields: list[FormField], values: list[Any]) -> dict[str, Any]:
    """The record a filled form stands for: empty fields left out (missing values)."""
    record: dict[str, Any] = {}
    for field, value in zip(fields, values, strict=True):
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if field.kind in ("integer", "number"):
            value = _number(field, value)
        elif field.kind == "list":
            value = [part.strip() for part in str(value).split(",") if part.strip()]
        elif field.kind == "choice":  # the word shown -> the value (the number 1, not "1")
            value = next((v for v in field.values if str(v) == str(value)), value)
        record[field.name] = value
    return record


def _number(field: FormField, value: Any) -> int | float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError(f"{field.name}: {value!r} is not a number") from None
    if field.kind == "integer":
        if not number.is_integer():
            raise ValueError(f"{field.name}: {value!r} is not a whole number")
        return int(number)
    return number


def values_of(fields: list[FormField], record: dict[str, Any]) -> list[Any]:
    """The form's values for `record` (an example, a logged request): missing -> empty."""
    values = []
    for field in fields:
        value = record.get(field.name, field.default)
        if isinstance(value, float) and math.isnan(value):
            value = None
        if field.kind == "list" and isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        elif field.kind in ("choice", "text", "number", "integer") and value is not None:
            value = _plain(value)
        values.append(value)
    return values


def _plain(value: Any) -> str:
    """A value as the form shows it (5.0 as 5: a whole number typed as one)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def skeleton(schema: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The required fields of an object schema with placeholder values (an empty word, 0, the
    first choice), nested objects and lists of them included: JSON to fill in where a
    schema has no flat form (traffic's observed speeds)."""
    defs = schema.get("$defs", {})

    def value(given: dict[str, Any]) -> Any:
        prop = _resolve(given, defs)
        if "enum" in prop:
            return prop["enum"][0]
        kind = prop.get("type")
        if kind == "object":
            required = prop.get("required", [])
            return {k: value(v) for k, v in prop.get("properties", {}).items() if k in required}
        if kind == "array":
            return [value(prop.get("items", {}))]
        return {"number": 0.0, "integer": 0, "boolean": False}.get(kind, "")

    required = set(schema.get("required", []))
    return {k: value(v) for k, v in schema.get("properties", {}).items()
            if k in required and k not in skip}  # fmt: skip
