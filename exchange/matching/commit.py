"""One transaction per batch: every row the batch decided, written with ``executemany``.

Plain SQL on the model's own tables and columns (read from ``_meta``): building model instances
and ``bulk_update``'s CASE expressions would cost more than deciding the batch. Values are the
database's own forms: the batch's one timestamp is adapted once, ``Decimal`` goes as it is.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from django.db import connection, models, transaction

from exchange.matching.state import OrderRec, TeamState
from exchange.matching.worker import Batch
from exchange.models import Account, Fill, JournalEntry, Order, Position, Trade

ORDER_INSERT = (
    "id",
    "team_id",
    "instrument_id",
    "instrument_symbol",
    "side",
    "order_type",
    "time_in_force",
    "price",
    "quantity",
    "filled_quantity",
    "remaining_quantity",
    "cancelled_quantity",
    "filled_notional",
    "fees",
    "status",
    "client_order_id",
    "error_code",
    "error_message",
    "cancel_reason",
    "accepted_seq",
    "created_at",
    "updated_at",
)
ORDER_UPDATE = (
    "filled_quantity",
    "remaining_quantity",
    "cancelled_quantity",
    "filled_notional",
    "fees",
    "status",
    "cancel_reason",
    "updated_at",
)
TRADE_INSERT = ("id", "instrument_id", "price", "quantity", "aggressor_side", "created_at")
FILL_INSERT = (
    "trade_id",
    "order_id",
    "team_id",
    "instrument_id",
    "side",
    "quantity",
    "price",
    "liquidity_type",
    "fees",
    "cash_delta",
    "position_after",
    "created_at",
)
JOURNAL_INSERT = ("id", "kind", "team_id", "command", "result", "decided_at")


def _mark() -> str:
    # The driver's own placeholder: statements go to the DB-API cursor, not through Django's
    # wrapper, which rewrites every statement (and, with DEBUG, logs it).
    return "?" if connection.vendor == "sqlite" else "%s"


@functools.cache
def _insert(model: type[models.Model], columns: Sequence[str]) -> str:
    quote = connection.ops.quote_name
    names = ", ".join(quote(c) for c in columns)
    marks = ", ".join([_mark()] * len(columns))
    return f"INSERT INTO {quote(model._meta.db_table)} ({names}) VALUES ({marks})"


@functools.cache
def _upsert(model: type[models.Model], columns: Sequence[str], key: str) -> str:
    """Insert, or update the row with the same ``key`` (both SQLite and PostgreSQL read this)."""
    quote = connection.ops.quote_name
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns if c != key)
    return f"{_insert(model, columns)} ON CONFLICT ({quote(key)}) DO UPDATE SET {updates}"


@functools.cache
def _update(model: type[models.Model], columns: Sequence[str], where: Sequence[str]) -> str:
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(c)} = {_mark()}" for c in columns)
    condition = " AND ".join(f"{quote(c)} = {_mark()}" for c in where)
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {condition}"


def _cursor() -> Any:
    """A cursor of the driver itself (see ``_mark``). On PostgreSQL one that binds values on the
    server, with every statement prepared: the statements are the same in every batch, and
    Django's default client-side binding made psycopg render each row into the SQL text and the
    server parse it again."""
    connection.ensure_connection()
    driver = connection.connection
    if connection.vendor != "postgresql":
        return driver.cursor()
    driver.prepare_threshold = 0  # this connection's other cursors are Django's, which never prepare
    return psycopg.Cursor(driver)


@contextlib.contextmanager
def _driver_transaction() -> Iterator[Any]:
    """A batch's transaction on the driver's connection, without ``atomic()``'s bookkeeping
    (savepoints, on-commit hooks, switching autocommit), which cost more than a small batch's SQL.
    Driver errors still reach Django as its own, so a broken connection is closed and replaced.

    SQLite: the writers' file lock (tradinggame.sqlite_backend), then ``BEGIN IMMEDIATE``.
    PostgreSQL: ``BEGIN``, the statements and ``COMMIT`` in one pipeline, one round trip in all.
    """
    with connection.wrap_database_errors:
        cursor = _cursor()
        driver = connection.connection
        if connection.vendor == "postgresql":
            with driver.pipeline(), driver.transaction():
                yield cursor
            return
        with connection.writer_lock():
            driver.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                driver.rollback()
                raise
            driver.commit()


def _run(cursor: Any, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    rows = list(rows)
    if rows:
        cursor.executemany(sql, rows)


def write_batch(
    batch: Batch,
    teams: dict[int, TeamState],
    stored_positions: set[tuple[int, str]],
    stored_accounts: set[int],
) -> None:
    """Everything the batch decided, in one transaction; marks what now exists in the database."""
    now = connection.ops.adapt_datetimefield_value(batch.now)

    def order_row(o: OrderRec) -> tuple[Any, ...]:
        created = now if o.created_at is batch.now else connection.ops.adapt_datetimefield_value(o.created_at)
        return (
            o.pk,
            o.team,
            o.symbol if o.instrument_known else None,
            o.symbol,
            o.side,
            o.order_type,
            o.time_in_force,
            o.price,
            o.quantity,
            o.filled,
            o.remaining,
            o.cancelled,
            o.notional,
            o.fees,
            o.status,
            o.coid,
            o.error_code,
            o.error_message,
            o.cancel_reason,
            o.accepted_seq,
            created,
            now,
        )

    new_positions = [key for key in batch.positions if key not in stored_positions]
    old_positions = [key for key in batch.positions if key in stored_positions]
    new_accounts = [pk for pk in batch.accounts if pk not in stored_accounts]
    old_accounts = [pk for pk in batch.accounts if pk in stored_accounts]
    rows = (batch, teams, now, order_row, new_positions, old_positions, new_accounts, old_accounts)
    # Operator commands write through the ORM, and a caller may already be in a transaction (a
    # test deciding in its own): Django's transaction then.
    if batch.operator_writes or connection.in_atomic_block:
        with transaction.atomic():
            _write_rows(_cursor(), *rows)
            for write in batch.operator_writes:
                write()
    else:
        with _driver_transaction() as cursor:
            _write_rows(cursor, *rows)
    for order in batch.new_orders:
        order.stored = True
    stored_positions.update(new_positions)
    stored_accounts.update(new_accounts)


def _write_rows(
    cursor: Any,
    batch: Batch,
    teams: dict[int, TeamState],
    now: Any,
    order_row: Any,
    new_positions: list[tuple[int, str]],
    old_positions: list[tuple[int, str]],
    new_accounts: list[int],
    old_accounts: list[int],
) -> None:
    _run(cursor, _insert(Order, ORDER_INSERT), (order_row(o) for o in batch.new_orders))
    _run(
        cursor,
        _update(Order, ORDER_UPDATE, ("id",)),
        (
            (o.filled, o.remaining, o.cancelled, o.notional, o.fees, o.status, o.cancel_reason, now, o.pk)
            for o in batch.changed_orders.values()
        ),
    )
    _run(cursor, _insert(Trade, TRADE_INSERT), (row[:5] + (now,) for row in batch.trades))
    _run(cursor, _insert(Fill, FILL_INSERT), (row[:11] + (now,) for row in batch.fills))
    _run(
        cursor,
        _insert(Position, ("team_id", "instrument_id", "quantity")),
        ((team, symbol, teams[team].positions[symbol]) for team, symbol in new_positions),
    )
    _run(
        cursor,
        _update(Position, ("quantity",), ("team_id", "instrument_id")),
        ((teams[team].positions[symbol], team, symbol) for team, symbol in old_positions),
    )
    # Registration opens a team's account row after the worker started: not new after all.
    _run(
        cursor,
        _upsert(Account, ("team_id", "cash", "fees_paid"), "team_id"),
        ((pk, teams[pk].cash, teams[pk].fees) for pk in new_accounts),
    )
    _run(
        cursor,
        _update(Account, ("cash", "fees_paid"), ("team_id",)),
        ((teams[pk].cash, teams[pk].fees, pk) for pk in old_accounts),
    )
    _run(cursor, _insert(JournalEntry, JOURNAL_INSERT), (row[:5] + (now,) for row in batch.journal))
