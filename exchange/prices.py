"""The one place where prices change form: ``Decimal`` in the database, integer ticks in the
engine, JSON numbers on the wire."""

from __future__ import annotations

from decimal import Decimal


def to_ticks(price: Decimal, tick_size: Decimal) -> int | None:
    """Integer ticks for a positive price on the grid, None when it falls between ticks (or
    rounds to nothing: a price too small for the grid is not on it)."""
    ticks, rest = divmod(price, tick_size)
    if rest != 0 or ticks <= 0:
        return None
    return int(ticks)


def from_ticks(ticks: int, tick_size: Decimal) -> Decimal:
    return ticks * tick_size


def wire(value: Decimal | None) -> float | None:
    """A JSON number for a price or amount (the only place a float appears)."""
    return None if value is None else float(value)
