"""Cancels: one order, a team's orders, an instrument's, day orders at the close, operator halts."""

from __future__ import annotations

import itertools

from exchange.engine import (
    CancelOrder,
    CancelReason,
    CancelRejected,
    MatchingEngine,
    NewOrder,
    OrderCancelled,
    OrderType,
    Phase,
    Side,
    TimeInForce,
    TopOfBook,
)

BUY, SELL = Side.BUY, Side.SELL
GTC, DAY = TimeInForce.GTC, TimeInForce.DAY


def make_engine(phase: Phase = Phase.CONTINUOUS) -> MatchingEngine:
    return MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=phase)


def limit(
    order_id: int, team_id: int, side: Side, quantity: int, price: int, instrument_id: str = "A", tif: TimeInForce = GTC
) -> NewOrder:
    return NewOrder(order_id, team_id, instrument_id, side, OrderType.LIMIT, tif, price, quantity, f"c{order_id}")


def populated(phase: Phase = Phase.CONTINUOUS) -> MatchingEngine:
    """Two instruments, two teams, gtc and day orders on both sides."""
    engine = make_engine()
    engine.submit(limit(1, 1, BUY, 10, 100, "A"))
    engine.submit(limit(2, 2, BUY, 10, 100, "A", DAY))
    engine.submit(limit(3, 1, SELL, 10, 105, "A", DAY))
    engine.submit(limit(4, 2, SELL, 10, 106, "A"))
    engine.submit(limit(5, 1, BUY, 10, 50, "B", DAY))
    engine.submit(limit(6, 2, SELL, 10, 55, "B"))
    if phase is not Phase.CONTINUOUS:
        engine.set_phase(phase)
    return engine


def cancelled(events: list) -> list[tuple[int, CancelReason]]:
    return [(e.order_id, e.reason) for e in events if isinstance(e, OrderCancelled)]


def test_cancel_reports_the_remainder_and_what_was_filled() -> None:
    engine = make_engine()
    engine.submit(limit(1, 1, SELL, 10, 100))
    engine.submit(limit(2, 1, SELL, 5, 101))
    engine.submit(limit(3, 2, BUY, 4, 100))
    events = engine.cancel(CancelOrder(1, 1))
    assert events == [
        OrderCancelled(1, 1, "A", "c1", SELL, 6, 4, CancelReason.USER_REQUESTED),
        TopOfBook("A", None, 0, 101, 5),
    ]
    assert engine.cancel(CancelOrder(2, 1)) == [
        OrderCancelled(2, 1, "A", "c2", SELL, 5, 0, CancelReason.USER_REQUESTED),
        TopOfBook("A", None, 0, None, 0),
    ]
    engine.check_invariants()


def test_cancel_behind_the_best_level_does_not_report_the_top() -> None:
    engine = make_engine()
    engine.submit(limit(1, 1, BUY, 10, 100))
    engine.submit(limit(2, 1, BUY, 10, 99))
    assert engine.cancel(CancelOrder(2, 1)) == [
        OrderCancelled(2, 1, "A", "c2", BUY, 10, 0, CancelReason.USER_REQUESTED)
    ]


def test_cancel_in_the_middle_of_a_queue_keeps_the_others_priority() -> None:
    engine = make_engine()
    for order_id in (1, 2, 3):
        engine.submit(limit(order_id, order_id, SELL, 5, 100))
    engine.cancel(CancelOrder(2, 2))
    events = engine.submit(limit(4, 9, BUY, 10, 100))
    assert [e.maker.order_id for e in events if hasattr(e, "maker")] == [1, 3]
    engine.check_invariants()


def test_cancel_of_unknown_finished_or_foreign_orders_says_not_found() -> None:
    engine = make_engine()
    engine.submit(limit(1, 1, BUY, 10, 100))
    engine.submit(limit(2, 1, SELL, 10, 200))
    engine.cancel(CancelOrder(2, 1))
    expected_code = "ORDER_NOT_FOUND"
    for order_id, team_id in ((99, 1), (2, 1), (1, 2)):
        events = engine.cancel(CancelOrder(order_id, team_id))
        assert len(events) == 1 and isinstance(events[0], CancelRejected)
        assert (events[0].order_id, events[0].team_id, events[0].code) == (order_id, team_id, expected_code)
    # the foreign team learns nothing: same text for an existing and a missing order
    foreign = engine.cancel(CancelOrder(1, 2))[0]
    missing = engine.cancel(CancelOrder(99, 2))[0]
    assert foreign.reason == missing.reason
    assert engine.depth("A", 5) == ([(100, 10)], [])


def test_cancel_all_of_a_team_everywhere() -> None:
    engine = populated()
    events = engine.cancel_all(team_id=1)
    assert cancelled(events) == [
        (1, CancelReason.USER_REQUESTED),
        (3, CancelReason.USER_REQUESTED),
        (5, CancelReason.USER_REQUESTED),
    ]
    assert [e for e in events if isinstance(e, TopOfBook)] == [
        TopOfBook("A", 100, 10, 106, 10),
        TopOfBook("B", None, 0, 55, 10),
    ]
    assert sorted(r.order_id for r in engine.resting_orders()) == [2, 4, 6]
    engine.check_invariants()


def test_cancel_all_of_a_team_on_one_instrument() -> None:
    engine = populated()
    events = engine.cancel_all(team_id=2, instrument_id="B")
    assert cancelled(events) == [(6, CancelReason.USER_REQUESTED)]


def test_operator_halt_of_an_instrument_cancels_every_team() -> None:
    engine = populated()
    events = engine.cancel_all(instrument_id="A", reason=CancelReason.OPERATOR)
    assert cancelled(events) == [
        (1, CancelReason.OPERATOR),
        (2, CancelReason.OPERATOR),
        (3, CancelReason.OPERATOR),
        (4, CancelReason.OPERATOR),
    ]
    assert events[-1] == TopOfBook("A", None, 0, None, 0)
    assert engine.cancel_all(instrument_id="unknown", reason=CancelReason.OPERATOR) == []


def test_operator_halt_of_a_team_and_of_everything() -> None:
    engine = populated()
    assert cancelled(engine.cancel_all(team_id=2, reason=CancelReason.OPERATOR)) == [
        (2, CancelReason.OPERATOR),
        (4, CancelReason.OPERATOR),
        (6, CancelReason.OPERATOR),
    ]
    assert [o for o, _ in cancelled(engine.cancel_all(reason=CancelReason.OPERATOR))] == [1, 3, 5]
    assert engine.resting_orders() == []


def test_cancel_day_orders_at_session_end() -> None:
    engine = populated()
    events = engine.cancel_day_orders()
    assert cancelled(events) == [
        (2, CancelReason.SESSION_END),
        (3, CancelReason.SESSION_END),
        (5, CancelReason.SESSION_END),
    ]
    assert sorted(r.order_id for r in engine.resting_orders()) == [1, 4, 6]


def test_closing_the_market_cancels_day_orders_and_keeps_gtc() -> None:
    engine = populated()
    events = engine.set_phase(Phase.CLOSED)
    assert cancelled(events) == [
        (2, CancelReason.SESSION_END),
        (3, CancelReason.SESSION_END),
        (5, CancelReason.SESSION_END),
    ]
    assert engine.phase is Phase.CLOSED
    assert {r.time_in_force for r in engine.resting_orders()} == {GTC}
    engine.check_invariants()


def test_user_cancels_are_refused_when_the_market_is_closed_but_operator_cancels_work() -> None:
    for phase in (Phase.CLOSED, Phase.OPENING_AUCTION):
        engine = populated()
        engine.set_phase(phase)
        refused = engine.cancel(CancelOrder(1, 1))
        assert [(type(e), e.code) for e in refused] == [(CancelRejected, "MARKET_CLOSED")]
        refused_all = engine.cancel_all(team_id=1)
        assert all(isinstance(e, CancelRejected) and e.code == "MARKET_CLOSED" for e in refused_all)
        expected = [1, 3, 5] if phase is Phase.OPENING_AUCTION else [1]  # closing cancelled day orders 3 and 5
        assert [e.order_id for e in refused_all] == expected
        assert cancelled(engine.cancel(CancelOrder(1, 1, CancelReason.OPERATOR))) == [(1, CancelReason.OPERATOR)]
        engine.check_invariants()


def test_cancels_are_taken_in_pre_open() -> None:
    engine = make_engine(Phase.PRE_OPEN)
    engine.submit(limit(1, 1, BUY, 10, 100))
    assert cancelled(engine.cancel(CancelOrder(1, 1))) == [(1, CancelReason.USER_REQUESTED)]
