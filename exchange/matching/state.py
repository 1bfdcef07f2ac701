"""The worker's in-memory state: what it alone changes and decides against, rebuilt from the
database at start. Plain slotted classes: the hot path reads and writes attributes, nothing else."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from exchange.engine import Side

FINISHED_KEPT = 200_000  # finished orders remembered for cancels and resends (older ones: the database)


class OrderRec:
    """One order as the worker knows it; ``stored`` once its row exists in the database."""

    __slots__ = (
        "pk",
        "team",
        "symbol",
        "instrument_known",
        "side",
        "order_type",
        "time_in_force",
        "price",
        "quantity",
        "filled",
        "remaining",
        "cancelled",
        "notional",
        "fees",
        "status",
        "coid",
        "error_code",
        "error_message",
        "cancel_reason",
        "accepted_seq",
        "created_at",
        "liquidity",
        "stored",
        "fingerprint",
    )

    def __init__(
        self,
        pk: int,
        team: int,
        symbol: str,
        side: str,
        order_type: str,
        time_in_force: str,
        price: Decimal | None,
        quantity: int,
        coid: str | None,
        created_at: datetime,
    ) -> None:
        self.pk = pk
        self.team = team
        self.symbol = symbol
        self.instrument_known = True
        self.side = side
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.price = price
        self.quantity = quantity
        self.filled = 0
        self.remaining = quantity
        self.cancelled = 0
        self.notional = Decimal(0)
        self.fees = Decimal(0)
        self.status = "new"
        self.coid = coid
        self.error_code: str | None = None
        self.error_message: str | None = None
        self.cancel_reason: str | None = None
        self.accepted_seq: int | None = None
        self.created_at = created_at
        self.liquidity: str | None = None
        self.stored = False
        self.fingerprint: tuple[object, ...] | None = None

    @property
    def is_open(self) -> bool:
        return self.status in ("new", "partially_filled")


class TeamState:
    """A team's standing: flags, role, positions, open quantities, cash; and its open client ids."""

    __slots__ = (
        "pk",
        "role",
        "active",
        "halted",
        "positions",
        "open_buy",
        "open_sell",
        "cash",
        "fees",
        "open_coids",
        "latest_coids",
    )

    def __init__(self, pk: int, role: str, active: bool, halted: bool) -> None:
        self.pk = pk
        self.role = role
        self.active = active
        self.halted = halted
        self.positions: dict[str, int] = {}
        self.open_buy: dict[str, int] = {}
        self.open_sell: dict[str, int] = {}
        self.cash = Decimal(0)
        self.fees = Decimal(0)
        self.open_coids: dict[str, int] = {}
        # The team's latest order per client id, for resends (API.md, "Resends").
        self.latest_coids: OrderedDict[str, OrderRec] = OrderedDict()

    def add_open(self, order: OrderRec) -> None:
        book = self.open_buy if order.side == Side.BUY else self.open_sell
        book[order.symbol] = book.get(order.symbol, 0) + order.remaining

    def take_open(self, order: OrderRec, quantity: int) -> None:
        book = self.open_buy if order.side == Side.BUY else self.open_sell
        book[order.symbol] = book.get(order.symbol, 0) - quantity

    def remember_coid(self, order: OrderRec) -> None:
        if order.coid is None:
            return
        self.latest_coids[order.coid] = order
        self.latest_coids.move_to_end(order.coid)
        if len(self.latest_coids) > FINISHED_KEPT // 10:
            self.latest_coids.popitem(last=False)


class InstrumentState:
    __slots__ = ("symbol", "tick", "multiplier", "max_order_size", "listed", "halted", "volume", "last", "last_size")

    def __init__(
        self, symbol: str, tick: Decimal, multiplier: int, max_order_size: int, listed: bool, halted: bool
    ) -> None:
        self.symbol = symbol
        self.tick = tick
        self.multiplier = multiplier
        self.max_order_size = max_order_size
        self.listed = listed
        self.halted = halted
        self.volume = 0
        self.last: Decimal | None = None
        self.last_size: int | None = None


@dataclass
class Policy:
    role: str
    position_limit: int
    portfolio_limit: int
    max_order_size: int
    orders_per_second: int
    maker_fee: Decimal
    taker_fee: Decimal
    market_orders_allowed: bool

    FIELDS = (
        "position_limit",
        "portfolio_limit",
        "max_order_size",
        "orders_per_second",
        "maker_fee",
        "taker_fee",
        "market_orders_allowed",
    )


@dataclass
class GameState:
    phase: str = "continuous"
    halted: bool = False


@dataclass
class Finished:
    """Orders that left the book, newest last, bounded (cancels of old orders read the database)."""

    orders: OrderedDict[int, OrderRec] = field(default_factory=OrderedDict)

    def add(self, order: OrderRec) -> None:
        self.orders[order.pk] = order
        if len(self.orders) > FINISHED_KEPT:
            self.orders.popitem(last=False)

    def get(self, pk: int) -> OrderRec | None:
        return self.orders.get(pk)
