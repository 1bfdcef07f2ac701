"""Reading a ``POST /orders`` body into an order request, or saying exactly why it cannot be.

The body is parsed with ``Decimal`` for numbers, so a price never becomes a float.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from exchange.codes import RejectCode
from exchange.wire import OrderForm

# The fields are the documented ones: the schema's order form is made from the same declaration.
FIELDS = OrderForm.__required_keys__ | OrderForm.__optional_keys__
REQUIRED = tuple(name for name in OrderForm.__annotations__ if name in OrderForm.__required_keys__)
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class OrderRequest:
    instrument_id: str
    order_type: str
    side: str
    quantity: int
    price: Decimal | None
    time_in_force: str
    client_order_id: str | None
    request_id: str | None


class OrderFormError(Exception):
    def __init__(
        self, code: RejectCode, message: str, details: dict[str, Any] | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = status


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise OrderFormError(
            RejectCode.PAYLOAD_TOO_LARGE,
            f"the body is larger than {MAX_BODY} bytes",
            {"max_bytes": MAX_BODY},
            status=413,
        )
    try:
        data = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise OrderFormError(RejectCode.INVALID_JSON, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise OrderFormError(RejectCode.INVALID_JSON, "the body must be a JSON object")
    return data


def printable(value: str) -> bool:
    """No control characters (PostgreSQL refuses NUL in text; none belongs in an id)."""
    return value.isprintable()


def _string(data: dict[str, Any], name: str) -> str | None:
    """A string field: 1 to 64 printable characters, else 400 ``INVALID_FIELD``."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not printable(value):
        raise OrderFormError(
            RejectCode.INVALID_FIELD, f"{name} must be a string of 1 to 64 printable characters", {"field": name}
        )
    return value


def order_request(data: dict[str, Any]) -> OrderRequest:
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise OrderFormError(RejectCode.UNKNOWN_FIELD, f"unknown field: {unknown[0]}", {"fields": unknown})
    for name in REQUIRED:
        if data.get(name) is None:
            raise OrderFormError(RejectCode.MISSING_FIELD, f"{name} is required", {"field": name})
    for name in ("instrument_id", "side", "order_type", "time_in_force", "client_order_id", "request_id"):
        _string(data, name)
    instrument_id = data["instrument_id"]
    side = data["side"]
    if side not in ("buy", "sell"):
        raise OrderFormError(RejectCode.INVALID_SIDE, "side must be 'buy' or 'sell'", {"field": "side"})
    order_type = data["order_type"]
    if order_type not in ("limit", "market"):
        raise OrderFormError(
            RejectCode.INVALID_ORDER_TYPE, "order_type must be 'limit' or 'market'", {"field": "order_type"}
        )
    quantity = data["quantity"]
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1 or quantity > 2**31 - 1:
        raise OrderFormError(
            RejectCode.INVALID_QUANTITY, "quantity must be an integer of at least 1", {"field": "quantity"}
        )
    tif = data.get("time_in_force")
    if tif is not None and tif not in ("gtc", "day", "ioc", "fok"):
        raise OrderFormError(
            RejectCode.INVALID_TIME_IN_FORCE, "time_in_force must be gtc, day, ioc or fok", {"field": "time_in_force"}
        )
    price = data.get("price")
    if order_type == "market":
        if price is not None:
            raise OrderFormError(RejectCode.PRICE_NOT_ALLOWED, "market orders take no price", {"field": "price"})
        if tif in ("gtc", "day"):
            raise OrderFormError(
                RejectCode.INVALID_TIME_IN_FORCE, "a market order takes ioc or fok", {"field": "time_in_force"}
            )
        time_in_force = tif or "ioc"
    else:
        if price is None:
            raise OrderFormError(RejectCode.MISSING_PRICE, "limit orders need a price", {"field": "price"})
        price = _positive_price(price)
        time_in_force = tif or "gtc"
    return OrderRequest(
        instrument_id=instrument_id,
        order_type=order_type,
        side=side,
        quantity=quantity,
        price=price,
        time_in_force=time_in_force,
        client_order_id=data.get("client_order_id"),
        request_id=data.get("request_id"),
    )


def _positive_price(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise OrderFormError(RejectCode.INVALID_PRICE, "price must be a number", {"field": "price"})
    try:
        price = Decimal(value)
    except InvalidOperation:  # pragma: no cover - ints and parsed decimals always convert
        raise OrderFormError(RejectCode.INVALID_PRICE, "price must be a number", {"field": "price"}) from None
    if not price.is_finite() or price <= 0 or price >= Decimal("1e9"):
        raise OrderFormError(RejectCode.INVALID_PRICE, "price must be a positive finite number", {"field": "price"})
    return price
