"""The OpenAPI schemas made from TypedDicts: each kind of field, nested shapes as components, and
narrowing that may change a field's type but never the set of fields."""

# No ``from __future__ import annotations``: Python 3.11 reads ``NotRequired`` only from evaluated
# annotations.
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import pytest

from exchange.api.openapi import Components, one_of
from exchange.wire import Schema


class Inner(TypedDict):
    """An inner shape."""

    level: int


class Outer(TypedDict):
    name: Annotated[str, Schema(maxLength=8), "What it is called."]
    side: Literal["buy", "sell"] | None
    inner: Annotated[Inner, "Described beside the reference."]
    maybe_inner: Inner | None
    items: list[Inner]
    counts: dict[str, int]
    extra: dict[str, Any]
    price: NotRequired[float]
    done: bool
    code: Annotated[str | None, "The code."]


def test_each_kind_of_field() -> None:
    components = Components()
    assert components.ref(Outer) == {"$ref": "#/components/schemas/Outer"}
    inner = {"$ref": "#/components/schemas/Inner"}
    outer = components.schemas["Outer"]
    assert outer["properties"] == {
        "name": {"type": "string", "maxLength": 8, "description": "What it is called."},
        "side": {"type": "string", "enum": ["buy", "sell", None], "nullable": True},
        "inner": {"allOf": [inner], "description": "Described beside the reference."},
        "maybe_inner": {"allOf": [inner], "nullable": True},
        "items": {"type": "array", "items": inner},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "extra": {"type": "object", "additionalProperties": {}},
        "price": {"type": "number", "format": "double"},
        "done": {"type": "boolean"},
        "code": {"type": "string", "nullable": True, "description": "The code."},
    }
    assert outer["required"] == [name for name in outer["properties"] if name != "price"]
    assert "description" not in outer and "additionalProperties" not in outer
    assert components.schemas["Inner"] == {
        "type": "object",
        "description": "An inner shape.",
        "properties": {"level": {"type": "integer"}},
        "required": ["level"],
    }


def test_a_closed_shape_refuses_other_fields() -> None:
    components = Components()
    components.ref(Inner, closed=True)
    assert components.schemas["Inner"]["additionalProperties"] is False


def test_narrowing_changes_types_and_keeps_descriptions() -> None:
    components = Components()
    components.ref(Outer, "OuterRefused", "Refused.", code=one_of(["NOPE", "NEVER"]), side=None)
    schema = components.schemas["OuterRefused"]
    assert schema["description"] == "Refused."
    assert schema["properties"]["code"] == {"type": "string", "enum": ["NOPE", "NEVER"], "description": "The code."}
    assert schema["properties"]["side"] == {"enum": [None], "nullable": True}
    assert set(schema["properties"]) == set(Outer.__annotations__)


def test_narrowing_a_nested_shape_inlines_it() -> None:
    components = Components()
    schema = components.inline(Outer, inner={"level": Literal[1]}, items={"level": Literal[2]})
    assert schema["properties"]["inner"] == {
        "type": "object",
        "properties": {"level": {"type": "integer", "enum": [1]}},
        "required": ["level"],
        "description": "Described beside the reference.",
    }
    assert schema["properties"]["items"]["items"]["properties"]["level"]["enum"] == [2]


def test_narrowing_cannot_invent_a_field_and_a_name_means_one_schema() -> None:
    components = Components()
    with pytest.raises(ValueError, match="no field"):
        components.ref(Inner, "Other", typo=int)
    components.ref(Inner, "Level", level=Literal[1])
    with pytest.raises(ValueError, match="two different components named Level"):
        components.ref(Inner, "Level", level=Literal[2])


def test_a_type_without_a_schema_is_refused() -> None:
    class Mixed(TypedDict):
        value: int | str

    with pytest.raises(TypeError, match="no OpenAPI schema"):
        Components().ref(Mixed)
