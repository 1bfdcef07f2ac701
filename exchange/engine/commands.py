"""Commands the matching engine accepts: a new order and the cancel of one order."""

from __future__ import annotations

from dataclasses import dataclass

from exchange.engine.types import CancelReason, OrderType, Side, TimeInForce


@dataclass(slots=True, frozen=True)
class NewOrder:
    """An order that passed the validator; ``price`` is in integer ticks, None for market orders."""

    order_id: int
    team_id: int
    instrument_id: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int | None
    quantity: int
    client_order_id: str | None = None


@dataclass(slots=True, frozen=True)
class CancelOrder:
    """Take the remainder of one resting order off the book; only its own team may ask."""

    order_id: int
    team_id: int
    reason: CancelReason = CancelReason.USER_REQUESTED
