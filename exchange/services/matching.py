"""The matching worker: the single writer of the books.

It keeps the engine's books in memory, rebuilt from the database at start, and drains the
command journal in arrival order. Each batch of commands is matched, then all its effects
(order states, trades, fills, positions, cash, the journal marks) are written in one
transaction; the resulting messages are published only after that commit.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Max

from accounts.models import Team
from exchange import clock
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
from exchange.liveness import HEARTBEAT_TTL_S, beat
from exchange.models import Account, Command, Game, Instrument, Order, OrderStatus, Position, RolePolicy, Trade
from exchange.models import Fill as FillRecord
from exchange.policies import role_policies
from exchange.prices import from_ticks, to_ticks, wire
from exchange.publisher import Outbox
from exchange.selectors import game_state
from exchange.services.orders import reject_data
from exchange.verdicts import post as post_verdicts

log = logging.getLogger(__name__)

POLICY_REFRESH_S = 1.0
ORDER_FIELDS = [
    "status",
    "filled_quantity",
    "remaining_quantity",
    "cancelled_quantity",
    "filled_notional",
    "fees",
    "error_code",
    "error_message",
    "cancel_reason",
    "accepted_seq",
    "updated_at",
]


@dataclass
class Batch:
    """Everything one transaction writes, and the messages it will publish."""

    now: datetime
    orders: dict[int, Order] = field(default_factory=dict)
    dirty_orders: set[int] = field(default_factory=set)
    trades: list[Trade] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)
    outbox: Outbox = field(default_factory=Outbox)
    tops: dict[str, TopOfBook] = field(default_factory=dict)
    verdicts: dict[int, dict[str, Any]] = field(default_factory=dict)


class MatchingWorker:
    def __init__(self) -> None:
        self.engine: MatchingEngine | None = None
        self._next_trade = 1
        self._instruments: dict[str, Instrument] = {}
        self._roles: dict[int, str] = {}
        self._positions: dict[tuple[int, str], Position] = {}
        self._accounts: dict[int, Account] = {}
        self._redis: redis.Redis | None = None
        self._role_policies: dict[str, RolePolicy] = {}
        self._policies_read_at = -POLICY_REFRESH_S

    # --- state ----------------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild books and caches from the database (at start and after any failed batch)."""
        game = game_state()
        self._next_trade = (Trade.objects.aggregate(last=Max("id"))["last"] or 0) + 1
        self._instruments = {i.symbol: i for i in Instrument.objects.all()}
        self._roles = dict(Team.objects.values_list("id", "role"))
        self._positions = {(p.team_id, p.instrument_id): p for p in Position.objects.all()}
        self._accounts = {a.team_id: a for a in Account.objects.all()}
        engine = MatchingEngine(next_trade_id=self._trade_id, phase=self._journal_phase(game))
        resting = Order.objects.filter(
            status__in=(OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED), accepted_seq__isnull=False
        ).order_by("accepted_seq")
        engine.restore(self._resting(order) for order in resting.iterator())
        # The books are long-lived and cycle-free: keep the collector from rescanning them.
        gc.collect()
        gc.freeze()
        self.engine = engine
        log.info("books rebuilt: %d resting orders, next trade %d", len(engine.resting_orders()), self._next_trade)

    @staticmethod
    def _journal_phase(game: Game) -> Phase:
        """The phase as of the journal's last applied command: ``Game.phase`` may already name
        a phase whose SET_PHASE command is still waiting behind earlier orders."""
        phases = Command.objects.filter(kind=Command.Kind.SET_PHASE)
        applied = phases.filter(processed_at__isnull=False).order_by("-id").values_list("argument", flat=True).first()
        if applied:
            return Phase(applied)
        if phases.exists():  # none applied yet: the game still had the phase it starts in
            return Phase(Game._meta.get_field("phase").default)
        return Phase(game.phase)

    def _trade_id(self) -> int:
        trade_id = self._next_trade
        self._next_trade += 1
        return trade_id

    def _resting(self, order: Order) -> RestingOrder:
        instrument = self._instruments[order.instrument_id]
        return RestingOrder(
            order_id=order.pk,
            team_id=order.team_id,
            instrument_id=order.instrument_id,
            client_order_id=order.client_order_id,
            side=Side(order.side),
            price=to_ticks(order.price, instrument.tick_size),
            quantity=order.quantity,
            remaining=order.remaining_quantity,
            filled=order.filled_quantity,
            time_in_force=TimeInForce(order.time_in_force),
            order_type=OrderType.LIMIT,
        )

    def _instrument(self, symbol: str) -> Instrument:
        if symbol not in self._instruments:
            self._instruments[symbol] = Instrument.objects.get(symbol=symbol)
        return self._instruments[symbol]

    # --- the loop ---------------------------------------------------------------------------
    def drain(self) -> int:
        """Apply every pending command in arrival order; return how many were applied."""
        if self.engine is None:
            self.heartbeat()
            self.load()
        done = 0
        batch_size = settings.EXCHANGE_MATCHING_BATCH
        while True:
            try:
                applied = self._apply_batch(batch_size)
            except Exception:
                log.exception("a batch failed; rebuilding books and applying its commands one at a time")
                self.engine = None
                self.load()
                if batch_size == 1:
                    self._quarantine_next()
                    continue
                batch_size = 1
                continue
            if not applied:
                return done
            done += applied
            batch_size = settings.EXCHANGE_MATCHING_BATCH

    def _apply_batch(self, size: int) -> int:
        assert self.engine is not None
        with transaction.atomic():
            commands = list(
                Command.objects.filter(processed_at__isnull=True).select_related("order").order_by("id")[:size]
            )
            if not commands:
                return 0
            batch = Batch(now=clock.now())
            self._refresh_policies()
            for command in commands:
                for order in [command.order] if command.order else []:
                    batch.orders.setdefault(order.pk, order)
                events = self._run(command)
                self._load_orders(batch, events)
                for event in events:
                    self._record(batch, command, event)
                command.processed_at = batch.now
            self._flush(batch, commands)
        return len(commands)

    def _refresh_policies(self) -> None:
        """Fees come from the role policies, re-read at most once a second (operators' edits
        apply within a second; a burst of small batches does not re-read them each time)."""
        now = time.monotonic()
        if now - self._policies_read_at > POLICY_REFRESH_S:
            self._role_policies = role_policies()
            self._policies_read_at = now

    def _run(self, command: Command) -> list[Event]:
        engine = self.engine
        assert engine is not None
        if command.kind == Command.Kind.SUBMIT:
            order = command.order
            assert order is not None
            if order.status != OrderStatus.PENDING_NEW:
                return []  # applied before: nothing happens twice
            instrument = self._instrument(order.instrument_id)
            return engine.submit(
                NewOrder(
                    order_id=order.pk,
                    team_id=order.team_id,
                    instrument_id=order.instrument_id,
                    side=Side(order.side),
                    order_type=OrderType(order.order_type),
                    time_in_force=TimeInForce(order.time_in_force),
                    price=None if order.price is None else to_ticks(order.price, instrument.tick_size),
                    quantity=order.quantity,
                    client_order_id=order.client_order_id,
                )
            )
        if command.kind == Command.Kind.CANCEL:
            assert command.order_id is not None and command.team_id is not None
            reason = CancelReason(command.argument or CancelReason.USER_REQUESTED)
            return engine.cancel(CancelOrder(order_id=command.order_id, team_id=command.team_id, reason=reason))
        if command.kind == Command.Kind.CANCEL_ALL:
            reason = CancelReason(command.argument or CancelReason.USER_REQUESTED)
            return engine.cancel_all(team_id=command.team_id, instrument_id=command.instrument_id, reason=reason)
        if command.kind == Command.Kind.SET_PHASE:
            return engine.set_phase(Phase(command.argument))
        raise ValueError(f"unknown command kind {command.kind}")

    def _load_orders(self, batch: Batch, events: Iterable[Event]) -> None:
        wanted: set[int] = set()
        for event in events:
            if isinstance(event, Fill):
                wanted.update((event.maker.order_id, event.taker.order_id))
            elif isinstance(event, OrderAccepted | OrderRejected | OrderCancelled | CancelRejected):
                wanted.add(event.order_id)
        missing = wanted - batch.orders.keys()
        if missing:
            batch.orders.update(Order.objects.in_bulk(list(missing)))

    # --- events -> records and messages --------------------------------------------------------
    def _record(self, batch: Batch, command: Command, event: Event) -> None:
        stamp = clock.iso(batch.now)
        if isinstance(event, Fill):
            self._record_fill(batch, event, stamp)
            return
        if isinstance(event, TopOfBook):
            batch.tops[event.instrument_id] = event
            return
        order = batch.orders[event.order_id]
        if isinstance(event, OrderAccepted):
            order.status = OrderStatus.NEW
            order.accepted_seq = command.pk
            batch.outbox.to_team(order.team_id, "new_order_ack", self._ack_data(order), stamp)
        elif isinstance(event, OrderRejected):
            order.status = OrderStatus.REJECTED
            order.remaining_quantity = 0
            order.error_code, order.error_message = event.code, event.reason[:200]
            batch.outbox.to_team(order.team_id, "new_order_reject", reject_data(order), stamp)
        elif isinstance(event, OrderCancelled):
            order.status = OrderStatus.CANCELLED
            order.cancelled_quantity += event.cancelled_quantity
            order.remaining_quantity -= event.cancelled_quantity
            order.cancel_reason = event.reason.value
            data = {
                "order_id": order.order_id,
                "client_order_id": order.client_order_id,
                "status": "cancelled",
                "cancelled_quantity": event.cancelled_quantity,
                "reason": event.reason.value,
            }
            batch.outbox.to_team(order.team_id, "cancel_ack", data, stamp)
            if command.kind == Command.Kind.CANCEL and command.order_id == order.pk:
                command.result = {
                    "status": "cancelled",
                    "cancelled_quantity": event.cancelled_quantity,
                    "filled_quantity": event.filled_quantity,
                }
                batch.verdicts[command.pk] = command.result
        elif isinstance(event, CancelRejected):
            code = self._cancel_reject_code(order, event)
            data = {
                "order_id": order.order_id,
                "client_order_id": order.client_order_id,
                "status": "cancel_rejected",
                "error_code": code,
                "reason": event.reason,
            }
            batch.outbox.to_team(command.team_id or order.team_id, "cancel_reject", data, stamp)
            command.result = {"status": "rejected", "error_code": code, "error_message": event.reason}
            batch.verdicts[command.pk] = command.result
            return
        order.updated_at = batch.now
        batch.dirty_orders.add(order.pk)

    @staticmethod
    def _cancel_reject_code(order: Order, event: CancelRejected) -> str:
        if event.code != RejectCode.ORDER_NOT_FOUND or order.team_id != event.team_id:
            return event.code
        if order.status == OrderStatus.FILLED:
            return RejectCode.ORDER_ALREADY_FILLED
        if order.status == OrderStatus.CANCELLED:
            return RejectCode.ORDER_ALREADY_CANCELLED
        return event.code

    def _ack_data(self, order: Order) -> dict[str, Any]:
        return {
            "order_id": order.order_id,
            "client_order_id": order.client_order_id,
            "instrument_id": order.instrument_symbol,
            "side": order.side,
            "quantity": order.quantity,
            "order_type": order.order_type,
            "price": wire(order.price),
            "time_in_force": order.time_in_force,
            "status": "new",
        }

    def _record_fill(self, batch: Batch, event: Fill, stamp: str) -> None:
        instrument = self._instrument(event.instrument_id)
        price = from_ticks(event.price, instrument.tick_size)
        trade = Trade(
            id=event.trade_id,
            instrument_id=instrument.symbol,
            price=price,
            quantity=event.quantity,
            aggressor_side=event.aggressor_side.value if event.aggressor_side else None,
            created_at=batch.now,
        )
        batch.trades.append(trade)
        for party, liquidity in ((event.maker, "maker"), (event.taker, "taker")):
            self._record_party(batch, trade, instrument, party, liquidity, stamp)
        batch.outbox.to_market(
            "trade",
            {
                "instrument_id": instrument.symbol,
                "trade_id": trade.trade_id,
                "price": wire(price),
                "quantity": event.quantity,
                "aggressor_side": trade.aggressor_side,
            },
            stamp,
        )

    def _record_party(
        self, batch: Batch, trade: Trade, instrument: Instrument, party: FillParty, liquidity: str, stamp: str
    ) -> None:
        order = batch.orders[party.order_id]
        team_pk = order.team_id
        role = self._roles.get(team_pk) or self._refresh_role(team_pk)
        policy = self._role_policies[role]
        fee = (policy.maker_fee if liquidity == "maker" else policy.taker_fee) * trade.quantity
        sign = 1 if party.side == Side.BUY else -1
        notional = trade.price * trade.quantity
        cash_delta = -sign * notional * instrument.multiplier - fee

        order.filled_quantity = party.filled_quantity
        order.remaining_quantity = party.remaining_quantity
        order.status = OrderStatus(party.status.value)
        order.filled_notional += notional
        order.fees += fee
        order.updated_at = batch.now
        batch.dirty_orders.add(order.pk)

        position = self._position(team_pk, instrument.symbol)
        position.quantity += sign * trade.quantity
        position._dirty = True  # type: ignore[attr-defined]
        account = self._account(team_pk)
        account.cash += cash_delta
        account.fees_paid += fee
        account._dirty = True  # type: ignore[attr-defined]

        batch.fills.append(
            FillRecord(
                trade=trade,
                order_id=order.pk,
                team_id=team_pk,
                instrument_id=instrument.symbol,
                side=party.side.value,
                quantity=trade.quantity,
                price=trade.price,
                liquidity_type=liquidity,
                fees=fee,
                cash_delta=cash_delta,
                position_after=position.quantity,
                created_at=batch.now,
            )
        )
        data = {
            "order_id": order.order_id,
            "client_order_id": order.client_order_id,
            "trade_id": trade.trade_id,
            "instrument_id": instrument.symbol,
            "side": party.side.value,
            "executed_quantity": trade.quantity,
            "executed_price": wire(trade.price),
            "remaining_quantity": party.remaining_quantity,
            "order_status": party.status.value,
            "liquidity_type": liquidity,
            "fees": wire(fee),
            "position": position.quantity,
        }
        batch.outbox.to_team(team_pk, "execution_report", data, stamp)

    def _refresh_role(self, team_pk: int) -> str:
        self._roles[team_pk] = Team.objects.values_list("role", flat=True).get(pk=team_pk)
        return self._roles[team_pk]

    def _position(self, team_pk: int, symbol: str) -> Position:
        key = (team_pk, symbol)
        if key not in self._positions:
            self._positions[key] = Position(team_id=team_pk, instrument_id=symbol, quantity=0)
        return self._positions[key]

    def _account(self, team_pk: int) -> Account:
        if team_pk not in self._accounts:
            self._accounts[team_pk] = Account.objects.get_or_create(team_id=team_pk)[0]
        return self._accounts[team_pk]

    def _flush(self, batch: Batch, commands: list[Command]) -> None:
        Trade.objects.bulk_create(batch.trades)
        FillRecord.objects.bulk_create(batch.fills)
        update_rows(Order, [batch.orders[pk] for pk in sorted(batch.dirty_orders)], ORDER_FIELDS)
        dirty_positions = [p for p in self._positions.values() if getattr(p, "_dirty", False)]
        new_positions = [p for p in dirty_positions if p.pk is None]
        update_rows(Position, [p for p in dirty_positions if p.pk is not None], ["quantity"])
        Position.objects.bulk_create(new_positions)
        dirty_accounts = [a for a in self._accounts.values() if getattr(a, "_dirty", False)]
        update_rows(Account, dirty_accounts, ["cash", "fees_paid"])
        update_rows(Command, commands, ["processed_at", "result"])
        for record in (*dirty_positions, *dirty_accounts):
            record._dirty = False  # type: ignore[attr-defined]
        if new_positions and new_positions[0].pk is None:  # backends that return no ids
            self._positions = {(p.team_id, p.instrument_id): p for p in Position.objects.all()}
        for top in batch.tops.values():
            self._market_data(batch, top)
        batch.outbox.send_on_commit()
        if batch.verdicts:
            transaction.on_commit(lambda: self._post_verdicts(batch.verdicts))

    def _post_verdicts(self, verdicts: dict[int, dict[str, Any]]) -> None:
        try:
            post_verdicts(self._redis_client(), verdicts)
        except redis.RedisError:  # the verdict is in the journal too; the asker reads it there
            log.warning("could not post %d cancel verdicts", len(verdicts))

    def _market_data(self, batch: Batch, top: TopOfBook) -> None:
        tick = self._instrument(top.instrument_id).tick_size
        last = next((t for t in reversed(batch.trades) if t.instrument_id == top.instrument_id), None)
        data = {
            "instrument_id": top.instrument_id,
            "bid": wire(from_ticks(top.bid, tick)) if top.bid is not None else None,
            "bid_size": top.bid_size,
            "ask": wire(from_ticks(top.ask, tick)) if top.ask is not None else None,
            "ask_size": top.ask_size,
            "last": wire(last.price) if last else None,
            "last_size": last.quantity if last else None,
        }
        batch.outbox.to_market("market_data", data, clock.iso(batch.now))

    def _quarantine_next(self) -> None:
        """A command that fails on its own is set aside so it cannot block the journal."""
        with transaction.atomic():
            command = Command.objects.filter(processed_at__isnull=True).select_related("order").order_by("id").first()
            if command is None:
                return
            now = clock.now()
            command.processed_at = now
            command.result = {
                "status": "rejected",
                "error_code": RejectCode.ENGINE_ERROR,
                "error_message": "the matching engine could not take this command",
            }
            command.save(update_fields=["processed_at", "result"])
            order = command.order
            outbox = Outbox()
            if command.kind == Command.Kind.SUBMIT and order is not None and order.status == OrderStatus.PENDING_NEW:
                order.status, order.remaining_quantity = OrderStatus.REJECTED, 0
                order.error_code, order.error_message = RejectCode.ENGINE_ERROR, "the matching engine could not take it"
                order.updated_at = now
                order.save()
                outbox.to_team(order.team_id, "new_order_reject", reject_data(order), clock.iso(now))
            outbox.send_on_commit()
        log.error("command %s set aside after failing on its own", command.pk)

    def books_differences(self) -> list[str]:
        """Invariant 5: the books in memory against the open orders in the database."""
        from exchange.invariants import books_differences

        if self.engine is None:
            self.load()
        assert self.engine is not None
        with transaction.atomic():
            return books_differences(self.engine.resting_orders())

    # --- liveness ---------------------------------------------------------------------------
    def _redis_client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1)
        return self._redis

    def heartbeat(self) -> None:
        try:
            beat(self._redis_client())
        except redis.RedisError:
            log.warning("could not write the matching heartbeat")


def update_rows(model: type[models.Model], rows: list[Any], fields: list[str]) -> None:
    """One ``UPDATE ... WHERE id = ?`` executed for many rows: far cheaper than ``bulk_update``,
    whose CASE expressions cost more to build than the whole matching step."""
    if not rows:
        return
    quote = connection.ops.quote_name
    columns = [model._meta.get_field(name) for name in fields]
    assignments = ", ".join(f"{quote(column.column)} = %s" for column in columns)
    sql = f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(model._meta.pk.column)} = %s"
    params = [[c.get_db_prep_save(getattr(row, c.attname), connection) for c in columns] + [row.pk] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


_worker: MatchingWorker | None = None
_worker_lock = threading.Lock()
_beat_thread: threading.Thread | None = None
_beat_stop = threading.Event()


def matching_worker() -> MatchingWorker:
    """This process's matching worker, with its heartbeat thread (started on first use)."""
    global _worker, _beat_thread
    with _worker_lock:
        if _worker is None:
            _worker = MatchingWorker()
            _beat_stop.clear()
            _beat_thread = threading.Thread(target=_beat, args=(_worker,), daemon=True, name="matching-heartbeat")
            _beat_thread.start()
        return _worker


def matching_worker_stop() -> None:
    """Forget the worker and stop its heartbeat (at worker shutdown, and between tests)."""
    global _worker, _beat_thread
    with _worker_lock:
        _beat_stop.set()
        if _beat_thread is not None:
            _beat_thread.join(timeout=10)
        _worker, _beat_thread = None, None


def _beat(worker: MatchingWorker) -> None:
    """Heartbeat, and a sweep: commands left waiting (a lost wake-up) get a fresh one."""
    from django.db import close_old_connections

    from exchange.tasks import process_commands

    while not _beat_stop.is_set():
        worker.heartbeat()
        try:
            stale = clock.now() - timedelta(seconds=2)
            if Command.objects.filter(processed_at__isnull=True, created_at__lt=stale).exists():
                process_commands.apply_async(queue="matching")
            close_old_connections()
        except Exception:
            log.warning("the sweep for waiting commands failed", exc_info=True)
        _beat_stop.wait(HEARTBEAT_TTL_S / 3)
