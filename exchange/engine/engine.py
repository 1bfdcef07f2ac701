"""The matching engine: order books for every instrument, commands in, events out.

Single-threaded and deterministic: trade ids come from the ``next_trade_id`` callable, nothing
reads a clock or draws a random number, and the same commands always give the same events.
The hot paths (``submit``, ``cancel``) are written for speed: locals instead of attribute
lookups, identity checks on enum members, events built with ``frozen_factory`` constructors,
and the top of book recomputed only when the best level may have changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from exchange.engine.auction import run_opening_auction
from exchange.engine.book import BookOrder, BookSide, InvariantViolation, OrderBook
from exchange.engine.commands import CancelOrder, NewOrder
from exchange.engine.events import (
    CancelRejected,
    Event,
    OrderCancelled,
    OrderRejected,
    TopOfBook,
    new_fill,
    new_fill_party,
    new_order_accepted,
    new_order_cancelled,
    new_top_of_book,
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

# Turn a member or its wire string into the member (None when invalid); used off the fast path.
_SIDES: dict[object, Side] = {s: s for s in Side}
_ORDER_TYPES: dict[object, OrderType] = {t: t for t in OrderType}
_TIME_IN_FORCE: dict[object, TimeInForce] = {t: t for t in TimeInForce}
_REASONS: dict[object, CancelReason] = {r: r for r in CancelReason}

_BUY = Side.BUY
_SELL = Side.SELL
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_DAY = TimeInForce.DAY
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_CONTINUOUS = Phase.CONTINUOUS
_PRE_OPEN = Phase.PRE_OPEN
_FILLED = OrderStatus.FILLED
_PARTIALLY_FILLED = OrderStatus.PARTIALLY_FILLED
_USER_REQUESTED = CancelReason.USER_REQUESTED
_STP = CancelReason.SELF_TRADE_PREVENTED
_IOC_REMAINDER = CancelReason.IOC_REMAINDER
_FOK_UNFILLED = CancelReason.FOK_UNFILLED

_EMPTY_TOP: tuple[int | None, int, int | None, int] = (None, 0, None, 0)


class MatchingEngine:
    """Books of all instruments of one matching shard.

    Phases: ``continuous`` matches on arrival; ``pre_open`` takes resting limit orders
    (``gtc``/``day``) and cancels but never matches; ``closed`` and ``opening_auction`` refuse
    orders and user cancels with ``MARKET_CLOSED``. Entering ``continuous`` from any other phase
    runs the opening auction on every book; entering ``closed`` cancels ``day`` orders.
    """

    def __init__(self, *, next_trade_id: Callable[[], int], phase: Phase = Phase.CLOSED) -> None:
        self._next_trade_id = next_trade_id
        self._phase = Phase(phase)
        self._books: dict[str, OrderBook] = {}
        # Live orders by id, inserted in arrival order: this order is the time priority the
        # auction and the invariant check read back (orders are never re-inserted).
        self._index: dict[int, BookOrder] = {}
        # Ids of orders that finished since the engine started or was last restored.
        self._finished: set[int] = set()

    @property
    def phase(self) -> Phase:
        return self._phase

    # ------------------------------------------------------------------ orders

    def submit(self, order: NewOrder) -> list[Event]:
        """Take a new order: accept (then match, rest or cancel its remainder) or reject it."""
        phase = self._phase
        if phase is not _CONTINUOUS and phase is not _PRE_OPEN:
            return [_rejected(order, EngineRejectCode.MARKET_CLOSED, f"no orders in phase {phase}")]
        order_id = order.order_id
        index = self._index
        if order_id in index or order_id in self._finished:
            return [_rejected(order, EngineRejectCode.DUPLICATE_ORDER_ID, "order id already used")]
        side = order.side
        if side is not _BUY and side is not _SELL:
            known_side = _SIDES.get(side)
            if known_side is None:
                return [_rejected(order, EngineRejectCode.INVALID_SIDE, "side must be buy or sell")]
            side = known_side
        order_type = order.order_type
        if order_type is not _LIMIT and order_type is not _MARKET:
            known_type = _ORDER_TYPES.get(order_type)
            if known_type is None:
                return [_rejected(order, EngineRejectCode.INVALID_ORDER_TYPE, "order type must be limit or market")]
            order_type = known_type
        time_in_force = order.time_in_force
        if time_in_force is not _GTC and time_in_force is not _DAY and time_in_force is not _IOC:
            known_tif = _TIME_IN_FORCE.get(time_in_force)
            if known_tif is None:
                return [
                    _rejected(
                        order, EngineRejectCode.INVALID_TIME_IN_FORCE, "time in force must be gtc, day, ioc or fok"
                    )
                ]
            time_in_force = known_tif
        quantity = order.quantity
        if type(quantity) is not int or quantity <= 0:
            return [_rejected(order, EngineRejectCode.INVALID_QUANTITY, "quantity must be a positive integer")]
        price = order.price
        if order_type is _LIMIT:
            if type(price) is not int or price <= 0:
                return [
                    _rejected(order, EngineRejectCode.INVALID_PRICE, "a limit order needs a positive price in ticks")
                ]
        elif price is not None:
            return [_rejected(order, EngineRejectCode.PRICE_NOT_ALLOWED, "a market order carries no price")]
        may_rest = order_type is _LIMIT and (time_in_force is _GTC or time_in_force is _DAY)
        if phase is _PRE_OPEN and not may_rest:
            return [
                _rejected(
                    order,
                    EngineRejectCode.ORDER_TYPE_NOT_ALLOWED,
                    "only resting limit orders (gtc or day) are taken before the open",
                )
            ]

        instrument_id = order.instrument_id
        book = self._books.get(instrument_id)
        if book is None:
            book = self._books[instrument_id] = OrderBook(instrument_id)
        instrument_id = book.instrument_id  # one string object per book, not per order
        team_id = order.team_id
        client_order_id = order.client_order_id
        events: list[Event] = [
            new_order_accepted(
                order_id, team_id, instrument_id, client_order_id, side, order_type, time_in_force, price, quantity
            )
        ]
        if phase is _CONTINUOUS:
            if side is _BUY:
                opposite = book.asks
                limit_key = None if price is None else -price
            else:
                opposite = book.bids
                limit_key = price
            keys = opposite.keys
            if keys and (limit_key is None or keys[-1] >= limit_key):
                if time_in_force is _FOK and not _fok_fillable(opposite, limit_key, team_id, quantity):
                    events.append(
                        new_order_cancelled(
                            order_id, team_id, instrument_id, client_order_id, side, quantity, 0, _FOK_UNFILLED
                        )
                    )
                    self._finished.add(order_id)
                    return events
                remaining, self_trade = self._match(
                    events,
                    opposite,
                    limit_key,
                    order_id,
                    team_id,
                    instrument_id,
                    client_order_id,
                    side,
                    price,
                    quantity,
                )
                if remaining and (self_trade or not may_rest):
                    events.append(
                        new_order_cancelled(
                            order_id,
                            team_id,
                            instrument_id,
                            client_order_id,
                            side,
                            remaining,
                            quantity - remaining,
                            _STP if self_trade else _IOC_REMAINDER,
                        )
                    )
                    remaining = 0
                if remaining:
                    own = book.bids if side is _BUY else book.asks
                    resting = BookOrder(
                        order_id,
                        team_id,
                        instrument_id,
                        client_order_id,
                        side,
                        price,  # type: ignore[arg-type]  # a limit order's price, checked above
                        quantity,
                        remaining,
                        time_in_force,
                    )
                    own.add(resting)
                    index[order_id] = resting
                else:
                    self._finished.add(order_id)
                # Trades changed the opposite side (or, after STP, perhaps nothing did).
                top = book.top()
                if top != book.last_top:
                    book.last_top = top
                    events.append(new_top_of_book(instrument_id, *top))
                return events
            if not may_rest:
                events.append(
                    new_order_cancelled(
                        order_id,
                        team_id,
                        instrument_id,
                        client_order_id,
                        side,
                        quantity,
                        0,
                        _FOK_UNFILLED if time_in_force is _FOK else _IOC_REMAINDER,
                    )
                )
                self._finished.add(order_id)
                return events

        # Rest without trading (nothing crosses, or pre-open).
        own = book.bids if side is _BUY else book.asks
        resting = BookOrder(
            order_id,
            team_id,
            instrument_id,
            client_order_id,
            side,
            price,  # type: ignore[arg-type]  # a limit order's price, checked above
            quantity,
            quantity,
            time_in_force,
        )
        own.add(resting)
        index[order_id] = resting
        if own.keys[-1] == own.sign * resting.price:  # joined or set the best price
            top = book.top()
            if top != book.last_top:
                book.last_top = top
                events.append(new_top_of_book(instrument_id, *top))
        return events

    def _match(
        self,
        events: list[Event],
        opposite: BookSide,
        limit_key: int | None,
        order_id: int,
        team_id: int,
        instrument_id: str,
        client_order_id: str | None,
        side: Side,
        price: int | None,
        quantity: int,
    ) -> tuple[int, bool]:
        """Trade an incoming order against ``opposite``; return (remaining, stopped by STP).

        ``limit_key`` is the order's limit in the opposite side's key space (None: market).
        """
        keys = opposite.keys
        levels = opposite.levels
        sign = opposite.sign
        index = self._index
        finished = self._finished
        next_trade_id = self._next_trade_id
        append = events.append
        remaining = quantity
        while keys:
            key = keys[-1]
            if limit_key is not None and key < limit_key:
                break
            level = levels[sign * key]
            level_price = level.price
            maker = level.head
            while maker is not None:
                if maker.team_id == team_id:
                    return remaining, True
                maker_remaining = maker.remaining
                traded = min(maker_remaining, remaining)
                maker_remaining -= traded
                remaining -= traded
                maker.remaining = maker_remaining
                level.total -= traded
                maker_id = maker.order_id
                if maker_remaining:
                    maker_status = _PARTIALLY_FILLED
                    following = None
                else:
                    maker_status = _FILLED
                    following = maker.next
                    level.head = following
                    if following is not None:
                        following.prev = None
                        maker.next = None
                    level.count -= 1
                    del index[maker_id]
                    finished.add(maker_id)
                append(
                    new_fill(
                        next_trade_id(),
                        instrument_id,
                        level_price,
                        traded,
                        side,
                        new_fill_party(
                            maker_id,
                            maker.team_id,
                            maker.client_order_id,
                            maker.side,
                            maker.quantity - maker_remaining,
                            maker_remaining,
                            maker_status,
                            level_price,
                        ),
                        new_fill_party(
                            order_id,
                            team_id,
                            client_order_id,
                            side,
                            quantity - remaining,
                            remaining,
                            _PARTIALLY_FILLED if remaining else _FILLED,
                            price,
                        ),
                    )
                )
                if not remaining:
                    break
                maker = following
            if not level.count:
                del levels[level_price]
                level.tail = None
                keys.pop()
            if not remaining:
                break
        return remaining, False

    # ----------------------------------------------------------------- cancels

    def cancel(self, command: CancelOrder) -> list[Event]:
        """Cancel one resting order of the command's team."""
        reason = command.reason
        if reason is not _USER_REQUESTED:
            reason = _checked_reason(reason)
        if reason is _USER_REQUESTED:
            phase = self._phase
            if phase is not _CONTINUOUS and phase is not _PRE_OPEN:
                return [
                    CancelRejected(
                        command.order_id,
                        command.team_id,
                        EngineRejectCode.MARKET_CLOSED,
                        f"no cancels in phase {phase}",
                    )
                ]
        order = self._index.get(command.order_id)
        if order is None or order.team_id != command.team_id:
            return [
                CancelRejected(
                    command.order_id, command.team_id, EngineRejectCode.ORDER_NOT_FOUND, "no open order with this id"
                )
            ]
        book = self._books[order.instrument_id]
        own = book.bids if order.side is _BUY else book.asks
        at_best = own.keys[-1] == own.sign * order.price
        events: list[Event] = [self._take_off(own, order, reason)]
        if at_best:
            top = book.top()
            if top != book.last_top:
                book.last_top = top
                events.append(new_top_of_book(book.instrument_id, *top))
        return events

    def cancel_all(
        self,
        team_id: int | None = None,
        instrument_id: str | None = None,
        reason: CancelReason = CancelReason.USER_REQUESTED,
    ) -> list[Event]:
        """Cancel every resting order of a team and/or an instrument (both None: all orders).

        Orders go instrument by instrument (sorted by id), bids before asks, in priority order.
        A user cancel in a phase without cancels answers one ``CancelRejected`` per order.
        """
        return self._cancel_where(
            instrument_id, lambda o: team_id is None or o.team_id == team_id, _checked_reason(reason)
        )

    def cancel_day_orders(self) -> list[Event]:
        """End of session: cancel every ``day`` order (reason ``session_end``), in any phase."""
        return self._cancel_where(None, lambda o: o.time_in_force is _DAY, CancelReason.SESSION_END)

    def _cancel_where(
        self, instrument_id: str | None, selected: Callable[[BookOrder], bool], reason: CancelReason
    ) -> list[Event]:
        if instrument_id is None:
            books = self._sorted_books()
        else:
            book = self._books.get(instrument_id)
            books = [] if book is None else [book]
        refuse = reason is _USER_REQUESTED and self._phase is not _CONTINUOUS and self._phase is not _PRE_OPEN
        events: list[Event] = []
        for book in books:
            for order in [o for o in book.orders_in_priority() if selected(o)]:
                if refuse:
                    events.append(
                        CancelRejected(
                            order.order_id,
                            order.team_id,
                            EngineRejectCode.MARKET_CLOSED,
                            f"no cancels in phase {self._phase}",
                        )
                    )
                else:
                    events.append(self._take_off(book.side(order.side), order, reason))
        self._report_tops(books, events)
        return events

    def _take_off(self, own: BookSide, order: BookOrder, reason: CancelReason) -> OrderCancelled:
        remaining = order.remaining
        own.remove(order)
        order_id = order.order_id
        del self._index[order_id]
        self._finished.add(order_id)
        return new_order_cancelled(
            order_id,
            order.team_id,
            order.instrument_id,
            order.client_order_id,
            order.side,
            remaining,
            order.quantity - remaining,
            reason,
        )

    # ------------------------------------------------------------------ phases

    def set_phase(self, phase: Phase, reference_prices: dict[str, int] | None = None) -> list[Event]:
        """Change the trading phase.

        Entering ``continuous`` from any other phase first runs the opening auction on every
        book (books sorted by instrument id; ``reference_prices`` per instrument, optional), so
        continuous trading never starts on a crossed book. Entering ``closed`` cancels ``day``
        orders. The caller announces the phase change itself.
        """
        phase = Phase(phase)
        previous = self._phase
        events: list[Event] = []
        books = self._sorted_books()
        if phase is _CONTINUOUS and previous is not _CONTINUOUS:
            self._auctions(books, reference_prices or {}, events)
        self._phase = phase
        if phase is Phase.CLOSED:
            for book in books:
                for order in [o for o in book.orders_in_priority() if o.time_in_force is _DAY]:
                    events.append(self._take_off(book.side(order.side), order, CancelReason.SESSION_END))
        self._report_tops(books, events)
        return events

    def run_auction(self, instrument_id: str, reference_price: int | None = None) -> list[Event]:
        """Uncross one book at a single price (see ``exchange.engine.auction``), in any phase."""
        book = self._books.get(instrument_id)
        if book is None:
            return []
        events: list[Event] = []
        self._auctions([book], {} if reference_price is None else {instrument_id: reference_price}, events)
        self._report_tops([book], events)
        return events

    def _auctions(self, books: list[OrderBook], references: dict[str, int], events: list[Event]) -> None:
        """Run the auction on each crossed book in turn."""
        arrival_rank: dict[int, int] | None = None
        for book in books:
            bid_keys = book.bids.keys
            ask_keys = book.asks.keys
            if not bid_keys or not ask_keys or bid_keys[-1] < -ask_keys[-1]:
                continue  # not crossed: nothing to do
            if arrival_rank is None:
                # Built once: removals leave the relative order of the other orders unchanged.
                arrival_rank = {order_id: n for n, order_id in enumerate(self._index)}
            auction_events, finished = run_opening_auction(
                book, references.get(book.instrument_id), arrival_rank, self._next_trade_id
            )
            for order in finished:
                del self._index[order.order_id]
                self._finished.add(order.order_id)
            events.extend(auction_events)

    # ----------------------------------------------------------- market data

    def top_of_book(self, instrument_id: str) -> TopOfBook:
        book = self._books.get(instrument_id)
        return TopOfBook(instrument_id, *(book.top() if book is not None else _EMPTY_TOP))

    def depth(self, instrument_id: str, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) as (price, total quantity), best first, at most ``levels`` each."""
        book = self._books.get(instrument_id)
        if book is None:
            return [], []
        return book.bids.depth(levels), book.asks.depth(levels)

    def _report_tops(self, books: Iterable[OrderBook], events: list[Event]) -> None:
        for book in sorted(books, key=lambda b: b.instrument_id):
            top = book.top()
            if top != book.last_top:
                book.last_top = top
                events.append(new_top_of_book(book.instrument_id, *top))

    def _sorted_books(self) -> list[OrderBook]:
        return [self._books[i] for i in sorted(self._books)]

    # ------------------------------------------------------ snapshot / restore

    def resting_orders(self) -> list[RestingOrder]:
        """Every resting order: instruments sorted by id, bids then asks, in priority order."""
        return [
            RestingOrder(
                order_id=o.order_id,
                team_id=o.team_id,
                instrument_id=o.instrument_id,
                client_order_id=o.client_order_id,
                side=o.side,
                price=o.price,
                quantity=o.quantity,
                remaining=o.remaining,
                filled=o.quantity - o.remaining,
                time_in_force=o.time_in_force,
                order_type=_LIMIT,
            )
            for book in self._sorted_books()
            for o in book.orders_in_priority()
        ]

    def resting_order_count(self) -> int:
        return len(self._index)

    def restore(self, orders: Iterable[RestingOrder]) -> None:
        """Replace all books with ``orders``, given in arrival order (the order they were taken).

        Emits nothing; the reported top of book becomes the restored one. Raises ValueError,
        leaving the engine unchanged, if an order could not be resting.
        """
        books: dict[str, OrderBook] = {}
        index: dict[int, BookOrder] = {}
        for r in orders:
            side = _SIDES.get(r.side)
            time_in_force = _TIME_IN_FORCE.get(r.time_in_force)
            if side is None or time_in_force not in (_GTC, _DAY):
                raise ValueError(f"order {r.order_id}: cannot rest ({r.side}, {r.time_in_force})")
            if _ORDER_TYPES.get(r.order_type) is not _LIMIT:
                raise ValueError(f"order {r.order_id}: only limit orders rest")
            if type(r.price) is not int or r.price <= 0:
                raise ValueError(f"order {r.order_id}: price must be a positive int")
            if (
                type(r.remaining) is not int
                or type(r.filled) is not int
                or r.remaining <= 0
                or r.filled < 0
                or r.filled + r.remaining != r.quantity
            ):
                raise ValueError(f"order {r.order_id}: filled + remaining must equal quantity")
            if r.order_id in index:
                raise ValueError(f"order {r.order_id} given twice")
            book = books.get(r.instrument_id)
            if book is None:
                book = books[r.instrument_id] = OrderBook(r.instrument_id)
            order = BookOrder(
                r.order_id,
                r.team_id,
                book.instrument_id,
                r.client_order_id,
                side,
                r.price,
                r.quantity,
                r.remaining,
                time_in_force,  # type: ignore[arg-type]  # checked above
            )
            book.side(side).add(order)
            index[r.order_id] = order
        for book in books.values():
            book.last_top = book.top()
        for old in self._index.values():  # the old queues' links would otherwise form cycles
            old.prev = old.next = None
        self._books = books
        self._index = index
        self._finished = set()

    def check_invariants(self) -> None:
        """Raise InvariantViolation if books, totals, priorities or the id index disagree."""
        arrival_rank = {order_id: rank for rank, order_id in enumerate(self._index)}
        seen = 0
        for instrument_id, book in self._books.items():
            if book.instrument_id != instrument_id:
                raise InvariantViolation(f"book {book.instrument_id} stored as {instrument_id}")
            for order in book.bids.check(arrival_rank) + book.asks.check(arrival_rank):
                seen += 1
                if self._index.get(order.order_id) is not order:
                    raise InvariantViolation(f"{order!r} missing from the id index")
                if order.instrument_id != instrument_id:
                    raise InvariantViolation(f"{order!r} in the book of {instrument_id}")
                if order.time_in_force is not _GTC and order.time_in_force is not _DAY:
                    raise InvariantViolation(f"{order!r} cannot rest")
            top = book.top()
            if top != book.last_top:
                raise InvariantViolation(f"{instrument_id}: top {top} not reported (last {book.last_top})")
            bid, _, ask, _ = top
            if self._phase is _CONTINUOUS and bid is not None and ask is not None and bid >= ask:
                raise InvariantViolation(f"{instrument_id}: crossed in continuous ({bid}/{ask})")
        if seen != len(self._index):
            raise InvariantViolation(f"index holds {len(self._index)} orders, books {seen}")
        if not self._finished.isdisjoint(self._index):
            raise InvariantViolation("an order is both finished and resting")


def _fok_fillable(opposite: BookSide, limit_key: int | None, team_id: int, quantity: int) -> bool:
    """Whether the volume ahead of the team's own first order covers ``quantity``."""
    levels = opposite.levels
    sign = opposite.sign
    available = 0
    for key in reversed(opposite.keys):
        if limit_key is not None and key < limit_key:
            return False
        order = levels[sign * key].head
        while order is not None:
            if order.team_id == team_id:
                return False
            available += order.remaining
            if available >= quantity:
                return True
            order = order.next
    return False


def _checked_reason(reason: object) -> CancelReason:
    checked = _REASONS.get(reason)
    if checked is None:
        raise ValueError(f"unknown cancel reason {reason!r}")
    return checked


def _rejected(order: NewOrder, code: EngineRejectCode, reason: str) -> OrderRejected:
    return OrderRejected(order.order_id, order.team_id, order.instrument_id, order.client_order_id, code, reason)
