"""Events the matching engine returns; the caller persists and publishes them in list order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from exchange.engine.types import CancelReason, OrderStatus, OrderType, Side, TimeInForce


@dataclass(slots=True, frozen=True)
class OrderAccepted:
    """The engine took the order; always the first event about it."""

    order_id: int
    team_id: int
    instrument_id: str
    client_order_id: str | None
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int | None
    quantity: int


@dataclass(slots=True, frozen=True)
class OrderRejected:
    """The engine refused the order; nothing about it changed and nothing else follows."""

    order_id: int
    team_id: int
    instrument_id: str
    client_order_id: str | None
    code: str
    reason: str


@dataclass(slots=True, frozen=True)
class FillParty:
    """One side of a trade, with the order's state right after this fill."""

    order_id: int
    team_id: int
    client_order_id: str | None
    side: Side
    filled_quantity: int
    remaining_quantity: int
    status: OrderStatus
    price: int | None


@dataclass(slots=True, frozen=True)
class Fill:
    """A trade between a resting order (maker) and the order that met it (taker)."""

    trade_id: int
    instrument_id: str
    price: int
    quantity: int
    aggressor_side: Side | None
    maker: FillParty
    taker: FillParty


@dataclass(slots=True, frozen=True)
class OrderCancelled:
    """The order's remainder left the book, or never rested; the order is finished."""

    order_id: int
    team_id: int
    instrument_id: str
    client_order_id: str | None
    side: Side
    cancelled_quantity: int
    filled_quantity: int
    reason: CancelReason


@dataclass(slots=True, frozen=True)
class CancelRejected:
    """A cancel that changed nothing: the order is not resting, not the team's, or the phase forbids it."""

    order_id: int
    team_id: int
    code: str
    reason: str


@dataclass(slots=True, frozen=True)
class TopOfBook:
    """Best bid and ask of one instrument after a command changed them (sizes are 0 when empty)."""

    instrument_id: str
    bid: int | None
    bid_size: int
    ask: int | None
    ask_size: int


Event = OrderAccepted | OrderRejected | Fill | OrderCancelled | CancelRejected | TopOfBook

_T = TypeVar("_T")


def frozen_factory(cls: type[_T]) -> Callable[..., _T]:
    """A fast positional constructor for the frozen, slotted dataclass ``cls``.

    A frozen dataclass's ``__init__`` stores every field through ``object.__setattr__``, about
    three times the cost of a plain store, and the engine builds events on every command. The
    factory fills an instance of a plain class with exactly the same slots, then gives it its
    real class. The result is a genuine ``cls`` instance: same equality, hash, repr, pickling
    and immutability as ``cls(*args)`` (a test holds the two to be equal).
    """
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    if getattr(cls, "__slots__", None) != names:
        raise TypeError(f"{cls.__name__} must be a dataclass with slots=True")
    draft = type(f"_{cls.__name__}Draft", (), {"__slots__": names})
    stores = "".join(f"    self.{name} = {name}\n" for name in names)
    source = (
        f"def new_{cls.__name__}({', '.join(names)}):\n"
        f"    self = _new(_draft)\n{stores}    self.__class__ = _cls\n    return self\n"
    )
    namespace: dict[str, Any] = {"_new": object.__new__, "_draft": draft, "_cls": cls}
    exec(source, namespace)
    factory: Callable[..., _T] = namespace[f"new_{cls.__name__}"]
    return factory


new_order_accepted = frozen_factory(OrderAccepted)
new_fill = frozen_factory(Fill)
new_fill_party = frozen_factory(FillParty)
new_order_cancelled = frozen_factory(OrderCancelled)
new_top_of_book = frozen_factory(TopOfBook)
