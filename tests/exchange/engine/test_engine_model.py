"""The engine against a deliberately naive reference model, driven by hypothesis.

The model keeps every resting order in one flat list and re-sorts it for every decision; it
shares no code with the engine. Both receive the same random commands (orders of every type and
time in force from three teams around a few prices on two instruments, cancels of live and dead
ids, cancel-alls, phase changes with auctions, and restarts from a snapshot) and must return the
same events, command after command.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from exchange.engine import (
    CancelOrder,
    CancelReason,
    CancelRejected,
    Event,
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
    RestingOrder,
    Side,
    TimeInForce,
    TopOfBook,
)

INSTRUMENTS = ["A", "B"]
TEAMS = [1, 2, 3]
PRICES = [98, 99, 100, 101, 102]


@dataclass
class ModelOrder:
    order_id: int
    team_id: int
    instrument_id: str
    client_order_id: str | None
    side: Side
    price: int
    quantity: int
    remaining: int
    time_in_force: TimeInForce
    arrival: int


class ReferenceBook:
    """All resting orders of all instruments in one list; everything recomputed on demand."""

    def __init__(self, phase: Phase, next_trade_id: itertools.count) -> None:
        self.phase = phase
        self.orders: list[ModelOrder] = []
        self.used_ids: set[int] = set()
        self.reported: dict[str, tuple] = {}
        self.trade_ids = next_trade_id
        self.arrivals = itertools.count(1)

    # --- views

    def queue(self, instrument_id: str, side: Side) -> list[ModelOrder]:
        mine = [o for o in self.orders if o.instrument_id == instrument_id and o.side == side]
        if side == Side.BUY:
            return sorted(mine, key=lambda o: (-o.price, o.arrival))
        return sorted(mine, key=lambda o: (o.price, o.arrival))

    def top(self, instrument_id: str) -> tuple:
        out: list = []
        for side in (Side.BUY, Side.SELL):
            q = self.queue(instrument_id, side)
            if q:
                best = q[0].price
                out += [best, sum(o.remaining for o in q if o.price == best)]
            else:
                out += [None, 0]
        return tuple(out)

    def all_in_priority(self) -> list[ModelOrder]:
        return [
            o
            for instrument_id in sorted({o.instrument_id for o in self.orders})
            for side in (Side.BUY, Side.SELL)
            for o in self.queue(instrument_id, side)
        ]

    def snapshot(self) -> list[RestingOrder]:
        return [
            RestingOrder(
                o.order_id,
                o.team_id,
                o.instrument_id,
                o.client_order_id,
                o.side,
                o.price,
                o.quantity,
                o.remaining,
                o.quantity - o.remaining,
                o.time_in_force,
            )
            for o in self.all_in_priority()
        ]

    def report_tops(self, events: list) -> None:
        for instrument_id in sorted(set(self.reported) | {o.instrument_id for o in self.orders}):
            now = self.top(instrument_id)
            if now != self.reported.get(instrument_id, (None, 0, None, 0)):
                self.reported[instrument_id] = now
                events.append(TopOfBook(instrument_id, *now))

    def cancelled(self, o: ModelOrder, reason: CancelReason) -> OrderCancelled:
        self.orders.remove(o)
        return OrderCancelled(
            o.order_id,
            o.team_id,
            o.instrument_id,
            o.client_order_id,
            o.side,
            o.remaining,
            o.quantity - o.remaining,
            reason,
        )

    # --- commands

    def submit(self, c: NewOrder) -> list:
        def reject(code: str) -> list:
            return [OrderRejected(c.order_id, c.team_id, c.instrument_id, c.client_order_id, code, "")]

        if self.phase not in (Phase.CONTINUOUS, Phase.PRE_OPEN):
            return reject("MARKET_CLOSED")
        if c.order_id in self.used_ids:
            return reject("DUPLICATE_ORDER_ID")
        if c.quantity <= 0:
            return reject("INVALID_QUANTITY")
        if c.order_type == OrderType.LIMIT and (c.price is None or c.price <= 0):
            return reject("INVALID_PRICE")
        if c.order_type == OrderType.MARKET and c.price is not None:
            return reject("PRICE_NOT_ALLOWED")
        is_market = c.order_type == OrderType.MARKET
        never_rests = is_market or c.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)
        if self.phase == Phase.PRE_OPEN and never_rests:
            return reject("ORDER_TYPE_NOT_ALLOWED")

        self.used_ids.add(c.order_id)
        events: list = [
            OrderAccepted(
                c.order_id,
                c.team_id,
                c.instrument_id,
                c.client_order_id,
                c.side,
                c.order_type,
                c.time_in_force,
                c.price,
                c.quantity,
            )
        ]
        opposite = Side.SELL if c.side == Side.BUY else Side.BUY

        def crosses(o: ModelOrder) -> bool:
            if is_market:
                return True
            return o.price <= c.price if c.side == Side.BUY else o.price >= c.price

        remaining = c.quantity
        stopped_by_own_order = False
        if self.phase == Phase.CONTINUOUS:
            if c.time_in_force == TimeInForce.FOK:
                available = 0
                for o in self.queue(c.instrument_id, opposite):
                    if not crosses(o) or o.team_id == c.team_id:
                        break
                    available += o.remaining
                if available < c.quantity:
                    events.append(
                        OrderCancelled(
                            c.order_id,
                            c.team_id,
                            c.instrument_id,
                            c.client_order_id,
                            c.side,
                            c.quantity,
                            0,
                            CancelReason.FOK_UNFILLED,
                        )
                    )
                    self.report_tops(events)
                    return events
            while remaining:
                q = [o for o in self.queue(c.instrument_id, opposite) if crosses(o)]
                if not q:
                    break
                maker = q[0]
                if maker.team_id == c.team_id:
                    stopped_by_own_order = True
                    break
                traded = min(maker.remaining, remaining)
                maker.remaining -= traded
                remaining -= traded
                if maker.remaining == 0:
                    self.orders.remove(maker)
                events.append(
                    Fill(
                        next(self.trade_ids),
                        c.instrument_id,
                        maker.price,
                        traded,
                        c.side,
                        self.party(maker),
                        FillParty(
                            c.order_id,
                            c.team_id,
                            c.client_order_id,
                            c.side,
                            c.quantity - remaining,
                            remaining,
                            OrderStatus.FILLED if remaining == 0 else OrderStatus.PARTIALLY_FILLED,
                            c.price,
                        ),
                    )
                )
        if remaining:
            reason = None
            if stopped_by_own_order:
                reason = CancelReason.SELF_TRADE_PREVENTED
            elif never_rests:
                reason = CancelReason.FOK_UNFILLED if c.time_in_force == TimeInForce.FOK else CancelReason.IOC_REMAINDER
            if reason is None:
                self.orders.append(
                    ModelOrder(
                        c.order_id,
                        c.team_id,
                        c.instrument_id,
                        c.client_order_id,
                        c.side,
                        c.price,
                        c.quantity,
                        remaining,
                        c.time_in_force,
                        next(self.arrivals),
                    )
                )
            else:
                events.append(
                    OrderCancelled(
                        c.order_id,
                        c.team_id,
                        c.instrument_id,
                        c.client_order_id,
                        c.side,
                        remaining,
                        c.quantity - remaining,
                        reason,
                    )
                )
        self.report_tops(events)
        return events

    @staticmethod
    def party(o: ModelOrder) -> FillParty:
        return FillParty(
            o.order_id,
            o.team_id,
            o.client_order_id,
            o.side,
            o.quantity - o.remaining,
            o.remaining,
            OrderStatus.FILLED if o.remaining == 0 else OrderStatus.PARTIALLY_FILLED,
            o.price,
        )

    def takes_user_cancels(self) -> bool:
        return self.phase in (Phase.CONTINUOUS, Phase.PRE_OPEN)

    def cancel(self, c: CancelOrder) -> list:
        if c.reason == CancelReason.USER_REQUESTED and not self.takes_user_cancels():
            return [CancelRejected(c.order_id, c.team_id, "MARKET_CLOSED", "")]
        match = [o for o in self.orders if o.order_id == c.order_id and o.team_id == c.team_id]
        if not match:
            return [CancelRejected(c.order_id, c.team_id, "ORDER_NOT_FOUND", "")]
        events: list = [self.cancelled(match[0], c.reason)]
        self.report_tops(events)
        return events

    def cancel_all(self, team_id: int | None, instrument_id: str | None, reason: CancelReason) -> list:
        chosen = [
            o
            for o in self.all_in_priority()
            if (team_id is None or o.team_id == team_id) and (instrument_id is None or o.instrument_id == instrument_id)
        ]
        if reason == CancelReason.USER_REQUESTED and not self.takes_user_cancels():
            return [CancelRejected(o.order_id, o.team_id, "MARKET_CLOSED", "") for o in chosen]
        events: list = [self.cancelled(o, reason) for o in chosen]
        self.report_tops(events)
        return events

    def cancel_day_orders(self) -> list:
        events: list = [
            self.cancelled(o, CancelReason.SESSION_END)
            for o in self.all_in_priority()
            if o.time_in_force == TimeInForce.DAY
        ]
        self.report_tops(events)
        return events

    def set_phase(self, phase: Phase, references: dict[str, int]) -> list:
        events: list = []
        if phase == Phase.CONTINUOUS and self.phase != Phase.CONTINUOUS:
            for instrument_id in sorted({o.instrument_id for o in self.orders}):
                events += self.auction(instrument_id, references.get(instrument_id))
        self.phase = phase
        if phase == Phase.CLOSED:
            events += [
                self.cancelled(o, CancelReason.SESSION_END)
                for o in self.all_in_priority()
                if o.time_in_force == TimeInForce.DAY
            ]
        self.report_tops(events)
        return events

    def run_auction(self, instrument_id: str, reference: int | None) -> list:
        events = self.auction(instrument_id, reference)
        self.report_tops(events)
        return events

    def auction(self, instrument_id: str, reference: int | None) -> list:
        events: list = []
        while True:
            bids = self.queue(instrument_id, Side.BUY)
            asks = self.queue(instrument_id, Side.SELL)
            scored = []
            for p in sorted({o.price for o in bids + asks}):
                demand = sum(o.remaining for o in bids if o.price >= p)
                supply = sum(o.remaining for o in asks if o.price <= p)
                scored.append((min(demand, supply), -abs(demand - supply), p))
            if not scored or max(scored)[0] == 0:
                return events
            best = max(s[:2] for s in scored)
            tied = [p for v, i, p in scored if (v, i) == best]
            low, high = min(tied), max(tied)
            price = (low + high) // 2 if reference is None else min(high, max(low, reference))
            # pair in priority at that price
            buyers = [[o, o.remaining] for o in bids if o.price >= price]
            sellers = [[o, o.remaining] for o in asks if o.price <= price]
            pairs = []
            while buyers and sellers:
                quantity = min(buyers[0][1], sellers[0][1])
                pairs.append((buyers[0][0], sellers[0][0], quantity))
                for queue in (buyers, sellers):
                    queue[0][1] -= quantity
                    if queue[0][1] == 0:
                        queue.pop(0)
            own = [(b, s) for b, s, _ in pairs if b.team_id == s.team_id]
            if own:
                later = max(own[0], key=lambda o: o.arrival)
                events.append(self.cancelled(later, CancelReason.SELF_TRADE_PREVENTED))
                continue
            for b, s, quantity in pairs:
                b.remaining -= quantity
                s.remaining -= quantity
                maker, taker = (b, s) if b.arrival < s.arrival else (s, b)
                events.append(
                    Fill(
                        next(self.trade_ids),
                        instrument_id,
                        price,
                        quantity,
                        taker.side,
                        self.party(maker),
                        self.party(taker),
                    )
                )
            self.orders = [o for o in self.orders if o.remaining > 0]
            return events


def comparable(events: list[Event]) -> list:
    """Events with the free-text reasons of refusals blanked (the model knows only codes)."""
    return [replace(e, reason="") if isinstance(e, OrderRejected | CancelRejected) else e for e in events]


new_orders = st.tuples(
    st.sampled_from(TEAMS),
    st.sampled_from(INSTRUMENTS),
    st.sampled_from(list(Side)),
    st.sampled_from([OrderType.LIMIT] * 4 + [OrderType.MARKET]),
    st.sampled_from([TimeInForce.GTC, TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK]),
    st.sampled_from(PRICES),
    st.integers(1, 12),
)
# Mostly continuous trading, with the whole day cycle in between.
phases = st.sampled_from([Phase.CONTINUOUS] * 3 + [Phase.PRE_OPEN] * 2 + [Phase.OPENING_AUCTION, Phase.CLOSED])


class EngineMatchesReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.trade_ids = itertools.count(1)
        self.model_trade_ids = itertools.count(1)
        self.engine = MatchingEngine(next_trade_id=self.trade_ids.__next__, phase=Phase.CONTINUOUS)
        self.model = ReferenceBook(Phase.CONTINUOUS, self.model_trade_ids)
        self.next_id = 1

    def check(self, got: list[Event], expected: list) -> None:
        assert comparable(got) == expected

    @rule(orders=st.lists(new_orders, min_size=1, max_size=4))
    def submit(self, orders: list[tuple[int, str, Side, OrderType, TimeInForce, int, int]]) -> None:
        for team, instrument, side, order_type, tif, price, quantity in orders:
            order_id = self.next_id
            self.next_id += 1
            command = NewOrder(
                order_id,
                team,
                instrument,
                side,
                order_type,
                tif,
                None if order_type is OrderType.MARKET else price,
                quantity,
                f"c{order_id}" if order_id % 3 else None,
            )
            self.check(self.engine.submit(command), self.model.submit(command))

    @rule(data=st.data(), bad=st.sampled_from(["duplicate", "price", "market-price", "quantity"]))
    def submit_invalid(self, data: st.DataObject, bad: str) -> None:
        order_id = self.next_id
        price: int | None = 100
        quantity = 5
        order_type = OrderType.LIMIT
        if bad == "duplicate" and self.model.orders:
            order_id = data.draw(st.sampled_from([o.order_id for o in self.model.orders]))
        elif bad == "price":
            price = data.draw(st.sampled_from([None, 0, -1]))
        elif bad == "market-price":
            order_type = OrderType.MARKET
        elif bad == "quantity":
            quantity = 0
        if order_id == self.next_id:
            self.next_id += 1
        command = NewOrder(order_id, 1, "A", Side.BUY, order_type, TimeInForce.GTC, price, quantity, None)
        self.check(self.engine.submit(command), self.model.submit(command))

    @rule(data=st.data(), team=st.sampled_from(TEAMS), reason=st.sampled_from(list(CancelReason)))
    def cancel(self, data: st.DataObject, team: int, reason: CancelReason) -> None:
        live = [o.order_id for o in self.model.orders]
        order_id = data.draw(
            st.sampled_from(live) if live and data.draw(st.booleans()) else st.integers(1, self.next_id + 2)
        )
        if data.draw(st.booleans()):
            owner = [o.team_id for o in self.model.orders if o.order_id == order_id]
            team = owner[0] if owner else team
        if data.draw(st.integers(0, 3)):
            reason = CancelReason.USER_REQUESTED
        command = CancelOrder(order_id, team, reason)
        self.check(self.engine.cancel(command), self.model.cancel(command))

    @rule(
        team=st.none() | st.sampled_from(TEAMS),
        instrument=st.none() | st.sampled_from(INSTRUMENTS),
        reason=st.sampled_from([CancelReason.USER_REQUESTED, CancelReason.OPERATOR]),
    )
    def cancel_all(self, team: int | None, instrument: str | None, reason: CancelReason) -> None:
        self.check(
            self.engine.cancel_all(team_id=team, instrument_id=instrument, reason=reason),
            self.model.cancel_all(team, instrument, reason),
        )

    @rule()
    def cancel_day_orders(self) -> None:
        self.check(self.engine.cancel_day_orders(), self.model.cancel_day_orders())

    @rule(
        phase=phases,
        references=st.dictionaries(st.sampled_from(INSTRUMENTS), st.sampled_from([97, 99, 100, 103])),
    )
    def set_phase(self, phase: Phase, references: dict[str, int]) -> None:
        self.check(self.engine.set_phase(phase, references or None), self.model.set_phase(phase, references))
        assert self.engine.phase is phase

    @rule(
        orders=st.lists(new_orders, min_size=2, max_size=10),
        references=st.dictionaries(st.sampled_from(INSTRUMENTS), st.sampled_from([97, 100, 101, 103])),
    )
    def opening(self, orders: list, references: dict[str, int]) -> None:
        """A whole morning: pre-open orders (crossed books likely), the auction, the open."""
        self.set_phase(Phase.PRE_OPEN, {})
        self.submit(
            [
                (t, i, s, OrderType.LIMIT, TimeInForce.DAY if q % 2 else TimeInForce.GTC, p, q)
                for t, i, s, _, _, p, q in orders
            ]
        )
        self.set_phase(Phase.OPENING_AUCTION, {})
        self.set_phase(Phase.CONTINUOUS, references)

    @rule(instrument=st.sampled_from(INSTRUMENTS), reference=st.none() | st.sampled_from([97, 100, 101, 104]))
    def run_auction(self, instrument: str, reference: int | None) -> None:
        self.check(self.engine.run_auction(instrument, reference), self.model.run_auction(instrument, reference))

    @rule()
    def restart_from_snapshot(self) -> None:
        """A new engine restored from the resting orders in arrival order (ids grow with arrival)."""
        snapshot = sorted(self.engine.resting_orders(), key=lambda r: r.order_id)
        engine = MatchingEngine(next_trade_id=self.trade_ids.__next__, phase=self.engine.phase)
        engine.restore(snapshot)
        self.engine = engine

    @invariant()
    def books_agree(self) -> None:
        self.engine.check_invariants()
        assert self.engine.resting_orders() == self.model.snapshot()
        for instrument in INSTRUMENTS:
            assert self.engine.top_of_book(instrument) == TopOfBook(instrument, *self.model.top(instrument))


EngineMatchesReference.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineMatchesReference = EngineMatchesReference.TestCase
