"""Phases: what each phase takes, pre-open resting without trading, transitions."""

from __future__ import annotations

import itertools

import pytest

from exchange.engine import (
    Fill,
    MatchingEngine,
    NewOrder,
    OrderAccepted,
    OrderRejected,
    OrderType,
    Phase,
    Side,
    TimeInForce,
    TopOfBook,
)

BUY, SELL = Side.BUY, Side.SELL


def make_engine(phase: Phase) -> MatchingEngine:
    return MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=phase)


def new(
    order_id: int,
    team_id: int,
    side: Side,
    quantity: int,
    price: int | None,
    order_type: OrderType = OrderType.LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
) -> NewOrder:
    return NewOrder(order_id, team_id, "A", side, order_type, tif, price, quantity, None)


def test_default_phase_is_closed() -> None:
    engine = MatchingEngine(next_trade_id=itertools.count(1).__next__)
    assert engine.phase is Phase.CLOSED


@pytest.mark.parametrize("phase", [Phase.CLOSED, Phase.OPENING_AUCTION])
def test_orders_are_refused_when_the_market_does_not_take_them(phase: Phase) -> None:
    engine = make_engine(phase)
    events = engine.submit(new(1, 1, BUY, 10, 100))
    assert [(type(e), e.code) for e in events] == [(OrderRejected, "MARKET_CLOSED")]
    assert engine.resting_orders() == []


def test_pre_open_orders_rest_without_trading_even_when_crossed() -> None:
    engine = make_engine(Phase.PRE_OPEN)
    engine.submit(new(1, 1, BUY, 10, 105))
    events = engine.submit(new(2, 2, SELL, 10, 100, tif=TimeInForce.DAY))
    assert not any(isinstance(e, Fill) for e in events)
    assert events[-1] == TopOfBook("A", 105, 10, 100, 10)
    assert engine.depth("A", 5) == ([(105, 10)], [(100, 10)])
    engine.check_invariants()


@pytest.mark.parametrize(
    ("order_type", "tif", "price"),
    [
        (OrderType.MARKET, TimeInForce.GTC, None),
        (OrderType.MARKET, TimeInForce.IOC, None),
        (OrderType.LIMIT, TimeInForce.IOC, 100),
        (OrderType.LIMIT, TimeInForce.FOK, 100),
    ],
)
def test_pre_open_takes_only_resting_limit_orders(order_type: OrderType, tif: TimeInForce, price: int | None) -> None:
    engine = make_engine(Phase.PRE_OPEN)
    events = engine.submit(new(1, 1, BUY, 10, price, order_type, tif))
    assert [(type(e), e.code) for e in events] == [(OrderRejected, "ORDER_TYPE_NOT_ALLOWED")]


def test_validation_order_phase_first_then_duplicate_then_fields() -> None:
    engine = make_engine(Phase.PRE_OPEN)
    engine.submit(new(1, 1, BUY, 10, 100))
    assert engine.submit(new(1, 1, BUY, 10, 0, OrderType.MARKET))[0].code == "DUPLICATE_ORDER_ID"
    assert engine.submit(new(2, 1, BUY, 10, 0, OrderType.LIMIT, TimeInForce.IOC))[0].code == "INVALID_PRICE"
    engine.set_phase(Phase.CLOSED)
    assert engine.submit(new(1, 1, BUY, 10, 0))[0].code == "MARKET_CLOSED"


def test_pre_open_to_continuous_uncrosses_the_book_first() -> None:
    engine = make_engine(Phase.PRE_OPEN)
    engine.submit(new(1, 1, BUY, 10, 105))
    engine.submit(new(2, 2, SELL, 4, 100))
    events = engine.set_phase(Phase.CONTINUOUS)
    assert [(e.price, e.quantity) for e in events if isinstance(e, Fill)] == [(102, 4)]
    assert engine.phase is Phase.CONTINUOUS
    assert events[-1] == TopOfBook("A", 105, 6, None, 0)
    engine.check_invariants()


def test_continuous_to_continuous_runs_no_auction() -> None:
    engine = make_engine(Phase.CONTINUOUS)
    engine.submit(new(1, 1, BUY, 10, 100))
    assert engine.set_phase(Phase.CONTINUOUS) == []


def test_full_day_cycle() -> None:
    engine = make_engine(Phase.CLOSED)
    assert engine.set_phase(Phase.PRE_OPEN) == []
    engine.submit(new(1, 1, BUY, 10, 101, tif=TimeInForce.DAY))
    engine.submit(new(2, 2, SELL, 10, 101))
    assert engine.set_phase(Phase.OPENING_AUCTION) == []
    events = engine.set_phase(Phase.CONTINUOUS)
    assert [(e.price, e.quantity) for e in events if isinstance(e, Fill)] == [(101, 10)]
    assert isinstance(engine.submit(new(3, 1, BUY, 5, 99, tif=TimeInForce.DAY))[0], OrderAccepted)
    closing = engine.set_phase(Phase.CLOSED)
    assert [e.order_id for e in closing if hasattr(e, "reason")] == [3]
    assert engine.resting_orders() == []
