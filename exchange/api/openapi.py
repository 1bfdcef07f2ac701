"""OpenAPI 3.0 schemas made from the ``TypedDict``s of ``exchange.wire``, so the schema at
``/schema/`` says of every reply what its one declaration says.

A shape becomes a named component (``Components.ref``) or an inline object (``Components.inline``).
Both can narrow fields to what one reply carries (the error codes of one HTTP status, a status
that is always ``"rejected"``), but never add or drop one: the fields are the declaration's.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from enum import Enum
from types import NoneType, UnionType
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from exchange.wire import Schema

REF_PREFIX = "#/components/schemas/"
JSON_TYPES: dict[Any, dict[str, str]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number", "format": "double"},
    bool: {"type": "boolean"},
}


def one_of(values: Any) -> Any:
    """The ``Literal`` of some values, e.g. the codes one HTTP status can carry, to narrow a field."""
    return Literal[tuple(values)]


class Components:
    """The named schemas made from wire shapes, collected as the operations point at them."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}

    def ref(
        self,
        shape: type,
        name: str | None = None,
        description: str | None = None,
        *,
        closed: bool = False,
        **narrowed: Any,
    ) -> dict[str, Any]:
        """A ``$ref`` to the component made of ``shape``, registered under ``name`` (default: the
        shape's). ``closed``: other fields are refused (request bodies)."""
        name = name or shape.__name__
        schema = self.inline(shape, description, closed=closed, **narrowed)
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different components named {name}")
        return {"$ref": REF_PREFIX + name}

    def inline(
        self, shape: type, description: str | None = None, *, closed: bool = False, **narrowed: Any
    ) -> dict[str, Any]:
        """The object schema of ``shape``. ``narrowed`` maps a field to the type it has in this reply,
        or, for a field that is a shape or a list of shapes, to the narrowing of that shape's fields."""
        hints = get_type_hints(shape, include_extras=True)
        if unknown := narrowed.keys() - hints.keys():
            raise ValueError(f"{shape.__name__} has no field {sorted(unknown)}")
        schema: dict[str, Any] = {"type": "object"}
        if text := shape.__doc__ if description is None else description:
            schema["description"] = inspect.cleandoc(text)
        properties = {}
        for key, hint in hints.items():
            if key not in narrowed:
                properties[key] = self.of(hint)
                continue
            if isinstance(narrowed[key], Mapping):
                properties[key] = self._narrowed(_bare(hint), narrowed[key])
            else:
                properties[key] = self.of(narrowed[key])
            if (text := _description(hint)) and "description" not in properties[key]:
                properties[key]["description"] = text
        schema["properties"] = properties
        if required := [key for key in hints if key in shape.__required_keys__]:  # type: ignore[attr-defined]
            schema["required"] = required
        if closed:
            schema["additionalProperties"] = False
        return schema

    def _narrowed(self, declared: Any, narrowed: Mapping[str, Any]) -> dict[str, Any]:
        """A nested shape, or a list of them, inline with some of its fields narrowed (its own
        description is about the shape on its own, so it stays out)."""
        if get_origin(declared) is list:
            return {"type": "array", "items": self._narrowed(get_args(declared)[0], narrowed)}
        return self.inline(declared, "", **narrowed)

    def of(self, hint: Any) -> dict[str, Any]:
        """The schema of one field's type; a nested shape becomes a component of its own."""
        origin, args = get_origin(hint), get_args(hint)
        if origin in (Required, NotRequired):
            return self.of(args[0])
        if origin is Annotated:
            schema = _beside_ref(self.of(args[0]))
            for note in hint.__metadata__:
                if isinstance(note, Schema):
                    schema.update(note.keywords)
                elif isinstance(note, str):
                    schema["description"] = note
            return schema
        if hint is Any:
            return {}
        if hint in JSON_TYPES:
            return dict(JSON_TYPES[hint])
        if hint is None or hint is NoneType:
            return {"enum": [None], "nullable": True}
        if is_typeddict(hint):
            return self.ref(hint)
        if origin is Literal:
            values = [value.value if isinstance(value, Enum) else value for value in args]
            return {**JSON_TYPES[type(values[0])], "enum": values}
        if origin is list:
            return {"type": "array", "items": self.of(args[0])}
        if origin is dict and args[0] is str:
            return {"type": "object", "additionalProperties": self.of(args[1])}
        options = [option for option in args if option is not NoneType]
        if origin in (Union, UnionType) and len(options) == 1:
            schema = _beside_ref(self.of(options[0]))
            schema["nullable"] = True
            if "enum" in schema:
                schema["enum"].append(None)
            return schema
        raise TypeError(f"no OpenAPI schema for {hint!r}")


def _beside_ref(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0 ignores keywords beside a ``$ref``: wrap it so a description or null can go there."""
    return {"allOf": [schema]} if "$ref" in schema else schema


def _unwrapped(hint: Any) -> Any:
    return get_args(hint)[0] if get_origin(hint) in (Required, NotRequired) else hint


def _description(hint: Any) -> str | None:
    hint = _unwrapped(hint)
    notes = hint.__metadata__ if get_origin(hint) is Annotated else ()
    return next((note for note in reversed(notes) if isinstance(note, str)), None)


def _bare(hint: Any) -> Any:
    """The type of a field without its notes (``NotRequired``, ``Annotated``)."""
    hint = _unwrapped(hint)
    return get_args(hint)[0] if get_origin(hint) is Annotated else hint
