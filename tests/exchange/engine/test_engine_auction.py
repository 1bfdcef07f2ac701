"""Opening auction: clearing price, execution at one price, priority, maker/taker, self-trades."""

from __future__ import annotations

import itertools

import pytest

from exchange.engine import (
    CancelReason,
    Fill,
    MatchingEngine,
    NewOrder,
    OrderCancelled,
    OrderStatus,
    OrderType,
    Phase,
    Side,
    TimeInForce,
    TopOfBook,
    clearing_price,
)

BUY, SELL = Side.BUY, Side.SELL

# (quantity, price in ticks of 0.01) per side; every order from its own team.
SIX_CASES = [
    pytest.param([(100, 12_800)], [(100, 12_700)], 12_750, 100, id="one-each-way"),
    pytest.param(
        [(30, 10_200), (20, 10_100), (10, 10_000)],
        [(20, 9_900), (20, 9_800), (20, 9_700)],
        9_950,
        60,
        id="flat-volume-midpoint",
    ),
    pytest.param([(1, 20_000), (50, 10_100), (50, 10_000)], [(50, 10_000), (50, 9_900)], 10_000, 100, id="max-volume"),
    pytest.param(
        [(100, 10_100), (100, 10_000)], [(100, 10_100), (100, 10_000)], 10_050, 100, id="equal-imbalance-midpoint"
    ),
    pytest.param([(50, 10_100), (50, 10_025)], [(50, 10_100), (50, 10_025)], 10_062, 50, id="midpoint-rounds-down"),
    pytest.param(
        [(350, 10_200), (50, 10_100)], [(25, 10_100), (50, 10_050), (100, 10_000)], 10_200, 175, id="imbalance-decides"
    ),
]


def make_engine(phase: Phase = Phase.OPENING_AUCTION) -> MatchingEngine:
    return MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=phase)


def new(order_id: int, team_id: int, side: Side, quantity: int, price: int, instrument_id: str = "A") -> NewOrder:
    return NewOrder(order_id, team_id, instrument_id, side, OrderType.LIMIT, TimeInForce.GTC, price, quantity, None)


def book_in_pre_open(
    bids: list[tuple[int, int]], asks: list[tuple[int, int]], instrument_id: str = "A"
) -> MatchingEngine:
    engine = make_engine(Phase.PRE_OPEN)
    order_id = itertools.count(1)
    for side, orders in ((BUY, bids), (SELL, asks)):
        for quantity, price in orders:
            n = next(order_id)
            engine.submit(new(n, n, side, quantity, price, instrument_id))
    engine.set_phase(Phase.OPENING_AUCTION)
    return engine


def fills(events: list) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


@pytest.mark.parametrize(("bids", "asks", "price", "volume"), SIX_CASES)
def test_clearing_price(bids: list, asks: list, price: int, volume: int) -> None:
    bid_levels = sorted(((p, q) for q, p in bids), reverse=True)
    ask_levels = sorted((p, q) for q, p in asks)
    assert clearing_price(bid_levels, ask_levels) == (price, volume)


@pytest.mark.parametrize(("bids", "asks", "price", "volume"), SIX_CASES)
def test_auction_trades_everything_that_crosses_at_one_price(bids: list, asks: list, price: int, volume: int) -> None:
    engine = book_in_pre_open(bids, asks)
    events = engine.run_auction("A")
    trades = fills(events)
    assert {f.price for f in trades} == {price}
    assert sum(f.quantity for f in trades) == volume
    assert [f.trade_id for f in trades] == list(range(1, len(trades) + 1))
    engine.set_phase(Phase.CONTINUOUS)
    engine.check_invariants()  # uncrossed
    top = engine.top_of_book("A")
    assert top.bid is None or top.ask is None or top.bid < top.ask


def test_nothing_crosses_nothing_happens() -> None:
    engine = book_in_pre_open([(10, 100)], [(10, 101)])
    assert engine.run_auction("A") == []
    assert engine.run_auction("unknown") == []
    assert clearing_price([(100, 10)], [(101, 10)]) is None
    assert clearing_price([], [(101, 10)]) is None


def test_reference_price_breaks_the_last_tie() -> None:
    bids = [(10_100, 100), (10_000, 100)]
    asks = [(10_000, 100), (10_100, 100)]
    assert clearing_price(bids, asks, 9_000) == (10_000, 100)
    assert clearing_price(bids, asks, 10_030) == (10_030, 100)
    assert clearing_price(bids, asks, 20_000) == (10_100, 100)
    # a unique best price ignores the reference
    assert clearing_price([(12_800, 100)], [(12_800, 100)], 1) == (12_800, 100)


def test_marginal_price_fills_in_time_priority_and_earlier_order_is_maker() -> None:
    engine = make_engine(Phase.PRE_OPEN)
    engine.submit(new(1, 1, BUY, 10, 100))
    engine.submit(new(2, 2, BUY, 10, 100))
    engine.submit(new(3, 3, SELL, 15, 100))
    engine.submit(new(4, 4, BUY, 10, 99))
    events = engine.set_phase(Phase.CONTINUOUS)
    trades = fills(events)
    assert [(f.maker.order_id, f.taker.order_id, f.quantity, f.aggressor_side) for f in trades] == [
        (1, 3, 10, SELL),
        (2, 3, 5, SELL),
    ]
    assert trades[0].maker.status is OrderStatus.FILLED
    assert trades[1].maker.status is OrderStatus.PARTIALLY_FILLED
    assert trades[1].taker.status is OrderStatus.FILLED
    assert trades[1].maker.price == 100 and trades[1].maker.filled_quantity == 5
    assert [(r.order_id, r.remaining) for r in engine.resting_orders()] == [(2, 5), (4, 10)]
    assert events[-1] == TopOfBook("A", 100, 5, None, 0)
    engine.check_invariants()


def test_later_bid_is_the_taker() -> None:
    engine = book_in_pre_open([], [(10, 100)])
    engine.set_phase(Phase.PRE_OPEN)
    engine.submit(new(9, 9, BUY, 10, 101))
    trades = fills(engine.set_phase(Phase.CONTINUOUS))
    assert [(f.maker.order_id, f.taker.order_id, f.aggressor_side, f.price) for f in trades] == [(1, 9, BUY, 100)]
    assert (trades[0].maker.price, trades[0].taker.price) == (100, 101)


def test_opening_runs_every_book_with_its_reference_price() -> None:
    engine = make_engine(Phase.PRE_OPEN)
    for instrument_id, base in (("B", 200), ("A", 100)):
        engine.submit(new(base + 1, 1, BUY, 10, base + 1, instrument_id))
        engine.submit(new(base + 2, 2, SELL, 10, base, instrument_id))
    engine.set_phase(Phase.OPENING_AUCTION)
    events = engine.set_phase(Phase.CONTINUOUS, reference_prices={"A": 500, "B": 0})
    assert [(f.instrument_id, f.price) for f in fills(events)] == [("A", 101), ("B", 200)]
    assert [e for e in events if isinstance(e, TopOfBook)] == [
        TopOfBook("A", None, 0, None, 0),
        TopOfBook("B", None, 0, None, 0),
    ]


def test_self_trade_in_the_auction_cancels_the_later_order_of_the_pair() -> None:
    engine = make_engine(Phase.PRE_OPEN)
    engine.submit(new(1, 1, BUY, 10, 101))
    engine.submit(new(2, 2, BUY, 10, 101))
    engine.submit(new(3, 1, SELL, 10, 100))  # would meet its own team's bid first
    engine.submit(new(4, 3, SELL, 10, 100))
    events = engine.run_auction("A")
    assert events[0] == OrderCancelled(3, 1, "A", None, SELL, 10, 0, CancelReason.SELF_TRADE_PREVENTED)
    assert [(f.maker.order_id, f.taker.order_id, f.price, f.quantity) for f in fills(events)] == [(1, 4, 100, 10)]
    assert [r.order_id for r in engine.resting_orders()] == [2]
    engine.set_phase(Phase.CONTINUOUS)
    engine.check_invariants()


def test_self_trade_only_pair_leaves_an_uncrossed_book() -> None:
    engine = make_engine(Phase.PRE_OPEN)
    engine.submit(new(1, 1, BUY, 10, 101))
    engine.submit(new(2, 1, SELL, 10, 100))
    events = engine.set_phase(Phase.CONTINUOUS)
    assert [e for e in events if not isinstance(e, TopOfBook)] == [
        OrderCancelled(2, 1, "A", None, SELL, 10, 0, CancelReason.SELF_TRADE_PREVENTED)
    ]
    assert fills(events) == []
    engine.check_invariants()
