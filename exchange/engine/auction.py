"""Opening auction: one clearing price for a book that may be crossed, then one batch of trades.

Price: among the orders' limit prices, the one that executes the most volume; ties go to the
smallest imbalance (|buy volume - sell volume| at that price), then to the price within the
remaining range closest to the reference price, or without one to the midpoint of the lowest
and highest remaining candidates, rounded down to the tick. Every price in that range executes
the same maximal volume, so the midpoint need not be an order's price.

Execution: bids (best price first, then arrival) are paired with asks (likewise) at the one
clearing price; at the marginal price time priority decides who fills. Of each pair the order
that arrived later is the taker. Self-trade prevention: when a pair would put a team on both
sides, the later order of the two is cancelled (``self_trade_prevented``), exactly as an incoming
order is in continuous trading, and the price is worked out again without it. Only a pairing
free of self-trades executes, so the book that remains is never crossed.
"""

from __future__ import annotations

from collections.abc import Callable

from exchange.engine.book import BookOrder, OrderBook
from exchange.engine.events import Event, FillParty, new_fill, new_fill_party, new_order_cancelled
from exchange.engine.types import CancelReason, OrderStatus


def clearing_price(
    bid_levels: list[tuple[int, int]],
    ask_levels: list[tuple[int, int]],
    reference_price: int | None = None,
) -> tuple[int, int] | None:
    """The (price, volume) of the auction, or None when nothing crosses.

    ``bid_levels`` and ``ask_levels`` are (price, quantity) best first.
    """
    if not bid_levels or not ask_levels or bid_levels[0][0] < ask_levels[0][0]:
        return None
    low = ask_levels[0][0]
    high = bid_levels[0][0]
    # Outside [best ask, best bid] nothing executes, so only prices inside are candidates.
    candidates = sorted({p for p, _ in bid_levels if p >= low} | {p for p, _ in ask_levels if p <= high})
    # Sell volume at p: asks priced at or below p (ask_levels ascend).
    sell_volume: list[int] = []
    cumulative = 0
    i = 0
    for price in candidates:
        while i < len(ask_levels) and ask_levels[i][0] <= price:
            cumulative += ask_levels[i][1]
            i += 1
        sell_volume.append(cumulative)
    # Buy volume at p: bids priced at or above p (bid_levels descend).
    buy_volume = [0] * len(candidates)
    cumulative = 0
    i = 0
    for n in range(len(candidates) - 1, -1, -1):
        price = candidates[n]
        while i < len(bid_levels) and bid_levels[i][0] >= price:
            cumulative += bid_levels[i][1]
            i += 1
        buy_volume[n] = cumulative

    best_volume = 0
    best_imbalance = 0
    tied: list[int] = []
    for n, price in enumerate(candidates):
        volume = min(buy_volume[n], sell_volume[n])
        imbalance = abs(buy_volume[n] - sell_volume[n])
        if volume > best_volume or (volume == best_volume and imbalance < best_imbalance):
            best_volume, best_imbalance, tied = volume, imbalance, [price]
        elif volume == best_volume and imbalance == best_imbalance:
            tied.append(price)
    if best_volume == 0:
        return None
    lowest, highest = tied[0], tied[-1]
    if reference_price is None:
        return (lowest + highest) // 2, best_volume
    return min(max(reference_price, lowest), highest), best_volume


def _pairing(book: OrderBook, price: int) -> list[tuple[BookOrder, BookOrder, int]]:
    """Bid/ask pairs with their quantities when everything crossing ``price`` trades there."""
    pairs: list[tuple[BookOrder, BookOrder, int]] = []
    asks = (o for o in book.asks.orders_in_priority() if o.price <= price)
    ask = next(asks, None)
    ask_left = ask.remaining if ask is not None else 0
    for bid in book.bids.orders_in_priority():
        if ask is None or bid.price < price:
            break
        bid_left = bid.remaining
        while bid_left and ask is not None:
            quantity = min(bid_left, ask_left)
            pairs.append((bid, ask, quantity))
            bid_left -= quantity
            ask_left -= quantity
            if not ask_left:
                ask = next(asks, None)
                ask_left = ask.remaining if ask is not None else 0
    return pairs


def run_opening_auction(
    book: OrderBook,
    reference_price: int | None,
    arrival_rank: dict[int, int],
    next_trade_id: Callable[[], int],
) -> tuple[list[Event], list[BookOrder]]:
    """Uncross ``book``; return the events and the orders that left it (filled or cancelled).

    ``arrival_rank`` maps every resting order id to its place in arrival order.
    """
    events: list[Event] = []
    finished: list[BookOrder] = []
    while True:
        result = clearing_price(
            book.bids.depth(len(book.bids.keys)),
            book.asks.depth(len(book.asks.keys)),
            reference_price,
        )
        if result is None:
            return events, finished
        price = result[0]
        pairs = _pairing(book, price)
        conflict = next(((b, a) for b, a, _ in pairs if b.team_id == a.team_id), None)
        if conflict is None:
            break
        later = max(conflict, key=lambda o: arrival_rank[o.order_id])
        remaining = later.remaining
        book.side(later.side).remove(later)
        finished.append(later)
        events.append(
            new_order_cancelled(
                later.order_id,
                later.team_id,
                later.instrument_id,
                later.client_order_id,
                later.side,
                remaining,
                later.quantity - remaining,
                CancelReason.SELF_TRADE_PREVENTED,
            )
        )

    instrument_id = book.instrument_id
    for bid, ask, quantity in pairs:
        book.bids.execute(bid, quantity)
        book.asks.execute(ask, quantity)
        if arrival_rank[bid.order_id] < arrival_rank[ask.order_id]:
            maker, taker = bid, ask
        else:
            maker, taker = ask, bid
        events.append(
            new_fill(
                next_trade_id(),
                instrument_id,
                price,
                quantity,
                taker.side,
                _party(maker),
                _party(taker),
            )
        )
        for order in (bid, ask):
            if not order.remaining:
                finished.append(order)
    return events, finished


def _party(order: BookOrder) -> FillParty:
    remaining = order.remaining
    party: FillParty = new_fill_party(
        order.order_id,
        order.team_id,
        order.client_order_id,
        order.side,
        order.quantity - remaining,
        remaining,
        OrderStatus.PARTIALLY_FILLED if remaining else OrderStatus.FILLED,
        order.price,
    )
    return party
