"""Operator writes: step the trading phase, halt and resume a team, an instrument or the whole
exchange, open and close registration.

Whatever the books must follow (a phase change, sweeping resting orders off a halted scope)
goes through the command journal, so the matching worker applies it in order with the orders
sent before it. Flags the validator reads (phase, halts) change at once, in the same
transaction, and every change is announced on the WebSocket only after it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from accounts.models import Team
from exchange import clock
from exchange.engine import CancelReason
from exchange.models import OPEN_STATUSES, Command, Game, Instrument, Order, Phase, TimeInForce
from exchange.publisher import Outbox

PHASE_EFFECTS = {
    Phase.CLOSED: "new orders and cancels are refused with MARKET_CLOSED",
    Phase.PRE_OPEN: "resting limit orders (gtc, day) are taken and rest without trading; cancels are taken",
    Phase.OPENING_AUCTION: "new orders and cancels are refused with MARKET_CLOSED until continuous trading",
    Phase.CONTINUOUS: "orders are matched continuously, price-time priority",
}


class OperatorError(ValueError):
    """An operator request that cannot be carried out as asked."""


@dataclass(frozen=True)
class PhaseChange:
    previous: str
    phase: str
    command_id: int | None  # the journal's SET_PHASE command; None when nothing changed
    open_day_orders: int  # open ``day`` orders at the time of the change

    @property
    def changed(self) -> bool:
        return self.previous != self.phase

    def summary(self) -> list[str]:
        """What the operator should know about this change, one line each."""
        if not self.changed:
            return [f"The phase is already {self.phase}: nothing changed."]
        lines = [
            f"Phase: {self.previous} -> {self.phase} (journal command #{self.command_id}).",
            f"Now {PHASE_EFFECTS[Phase(self.phase)]}.",
        ]
        if self.phase == Phase.CONTINUOUS:
            lines.append("The opening auction uncrosses every book at one price before continuous matching starts.")
        if self.phase == Phase.CLOSED:
            lines.append(f"{self.open_day_orders} open day order(s) will be cancelled with reason session_end.")
        lines.append("Bots receive an event frame: phase_change.")
        return lines


@dataclass(frozen=True)
class HaltChange:
    scope: str  # "team" | "instrument" | "exchange"
    target: str | None  # TEAM_<n>, the instrument's symbol, or None for the exchange
    halted: bool  # the state after the call
    changed: bool  # False when it already was in that state
    open_orders: int  # open orders in the scope at the time of the call
    command_id: int | None  # the journal's CANCEL_ALL command when resting orders are swept

    @property
    def scope_name(self) -> str:
        if self.scope == "team":
            return f"Team {self.target}"
        if self.scope == "instrument":
            return f"Instrument {self.target}"
        return "The exchange"

    def summary(self) -> list[str]:
        """What the operator should know about this halt or resume, one line each."""
        name = self.scope_name
        if not self.changed:
            lines = [f"{name} is already {'halted' if self.halted else 'trading'}: the flag did not change."]
        elif self.halted:
            code = "INSTRUMENT_HALTED" if self.scope == "instrument" else "TRADING_DISABLED"
            lines = [f"{name} halted: new orders are refused with {code}."]
        else:
            lines = [f"{name} resumed: orders are taken again (other halts still apply)."]
        if self.command_id is not None:
            lines.append(
                f"{self.open_orders} open order(s) will be cancelled with reason operator "
                f"(journal command #{self.command_id})."
            )
        elif self.halted:
            lines.append(f"{self.open_orders} open order(s) stay on the book.")
        if self.changed:
            audience = "that team's connections" if self.scope == "team" else "every connection"
            lines.append(f"Bots ({audience}) receive an event frame: {'halt' if self.halted else 'resume'}.")
        return lines


def _game_for_update() -> Game:
    Game.objects.get_or_create(pk=1)
    return Game.objects.select_for_update().get(pk=1)


def _hold_order_entry() -> None:
    """Wait for every order being validated right now, and keep new ones out until commit.

    Each order is validated and journalled under its team's row lock, so holding all of them
    means no order checked against the old phase or halt flags can land in the journal after
    this change. (SQLite already serializes writers; this matters on PostgreSQL.)
    """
    list(Team.objects.select_for_update().order_by("pk").values_list("pk", flat=True))


def _wake_on_commit() -> None:
    from exchange.tasks import wake_matching

    transaction.on_commit(wake_matching)


# --- phases -------------------------------------------------------------------------------------
def game_set_phase(phase: str) -> PhaseChange:
    """Move the game to ``phase``; the books follow when the worker reaches the journal entry.

    Entering ``continuous`` from another phase runs the opening auction on every book; entering
    ``closed`` cancels ``day`` orders (reason ``session_end``). Setting the current phase again
    changes nothing and announces nothing.
    """
    new = Phase(phase)
    now = clock.now()
    with transaction.atomic():
        _hold_order_entry()
        game = _game_for_update()
        previous = Phase(game.phase)
        day_orders = Order.objects.filter(status__in=OPEN_STATUSES, time_in_force=TimeInForce.DAY).count()
        if previous == new:
            return PhaseChange(previous=previous.value, phase=new.value, command_id=None, open_day_orders=day_orders)
        game.phase = new
        game.save(update_fields=["phase", "updated_at"])
        command = Command.objects.create(kind=Command.Kind.SET_PHASE, argument=new.value, created_at=now)
        # On-commit callbacks run in order: the event is out before the worker is woken, so bots
        # hear of the change before the auction's fills or the session_end cancels.
        outbox = Outbox()
        data = {"event_type": "phase_change", "phase": new.value, "previous_phase": previous.value}
        outbox.to_market("event", data, clock.iso(now))
        outbox.send_on_commit()
        _wake_on_commit()
    return PhaseChange(previous=previous.value, phase=new.value, command_id=command.pk, open_day_orders=day_orders)


# --- halts --------------------------------------------------------------------------------------
def halt(
    *,
    team: Team | None = None,
    instrument: Instrument | None = None,
    exchange: bool = False,
    cancel_resting: bool = False,
) -> HaltChange:
    """Refuse new orders of one team (``TRADING_DISABLED``), on one instrument
    (``INSTRUMENT_HALTED``) or everywhere (``TRADING_DISABLED``); name exactly one scope.

    With ``cancel_resting``, the scope's resting orders are taken off the book by the matching
    worker, after everything sent before the halt, with ``cancel_ack`` reason ``operator``.
    Cancelling also runs when the scope was already halted, so it can sweep a halted scope.
    """
    return _set_halted(team, instrument, exchange, halted=True, cancel_resting=cancel_resting)


def resume(*, team: Team | None = None, instrument: Instrument | None = None, exchange: bool = False) -> HaltChange:
    """Lift a halt of one team, one instrument or the exchange; name exactly one scope.

    Each scope is its own switch: resuming a team does not lift an exchange or instrument halt.
    """
    return _set_halted(team, instrument, exchange, halted=False, cancel_resting=False)


def _set_halted(
    team: Team | None, instrument: Instrument | None, exchange: bool, *, halted: bool, cancel_resting: bool
) -> HaltChange:
    if sum((team is not None, instrument is not None, bool(exchange))) != 1:
        raise OperatorError("name exactly one of: a team, an instrument, the exchange")
    now = clock.now()
    with transaction.atomic():
        _hold_order_entry()
        open_orders = Order.objects.filter(status__in=OPEN_STATUSES)
        if team is not None:
            scope, target = "team", team.team_id
            record: Team | Instrument | Game = Team.objects.select_for_update().get(pk=team.pk)
            changed = record.trading_halted != halted
            record.trading_halted = team.trading_halted = halted
            record.save(update_fields=["trading_halted"])
            open_orders = open_orders.filter(team=team)
        elif instrument is not None:
            scope, target = "instrument", instrument.symbol
            record = Instrument.objects.select_for_update().get(pk=instrument.pk)
            changed = record.halted != halted
            record.halted = instrument.halted = halted
            record.save(update_fields=["halted"])
            open_orders = open_orders.filter(instrument=instrument)
        else:
            scope, target = "exchange", None
            record = _game_for_update()
            changed = record.trading_halted != halted
            record.trading_halted = halted
            record.save(update_fields=["trading_halted", "updated_at"])
        if changed:  # announced before the worker is woken: the halt comes before its cancel_acks
            _announce_halt(scope, target, team, halted, cancel_resting, clock.iso(now))
        command_id = None
        if cancel_resting:
            command = Command.objects.create(
                kind=Command.Kind.CANCEL_ALL,
                team=team,
                instrument=instrument,
                argument=CancelReason.OPERATOR.value,
                created_at=now,
            )
            command_id = command.pk
            _wake_on_commit()
        return HaltChange(
            scope=scope,
            target=target,
            halted=halted,
            changed=changed,
            open_orders=open_orders.count(),
            command_id=command_id,
        )


def _announce_halt(
    scope: str, target: str | None, team: Team | None, halted: bool, cancel_resting: bool, stamp: str
) -> None:
    data: dict[str, Any] = {"event_type": "halt" if halted else "resume", "scope": scope}
    if scope == "team":
        data["team_id"] = target
    elif scope == "instrument":
        data["instrument_id"] = target
    if halted:
        data["cancel_resting"] = cancel_resting
    outbox = Outbox()
    if team is not None:
        outbox.to_team(team.pk, "event", data, stamp)  # a team's halt is its own business
    else:
        outbox.to_market("event", data, stamp)
    outbox.send_on_commit()


# --- registration -------------------------------------------------------------------------------
def registration_set(open_: bool) -> bool:
    """Open or close ``POST /auth/register``; returns whether anything changed."""
    with transaction.atomic():
        game = _game_for_update()
        if game.registration_open == open_:
            return False
        game.registration_open = open_
        game.save(update_fields=["registration_open", "updated_at"])
    return True


# --- lookups for the operator tools --------------------------------------------------------------
def team_lookup(reference: str) -> Team:
    """A team by ``TEAM_<n>`` or by name (case-insensitive); ``OperatorError`` when none."""
    reference = reference.strip()
    team = None
    if reference.upper().startswith("TEAM_") and reference[5:].isdigit():
        team = Team.objects.filter(pk=int(reference[5:])).first()
    if team is None:
        team = Team.objects.filter(name__iexact=reference).first()
    if team is None:
        raise OperatorError(f"no team named or numbered {reference!r}")
    return team


def instrument_lookup(symbol: str) -> Instrument:
    """An instrument by symbol (case-insensitive); ``OperatorError`` when none."""
    instrument = Instrument.objects.filter(symbol__iexact=symbol.strip()).first()
    if instrument is None:
        raise OperatorError(f"no instrument {symbol!r}")
    return instrument
