"""Value types of the matching engine: the wire enums and the snapshot of a resting order."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(StrEnum):
    GTC = "gtc"
    DAY = "day"
    IOC = "ioc"
    FOK = "fok"


class Phase(StrEnum):
    CLOSED = "closed"
    PRE_OPEN = "pre_open"
    OPENING_AUCTION = "opening_auction"
    CONTINUOUS = "continuous"


class CancelReason(StrEnum):
    USER_REQUESTED = "user_requested"
    IOC_REMAINDER = "ioc_remainder"
    FOK_UNFILLED = "fok_unfilled"
    SELF_TRADE_PREVENTED = "self_trade_prevented"
    SESSION_END = "session_end"
    OPERATOR = "operator"


class OrderStatus(StrEnum):
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class EngineRejectCode(StrEnum):
    """Codes of the engine's refusals; the values are the API's stable error codes."""

    MARKET_CLOSED = "MARKET_CLOSED"
    ORDER_TYPE_NOT_ALLOWED = "ORDER_TYPE_NOT_ALLOWED"
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    INVALID_PRICE = "INVALID_PRICE"
    PRICE_NOT_ALLOWED = "PRICE_NOT_ALLOWED"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_SIDE = "INVALID_SIDE"
    INVALID_ORDER_TYPE = "INVALID_ORDER_TYPE"
    INVALID_TIME_IN_FORCE = "INVALID_TIME_IN_FORCE"
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"


@dataclass(slots=True, frozen=True)
class RestingOrder:
    """An order on the book: what ``resting_orders()`` reports and ``restore()`` takes back.

    A resting order has never been cancelled, so ``filled + remaining == quantity``.
    """

    order_id: int
    team_id: int
    instrument_id: str
    client_order_id: str | None
    side: Side
    price: int
    quantity: int
    remaining: int
    filled: int
    time_in_force: TimeInForce
    order_type: OrderType = OrderType.LIMIT
