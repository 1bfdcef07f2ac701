"""One transaction per batch: every row the batch decided.

Plain SQL on the model's own tables and columns (read from ``_meta``): building model instances
and ``bulk_update``'s CASE expressions would cost more than deciding the batch. On SQLite, one
``executemany`` per table inside ``BEGIN IMMEDIATE``; on PostgreSQL, the whole batch as one JSON
document in one statement (``_write_document``). Values are the database's own forms: the batch's
one timestamp is adapted once, ``Decimal`` goes as it is (as its exact text in the document).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

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
def _update(model: type[models.Model], columns: Sequence[str], where: Sequence[str]) -> str:
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(c)} = {_mark()}" for c in columns)
    condition = " AND ".join(f"{quote(c)} = {_mark()}" for c in where)
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {condition}"


def _cursor(db: BaseDatabaseWrapper) -> Any:
    """A cursor of the driver itself (see ``_mark``). On PostgreSQL one that binds values on the
    server, with every statement prepared: the statements are the same in every batch, and
    Django's default client-side binding made psycopg render each row into the SQL text and the
    server parse it again."""
    db.ensure_connection()
    driver = db.connection
    if db.vendor != "postgresql":
        return driver.cursor()
    if driver.prepare_threshold != 0:
        driver.prepare_threshold = 0  # this connection's other cursors are Django's, which never prepare
        # One plan for every batch: the batch statement's nine parts took the server a
        # millisecond to plan, and its plans for particular documents were no better.
        driver.execute("SET plan_cache_mode = force_generic_plan")
    return psycopg.Cursor(driver)


@contextlib.contextmanager
def _sqlite_transaction(db: Any) -> Iterator[Any]:
    """A batch's transaction on SQLite's own connection, without ``atomic()``'s bookkeeping
    (savepoints, on-commit hooks, switching autocommit), which cost more than a small batch's
    SQL: the writers' file lock (tradinggame.sqlite_backend), then ``BEGIN IMMEDIATE``. Driver
    errors still reach Django as its own, so a broken connection is closed and replaced."""
    with db.wrap_database_errors:
        cursor = _cursor(db)
        driver = db.connection
        with db.writer_lock():
            driver.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                driver.rollback()
                raise
            driver.commit()


def write_batch(
    batch: Batch,
    teams: dict[int, TeamState],
    stored_positions: set[tuple[int, str]],
    stored_accounts: set[int],
) -> None:
    """Everything the batch decided, in one transaction; marks what now exists in the database."""
    # The connection looked up once: each attribute of Django's ``connection`` proxy is a
    # context-local lookup, a few microseconds each, a dozen times a batch.
    db = connections[DEFAULT_DB_ALIAS]
    adapt = db.ops.adapt_datetimefield_value
    now = adapt(batch.now)

    def order_row(o: OrderRec) -> tuple[Any, ...]:
        created = now if o.created_at is batch.now else adapt(o.created_at)
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
    split = (new_positions, old_positions, new_accounts, old_accounts)
    # Operator commands write through the ORM, and a caller may already be in a transaction (a
    # test deciding in its own): Django's transaction then.
    if batch.operator_writes or db.in_atomic_block:
        with transaction.atomic():
            _write_rows(_cursor(db), _rows(batch, teams, now, order_row, *split))
            for write in batch.operator_writes:
                write()
    elif db.vendor == "postgresql":
        with db.wrap_database_errors:
            _write_document(_cursor(db), _document_rows(batch, teams, now, order_row))
    else:
        with _sqlite_transaction(db) as cursor:
            _write_rows(cursor, _rows(batch, teams, now, order_row, *split))
    for order in batch.new_orders:
        order.stored = True
    stored_positions.update(new_positions)
    stored_accounts.update(new_accounts)


@dataclasses.dataclass(frozen=True)
class Write:
    """One statement of a batch on ``model``'s table: insert ``columns``; or update them where
    the ``where`` columns (last in each row) match; or insert them, and on a ``conflict`` with
    an existing row update its ``updates`` columns instead."""

    model: type[models.Model]
    columns: tuple[str, ...]
    where: tuple[str, ...] = ()
    conflict: tuple[str, ...] = ()
    updates: tuple[str, ...] = ()

    @functools.cached_property
    def sql(self) -> str:
        """The statement for ``executemany``."""
        if self.where:
            return _update(self.model, self.columns, self.where)
        sql = _insert(self.model, self.columns)
        return sql + self.on_conflict() if self.conflict else sql

    def on_conflict(self) -> str:
        quote = connection.ops.quote_name
        updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in self.updates)
        return f" ON CONFLICT ({', '.join(quote(c) for c in self.conflict)}) DO UPDATE SET {updates}"


TRADES = Write(Trade, TRADE_INSERT)
FILLS = Write(Fill, FILL_INSERT)
JOURNAL = Write(JournalEntry, JOURNAL_INSERT)
POSITION = ("team_id", "instrument_id", "quantity")
ACCOUNT = ("team_id", "cash", "fees_paid")
# SQLite: new rows inserted, changed rows updated, one executemany each (orders first: every other
# row of a batch refers to its orders or comes after them).
WRITES = (
    Write(Order, ORDER_INSERT),
    Write(Order, ORDER_UPDATE, where=("id",)),
    TRADES,
    FILLS,
    Write(Position, POSITION),
    Write(Position, ("quantity",), where=("team_id", "instrument_id")),
    # Registration opens a team's account row after the worker started: not new after all.
    Write(Account, ACCOUNT, conflict=("team_id",), updates=ACCOUNT[1:]),
    Write(Account, ACCOUNT[1:], where=("team_id",)),
    JOURNAL,
)
# PostgreSQL (one statement, ``_write_document``): changed rows go whole, as upserts on their key,
# so every part is an insert and no part joins its rows to a table.
DOCUMENT_WRITES = (
    Write(Order, ORDER_INSERT, conflict=("id",), updates=ORDER_UPDATE),
    TRADES,
    FILLS,
    Write(Position, POSITION, conflict=POSITION[:2], updates=POSITION[2:]),
    Write(Account, ACCOUNT, conflict=("team_id",), updates=ACCOUNT[1:]),
    JOURNAL,
)


def _rows(
    batch: Batch,
    teams: dict[int, TeamState],
    now: Any,
    order_row: Callable[[OrderRec], tuple[Any, ...]],
    new_positions: list[tuple[int, str]],
    old_positions: list[tuple[int, str]],
    new_accounts: list[int],
    old_accounts: list[int],
) -> list[list[tuple[Any, ...]]]:
    """The rows of each of ``WRITES``, in its order."""
    return [
        [order_row(o) for o in batch.new_orders],
        [
            (o.filled, o.remaining, o.cancelled, o.notional, o.fees, o.status, o.cancel_reason, now, o.pk)
            for o in batch.changed_orders.values()
        ],
        [row[:5] + (now,) for row in batch.trades],
        [row[:11] + (now,) for row in batch.fills],
        [(team, symbol, teams[team].positions[symbol]) for team, symbol in new_positions],
        [(teams[team].positions[symbol], team, symbol) for team, symbol in old_positions],
        [(pk, teams[pk].cash, teams[pk].fees) for pk in new_accounts],
        [(teams[pk].cash, teams[pk].fees, pk) for pk in old_accounts],
        [row[:5] + (now,) for row in batch.journal],
    ]


def _document_rows(
    batch: Batch, teams: dict[int, TeamState], now: Any, order_row: Callable[[OrderRec], tuple[Any, ...]]
) -> list[list[tuple[Any, ...]]]:
    """The rows of each of ``DOCUMENT_WRITES``, in its order."""
    return [
        [order_row(o) for o in (*batch.new_orders, *batch.changed_orders.values())],
        [row[:5] + (now,) for row in batch.trades],
        [row[:11] + (now,) for row in batch.fills],
        [(team, symbol, teams[team].positions[symbol]) for team, symbol in batch.positions],
        [(pk, teams[pk].cash, teams[pk].fees) for pk in batch.accounts],
        [row[:5] + (now,) for row in batch.journal],
    ]


def _write_rows(cursor: Any, rows: list[list[tuple[Any, ...]]]) -> None:
    """One ``executemany`` per statement that has rows."""
    for write, table_rows in zip(WRITES, rows, strict=True):
        if table_rows:
            cursor.executemany(write.sql, table_rows)


# --- PostgreSQL: the whole batch in one statement --------------------------------------------------


def _write_document(cursor: Any, rows: list[list[tuple[Any, ...]]]) -> None:
    """The batch as one JSON parameter of one statement (``_batch_statement``): one execution on
    the server, and on this side one ``orjson`` call instead of psycopg adapting every value of
    every row in Python. One statement is one transaction by itself."""
    present = tuple(i for i, table_rows in enumerate(rows) if table_rows)
    if present:
        document = orjson.dumps([rows[i] for i in present], default=_json_value).decode()
        cursor.execute(_batch_statement(present), (document,))


def _json_value(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact: the server reads it back as numeric
    raise TypeError(f"{type(value).__name__} in a batch row")


@functools.cache
def _batch_statement(present: tuple[int, ...]) -> str:
    """The statement for a batch with rows for the ``present`` ones of ``WRITES``: each a
    data-modifying ``WITH`` part reading its rows (arrays of values) from its element of the
    document. The parts run on one snapshot and the foreign keys are checked at the end of the
    statement, so their order does not matter; no two parts touch the same row (an order new in
    a batch is inserted in its final state, and never among the changed ones). A batch's shape
    is one of a few (orders, fills, positions...), each prepared once."""
    parts = [f"w{n} AS ({_from_document(DOCUMENT_WRITES[i], n)})" for n, i in enumerate(present)]
    return "WITH batch AS (SELECT %s::jsonb AS doc), " + ", ".join(parts) + " SELECT 1"


def _from_document(write: Write, index: int) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(c) for c in write.columns)
    values = ", ".join(f"(r.v->>{i})::{_cast(write.model, c)}" for i, c in enumerate(write.columns))
    return (
        f"INSERT INTO {quote(write.model._meta.db_table)} ({columns}) SELECT {values} "
        f"FROM batch, jsonb_array_elements(batch.doc->{index}) AS r(v)"
        + (write.on_conflict() if write.conflict else "")
    )


def _cast(model: type[models.Model], column: str) -> str:
    """The type a value of the column is read as: text for strings (the column's own length is
    then checked on assignment, never silently cut), numeric for decimals (exact)."""
    field = next(f for f in model._meta.concrete_fields if f.column == column)
    target = field.target_field if field.is_relation else field
    kind = target.get_internal_type()
    if kind in ("CharField", "TextField"):
        return "text"
    if kind == "DecimalField":
        return "numeric"
    return str(field.db_type(connection)).split(" CHECK")[0]
