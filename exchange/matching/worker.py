"""The single writer: decides a batch of commands against its in-memory state, in arrival order.

``MatchingWorker.decide`` turns commands into a ``Batch``: the rows the batch writes (one
transaction, ``commit.py``), the replies the waiting web processes get and the frames the
teams and the tape get (``publish.py``, after commit). Nothing here waits on Redis or locks
anything: the worker is the only writer of orders, trades, fills, positions and cash.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

import orjson
from django.db.models import Max, Sum

from accounts.models import Team
from exchange import clock, wire
from exchange.codes import RejectCode
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
    OrderType,
    Phase,
    RestingOrder,
    Side,
    TimeInForce,
    TopOfBook,
)
from exchange.matching.risk import CLOSED_PHASES, check_order
from exchange.matching.state import Finished, GameState, InstrumentState, OrderRec, Policy, TeamState
from exchange.models import Account, Game, Instrument, JournalEntry, Order, Position, RoleChange, RolePolicy, Trade
from exchange.policies import role_policies
from exchange.prices import from_ticks, to_ticks

log = logging.getLogger(__name__)
# The engine's enums by their wire value: a dict lookup, where calling the enum class costs
# several times as much on every order (the values were checked before).
SIDES = {member.value: member for member in Side}
ORDER_TYPES = {member.value: member for member in OrderType}
TIMES_IN_FORCE = {member.value: member for member in TimeInForce}

PRICE_PLACES = Decimal("0.0001")  # the price column's scale
MARKET_DATA_INTERVAL_S = 0.1  # at most 10 market_data frames per second per instrument
INSTRUMENT_RELOAD_S = 1.0
Frame = list[Any]  # [type, timestamp, data as JSON text, instrument_id or None]


def frame(kind: str, stamp: str, data: Any, instrument: str | None = None) -> Frame:
    return [kind, stamp, orjson.dumps(data).decode(), instrument]


@dataclass
class Batch:
    """What one batch decided: rows for one transaction, then replies and frames."""

    now: datetime
    stamp: str
    new_orders: list[OrderRec] = field(default_factory=list)
    changed_orders: dict[int, OrderRec] = field(default_factory=dict)
    trades: list[tuple[Any, ...]] = field(default_factory=list)
    fills: list[tuple[Any, ...]] = field(default_factory=list)
    positions: set[tuple[int, str]] = field(default_factory=set)
    accounts: set[int] = field(default_factory=set)
    journal: list[tuple[Any, ...]] = field(default_factory=list)
    operator_writes: list[Any] = field(default_factory=list)  # callables run inside the transaction
    private: dict[int, list[Frame]] = field(default_factory=lambda: defaultdict(list))
    public: list[Frame] = field(default_factory=list)
    verdicts: dict[str, list[tuple[int, Any]]] = field(default_factory=lambda: defaultdict(list))
    replies: list[tuple[str, Any]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    last_id: int = 0
    current: int = 0  # the command being decided
    role_rates: dict[str, int] = field(default_factory=dict)
    books_check: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.journal)


class MatchingWorker:
    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex[:12]
        self.engine = MatchingEngine(next_trade_id=self._trade_id)
        self.game = GameState()
        self.teams: dict[int, TeamState] = {}
        self.instruments: dict[str, InstrumentState] = {}
        self.policies: dict[str, Policy] = {}
        self.open_orders: dict[int, OrderRec] = {}
        self.finished = Finished()
        self.stored_positions: set[tuple[int, str]] = set()
        self.next_order = 1
        self.next_trade = 1
        self.last_decided = 0
        self.market_sent: dict[str, float] = {}
        self.market_due: dict[str, float] = {}
        self._missing_instruments: dict[str, float] = {}

    # --- start: everything from the database ------------------------------------------------------
    def load(self) -> None:
        game, _ = Game.objects.get_or_create(pk=1)
        self.game = GameState(phase=game.phase, halted=game.trading_halted)
        self.policies = {role: _policy(p) for role, p in role_policies().items()}
        self.instruments = {i.symbol: _instrument(i) for i in Instrument.objects.all()}
        # volume counts the session: since the last move to pre_open, or (after a restart) since
        # midnight UTC; last is the instrument's last trade ever.
        midnight = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        today = dict(
            Trade.objects.filter(created_at__gte=midnight)
            .values_list("instrument_id")
            .annotate(volume=Sum("quantity"))
            .values_list("instrument_id", "volume")
        )
        for symbol, last_id in Trade.objects.values_list("instrument_id").annotate(last_id=Max("id")):
            state = self.instruments.get(symbol)
            if state is not None:
                last = Trade.objects.get(pk=last_id)
                state.volume, state.last, state.last_size = today.get(symbol) or 0, last.price, last.quantity
        self.teams = {t.pk: TeamState(t.pk, t.role, t.active, t.trading_halted) for t in Team.objects.all()}
        for team_id, symbol, quantity in Position.objects.values_list("team_id", "instrument_id", "quantity"):
            self.stored_positions.add((team_id, symbol))
            if team_id in self.teams:
                self.teams[team_id].positions[symbol] = quantity
        for team_id, cash, fees in Account.objects.values_list("team_id", "cash", "fees_paid"):
            if team_id in self.teams:
                self.teams[team_id].cash, self.teams[team_id].fees = cash, fees
        self.next_order = (Order.objects.aggregate(last=Max("id"))["last"] or 0) + 1
        self.next_trade = (Trade.objects.aggregate(last=Max("id"))["last"] or 0) + 1
        self.last_decided = JournalEntry.objects.aggregate(last=Max("id"))["last"] or 0
        self.engine = MatchingEngine(next_trade_id=self._trade_id, phase=Phase(self.game.phase))
        resting = []
        for row in Order.objects.filter(status__in=("new", "partially_filled")).order_by("accepted_seq", "id"):
            order = _order_rec(row)
            self.open_orders[order.pk] = order
            team = self._team(order.team)
            team.add_open(order)
            if order.coid:
                team.open_coids[order.coid] = order.pk
            instrument = self.instruments[order.symbol]
            resting.append(
                RestingOrder(
                    order_id=order.pk,
                    team_id=order.team,
                    instrument_id=order.symbol,
                    client_order_id=order.coid,
                    side=Side(order.side),
                    price=to_ticks(order.price, instrument.tick) if order.price is not None else 0,
                    quantity=order.quantity,
                    remaining=order.remaining,
                    filled=order.filled,
                    time_in_force=TimeInForce(order.time_in_force),
                    order_type=OrderType.LIMIT,
                )
            )
        self.engine.restore(resting)
        # The team's latest order per client id, for resends after a restart.
        latest = (
            Order.objects.filter(client_order_id__isnull=False)
            .values("team_id", "client_order_id")
            .annotate(last=Max("id"))
            .values_list("last", flat=True)
        )
        for row in Order.objects.filter(pk__in=list(latest)).order_by("id"):
            order = self.open_orders.get(row.pk) or _order_rec(row)
            self._team(order.team).remember_coid(order)
        log.info(
            "state rebuilt: %d resting orders, %d teams, next order %d, next trade %d, last command %d",
            len(resting),
            len(self.teams),
            self.next_order,
            self.next_trade,
            self.last_decided,
        )

    def _trade_id(self) -> int:
        trade = self.next_trade
        self.next_trade += 1
        return trade

    def _team(self, pk: int) -> TeamState:
        team = self.teams.get(pk)
        if team is None:  # registered after the start; the registration also queues a reload
            row = Team.objects.filter(pk=pk).values_list("role", "active", "trading_halted").first()
            role, active, halted = row if row else ("retail", False, True)
            team = self.teams[pk] = TeamState(pk, role, active, halted)
        return team

    def _instrument(self, symbol: str) -> InstrumentState | None:
        state = self.instruments.get(symbol)
        if state is None:
            # Listed after the start: look again, at most once a second per unknown symbol.
            now = time.monotonic()
            if now - self._missing_instruments.get(symbol, -INSTRUMENT_RELOAD_S) >= INSTRUMENT_RELOAD_S:
                self._missing_instruments[symbol] = now
                row = Instrument.objects.filter(symbol=symbol).first()
                if row is not None:
                    state = self.instruments[symbol] = _instrument(row)
                    self._missing_instruments.pop(symbol, None)
                elif len(self._missing_instruments) > 10_000:
                    self._missing_instruments.clear()
        return state

    # --- a batch ----------------------------------------------------------------------------------
    def decide(self, commands: list[tuple[int, dict[str, Any]]]) -> Batch:
        now = clock.now()
        batch = Batch(now=now, stamp=clock.iso(now))
        for command_id, command in commands:
            if command_id <= self.last_decided:
                continue  # decided before a restart: its effects are in the database already
            self.last_decided = batch.last_id = batch.current = command_id
            kind = command.get("k")
            handler = getattr(self, f"_do_{kind}", None)
            if handler is None:  # journalled as refused; its kind cut to the column's width
                result = orjson.dumps({"error": f"unknown command {kind!r}"}).decode()
                kind = str(kind)[:16]
            else:
                result = handler(batch, command_id, command)
            batch.journal.append((command_id, kind, command.get("t"), orjson.dumps(command).decode(), result, now))
        self._market_data(batch)
        return batch

    # submit ---------------------------------------------------------------------------------------
    def _do_s(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        team = self._team(c["t"])
        symbol, side, order_type, tif, quantity, coid = c["i"], c["s"], c["y"], c["f"], c["q"], c.get("c")
        price = Decimal(c["p"]) if c.get("p") is not None else None
        fingerprint = (symbol, side, order_type, tif, price, quantity)
        if coid is not None:
            latest = team.latest_coids.get(coid)
            if latest is not None and latest.fingerprint == fingerprint:
                self._verdict(batch, c, wire.order_reply(latest, batch.stamp, c.get("rq"), None))
                return orjson.dumps({"resend_of": latest.pk}).decode()
        order = OrderRec(self.next_order, team.pk, symbol, side, order_type, tif, price, quantity, coid, batch.now)
        self.next_order += 1
        order.fingerprint = fingerprint
        order.accepted_seq = command_id
        batch.new_orders.append(order)
        team.remember_coid(order)
        instrument = self._instrument(symbol)
        policy = self.policies[team.role]
        rejection = check_order(
            team, instrument, symbol, self.game, policy, side, order_type, tif, price, quantity, coid
        )
        if rejection is None:
            assert instrument is not None
            events = self.engine.submit(
                NewOrder(
                    order_id=order.pk,
                    team_id=team.pk,
                    instrument_id=symbol,
                    side=SIDES[side],
                    order_type=ORDER_TYPES[order_type],
                    time_in_force=TIMES_IN_FORCE[tif],
                    price=None if price is None else to_ticks(price, instrument.tick),
                    quantity=quantity,
                    client_order_id=coid,
                )
            )
            if events and isinstance(events[0], OrderRejected):
                rejection_code, message = events[0].code, events[0].reason
                self._reject(batch, order, instrument, rejection_code, message)
            else:
                self._apply(batch, events, taker=order)
        else:
            self._reject(batch, order, instrument, rejection.code, rejection.message)
        details = rejection.details if rejection is not None else None
        self._verdict(batch, c, wire.order_reply(order, batch.stamp, c.get("rq"), details))
        return orjson.dumps({"order_id": order.pk, "status": order.status}).decode()

    def _reject(
        self, batch: Batch, order: OrderRec, instrument: InstrumentState | None, code: str, message: str
    ) -> None:
        order.status, order.remaining = "rejected", 0
        order.error_code, order.error_message = str(code), message[:200]
        order.instrument_known = instrument is not None
        order.accepted_seq = None
        if order.price is not None:
            # An off-grid price may have more places than the column; the reply keeps it whole.
            try:
                order.price = order.price.quantize(PRICE_PLACES, rounding=ROUND_DOWN)
            except InvalidOperation:
                order.price = None
        batch.private[order.team].append(frame("new_order_reject", batch.stamp, wire.new_order_reject(order)))

    # cancels --------------------------------------------------------------------------------------
    def _do_c(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        team_pk, pk = c["t"], c["o"]
        order = self.open_orders.get(pk) or self.finished.get(pk)
        if order is None:
            order = self._stored_order(pk)
        if order is None or order.team != team_pk or order.status == "rejected":
            reply = wire.cancel_reply(
                wire.order_id(pk),
                batch.stamp,
                "rejected",
                error_code=RejectCode.ORDER_NOT_FOUND,
                error_message="no such order",
            )
            self._verdict(batch, c, reply)
            return orjson.dumps({"status": "not_found"}).decode()
        if not order.is_open:
            code = RejectCode.ORDER_ALREADY_FILLED if order.status == "filled" else RejectCode.ORDER_ALREADY_CANCELLED
            message = "the order is filled" if order.status == "filled" else "the order is already cancelled"
            self._cancel_refused(batch, c, order, code, message)
            return orjson.dumps({"status": "rejected", "error_code": code}).decode()
        if self.game.phase in CLOSED_PHASES:
            self._cancel_refused(
                batch, c, order, RejectCode.MARKET_CLOSED, f"cancels are not taken in phase {self.game.phase}"
            )
            return orjson.dumps({"status": "rejected", "error_code": "MARKET_CLOSED"}).decode()
        events = self.engine.cancel(CancelOrder(order_id=pk, team_id=team_pk, reason=CancelReason.USER_REQUESTED))
        self._apply(batch, events)
        cancelled = sum(e.cancelled_quantity for e in events if isinstance(e, OrderCancelled))
        reply = wire.cancel_reply(
            wire.order_id(pk),
            batch.stamp,
            "cancelled",
            client_order_id=order.coid,
            cancelled_quantity=cancelled,
            filled_quantity=order.filled,
        )
        self._verdict(batch, c, reply)
        return orjson.dumps({"status": "cancelled", "cancelled_quantity": cancelled}).decode()

    def _cancel_refused(self, batch: Batch, c: dict[str, Any], order: OrderRec, code: str, message: str) -> None:
        batch.private[order.team].append(frame("cancel_reject", batch.stamp, wire.cancel_reject(order, code, message)))
        reply = wire.cancel_reply(
            wire.order_id(order.pk),
            batch.stamp,
            "rejected",
            client_order_id=order.coid,
            filled_quantity=order.filled,
            error_code=code,
            error_message=message,
        )
        self._verdict(batch, c, reply)

    def _stored_order(self, pk: int) -> OrderRec | None:
        row = Order.objects.filter(pk=pk).first() if 0 < pk < self.next_order else None
        return _order_rec(row) if row is not None else None

    def _do_ca(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        team_pk, symbol = c["t"], c.get("i")
        if self.game.phase in CLOSED_PHASES:
            self._verdict(batch, c, {"error": RejectCode.MARKET_CLOSED, "phase": self.game.phase})
            return orjson.dumps({"status": "rejected", "error_code": "MARKET_CLOSED"}).decode()
        events = self.engine.cancel_all(team_id=team_pk, instrument_id=symbol, reason=CancelReason.USER_REQUESTED)
        self._apply(batch, events)
        results = [
            wire.cancel_reply(
                wire.order_id(e.order_id),
                batch.stamp,
                "cancelled",
                client_order_id=e.client_order_id,
                cancelled_quantity=e.cancelled_quantity,
                filled_quantity=e.filled_quantity,
            )
            for e in events
            if isinstance(e, OrderCancelled)
        ]
        self._verdict(batch, c, wire.CancelAllReply(results=results))
        return orjson.dumps({"cancelled": [r["order_id"] for r in results]}).decode()

    def _verdict(self, batch: Batch, c: dict[str, Any], reply: Any) -> None:
        if c.get("r"):
            batch.verdicts[c["r"]].append((batch.current, reply))

    # engine events -> state, rows, frames -----------------------------------------------------------
    def _apply(self, batch: Batch, events: list[Event], taker: OrderRec | None = None) -> None:
        stamp = batch.stamp
        for event in events:
            if isinstance(event, Fill):
                self._fill(batch, event)
            elif isinstance(event, TopOfBook):
                batch.touched.add(event.instrument_id)
            elif isinstance(event, OrderAccepted):
                order = taker if taker is not None and taker.pk == event.order_id else self.open_orders[event.order_id]
                self.open_orders[order.pk] = order
                team = self.teams[order.team]
                team.add_open(order)
                if order.coid is not None:
                    team.open_coids[order.coid] = order.pk
                batch.private[order.team].append(frame("new_order_ack", stamp, wire.new_order_ack(order)))
            elif isinstance(event, OrderCancelled):
                order = self.open_orders.pop(event.order_id)
                team = self.teams[order.team]
                team.take_open(order, event.cancelled_quantity)
                order.cancelled += event.cancelled_quantity
                order.remaining -= event.cancelled_quantity
                order.status, order.cancel_reason = "cancelled", event.reason.value
                self._finish(batch, order, team)
                batch.private[order.team].append(
                    frame("cancel_ack", stamp, wire.cancel_ack(order, event.cancelled_quantity, event.reason.value))
                )
            elif isinstance(event, CancelRejected):
                order = self.open_orders.get(event.order_id) or self.finished.get(event.order_id)
                if order is not None:
                    batch.private[order.team].append(
                        frame("cancel_reject", stamp, wire.cancel_reject(order, event.code, event.reason))
                    )

    def _finish(self, batch: Batch, order: OrderRec, team: TeamState) -> None:
        if order.coid is not None and team.open_coids.get(order.coid) == order.pk:
            del team.open_coids[order.coid]
        self.finished.add(order)
        if order.stored:
            batch.changed_orders[order.pk] = order

    def _fill(self, batch: Batch, event: Fill) -> None:
        instrument = self.instruments[event.instrument_id]
        price = from_ticks(event.price, instrument.tick)
        quantity = event.quantity
        instrument.volume += quantity
        instrument.last, instrument.last_size = price, quantity
        aggressor = event.aggressor_side.value if event.aggressor_side else None
        batch.trades.append((event.trade_id, instrument.symbol, price, quantity, aggressor, batch.now))
        self._party(batch, event, instrument, price, event.maker, "maker")
        self._party(batch, event, instrument, price, event.taker, "taker")
        data = wire.trade_frame(instrument.symbol, event.trade_id, price, quantity, aggressor)
        batch.public.append(frame("trade", batch.stamp, data, instrument.symbol))
        batch.touched.add(instrument.symbol)

    def _party(
        self, batch: Batch, event: Fill, instrument: InstrumentState, price: Decimal, party: FillParty, liquidity: str
    ) -> None:
        order = self.open_orders[party.order_id]
        team = self.teams[order.team]
        policy = self.policies[team.role]
        quantity = event.quantity
        fee = (policy.maker_fee if liquidity == "maker" else policy.taker_fee) * quantity
        buy = party.side == Side.BUY
        notional = price * quantity
        cash_delta = (-notional if buy else notional) * instrument.multiplier - fee
        order.filled, order.remaining = party.filled_quantity, party.remaining_quantity
        order.status = party.status.value
        order.notional += notional
        order.fees += fee
        order.liquidity = liquidity
        team.take_open(order, quantity)
        position = team.positions.get(instrument.symbol, 0) + (quantity if buy else -quantity)
        team.positions[instrument.symbol] = position
        team.cash += cash_delta
        team.fees += fee
        batch.positions.add((team.pk, instrument.symbol))
        batch.accounts.add(team.pk)
        batch.fills.append(
            (
                event.trade_id,
                order.pk,
                team.pk,
                instrument.symbol,
                order.side,
                quantity,
                price,
                liquidity,
                fee,
                cash_delta,
                position,
                batch.now,
            )
        )
        batch.private[team.pk].append(
            frame(
                "execution_report",
                batch.stamp,
                wire.execution_report(order, event.trade_id, price, quantity, liquidity, fee, position),  # type: ignore[arg-type]
            )
        )
        if order.remaining == 0:
            del self.open_orders[order.pk]
            self._finish(batch, order, team)
        elif order.stored:
            batch.changed_orders[order.pk] = order

    # operator commands: same queue, so the books change in one order --------------------------------
    def _reply(self, batch: Batch, c: dict[str, Any], result: dict[str, Any]) -> str:
        if c.get("reply"):
            batch.replies.append((c["reply"], result))
        return orjson.dumps(result).decode()

    def _do_phase(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        previous, phase = self.game.phase, Phase(c["phase"]).value
        day_orders = sum(1 for o in self.open_orders.values() if o.time_in_force == "day")
        result = {"previous": previous, "phase": phase, "changed": previous != phase, "open_day_orders": day_orders}
        if previous == phase:
            return self._reply(batch, c, result)
        self.game.phase = phase
        batch.operator_writes.append(lambda: Game.objects.filter(pk=1).update(phase=phase, updated_at=batch.now))
        self._new_session(phase)
        # The event goes out before the auction's fills and the session_end cancels it causes.
        data = {"event_type": "phase_change", "phase": phase, "previous_phase": previous}
        batch.public.append(frame("event", batch.stamp, data))
        self._apply(batch, self.engine.set_phase(Phase(phase)))
        return self._reply(batch, c, result)

    def _new_session(self, phase: str) -> None:
        if phase == "pre_open":
            for instrument in self.instruments.values():
                instrument.volume = 0

    def _do_halt(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        scope, target, halted = c["scope"], c.get("target"), bool(c["halted"])
        team_pk = instrument = None
        if scope == "team":
            team = self._team(int(target))
            team_pk, changed = team.pk, team.halted != halted
            team.halted = halted
            batch.operator_writes.append(lambda: Team.objects.filter(pk=team_pk).update(trading_halted=halted))
            in_scope = [o for o in self.open_orders.values() if o.team == team_pk]
        elif scope == "instrument":
            state = self._instrument(str(target))
            if state is None:
                return self._reply(batch, c, {"error": f"no instrument {target}"})
            instrument, changed = state.symbol, state.halted != halted
            state.halted = halted
            batch.operator_writes.append(lambda: Instrument.objects.filter(symbol=instrument).update(halted=halted))
            in_scope = [o for o in self.open_orders.values() if o.symbol == instrument]
        else:
            changed = self.game.halted != halted
            self.game.halted = halted
            batch.operator_writes.append(
                lambda: Game.objects.filter(pk=1).update(trading_halted=halted, updated_at=batch.now)
            )
            in_scope = list(self.open_orders.values())
        if changed:  # announced before the cancels it causes
            data: dict[str, Any] = {"event_type": "halt" if halted else "resume", "scope": scope}
            if scope == "team":
                data["team_id"] = f"TEAM_{team_pk}"
            elif scope == "instrument":
                data["instrument_id"] = instrument
            if halted:
                data["cancel_resting"] = bool(c.get("cancel"))
            if team_pk is not None:
                batch.private[team_pk].append(frame("event", batch.stamp, data))
            else:
                batch.public.append(frame("event", batch.stamp, data))
        cancelled = 0
        if c.get("cancel"):
            events = self.engine.cancel_all(team_id=team_pk, instrument_id=instrument, reason=CancelReason.OPERATOR)
            self._apply(batch, events)
            cancelled = sum(1 for e in events if isinstance(e, OrderCancelled))
        return self._reply(batch, c, {"changed": changed, "open_orders": len(in_scope), "cancelled": cancelled})

    def _do_role(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        policy = self.policies[c["role"]]
        changes: dict[str, list[str]] = {}
        for name, raw in c["changes"].items():
            if name not in Policy.FIELDS:
                return self._reply(batch, c, {"error": f"unknown setting {name}"})
            old = getattr(policy, name)
            new = (
                Decimal(raw)
                if isinstance(old, Decimal)
                else (raw in (True, "true", "1"))
                if isinstance(old, bool)
                else int(raw)
            )
            if new != old:
                setattr(policy, name, new)
                changes[name] = [str(old), str(new)]
        if changes:
            policy_row = {name: getattr(policy, name) for name in Policy.FIELDS}
            role, who = policy.role, str(c.get("by") or "operator")

            def write() -> None:
                # The whole policy (the worker's view of it), so a row lost since the start is whole again.
                RolePolicy.objects.update_or_create(role=role, defaults=policy_row)
                RoleChange.objects.bulk_create(
                    RoleChange(role=role, field=name, old=old, new=new, changed_by=who, changed_at=batch.now)
                    for name, (old, new) in changes.items()
                )

            batch.operator_writes.append(write)
            batch.role_rates[role] = policy.orders_per_second
        return self._reply(batch, c, {"role": policy.role, "changes": changes})

    def _do_team(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        row = Team.objects.filter(pk=c["team"]).values_list("role", "active", "trading_halted").first()
        if row is not None:
            team = self._team(int(c["team"]))
            team.role, team.active, team.halted = row
        return self._reply(batch, c, {"known": row is not None})

    def _do_instrument(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        row = Instrument.objects.filter(symbol=c["symbol"]).first()
        if row is not None:
            state = self.instruments.get(row.symbol)
            fresh = _instrument(row)
            if state is not None:
                fresh.volume, fresh.last, fresh.last_size = state.volume, state.last, state.last_size
            self.instruments[row.symbol] = fresh
        return self._reply(batch, c, {"known": row is not None})

    def _do_game(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        """The game row was edited outside the queue (the admin): take its phase and halt."""
        game = Game.objects.filter(pk=1).values_list("phase", "trading_halted").first()
        if game is None:
            return self._reply(batch, c, {"known": False})
        phase, halted = game
        self.game.halted = halted
        if phase != self.game.phase:
            previous, self.game.phase = self.game.phase, phase
            self._new_session(phase)
            data = {"event_type": "phase_change", "phase": phase, "previous_phase": previous}
            batch.public.append(frame("event", batch.stamp, data))
            self._apply(batch, self.engine.set_phase(Phase(phase)))
        return self._reply(batch, c, {"known": True})

    def _do_policies(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        """Role policies were edited outside the queue: read them all again."""
        self.policies = {role: _policy(p) for role, p in role_policies().items()}
        batch.role_rates.update({role: p.orders_per_second for role, p in self.policies.items()})
        return self._reply(batch, c, {"roles": len(self.policies)})

    def _do_frames(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        """Frames from operators and the market simulation (underlying, signal, news), published
        in queue order like every other frame."""
        teams: list[int] = []
        if c.get("team") is not None:
            teams = [int(c["team"])]
        elif c.get("role") is not None:
            teams = [t.pk for t in self.teams.values() if t.role == c["role"] and t.active]
        for kind, data in c["frames"]:
            item = frame(kind, batch.stamp, data, data.get("instrument_id") if isinstance(data, dict) else None)
            if c.get("team") is None and c.get("role") is None:
                batch.public.append(item)
            for team_pk in teams:
                batch.private[team_pk].append(item)
        return self._reply(batch, c, {"teams": len(teams)})

    def _do_books(self, batch: Batch, command_id: int, c: dict[str, Any]) -> str:
        batch.books_check.append(c.get("reply") or "")
        return "{}"

    # market data, conflated here: at most one frame per instrument per interval ------------------------
    def _market_data(self, batch: Batch) -> None:
        now = time.monotonic()
        for symbol in batch.touched:
            if now - self.market_sent.get(symbol, -MARKET_DATA_INTERVAL_S) >= MARKET_DATA_INTERVAL_S:
                self.market_due.pop(symbol, None)
                self._market_frame(batch, symbol, now)
            else:
                self.market_due.setdefault(symbol, self.market_sent[symbol] + MARKET_DATA_INTERVAL_S)
        batch.touched.clear()
        for symbol, due in list(self.market_due.items()):
            if due <= now:
                del self.market_due[symbol]
                self._market_frame(batch, symbol, now)

    def next_market_due(self) -> float | None:
        return min(self.market_due.values(), default=None)

    def _market_frame(self, batch: Batch, symbol: str, now: float) -> None:
        instrument = self.instruments[symbol]
        top = self.engine.top_of_book(symbol)
        tick = instrument.tick
        data = wire.market_data(
            symbol,
            from_ticks(top.bid, tick) if top.bid is not None else None,
            top.bid_size,
            from_ticks(top.ask, tick) if top.ask is not None else None,
            top.ask_size,
            instrument.last,
            instrument.last_size,
            instrument.volume,
        )
        self.market_sent[symbol] = now
        batch.public.append(frame("market_data", batch.stamp, data, symbol))

    def market_data_only(self) -> Batch:
        """A batch with no commands: the conflated market data that has come due."""
        now = clock.now()
        batch = Batch(now=now, stamp=clock.iso(now))
        self._market_data(batch)
        return batch


def _policy(row: RolePolicy) -> Policy:
    return Policy(role=row.role, **{name: getattr(row, name) for name in Policy.FIELDS})


def _instrument(row: Instrument) -> InstrumentState:
    return InstrumentState(row.symbol, row.tick_size, row.multiplier, row.max_order_size, row.listed, row.halted)


def _order_rec(row: Order) -> OrderRec:
    order = OrderRec(
        row.pk,
        row.team_id,
        row.instrument_symbol,
        row.side,
        row.order_type,
        row.time_in_force,
        row.price,
        row.quantity,
        row.client_order_id,
        row.created_at,
    )
    order.filled, order.remaining, order.cancelled = row.filled_quantity, row.remaining_quantity, row.cancelled_quantity
    order.notional, order.fees, order.status = row.filled_notional, row.fees, row.status
    order.error_code, order.error_message, order.cancel_reason = row.error_code, row.error_message, row.cancel_reason
    order.accepted_seq, order.stored = row.accepted_seq, True
    order.instrument_known = row.instrument_id is not None
    order.fingerprint = (row.instrument_symbol, row.side, row.order_type, row.time_in_force, row.price, row.quantity)
    return order
