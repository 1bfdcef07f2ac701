"""Market information for bots: underlying prices (public ``underlying`` frames) and role
signals (private ``signal`` frames). Operators send them by hand with manage.py; a market
simulation sends them through the same functions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from accounts.models import Role, Team
from exchange.matching.queue import Refused, operator_command
from exchange.prices import wire


def underlying_publish(symbol: str, price: Decimal) -> None:
    """Announce an underlying's price to every connection."""
    if price <= 0:
        raise ValueError("an underlying price must be positive")
    _frames([["underlying", {"symbol": symbol, "price": wire(price)}]])


def signal_publish(signal_type: str, data: dict[str, Any], *, role: str | None = None, team: Team | None = None) -> int:
    """Send a ``signal`` frame to one team or to every active team of a role; returns how many."""
    if (role is None) == (team is None):
        raise ValueError("send a signal to a role or to a team")
    if role is not None and role not in Role.values:
        raise ValueError(f"unknown role {role}")
    if "signal_type" in data:
        raise ValueError("signal_type is set by the signal itself")
    frames = [["signal", {"signal_type": signal_type, **data}]]
    if team is not None:
        return int(_frames(frames, team=team.pk)["teams"])
    return int(_frames(frames, role=role)["teams"])


def _frames(frames: list[list[Any]], **audience: Any) -> dict[str, Any]:
    """Publish through the matching worker, in queue order with everything else it publishes."""
    try:
        return operator_command("frames", frames=frames, **audience)
    except Refused as refused:
        raise MarketInfoUnavailable(refused.message) from refused


class MarketInfoUnavailable(Exception):
    """The matching worker, which publishes every frame, cannot take the message."""
