"""Continuous trading: price-time priority, order types, time in force, self-trade prevention."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from exchange.engine import (
    CancelReason,
    Fill,
    FillParty,
    MatchingEngine,
    NewOrder,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderStatus,
    OrderType,
    Phase,
    Side,
    TimeInForce,
    TopOfBook,
)
from exchange.engine.events import new_fill_party, new_order_accepted

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET
GTC, DAY, IOC, FOK = TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK
FILLED, PARTIAL = OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED
X = "SPX_4500_CALL"


def make_engine(phase: Phase = Phase.CONTINUOUS) -> MatchingEngine:
    return MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=phase)


def order(
    order_id: int,
    team_id: int,
    side: Side,
    quantity: int,
    price: int | None,
    *,
    order_type: OrderType = LIMIT,
    time_in_force: TimeInForce = GTC,
    instrument_id: str = X,
) -> NewOrder:
    if price is None:
        order_type = MARKET
    return NewOrder(order_id, team_id, instrument_id, side, order_type, time_in_force, price, quantity, f"c{order_id}")


def fills(events: list) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


def of_type(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def test_resting_limit_order_is_accepted_and_moves_the_top_of_book() -> None:
    engine = make_engine()
    events = engine.submit(order(1, 7, BUY, 10, 10_000))
    assert events == [
        OrderAccepted(1, 7, X, "c1", BUY, LIMIT, GTC, 10_000, 10),
        TopOfBook(X, 10_000, 10, None, 0),
    ]
    engine.check_invariants()


def test_top_of_book_only_when_the_best_level_changes() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, BUY, 10, 10_000))
    deeper = engine.submit(order(2, 1, BUY, 5, 9_900))
    assert of_type(deeper, TopOfBook) == []
    joined = engine.submit(order(3, 2, BUY, 5, 10_000))
    assert of_type(joined, TopOfBook) == [TopOfBook(X, 10_000, 15, None, 0)]
    assert engine.depth(X, 5) == ([(10_000, 15), (9_900, 5)], [])


def test_sweep_across_several_levels_prints_at_each_resting_price() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 100, 10_000))
    engine.submit(order(2, 2, SELL, 100, 10_100))
    engine.submit(order(3, 3, SELL, 100, 10_200))
    events = engine.submit(order(4, 4, BUY, 250, 10_200))
    assert isinstance(events[0], OrderAccepted)
    assert fills(events) == [
        Fill(
            1,
            X,
            10_000,
            100,
            BUY,
            FillParty(1, 1, "c1", SELL, 100, 0, FILLED, 10_000),
            FillParty(4, 4, "c4", BUY, 100, 150, PARTIAL, 10_200),
        ),
        Fill(
            2,
            X,
            10_100,
            100,
            BUY,
            FillParty(2, 2, "c2", SELL, 100, 0, FILLED, 10_100),
            FillParty(4, 4, "c4", BUY, 200, 50, PARTIAL, 10_200),
        ),
        Fill(
            3,
            X,
            10_200,
            50,
            BUY,
            FillParty(3, 3, "c3", SELL, 50, 50, PARTIAL, 10_200),
            FillParty(4, 4, "c4", BUY, 250, 0, FILLED, 10_200),
        ),
    ]
    assert events[-1] == TopOfBook(X, None, 0, 10_200, 50)
    assert len(events) == 5
    engine.check_invariants()


def test_partial_fills_at_one_level_go_in_arrival_order() -> None:
    engine = make_engine()
    for order_id, team in ((1, 1), (2, 2), (3, 3)):
        engine.submit(order(order_id, team, SELL, 30, 10_000))
    events = engine.submit(order(4, 4, BUY, 50, 10_000))
    assert [(f.maker.order_id, f.quantity, f.maker.status) for f in fills(events)] == [
        (1, 30, FILLED),
        (2, 20, PARTIAL),
    ]
    assert [(r.order_id, r.remaining, r.filled) for r in engine.resting_orders()] == [(2, 10, 20), (3, 30, 0)]
    assert events[-1] == TopOfBook(X, None, 0, 10_000, 40)


def test_aggressor_gets_price_improvement_and_rests_the_remainder() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 10, 10_000))
    engine.submit(order(2, 1, SELL, 10, 10_100))
    engine.submit(order(3, 1, SELL, 10, 10_200))
    events = engine.submit(order(4, 2, BUY, 30, 10_150))
    assert [(f.price, f.quantity) for f in fills(events)] == [(10_000, 10), (10_100, 10)]
    assert events[-1] == TopOfBook(X, 10_150, 10, 10_200, 10)
    assert engine.depth(X, 3) == ([(10_150, 10)], [(10_200, 10)])


def test_sell_aggressor_trades_at_the_bid_prices() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, BUY, 10, 10_000))
    engine.submit(order(2, 1, BUY, 10, 10_100))
    events = engine.submit(order(3, 2, SELL, 15, 9_000))
    assert [(f.price, f.quantity, f.aggressor_side) for f in fills(events)] == [(10_100, 10, SELL), (10_000, 5, SELL)]
    assert events[-1] == TopOfBook(X, 10_000, 5, None, 0)


def test_market_order_on_an_empty_book_is_cancelled_as_ioc_remainder() -> None:
    engine = make_engine()
    events = engine.submit(order(1, 1, BUY, 10, None))
    assert events == [
        OrderAccepted(1, 1, X, "c1", BUY, MARKET, GTC, None, 10),
        OrderCancelled(1, 1, X, "c1", BUY, 10, 0, CancelReason.IOC_REMAINDER),
    ]
    assert engine.resting_orders() == []


def test_market_order_fills_what_it_can_and_never_rests() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 4, 10_000))
    engine.submit(order(2, 1, SELL, 4, 10_500))
    events = engine.submit(order(3, 2, BUY, 10, None, time_in_force=IOC))
    assert [(f.price, f.quantity) for f in fills(events)] == [(10_000, 4), (10_500, 4)]
    assert fills(events)[-1].taker == FillParty(3, 2, "c3", BUY, 8, 2, PARTIAL, None)
    assert events[-2] == OrderCancelled(3, 2, X, "c3", BUY, 2, 8, CancelReason.IOC_REMAINDER)
    assert events[-1] == TopOfBook(X, None, 0, None, 0)
    assert engine.resting_orders() == []


def test_ioc_partial_fill_cancels_the_rest() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 5, 10_000))
    engine.submit(order(2, 1, SELL, 5, 10_100))
    events = engine.submit(order(3, 2, BUY, 8, 10_000, time_in_force=IOC))
    assert [(f.price, f.quantity) for f in fills(events)] == [(10_000, 5)]
    assert of_type(events, OrderCancelled) == [OrderCancelled(3, 2, X, "c3", BUY, 3, 5, CancelReason.IOC_REMAINDER)]
    assert engine.depth(X, 5) == ([], [(10_100, 5)])


def test_ioc_that_does_not_cross_is_cancelled_whole() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 5, 10_100))
    events = engine.submit(order(2, 2, BUY, 5, 10_000, time_in_force=IOC))
    assert events[1:] == [OrderCancelled(2, 2, X, "c2", BUY, 5, 0, CancelReason.IOC_REMAINDER)]


def test_fok_fills_completely_across_levels() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 5, 10_000))
    engine.submit(order(2, 1, SELL, 5, 10_100))
    events = engine.submit(order(3, 2, BUY, 10, 10_100, time_in_force=FOK))
    assert [(f.price, f.quantity) for f in fills(events)] == [(10_000, 5), (10_100, 5)]
    assert fills(events)[-1].taker.status is FILLED
    assert of_type(events, OrderCancelled) == []


def test_fok_that_cannot_fill_completely_leaves_the_book_alone() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 5, 10_000))
    engine.submit(order(2, 1, SELL, 5, 10_200))
    before = engine.resting_orders()
    events = engine.submit(order(3, 2, BUY, 10, 10_100, time_in_force=FOK))
    assert events == [
        OrderAccepted(3, 2, X, "c3", BUY, LIMIT, FOK, 10_100, 10),
        OrderCancelled(3, 2, X, "c3", BUY, 10, 0, CancelReason.FOK_UNFILLED),
    ]
    assert engine.resting_orders() == before
    market = engine.submit(order(4, 2, BUY, 11, None, time_in_force=FOK))
    assert market[1:] == [OrderCancelled(4, 2, X, "c4", BUY, 11, 0, CancelReason.FOK_UNFILLED)]
    empty = engine.submit(order(5, 2, SELL, 1, 9_000, time_in_force=FOK))
    assert empty[1:] == [OrderCancelled(5, 2, X, "c5", SELL, 1, 0, CancelReason.FOK_UNFILLED)]


def test_fok_counts_only_volume_ahead_of_the_teams_own_order() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 5, 10_000))
    engine.submit(order(2, 2, SELL, 5, 10_000))  # the FOK's own team
    engine.submit(order(3, 3, SELL, 50, 10_000))
    events = engine.submit(order(4, 2, BUY, 6, 10_000, time_in_force=FOK))
    assert events[1:] == [OrderCancelled(4, 2, X, "c4", BUY, 6, 0, CancelReason.FOK_UNFILLED)]
    ok = engine.submit(order(5, 2, BUY, 5, 10_000, time_in_force=FOK))
    assert [(f.maker.order_id, f.quantity) for f in fills(ok)] == [(1, 5)]


def test_self_trade_prevention_cancels_the_incoming_remainder() -> None:
    engine = make_engine()
    engine.submit(order(1, 2, SELL, 10, 10_000))
    engine.submit(order(2, 1, SELL, 10, 10_000))  # own order
    engine.submit(order(3, 2, SELL, 10, 10_000))
    events = engine.submit(order(4, 1, BUY, 30, 10_000))
    assert [(f.maker.order_id, f.quantity) for f in fills(events)] == [(1, 10)]
    assert of_type(events, OrderCancelled) == [
        OrderCancelled(4, 1, X, "c4", BUY, 20, 10, CancelReason.SELF_TRADE_PREVENTED)
    ]
    assert [r.order_id for r in engine.resting_orders()] == [2, 3]
    assert events[-1] == TopOfBook(X, None, 0, 10_000, 20)
    engine.check_invariants()


def test_self_trade_prevention_applies_to_market_and_first_order() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, BUY, 10, 10_000))
    engine.submit(order(2, 2, BUY, 10, 9_900))
    events = engine.submit(order(3, 1, SELL, 5, None))
    assert events[1:] == [OrderCancelled(3, 1, X, "c3", SELL, 5, 0, CancelReason.SELF_TRADE_PREVENTED)]
    assert len(engine.resting_orders()) == 2


def test_self_trade_prevention_cancels_even_a_gtc_remainder_that_could_rest() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 10, 10_000))
    events = engine.submit(order(2, 1, BUY, 10, 10_000))
    assert events[1:] == [OrderCancelled(2, 1, X, "c2", BUY, 10, 0, CancelReason.SELF_TRADE_PREVENTED)]


def test_own_order_beyond_the_limit_does_not_stop_resting() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 10, 10_100))
    events = engine.submit(order(2, 1, BUY, 10, 10_000))
    assert of_type(events, OrderCancelled) == []
    assert engine.top_of_book(X) == TopOfBook(X, 10_000, 10, 10_100, 10)


def test_instruments_have_separate_books() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, SELL, 10, 10_000, instrument_id="A"))
    events = engine.submit(order(2, 2, BUY, 10, 10_000, instrument_id="B"))
    assert fills(events) == []
    assert engine.top_of_book("A") == TopOfBook("A", None, 0, 10_000, 10)
    assert engine.top_of_book("B") == TopOfBook("B", 10_000, 10, None, 0)
    assert engine.top_of_book("C") == TopOfBook("C", None, 0, None, 0)


@pytest.mark.parametrize(
    ("new", "code"),
    [
        (order(9, 1, BUY, 10, 0), "INVALID_PRICE"),
        (order(9, 1, BUY, 10, -5), "INVALID_PRICE"),
        (NewOrder(9, 1, X, BUY, LIMIT, GTC, None, 10, None), "INVALID_PRICE"),
        (NewOrder(9, 1, X, BUY, LIMIT, GTC, 100.5, 10, None), "INVALID_PRICE"),  # type: ignore[arg-type]
        (NewOrder(9, 1, X, BUY, MARKET, IOC, 100, 10, None), "PRICE_NOT_ALLOWED"),
        (order(9, 1, BUY, 0, 100), "INVALID_QUANTITY"),
        (order(9, 1, BUY, True, 100), "INVALID_QUANTITY"),  # type: ignore[arg-type]
        (NewOrder(9, 1, X, "hold", LIMIT, GTC, 100, 10, None), "INVALID_SIDE"),  # type: ignore[arg-type]
        (NewOrder(9, 1, X, BUY, "stop", GTC, 100, 10, None), "INVALID_ORDER_TYPE"),  # type: ignore[arg-type]
        (NewOrder(9, 1, X, BUY, LIMIT, "gtd", 100, 10, None), "INVALID_TIME_IN_FORCE"),  # type: ignore[arg-type]
    ],
)
def test_invalid_orders_are_rejected_without_acceptance(new: NewOrder, code: str) -> None:
    engine = make_engine()
    events = engine.submit(new)
    assert len(events) == 1
    assert isinstance(events[0], OrderRejected)
    assert events[0].code == code
    assert (events[0].order_id, events[0].team_id, events[0].instrument_id) == (9, 1, X)
    assert engine.resting_orders() == []
    # a rejected id is not remembered: the corrected order can use it
    assert isinstance(engine.submit(order(9, 1, BUY, 10, 100))[0], OrderAccepted)


def test_duplicate_order_ids_are_rejected_while_resting_and_after_finishing() -> None:
    engine = make_engine()
    engine.submit(order(1, 1, BUY, 10, 10_000))
    engine.submit(order(2, 1, BUY, 10, None))  # market order: finished at once
    for order_id in (1, 2):
        events = engine.submit(order(order_id, 1, SELL, 1, 20_000))
        assert [(type(e), e.code) for e in events] == [(OrderRejected, "DUPLICATE_ORDER_ID")]
    assert engine.depth(X, 5) == ([(10_000, 10)], [])


def test_wire_strings_are_taken_for_enums_and_events_carry_members() -> None:
    engine = make_engine()
    events = engine.submit(NewOrder(1, 1, X, "sell", "limit", "day", 100, 3, None))  # type: ignore[arg-type]
    accepted = events[0]
    assert accepted == OrderAccepted(1, 1, X, None, SELL, LIMIT, DAY, 100, 3)
    assert accepted.side is SELL and accepted.time_in_force is DAY


def test_events_from_the_fast_constructors_equal_ordinary_ones() -> None:
    fast = new_order_accepted(1, 2, X, None, BUY, LIMIT, GTC, 100, 5)
    plain = OrderAccepted(1, 2, X, None, BUY, LIMIT, GTC, 100, 5)
    assert type(fast) is OrderAccepted
    assert fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
    assert dataclasses.asdict(fast) == dataclasses.asdict(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.quantity = 6  # type: ignore[misc]
    party = new_fill_party(1, 2, None, BUY, 1, 0, FILLED, None)
    assert party == FillParty(1, 2, None, BUY, 1, 0, FILLED, None)


def test_trade_ids_come_from_the_callable() -> None:
    ids = iter([70, 71])
    engine = MatchingEngine(next_trade_id=lambda: next(ids), phase=Phase.CONTINUOUS)
    engine.submit(order(1, 1, SELL, 1, 100))
    engine.submit(order(2, 1, SELL, 1, 101))
    events = engine.submit(order(3, 2, BUY, 2, 101))
    assert [f.trade_id for f in fills(events)] == [70, 71]
