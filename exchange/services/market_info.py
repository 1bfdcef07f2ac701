"""Market information for bots: underlying prices (public ``underlying`` frames) and role
signals (private ``signal`` frames). Operators send them by hand with manage.py; a market
simulation sends them through the same functions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.models import Role, Team
from exchange import clock
from exchange.prices import wire
from exchange.publisher import Outbox


def underlying_publish(symbol: str, price: Decimal) -> None:
    """Announce an underlying's price to every connection."""
    if price <= 0:
        raise ValueError("an underlying price must be positive")
    outbox = Outbox()
    outbox.to_market("underlying", {"symbol": symbol, "price": wire(price)}, clock.iso(clock.now()))
    transaction.on_commit(outbox.send)


def signal_publish(signal_type: str, data: dict[str, Any], *, role: str | None = None, team: Team | None = None) -> int:
    """Send a ``signal`` frame to one team or to every active team of a role; returns how many."""
    if (role is None) == (team is None):
        raise ValueError("send a signal to a role or to a team")
    if role is not None and role not in Role.values:
        raise ValueError(f"unknown role {role}")
    if "signal_type" in data:
        raise ValueError("signal_type is set by the signal itself")
    teams = [team] if team is not None else list(Team.objects.filter(role=role, active=True))
    outbox = Outbox()
    stamp = clock.iso(clock.now())
    for receiver in teams:
        outbox.to_team(receiver.pk, "signal", {"signal_type": signal_type, **data}, stamp)
    transaction.on_commit(outbox.send)
    return len(teams)
