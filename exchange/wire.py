"""Every REST reply and WebSocket frame, one typed shape each, and the builders of the order path's.

The shapes are ``TypedDict``s (plain dicts at run time: no cost on the hot path). Prices and
money arrive as ``Decimal`` and leave as JSON numbers through ``prices.wire``, the only place a
float appears. The OpenAPI schema at ``/schema/`` is generated from these shapes
(``exchange.api.openapi``): a field's description is the text in its ``Annotated[...]``.
"""

# No ``from __future__ import annotations``: Python 3.11 sees ``NotRequired`` only in evaluated
# annotations (with string annotations every key of a TypedDict counts as required).
from decimal import Decimal
from types import UnionType
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Protocol,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from exchange.prices import wire

AVERAGE_PLACES = Decimal("0.000001")


class Schema:
    """JSON-schema keywords that a field's type cannot say (a format, bounds, lengths), for the
    generated OpenAPI schema; nothing checks them at run time."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords


Timestamp = Annotated[
    str, Schema(format="date-time"), "UTC ISO-8601 with microseconds and a Z, e.g. `2024-01-15T10:00:00.123456Z`."
]
Date = Annotated[str, Schema(format="date")]
Text64 = Annotated[str, Schema(minLength=1, maxLength=64)]
Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
TimeInForce = Literal["gtc", "day", "ioc", "fok"]
Liquidity = Literal["maker", "taker"]
OptionType = Literal["call", "put"]
Phase = Literal["closed", "pre_open", "opening_auction", "continuous"]
Role = Literal["market_maker", "hedge_fund", "arbitrage", "retail"]
StoredStatus = Literal["new", "partially_filled", "filled", "cancelled", "rejected"]


class OrderLike(Protocol):
    """What the builders read of an order (the worker's in-memory record or a model row)."""

    pk: int
    coid: str | None
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    price: Decimal | None
    quantity: int
    filled: int
    remaining: int
    cancelled: int
    notional: Decimal
    fees: Decimal
    status: str
    error_code: str | None
    error_message: str | None
    liquidity: str | None


# --- REST requests --------------------------------------------------------------------------------
class OrderForm(TypedDict):
    """The ``POST /orders`` body; any other field is refused (``UNKNOWN_FIELD``)."""

    instrument_id: Annotated[Text64, "A listed instrument."]
    order_type: OrderType
    side: Side
    quantity: Annotated[
        int, Schema(minimum=1, maximum=2**31 - 1), "Contracts; at most the role's and the instrument's maximum."
    ]
    price: NotRequired[
        Annotated[
            float | None,
            Schema(minimum=0, exclusiveMinimum=True, maximum=1e9, exclusiveMaximum=True),
            "Limit orders only (a market order must not have one; null is the same as none): a JSON number "
            "> 0 on the tick grid.",
        ]
    ]
    client_order_id: NotRequired[Annotated[Text64, "Echoed on every message about this order."]]
    time_in_force: NotRequired[
        Annotated[TimeInForce, "Default `gtc` for limit orders and `ioc` for market orders (`ioc` or `fok` only)."]
    ]
    request_id: NotRequired[Annotated[Text64, "Echoed in the reply."]]


# --- REST replies ---------------------------------------------------------------------------------
class OrderReply(TypedDict):
    """The ``POST /orders`` reply, whatever the status (except 401 and 403)."""

    order_id: Annotated[str | None, "`ORD_<n>`."]
    client_order_id: str | None
    status: Literal["accepted", "rejected", "pending_new"]
    timestamp: Timestamp
    filled_quantity: Annotated[int, "Filled when the verdict was given (an order that traded at once shows its fills)."]
    average_price: float | None
    fees: Annotated[float, "Of the fills so far: positive paid, negative a rebate."]
    liquidity_type: Liquidity | None
    error_code: str | None
    error_message: str | None
    details: Annotated[dict[str, Any] | None, "The numbers behind a rejection."]
    request_id: str | None


class CancelReply(TypedDict):
    """The ``DELETE /orders/{order_id}`` reply, whatever the status (except 401 and 403)."""

    order_id: Annotated[str, "The id as sent in the path."]
    client_order_id: str | None
    status: Literal["cancelled", "rejected", "pending_cancel"]
    cancelled_quantity: Annotated[int, "The remainder taken off the book."]
    filled_quantity: Annotated[int, "Filled so far."]
    error_code: str | None
    error_message: str | None
    timestamp: Timestamp


class CancelAllReply(TypedDict):
    results: Annotated[
        list[CancelReply],
        "One per order that was open when the matching engine reached the command (`[]` when none).",
    ]


class ErrorDetail(TypedDict):
    code: str
    message: Annotated[str, "Human text; do not parse."]
    details: Annotated[
        dict[str, Any],
        'Numbers and field names, e.g. `{"field": "depth"}` or `{"fields": {"team_name": ["..."]}}`; `{}` when '
        "there is nothing to add.",
    ]


class ErrorReply(TypedDict):
    """Every error outside the order and cancel replies."""

    error: ErrorDetail


class HealthComponents(TypedDict):
    database: bool
    redis: bool
    matching_worker: Annotated[bool, "The matching worker's heartbeat is fresh."]


class Health(TypedDict):
    status: Literal["ok", "degraded"]
    service: str
    components: HealthComponents


class Registered(TypedDict):
    team_id: Annotated[str, "`TEAM_<n>`."]
    team_name: str
    role: Role
    api_key: Annotated[str, "`itg_...`: shown only in this reply; the server keeps only a hash."]
    created_at: Timestamp


class OrderObject(TypedDict):
    """An order with its current state (``GET /orders``, the snapshot's ``open_orders``)."""

    order_id: Annotated[str, "`ORD_<n>`."]
    client_order_id: str | None
    instrument_id: Annotated[str, "As sent, also for an unknown instrument (rejected orders)."]
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: Annotated[float | None, "null for market orders."]
    quantity: int
    filled_quantity: int
    remaining_quantity: int
    cancelled_quantity: int
    average_price: float | None
    fees: float
    status: Annotated[StoredStatus, "A stored order is never `pending_new`: that status appears only in a 504 reply."]
    error_code: Annotated[str | None, "Why it was rejected, when it was."]
    created_at: Timestamp
    updated_at: Timestamp


class FillObject(TypedDict):
    trade_id: Annotated[str, "`TRD_<n>`."]
    order_id: str
    client_order_id: str | None
    instrument_id: str
    side: Side
    quantity: int
    price: float
    liquidity_type: Liquidity
    fees: Annotated[float, "Positive: paid; negative: a rebate received."]
    position: Annotated[int, "The team's net position in the instrument after this fill."]
    timestamp: Timestamp


class OrderDetail(OrderObject):
    """One order with its fills (``GET /orders/{order_id}``)."""

    fills: list[FillObject]


class OrderList(TypedDict):
    orders: list[OrderObject]


class FillList(TypedDict):
    fills: list[FillObject]


class Positions(TypedDict):
    team_id: str
    positions: Annotated[dict[str, int], "instrument_id → signed net position (contracts)."]


class LimitLeft(TypedDict):
    buy: int
    sell: int


class AccountPosition(TypedDict):
    instrument_id: str
    position: int
    limit: Annotated[int, "Per-instrument position limit of the role, either side."]
    limit_left: Annotated[LimitLeft, "How much more the filled position may grow each way."]
    average_price: Annotated[float | None, "Average cost of the open position."]
    mark_price: Annotated[float | None, "Mid of the book, else the last trade."]


class Account(TypedDict):
    team_id: str
    role: Role
    cash: float
    fees_paid: Annotated[float, "Net: fees paid minus rebates received."]
    realized_pnl: float
    unrealized_pnl: Annotated[float, "Marked at the mid (or the last trade)."]
    total_pnl: Annotated[float, "realized + unrealized − fees_paid."]
    positions: list[AccountPosition]
    portfolio_limit: int
    portfolio_used: Annotated[int, "Σ |position| over instruments."]


class Instrument(TypedDict):
    instrument_id: str
    underlying: str
    option_type: OptionType
    strike: float
    expiry: Date | None
    tick_size: float
    multiplier: int
    max_order_size: int
    status: Literal["active", "halted"]


class InstrumentList(TypedDict):
    instruments: list[Instrument]


class BookLevel(TypedDict):
    price: float
    quantity: Annotated[int, "Total resting quantity at this price."]


class LastTrade(TypedDict):
    trade_id: str
    price: float
    quantity: int
    aggressor_side: Side | None
    timestamp: Timestamp


class OrderBook(TypedDict):
    instrument_id: str
    bids: Annotated[list[BookLevel], "Best (highest) first."]
    asks: Annotated[list[BookLevel], "Best (lowest) first."]
    last_trade: LastTrade | None
    timestamp: Timestamp


class ScheduledPhase(TypedDict):
    phase: Phase
    at: Timestamp


class Game(TypedDict):
    phase: Phase
    next_phase: Phase | None
    next_phase_at: Timestamp | None
    schedule: Annotated[list[ScheduledPhase], "The coming phase changes, soonest first (`[]` when none is set)."]
    server_time: Timestamp


# --- WebSocket frame data -------------------------------------------------------------------------
class NewOrderAck(TypedDict):
    order_id: str
    client_order_id: str | None
    instrument_id: str
    side: str
    quantity: int
    order_type: str
    price: float | None
    time_in_force: str
    status: Literal["new"]


class NewOrderReject(TypedDict):
    order_id: str
    client_order_id: str | None
    instrument_id: str
    status: Literal["rejected"]
    error_code: str
    reason: str


class ExecutionReport(TypedDict):
    order_id: str
    client_order_id: str | None
    trade_id: str
    instrument_id: str
    side: str
    executed_quantity: int
    executed_price: float
    remaining_quantity: int
    order_status: Literal["partially_filled", "filled"]
    liquidity_type: Literal["maker", "taker"]
    fees: float
    position: int


class CancelAck(TypedDict):
    order_id: str
    client_order_id: str | None
    status: Literal["cancelled"]
    cancelled_quantity: int
    reason: str


class CancelReject(TypedDict):
    order_id: str
    client_order_id: str | None
    status: Literal["cancel_rejected"]
    error_code: str
    reason: str


class TradeFrame(TypedDict):
    instrument_id: str
    trade_id: str
    price: float
    quantity: int
    aggressor_side: str | None


class MarketData(TypedDict):
    instrument_id: str
    bid: float | None
    bid_size: int
    ask: float | None
    ask_size: int
    last: float | None
    last_size: int | None
    volume: int


class EventFrame(TypedDict, total=False):
    event_id: int
    event_type: str
    phase: str
    previous_phase: str
    scope: str
    instrument_id: str | None
    headline: str


class PositionSnapshot(TypedDict):
    positions: dict[str, int]
    open_orders: list[OrderObject]
    last_trade_id: str | None


class Underlying(TypedDict):
    symbol: str
    price: float


class Signal(TypedDict, total=False):
    signal_type: str


class Pong(TypedDict):
    pass


class Subscribed(TypedDict):
    instruments: list[str]


class ErrorFrame(TypedDict):
    code: str
    message: str


FRAME_SHAPES: dict[str, type] = {
    "position_snapshot": PositionSnapshot,
    "underlying": Underlying,
    "signal": Signal,
    "pong": Pong,
    "subscribed": Subscribed,
    "error": ErrorFrame,
    "new_order_ack": NewOrderAck,
    "new_order_reject": NewOrderReject,
    "execution_report": ExecutionReport,
    "cancel_ack": CancelAck,
    "cancel_reject": CancelReject,
    "trade": TradeFrame,
    "market_data": MarketData,
    "event": EventFrame,
}


def order_id(pk: int) -> str:
    return f"ORD_{pk}"


def trade_id(pk: int) -> str:
    return f"TRD_{pk}"


def average_price(order: OrderLike) -> float | None:
    if not order.filled:
        return None
    return wire((order.notional / order.filled).quantize(AVERAGE_PLACES))


def order_reply(order: OrderLike, timestamp: str, request_id: str | None, details: dict[str, Any] | None) -> OrderReply:
    """The ``POST /orders`` reply for an order the worker decided (fills so far included)."""
    rejected = order.status == "rejected"
    return {
        "order_id": order_id(order.pk),
        "client_order_id": order.coid,
        "status": "rejected" if rejected else "accepted",
        "timestamp": timestamp,
        "filled_quantity": order.filled,
        "average_price": average_price(order),
        "fees": wire(order.fees) or 0.0,
        "liquidity_type": order.liquidity,
        "error_code": order.error_code,
        "error_message": order.error_message,
        "details": details,
        "request_id": request_id,
    }


def refused_order_reply(
    timestamp: str,
    code: str,
    message: str,
    *,
    status: Literal["rejected", "pending_new"] = "rejected",
    client_order_id: str | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> OrderReply:
    """A reply for a request that made no order (400, 413, 415, 429, 503, 504)."""
    return {
        "order_id": None,
        "client_order_id": client_order_id,
        "status": status,
        "timestamp": timestamp,
        "filled_quantity": 0,
        "average_price": None,
        "fees": 0.0,
        "liquidity_type": None,
        "error_code": code,
        "error_message": message,
        "details": details,
        "request_id": request_id,
    }


def cancel_reply(
    order_id_text: str,
    timestamp: str,
    status: Literal["cancelled", "rejected", "pending_cancel"],
    *,
    client_order_id: str | None = None,
    cancelled_quantity: int = 0,
    filled_quantity: int = 0,
    error_code: str | None = None,
    error_message: str | None = None,
) -> CancelReply:
    return {
        "order_id": order_id_text,
        "client_order_id": client_order_id,
        "status": status,
        "cancelled_quantity": cancelled_quantity,
        "filled_quantity": filled_quantity,
        "error_code": error_code,
        "error_message": error_message,
        "timestamp": timestamp,
    }


def new_order_ack(order: OrderLike) -> NewOrderAck:
    return {
        "order_id": order_id(order.pk),
        "client_order_id": order.coid,
        "instrument_id": order.symbol,
        "side": order.side,
        "quantity": order.quantity,
        "order_type": order.order_type,
        "price": wire(order.price),
        "time_in_force": order.time_in_force,
        "status": "new",
    }


def new_order_reject(order: OrderLike) -> NewOrderReject:
    return {
        "order_id": order_id(order.pk),
        "client_order_id": order.coid,
        "instrument_id": order.symbol,
        "status": "rejected",
        "error_code": order.error_code or "",
        "reason": order.error_message or "",
    }


def execution_report(
    order: OrderLike, trade: int, price: Decimal, quantity: int, liquidity: Literal["maker", "taker"], fee: Decimal, position: int
) -> ExecutionReport:
    return {
        "order_id": order_id(order.pk),
        "client_order_id": order.coid,
        "trade_id": trade_id(trade),
        "instrument_id": order.symbol,
        "side": order.side,
        "executed_quantity": quantity,
        "executed_price": float(price),
        "remaining_quantity": order.remaining,
        "order_status": "filled" if order.remaining == 0 else "partially_filled",
        "liquidity_type": liquidity,
        "fees": float(fee),
        "position": position,
    }


def cancel_ack(order: OrderLike, quantity: int, reason: str) -> CancelAck:
    return {
        "order_id": order_id(order.pk),
        "client_order_id": order.coid,
        "status": "cancelled",
        "cancelled_quantity": quantity,
        "reason": reason,
    }


def cancel_reject(order: OrderLike, code: str, reason: str) -> CancelReject:
    return {
        "order_id": order_id(order.pk),
        "client_order_id": order.coid,
        "status": "cancel_rejected",
        "error_code": code,
        "reason": reason,
    }


def trade_frame(symbol: str, trade: int, price: Decimal, quantity: int, aggressor: str | None) -> TradeFrame:
    return {
        "instrument_id": symbol,
        "trade_id": trade_id(trade),
        "price": float(price),
        "quantity": quantity,
        "aggressor_side": aggressor,
    }


def market_data(
    symbol: str,
    bid: Decimal | None,
    bid_size: int,
    ask: Decimal | None,
    ask_size: int,
    last: Decimal | None,
    last_size: int | None,
    volume: int,
) -> MarketData:
    return {
        "instrument_id": symbol,
        "bid": wire(bid),
        "bid_size": bid_size,
        "ask": wire(ask),
        "ask_size": ask_size,
        "last": wire(last),
        "last_size": last_size,
        "volume": volume,
    }


# --- checking a received frame against its declaration (tests, and anyone debugging a client) -----
def frame_problems(frame: Any) -> list[str]:
    """What is wrong with a WebSocket frame as received (envelope and ``data`` against its
    declared shape): an empty list when nothing is."""
    if not isinstance(frame, dict):
        return ["a frame is a JSON object"]
    problems = []
    if set(frame) != {"seq", "type", "timestamp", "data"}:
        problems.append(f"envelope keys {sorted(frame)}")
    if not isinstance(frame.get("seq"), int) or isinstance(frame.get("seq"), bool):
        problems.append("seq is not an integer")
    stamp = frame.get("timestamp")
    if not isinstance(stamp, str) or not stamp.endswith("Z") or len(stamp) != 27:
        problems.append(f"timestamp {stamp!r} is not UTC with microseconds and a Z")
    shape = FRAME_SHAPES.get(frame.get("type"))  # type: ignore[arg-type]
    if shape is None:
        return [*problems, f"undeclared frame type {frame.get('type')!r}"]
    return problems + [f"{frame['type']}: {p}" for p in value_problems(frame.get("data"), shape)]


def value_problems(value: Any, declared: Any, where: str = "data") -> list[str]:
    origin = get_origin(declared)
    if declared is Any:
        return []
    if is_typeddict(declared):
        if not isinstance(value, dict):
            return [f"{where} is not an object"]
        hints = get_type_hints(declared)
        required = declared.__required_keys__  # type: ignore[attr-defined]
        problems = [f"{where}.{key} is missing" for key in sorted(required - value.keys())]
        if declared.__total__:  # type: ignore[attr-defined]
            problems += [f"{where}.{key} is not declared" for key in sorted(value.keys() - hints.keys())]
        for key, hint in hints.items():
            if key in value:
                problems += value_problems(value[key], hint, f"{where}.{key}")
        return problems
    if origin in (Union, UnionType):
        options = get_args(declared)
        if any(not value_problems(value, option, where) for option in options):
            return []
        return [f"{where} = {value!r} is none of {options}"]
    if origin is Literal:
        return [] if value in get_args(declared) else [f"{where} = {value!r} is not one of {get_args(declared)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where} is not a list"]
        (item,) = get_args(declared)
        return [p for i, v in enumerate(value) for p in value_problems(v, item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where} is not an object"]
        _, item = get_args(declared)
        return [p for k, v in value.items() for p in value_problems(v, item, f"{where}.{k}")]
    if declared is type(None):
        return [] if value is None else [f"{where} is not null"]
    if declared is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where} = {value!r} is not a number"]
    if declared is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where} = {value!r} is not an integer"]
    if isinstance(declared, type):
        return [] if isinstance(value, declared) else [f"{where} = {value!r} is not {declared.__name__}"]
    return []
