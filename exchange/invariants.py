"""The exchange's invariants, checked against the database (and the worker's books).

1. For every instrument, positions sum to zero.
2. Every position equals the signed sum of its fills; every team's cash equals the sum of its
   fills' cash movements (−side × price × quantity × multiplier − fee).
3. For every accepted order: filled + remaining + cancelled == quantity; finished orders hold no
   remainder; filled quantity equals the sum of its fills.
4. Every accepted order was taken by the engine exactly once: made by one journalled command, no
   command made two orders, no fill repeated, two fills per trade.
5. The matching worker's books equal the open orders in the database (``books_differences``).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Sum

from exchange.models import Account, Fill, JournalEntry, Order, OrderStatus, Position, Trade


def database_violations() -> dict[str, list[str]]:
    """Invariants 1–4, each with the list of what breaks it (empty lists: all hold).

    Read in one snapshot, so a batch the worker commits halfway through the check cannot look
    like a broken invariant (PostgreSQL: repeatable read; SQLite: one transaction).
    """
    fresh = not connection.in_atomic_block  # the isolation level can only open a transaction
    with transaction.atomic():
        if fresh and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return _violations()


def _violations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)

    for row in Position.objects.values("instrument_id").annotate(total=Sum("quantity")).exclude(total=0):
        found["1 conservation"].append(f"{row['instrument_id']}: positions sum to {row['total']}")

    from_fills: dict[tuple[int, str], int] = defaultdict(int)
    cash_from_fills: dict[int, Decimal] = defaultdict(Decimal)
    for team_id, instrument_id, side, quantity, cash in Fill.objects.values_list(
        "team_id", "instrument_id", "side", "quantity", "cash_delta"
    ):
        from_fills[(team_id, instrument_id)] += quantity if side == "buy" else -quantity
        cash_from_fills[team_id] += cash
    for position in Position.objects.all():
        expected = from_fills.pop((position.team_id, position.instrument_id), 0)
        if expected != position.quantity:
            found["2 positions and cash"].append(
                f"TEAM_{position.team_id} {position.instrument_id}: position {position.quantity}, fills say {expected}"
            )
    for (team_id, instrument_id), expected in from_fills.items():
        if expected:
            found["2 positions and cash"].append(
                f"TEAM_{team_id} {instrument_id}: no position row, fills say {expected}"
            )
    for account in Account.objects.all():
        if account.cash != cash_from_fills.get(account.team_id, Decimal(0)):
            found["2 positions and cash"].append(
                f"TEAM_{account.team_id}: cash {account.cash}, fills say {cash_from_fills.get(account.team_id, 0)}"
            )

    accepted = Order.objects.exclude(status=OrderStatus.REJECTED)
    for order in accepted.exclude(quantity=F("filled_quantity") + F("remaining_quantity") + F("cancelled_quantity")):
        found["3 order quantities"].append(f"{order.order_id}: quantities do not add up")
    for order in accepted.filter(status__in=(OrderStatus.FILLED, OrderStatus.CANCELLED)).exclude(remaining_quantity=0):
        found["3 order quantities"].append(f"{order.order_id}: finished with {order.remaining_quantity} remaining")
    filled_by_fills = dict(
        Fill.objects.values("order_id").annotate(total=Sum("quantity")).values_list("order_id", "total")
    )
    for pk, filled in accepted.filter(filled_quantity__gt=0).values_list("pk", "filled_quantity"):
        if filled_by_fills.get(pk) != filled:
            found["3 order quantities"].append(f"ORD_{pk}: filled {filled}, fills say {filled_by_fills.get(pk, 0)}")

    journal = set(JournalEntry.objects.values_list("id", flat=True))
    for pk, seq in accepted.exclude(accepted_seq__isnull=True).values_list("pk", "accepted_seq"):
        if seq not in journal:
            found["4 exactly once"].append(f"ORD_{pk}: taken by command {seq}, which the journal does not hold")
    seen: dict[int, int] = {}
    for pk, seq in accepted.exclude(accepted_seq__isnull=True).values_list("pk", "accepted_seq"):
        if seq in seen:
            found["4 exactly once"].append(f"ORD_{pk} and ORD_{seen[seq]}: both made by command {seq}")
        seen[seq] = pk
    for trade in Trade.objects.annotate(n=Count("fills")).exclude(n=2):
        found["4 exactly once"].append(f"{trade.trade_id}: {trade.n} fills instead of 2")
    return {
        name: found.get(name, [])
        for name in (
            "1 conservation",
            "2 positions and cash",
            "3 order quantities",
            "4 exactly once",
        )
    }


def books_differences(resting: list[Any]) -> list[str]:
    """Invariant 5: the engine's resting orders against the open orders in the database."""
    in_books = {o.order_id: (o.instrument_id, o.side.value, o.remaining) for o in resting}
    in_database = {
        pk: (symbol, side, remaining)
        for pk, symbol, side, remaining in Order.objects.filter(
            status__in=(OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
        ).values_list("pk", "instrument_id", "side", "remaining_quantity")
    }
    differences = [f"ORD_{pk}: in the books, not open in the database" for pk in in_books.keys() - in_database.keys()]
    differences += [f"ORD_{pk}: open in the database, not in the books" for pk in in_database.keys() - in_books.keys()]
    differences += [
        f"ORD_{pk}: books {in_books[pk]}, database {in_database[pk]}"
        for pk in in_books.keys() & in_database.keys()
        if in_books[pk] != in_database[pk]
    ]
    return differences
