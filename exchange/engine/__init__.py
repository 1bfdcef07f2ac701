"""Pure matching engine: order books, continuous matching and the opening auction.

Standard library only; no clock, no randomness, no I/O. Commands in, events out.
"""

from exchange.engine.auction import clearing_price
from exchange.engine.book import InvariantViolation
from exchange.engine.commands import CancelOrder, NewOrder
from exchange.engine.engine import MatchingEngine
from exchange.engine.events import (
    CancelRejected,
    Event,
    Fill,
    FillParty,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    TopOfBook,
)
from exchange.engine.types import (
    CancelReason,
    EngineRejectCode,
    OrderStatus,
    OrderType,
    Phase,
    RestingOrder,
    Side,
    TimeInForce,
)

__all__ = [
    "CancelOrder",
    "CancelReason",
    "CancelRejected",
    "EngineRejectCode",
    "Event",
    "Fill",
    "FillParty",
    "InvariantViolation",
    "MatchingEngine",
    "NewOrder",
    "OrderAccepted",
    "OrderCancelled",
    "OrderRejected",
    "OrderStatus",
    "OrderType",
    "Phase",
    "RestingOrder",
    "Side",
    "TimeInForce",
    "TopOfBook",
    "clearing_price",
]
