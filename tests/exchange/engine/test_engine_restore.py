"""Snapshot and restore: a restored engine behaves exactly like one that never stopped."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.engine import (
    CancelOrder,
    CancelReason,
    InvariantViolation,
    MatchingEngine,
    NewOrder,
    OrderType,
    Phase,
    RestingOrder,
    Side,
    TimeInForce,
    TopOfBook,
)

BUY, SELL = Side.BUY, Side.SELL


def new(
    order_id: int, team_id: int, side: Side, quantity: int, price: int | None, tif: TimeInForce = TimeInForce.GTC
) -> NewOrder:
    order_type = OrderType.MARKET if price is None else OrderType.LIMIT
    return NewOrder(order_id, team_id, "A", side, order_type, tif, price, quantity, f"c{order_id}")


Command = NewOrder | CancelOrder | tuple[str, Phase]


def apply(engine: MatchingEngine, command: Command) -> list:
    if isinstance(command, NewOrder):
        return engine.submit(command)
    if isinstance(command, CancelOrder):
        return engine.cancel(command)
    return engine.set_phase(command[1])


class TradeIds:
    """A trade id sequence that can be forked, so two engines can each continue it."""

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def __call__(self) -> int:
        self.last += 1
        return self.last


def restored_copy(engine: MatchingEngine, next_trade_id: TradeIds) -> MatchingEngine:
    """The worker's restart: a fresh engine fed the resting orders in arrival order."""
    copy = MatchingEngine(next_trade_id=next_trade_id, phase=engine.phase)
    copy.restore(sorted(engine.resting_orders(), key=lambda r: r.order_id))
    return copy


def test_resting_orders_round_trip() -> None:
    engine = MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=Phase.CONTINUOUS)
    engine.submit(new(1, 1, SELL, 10, 101, TimeInForce.DAY))
    engine.submit(new(2, 2, BUY, 4, 101))
    engine.submit(new(3, 2, BUY, 7, 99))
    snapshot = engine.resting_orders()
    assert snapshot == [
        RestingOrder(3, 2, "A", "c3", BUY, 99, 7, 7, 0, TimeInForce.GTC, OrderType.LIMIT),
        RestingOrder(1, 1, "A", "c1", SELL, 101, 10, 6, 4, TimeInForce.DAY, OrderType.LIMIT),
    ]
    copy = MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=Phase.CONTINUOUS)
    copy.restore(sorted(snapshot, key=lambda r: r.order_id))
    assert copy.resting_orders() == snapshot
    assert copy.top_of_book("A") == engine.top_of_book("A") == TopOfBook("A", 99, 7, 101, 6)
    assert copy.resting_order_count() == 2
    copy.check_invariants()


def test_restore_then_commands_gives_the_same_events() -> None:
    trade_ids = itertools.count(1)
    engine = MatchingEngine(next_trade_id=trade_ids.__next__, phase=Phase.PRE_OPEN)
    for command in [
        new(1, 1, BUY, 10, 102),
        new(2, 2, SELL, 5, 100, TimeInForce.DAY),
        new(3, 3, BUY, 10, 102),
        new(4, 1, SELL, 20, 101),
    ]:
        engine.submit(command)
    # the later ask (4) must stay the taker after a restart, so arrival order across sides matters
    later = [
        ("phase", Phase.CONTINUOUS),
        new(5, 2, BUY, 30, None),
        CancelOrder(3, 3),
        new(6, 3, SELL, 3, 90, TimeInForce.IOC),
        ("phase", Phase.CLOSED),
    ]
    other_ids = itertools.count(1)
    copy = MatchingEngine(next_trade_id=other_ids.__next__, phase=engine.phase)
    copy.restore(sorted(engine.resting_orders(), key=lambda r: r.order_id))
    for command in later:
        assert apply(copy, command) == apply(engine, command)
        copy.check_invariants()
    assert copy.resting_orders() == engine.resting_orders()


def resting(order_id: int, **changes: object) -> RestingOrder:
    base = RestingOrder(order_id, 1, "A", None, BUY, 100, 10, 10, 0, TimeInForce.GTC)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "bad",
    [
        resting(2, order_type=OrderType.MARKET),
        resting(2, time_in_force=TimeInForce.IOC),
        resting(2, remaining=0, filled=10),
        resting(2, remaining=5, filled=4),
        resting(2, price=0),
        resting(1),  # duplicate id
    ],
)
def test_restore_refuses_orders_that_cannot_rest_and_changes_nothing(bad: RestingOrder) -> None:
    engine = MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=Phase.CONTINUOUS)
    engine.submit(new(7, 1, SELL, 1, 200))
    with pytest.raises(ValueError):
        engine.restore([resting(1), bad])
    assert [r.order_id for r in engine.resting_orders()] == [7]


def test_restore_replaces_every_book() -> None:
    engine = MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=Phase.CONTINUOUS)
    engine.submit(new(7, 1, SELL, 1, 200))
    engine.restore([resting(1)])
    assert [r.order_id for r in engine.resting_orders()] == [1]
    # the restored order can be cancelled, and id 7 is unknown again
    assert engine.cancel(CancelOrder(7, 1))[0].code == "ORDER_NOT_FOUND"
    assert engine.cancel(CancelOrder(1, 1, CancelReason.OPERATOR))[0].cancelled_quantity == 10


def test_check_invariants_detects_a_corrupted_book() -> None:
    engine = MatchingEngine(next_trade_id=itertools.count(1).__next__, phase=Phase.CONTINUOUS)
    engine.submit(new(1, 1, BUY, 10, 100))
    engine.check_invariants()
    level = engine._books["A"].bids.levels[100]
    level.total += 1
    with pytest.raises(InvariantViolation):
        engine.check_invariants()
    assert issubclass(InvariantViolation, AssertionError)


orders = st.builds(
    lambda team, side, kind, tif, price, quantity: (team, side, kind, tif, price, quantity),
    st.integers(1, 3),
    st.sampled_from(list(Side)),
    st.sampled_from(["limit", "limit", "limit", "market"]),
    st.sampled_from(list(TimeInForce)),
    st.integers(97, 103),
    st.integers(1, 8),
)
steps = st.lists(
    st.one_of(
        orders,
        st.tuples(st.just("cancel"), st.integers(1, 60), st.integers(1, 3)),
        st.tuples(st.just("phase"), st.sampled_from(list(Phase))),
    ),
    max_size=40,
)


def to_commands(raw: list, first_id: int) -> list[Command]:
    commands: list[Command] = []
    order_id = first_id
    for step in raw:
        if step[0] == "cancel":
            commands.append(CancelOrder(step[1], step[2]))
        elif step[0] == "phase":
            commands.append(("phase", step[1]))
        else:
            team, side, kind, tif, price, quantity = step
            commands.append(
                NewOrder(
                    order_id,
                    team,
                    "A",
                    side,
                    OrderType(kind),
                    tif,
                    None if kind == "market" else price,
                    quantity,
                    None,
                )
            )
            order_id += 1
    return commands


@settings(max_examples=150, deadline=None)
@given(before=steps, after=steps, start=st.sampled_from([Phase.CONTINUOUS, Phase.PRE_OPEN]))
def test_restored_engine_matches_one_that_never_stopped(before: list, after: list, start: Phase) -> None:
    trade_ids = TradeIds()
    engine = MatchingEngine(next_trade_id=trade_ids, phase=start)
    for command in to_commands(before, 1):
        apply(engine, command)
    copy = restored_copy(engine, TradeIds(trade_ids.last))
    copy.check_invariants()
    assert copy.resting_orders() == engine.resting_orders()
    for command in to_commands(after, 1_000):
        assert apply(copy, command) == apply(engine, command)
        copy.check_invariants()
    assert copy.resting_orders() == engine.resting_orders()
