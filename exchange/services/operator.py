"""Operator writes: step the trading phase, halt and resume a team, an instrument or the whole
exchange, change a role's limits and fees, open and close registration.

Phase, halts and role policies are the matching worker's state: each change travels through the
matching queue behind every order sent before it (exchange.matching.queue.operator_command), and
the worker applies it, writes it and announces it. An order sent before the change is decided
under the old rules.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from accounts.models import Role, Team
from exchange.matching.queue import Refused, operator_command
from exchange.matching.state import Policy
from exchange.models import Game, Instrument, Phase

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


def _command(kind: str, **arguments: Any) -> dict[str, Any]:
    try:
        result = operator_command(kind, **arguments)
    except Refused as refused:
        raise OperatorError(f"the matching worker cannot take the command: {refused.message}") from refused
    except TimeoutError as timeout:
        raise OperatorError(f"{timeout}; it will still be carried out") from timeout
    if "error" in result:
        raise OperatorError(str(result["error"]))
    return result


# --- phases -------------------------------------------------------------------------------------
def game_set_phase(phase: str) -> PhaseChange:
    """Move the game to ``phase``, in queue order with the orders sent before it.

    Entering ``continuous`` from another phase runs the opening auction on every book; entering
    ``closed`` cancels ``day`` orders (reason ``session_end``). Setting the current phase again
    changes nothing and announces nothing.
    """
    new = Phase(phase)
    result = _command("phase", phase=new.value)
    return PhaseChange(
        previous=result["previous"],
        phase=result["phase"],
        command_id=result["command_id"] if result["changed"] else None,
        open_day_orders=result["open_day_orders"],
    )


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
    """Take a halt off one scope (other halts still apply)."""
    return _set_halted(team, instrument, exchange, halted=False, cancel_resting=False)


def _set_halted(
    team: Team | None, instrument: Instrument | None, exchange: bool, *, halted: bool, cancel_resting: bool
) -> HaltChange:
    if sum(x is not None and x is not False for x in (team, instrument, exchange)) != 1:
        raise OperatorError("name exactly one scope: a team, an instrument or the exchange")
    if team is not None:
        scope, target, argument = "team", team.team_id, team.pk
    elif instrument is not None:
        scope, target, argument = "instrument", instrument.symbol, instrument.symbol
    else:
        scope, target, argument = "exchange", None, None
    result = _command("halt", scope=scope, target=argument, halted=halted, cancel=cancel_resting)
    return HaltChange(
        scope=scope,
        target=target,
        halted=halted,
        changed=result["changed"],
        open_orders=result["open_orders"],
        command_id=result["command_id"] if cancel_resting else None,
    )


# --- roles --------------------------------------------------------------------------------------
ROLE_SETTINGS = (
    "orders_per_second",
    "position_limit",
    "portfolio_limit",
    "max_order_size",
    "maker_fee",
    "taker_fee",
)


@dataclass(frozen=True)
class RoleUpdate:
    role: str
    changes: dict[str, tuple[str, str]]  # setting -> (old, new), only what changed

    def summary(self) -> list[str]:
        if not self.changes:
            return [f"{self.role}: nothing changed."]
        return [f"{self.role}.{name}: {old} -> {new}" for name, (old, new) in self.changes.items()]


def role_set(role: str, changed_by: str, **values: Any) -> RoleUpdate:
    """Change a role's limits and fees; new orders see them as soon as the worker reaches the
    command (fees of later fills too), the web processes' rate limits within a second. Each
    change is kept in the audit log (``RoleChange``)."""
    if role not in Role.values:
        raise OperatorError(f"unknown role {role!r}; one of {', '.join(Role.values)}")
    changes: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in ROLE_SETTINGS or name not in Policy.FIELDS:
            raise OperatorError(f"unknown setting {name!r}")
        if name.endswith("_fee"):
            try:
                fee = Decimal(str(value))
            except InvalidOperation as error:
                raise OperatorError(f"{name} must be a number") from error
            if not fee.is_finite() or abs(fee) >= 10**6:
                raise OperatorError(f"{name} must be a finite number below 1,000,000")
            changes[name] = str(fee)
        else:
            if int(value) < 0:
                raise OperatorError(f"{name} must be 0 or more")
            changes[name] = str(int(value))
    if not changes:
        raise OperatorError("name at least one setting to change")
    result = _command("role", role=role, changes=changes, by=changed_by)
    return RoleUpdate(role=role, changes={k: (v[0], v[1]) for k, v in result["changes"].items()})


# --- teams and instruments changed outside the queue (admin, registration) ----------------------
def team_refresh(team_pk: int) -> None:
    """Tell the worker a team's role or flags changed (after commit; best effort: the worker
    also reads an unknown team on first sight)."""
    transaction.on_commit(lambda: _notify("team", team=team_pk))


def instrument_refresh(symbol: str) -> None:
    transaction.on_commit(lambda: _notify("instrument", symbol=symbol))


def game_refresh() -> None:
    transaction.on_commit(lambda: _notify("game"))


def policies_refresh() -> None:
    transaction.on_commit(lambda: _notify("policies"))


def _notify(kind: str, **arguments: Any) -> None:
    # Queued, not awaited: whatever the team sends after this is queued behind it. When the
    # worker is down it reads the row at its start anyway.
    with contextlib.suppress(Refused):
        operator_command(kind, wait=False, **arguments)


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
