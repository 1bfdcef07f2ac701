"""Order book of one instrument: price levels kept sorted, each a time-priority queue of orders.

Both sides keep their prices in a list sorted so that the best price is last (bids by price,
asks by negated price): taking out the best level is a ``list.pop()``, and a new price is a
``bisect.insort`` into a list of at most a few hundred prices. Each level is a doubly linked
list of its orders in arrival order, so appending, filling the head and cancelling from the
middle all cost O(1); a dict gives the level of a price.

Arrival order across levels and sides is not stored per order: the engine's id index is a dict
filled in arrival order (dicts keep insertion order), and the auction and the invariant check
read ranks from it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

from exchange.engine.types import Side, TimeInForce


class InvariantViolation(AssertionError):
    """The book's internal bookkeeping disagrees with itself."""


class BookOrder:
    """A live order on the book (mutable; the engine's own record), linked to its neighbours
    in the queue of its price level."""

    __slots__ = (
        "client_order_id",
        "instrument_id",
        "next",
        "order_id",
        "prev",
        "price",
        "quantity",
        "remaining",
        "side",
        "team_id",
        "time_in_force",
    )

    def __init__(
        self,
        order_id: int,
        team_id: int,
        instrument_id: str,
        client_order_id: str | None,
        side: Side,
        price: int,
        quantity: int,
        remaining: int,
        time_in_force: TimeInForce,
    ) -> None:
        self.order_id = order_id
        self.team_id = team_id
        self.instrument_id = instrument_id
        self.client_order_id = client_order_id
        self.side = side
        self.price = price
        self.quantity = quantity
        self.remaining = remaining
        self.time_in_force = time_in_force
        self.prev: BookOrder | None = None
        self.next: BookOrder | None = None

    def __repr__(self) -> str:
        return (
            f"BookOrder(id={self.order_id}, team={self.team_id}, {self.side} "
            f"{self.remaining}/{self.quantity}@{self.price})"
        )


class PriceLevel:
    """Orders at one price, oldest (``head``) to newest (``tail``), with their total remainder."""

    __slots__ = ("count", "head", "price", "tail", "total")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head: BookOrder | None = None
        self.tail: BookOrder | None = None
        self.total = 0
        self.count = 0

    def __iter__(self) -> Iterator[BookOrder]:
        order = self.head
        while order is not None:
            yield order
            order = order.next


class BookSide:
    """One side of a book. ``keys`` holds ``sign * price`` ascending, so the best price is last."""

    __slots__ = ("keys", "levels", "side", "sign")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sign = 1 if side is Side.BUY else -1
        self.levels: dict[int, PriceLevel] = {}
        self.keys: list[int] = []

    def best_price(self) -> int | None:
        keys = self.keys
        return self.sign * keys[-1] if keys else None

    def add(self, order: BookOrder) -> None:
        """Queue a live order at the back of its price level."""
        price = order.price
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = PriceLevel(price)
            key = self.sign * price
            keys = self.keys
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                insort(keys, key)
            level.head = order
        else:
            order.price = level.price  # one int object per level, not per order
            tail = level.tail
            order.prev = tail
            tail.next = order  # type: ignore[union-attr]  # a level with orders has a tail
        level.tail = order
        level.total += order.remaining
        level.count += 1

    def remove(self, order: BookOrder) -> None:
        """Take a live order out of its level (its fields keep their last values)."""
        level = self.levels[order.price]
        level.total -= order.remaining
        level.count -= 1
        if not level.count:
            self.drop_level(level)
            return
        prev, nxt = order.prev, order.next
        if prev is None:
            level.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt.prev = prev
        order.prev = order.next = None

    def drop_level(self, level: PriceLevel) -> None:
        """Forget a level that holds no live order any more."""
        del self.levels[level.price]
        level.head = level.tail = None
        key = self.sign * level.price
        keys = self.keys
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def execute(self, order: BookOrder, quantity: int) -> None:
        """Reduce a live order by a traded quantity; a filled order leaves its level."""
        if order.remaining == quantity:
            self.remove(order)
            order.remaining = 0
        else:
            order.remaining -= quantity
            self.levels[order.price].total -= quantity

    def levels_in_priority(self) -> Iterator[PriceLevel]:
        levels = self.levels
        sign = self.sign
        for key in reversed(self.keys):
            yield levels[sign * key]

    def orders_in_priority(self) -> Iterator[BookOrder]:
        for level in self.levels_in_priority():
            yield from level

    def depth(self, max_levels: int) -> list[tuple[int, int]]:
        """(price, total) of the best ``max_levels`` levels, best first."""
        levels = self.levels
        sign = self.sign
        keys = self.keys
        best = keys[len(keys) - min(max(max_levels, 0), len(keys)) :]
        return [(sign * key, levels[sign * key].total) for key in reversed(best)]

    def check(self, arrival_rank: dict[int, int]) -> list[BookOrder]:
        """Raise InvariantViolation on inconsistent levels; return the live orders."""
        live: list[BookOrder] = []
        if self.keys != sorted(set(self.keys)):
            raise InvariantViolation(f"{self.side} price keys not strictly sorted: {self.keys}")
        if sorted(self.sign * k for k in self.keys) != sorted(self.levels):
            raise InvariantViolation(f"{self.side} price keys and levels differ")
        for price, level in self.levels.items():
            if level.price != price:
                raise InvariantViolation(f"level {level.price} stored under {price}")
            orders: list[BookOrder] = []
            previous = None
            order = level.head
            while order is not None and len(orders) <= level.count:
                if order.prev is not previous:
                    raise InvariantViolation(f"{order!r}: broken backward link")
                orders.append(order)
                previous, order = order, order.next
            if not orders or level.count != len(orders) or level.tail is not previous:
                raise InvariantViolation(f"level {price}: count {level.count}, linked {len(orders)}")
            if level.total != sum(o.remaining for o in orders):
                raise InvariantViolation(f"level {price}: total {level.total} is not the sum")
            for o in orders:
                if o.order_id not in arrival_rank:
                    raise InvariantViolation(f"{o!r} missing from the id index")
                if o.price != price or o.side is not self.side:
                    raise InvariantViolation(f"{o!r} sits in the wrong level")
                if not 0 < o.remaining <= o.quantity:
                    raise InvariantViolation(f"{o!r} has an impossible remainder")
            ranks = [arrival_rank[o.order_id] for o in orders]
            if ranks != sorted(ranks):
                raise InvariantViolation(f"level {price}: time priority broken")
            live.extend(orders)
        return live


class OrderBook:
    """Bids and asks of one instrument, and the top of book last reported for it."""

    __slots__ = ("asks", "bids", "instrument_id", "last_top")

    def __init__(self, instrument_id: str) -> None:
        self.instrument_id = instrument_id
        self.bids = BookSide(Side.BUY)
        self.asks = BookSide(Side.SELL)
        self.last_top: tuple[int | None, int, int | None, int] = (None, 0, None, 0)

    def top(self) -> tuple[int | None, int, int | None, int]:
        """(bid, bid_size, ask, ask_size)."""
        bid_keys = self.bids.keys
        ask_keys = self.asks.keys
        if bid_keys:
            bid = bid_keys[-1]
            bid_size = self.bids.levels[bid].total
        else:
            bid, bid_size = None, 0
        if ask_keys:
            ask = -ask_keys[-1]
            ask_size = self.asks.levels[ask].total
        else:
            ask, ask_size = None, 0
        return (bid, bid_size, ask, ask_size)

    def side(self, side: Side) -> BookSide:
        return self.bids if side is Side.BUY else self.asks

    def orders_in_priority(self) -> Iterator[BookOrder]:
        """Bids best first, then asks best first; time priority within a price."""
        yield from self.bids.orders_in_priority()
        yield from self.asks.orders_in_priority()
