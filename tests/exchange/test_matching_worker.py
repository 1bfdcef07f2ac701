"""The matching worker against the database: a batch's rows in one transaction (orders, trades,
fills, positions, cash, journal, operator writes), the state rebuilt from them at start, commands
decided once, and a batch that fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.db import connection

from accounts.models import Team
from exchange.engine import Phase
from exchange.invariants import books_differences, database_violations
from exchange.matching import queue
from exchange.matching.commit import write_batch
from exchange.matching.loop import MatchingLoop
from exchange.matching.worker import Batch, MatchingWorker
from exchange.models import (
    Account,
    Fill,
    Game,
    Instrument,
    JournalEntry,
    Order,
    Position,
    RoleChange,
    RolePolicy,
    Trade,
)
from infra.redis_clients import sync_client

pytestmark = pytest.mark.django_db
MakeTeam = Callable[..., tuple[Team, str]]
WEB = "web-1"


class Runner:
    """A worker started from the database; each ``run`` decides one batch and commits it."""

    def __init__(self) -> None:
        self.worker = MatchingWorker()
        self.worker.load()
        self.stored_accounts = set(Account.objects.values_list("team_id", flat=True))

    def run(self, *commands: dict[str, Any]) -> Batch:
        first = self.worker.last_decided + 1
        return self.commit([(first + n, command) for n, command in enumerate(commands)])

    def commit(self, numbered: list[tuple[int, dict[str, Any]]]) -> Batch:
        batch = self.worker.decide(numbered)
        write_batch(batch, self.worker.teams, self.worker.stored_positions, self.stored_accounts)
        return batch


def submit(team: Team, **fields: Any) -> dict[str, Any]:
    command = {
        "k": "s",
        "t": team.pk,
        "r": WEB,
        "i": "SPX_4500_CALL",
        "s": "buy",
        "y": "limit",
        "f": "gtc",
        "p": "100.0",
        "q": 10,
    }
    command.update(fields)
    return command


def replies(batch: Batch) -> list[Any]:
    return [reply for _, reply in batch.verdicts[WEB]]


def frames(batch: Batch, team: Team) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, json.loads(data)) for kind, _, data, _ in batch.private.get(team.pk, [])]


def snapshot() -> list[tuple[Any, ...]]:
    return list(Order.objects.order_by("id").values_list("id", "status", "filled_quantity", "remaining_quantity"))


def test_crossing_orders_trade_with_fees_positions_and_cash(make_team: MakeTeam, instruments: list[str]) -> None:
    maker, _ = make_team("market_maker")
    taker, _ = make_team("hedge_fund")
    batch = Runner().run(submit(maker, c="MY_ORDER_001"), submit(taker, s="sell", q=4))
    buy, sell = (int(reply["order_id"][4:]) for reply in replies(batch))

    trade = Trade.objects.get()
    assert (trade.price, trade.quantity, trade.aggressor_side) == (Decimal("100.0000"), 4, "sell")
    buy_order, sell_order = Order.objects.get(pk=buy), Order.objects.get(pk=sell)
    assert (buy_order.status, buy_order.filled_quantity, buy_order.remaining_quantity) == ("partially_filled", 4, 6)
    assert (sell_order.status, sell_order.filled_quantity, sell_order.remaining_quantity) == ("filled", 4, 0)
    assert (buy_order.accepted_seq, sell_order.accepted_seq) == (1, 2)  # arrival order: the command ids
    assert buy_order.fees == Decimal("-0.08") and sell_order.fees == Decimal("0.08")
    assert Position.objects.get(team=maker).quantity == 4 and Position.objects.get(team=taker).quantity == -4
    assert Account.objects.get(team=maker).cash == Decimal(-100 * 4 * 100) + Decimal("0.08")
    assert Account.objects.get(team=taker).cash == Decimal(100 * 4 * 100) - Decimal("0.08")
    fills = {f.liquidity_type: f for f in Fill.objects.all()}
    assert (fills["maker"].order_id, fills["maker"].position_after) == (buy, 4)
    assert (fills["taker"].order_id, fills["taker"].position_after) == (sell, -4)
    assert list(JournalEntry.objects.values_list("id", "kind", "team_id")) == [(1, "s", maker.pk), (2, "s", taker.pk)]

    maker_frames = frames(batch, maker)
    assert [kind for kind, _ in maker_frames] == ["new_order_ack", "execution_report"]
    assert maker_frames[1][1] == {
        "order_id": f"ORD_{buy}",
        "client_order_id": "MY_ORDER_001",
        "trade_id": f"TRD_{trade.pk}",
        "instrument_id": "SPX_4500_CALL",
        "side": "buy",
        "executed_quantity": 4,
        "executed_price": 100.0,
        "remaining_quantity": 6,
        "order_status": "partially_filled",
        "liquidity_type": "maker",
        "fees": -0.08,
        "position": 4,
    }
    taker_frames = frames(batch, taker)
    assert [kind for kind, _ in taker_frames] == ["new_order_ack", "execution_report"]
    assert taker_frames[1][1]["liquidity_type"] == "taker" and taker_frames[1][1]["fees"] == 0.08
    assert taker_frames[1][1]["position"] == -4 and taker_frames[1][1]["order_status"] == "filled"
    assert replies(batch)[1]["filled_quantity"] == 4 and replies(batch)[1]["average_price"] == 100.0
    assert not any(database_violations().values())


@pytest.mark.django_db(transaction=True)
def test_the_workers_own_commit_writes_every_value_exactly(make_team: MakeTeam, instruments: list[str]) -> None:
    """Outside a caller's transaction the batch takes the worker's own path (on PostgreSQL the
    whole batch is one statement reading a JSON document): decimals, quotes, non-ASCII text and
    nulls come back as they were decided, and a restarted worker finds the same state."""
    maker, _ = make_team("market_maker")
    taker, _ = make_team("hedge_fund")
    runner = Runner()
    runner.run(submit(maker, c="Q \"1\" 'é'", p="100.05", q=7))
    batch = runner.run(submit(taker, s="sell", p="99.95", q=3), submit(taker, i='NO\'SUCH "X"'))
    assert connection.in_atomic_block is False

    resting, taken = (
        Order.objects.filter(team=maker).get(),
        Order.objects.filter(team=taker, instrument__isnull=False).get(),
    )
    assert (resting.client_order_id, resting.price, resting.status) == (
        "Q \"1\" 'é'",
        Decimal("100.05"),
        "partially_filled",
    )
    assert (resting.filled_quantity, resting.remaining_quantity, resting.filled_notional) == (3, 4, Decimal("300.15"))
    assert (taken.price, taken.filled_notional, taken.status, taken.client_order_id) == (
        Decimal("99.95"),
        Decimal("300.15"),
        "filled",
        None,
    )
    unknown = Order.objects.get(instrument__isnull=True)
    assert (unknown.instrument_symbol, unknown.status, unknown.error_code) == (
        'NO\'SUCH "X"',
        "rejected",
        "INVALID_INSTRUMENT",
    )
    assert Trade.objects.get().price == Decimal("100.05")
    for team in (maker, taker):
        fills = Fill.objects.filter(team=team)
        account = Account.objects.get(team=team)
        assert account.cash == sum((f.cash_delta for f in fills), Decimal(0))
        assert account.fees_paid == sum((f.fees for f in fills), Decimal(0)) != 0
    assert [p.quantity for p in Position.objects.order_by("team_id")] == [3, -3]
    assert JournalEntry.objects.count() == 3 and len(batch) == 2
    assert not any(database_violations().values())
    again = Runner()
    assert books_differences(again.worker.engine.resting_orders()) == []
    assert again.worker.teams[maker.pk].cash == runner.worker.teams[maker.pk].cash


def test_a_team_registered_after_the_start_trades_in_one_batch(make_team: MakeTeam, instruments: list[str]) -> None:
    runner = Runner()
    maker, _ = make_team("market_maker")  # registration opens its account row
    taker, _ = make_team("market_maker")
    batch = runner.run(submit(maker), submit(taker, s="sell", q=3))
    assert replies(batch)[1]["filled_quantity"] == 3
    assert Account.objects.get(team=maker).cash == Decimal(-300 * 100) + Decimal("0.06")
    assert Account.objects.get(team=taker).cash == Decimal(300 * 100) - Decimal("0.03")
    assert Position.objects.get(team=maker).quantity == 3


def test_stored_orders_are_open_or_final_never_pending(make_team: MakeTeam, instruments: list[str]) -> None:
    team, _ = make_team()
    runner = Runner()
    runner.run(
        submit(team),
        submit(team, i="SPX_9999_CALL", c="unknown"),
        submit(team, y="market", f="ioc", p=None),
        submit(team, q=5000),
    )
    rows = {o.pk: o for o in Order.objects.all()}
    assert [rows[pk].status for pk in sorted(rows)] == ["new", "rejected", "cancelled", "rejected"]
    unknown = rows[2]
    assert (unknown.instrument_id, unknown.instrument_symbol, unknown.error_code) == (
        None,
        "SPX_9999_CALL",
        "INVALID_INSTRUMENT",
    )
    assert (unknown.remaining_quantity, unknown.accepted_seq, unknown.client_order_id) == (0, None, "unknown")
    assert (rows[3].cancel_reason, rows[3].cancelled_quantity) == ("ioc_remainder", 10)
    assert rows[4].error_code == "ORDER_SIZE_LIMIT_EXCEEDED"
    assert books_differences(runner.worker.engine.resting_orders()) == []


def test_a_restarted_worker_has_the_same_books_and_decides_nothing_twice(
    make_team: MakeTeam, instruments: list[str]
) -> None:
    a, _ = make_team()
    b, _ = make_team()
    runner = Runner()
    commands = [(n + 1, submit(a, p=price)) for n, price in enumerate(("99.0", "100.0", "101.0"))]
    commands.append((4, submit(b, s="sell", q=15, p="100.0")))
    runner.commit(commands)
    before = snapshot()
    assert Trade.objects.count() == 2 and Fill.objects.count() == 4

    again = Runner()  # a redelivered batch after a restart: the journal says it was decided
    batch = again.commit(commands)
    assert len(batch) == 0 and batch.new_orders == [] and not batch.verdicts
    assert snapshot() == before and Trade.objects.count() == 2
    resting = sorted((o.order_id, o.remaining) for o in again.worker.engine.resting_orders())
    assert resting == sorted((o.order_id, o.remaining) for o in runner.worker.engine.resting_orders())
    assert books_differences(again.worker.engine.resting_orders()) == []
    assert (again.worker.next_order, again.worker.next_trade, again.worker.last_decided) == (5, 3, 4)
    assert again.worker.teams[a.pk].open_buy["SPX_4500_CALL"] == 10 + 5  # 99, and 100 with 5 left; 101 filled
    assert replies(again.run(submit(a, p="98.0")))[0]["order_id"] == "ORD_5"


def test_a_rebuilt_book_keeps_time_priority(make_team: MakeTeam, instruments: list[str]) -> None:
    first, _ = make_team()
    second, _ = make_team()
    taker, _ = make_team()
    batch = Runner().run(submit(first, q=5), submit(second, q=5))
    early, late = (int(reply["order_id"][4:]) for reply in replies(batch))
    Runner().run(submit(taker, s="sell", q=5))  # a new worker: books come from the database
    assert Order.objects.get(pk=early).status == "filled"
    assert Order.objects.get(pk=late).status == "new"


def test_resends_are_recognised_after_a_restart(make_team: MakeTeam, instruments: list[str]) -> None:
    team, _ = make_team()
    first = replies(Runner().run(submit(team, c="A"), submit(team, c="B", q=5000)))
    runner = Runner()
    batch = runner.run(submit(team, c="A"), submit(team, c="B", q=5000), submit(team, c="A", p="99.0"))
    resent_open, resent_rejected, duplicate = replies(batch)
    assert (resent_open["order_id"], resent_open["status"]) == (first[0]["order_id"], "accepted")
    assert (resent_rejected["order_id"], resent_rejected["error_code"]) == (
        first[1]["order_id"],
        "ORDER_SIZE_LIMIT_EXCEEDED",
    )
    assert duplicate["error_code"] == "DUPLICATE_CLIENT_ORDER_ID" and duplicate["order_id"] == "ORD_3"
    assert Order.objects.count() == 3


def test_operator_writes_commit_with_their_batch(make_team: MakeTeam, instruments: list[str]) -> None:
    team, _ = make_team("retail")
    runner = Runner()
    runner.run(
        {"k": "phase", "phase": "pre_open"},
        {"k": "halt", "scope": "team", "target": team.pk, "halted": True},
        {"k": "halt", "scope": "instrument", "target": "SPX_4500_PUT", "halted": True},
        {"k": "role", "role": "retail", "changes": {"max_order_size": "7", "taker_fee": "0.04"}, "by": "ops desk"},
    )
    assert Game.objects.get(pk=1).phase == "pre_open"
    assert Team.objects.get(pk=team.pk).trading_halted
    assert Instrument.objects.get(pk="SPX_4500_PUT").halted
    policy = RolePolicy.objects.get(role="retail")
    assert (policy.max_order_size, policy.taker_fee) == (7, Decimal("0.04"))
    audit = sorted(RoleChange.objects.values_list("role", "field", "old", "new", "changed_by"))
    assert audit == [
        ("retail", "max_order_size", "100", "7", "ops desk"),
        ("retail", "taker_fee", "0.03", "0.04", "ops desk"),
    ]
    assert list(JournalEntry.objects.values_list("kind", "team_id")) == [
        ("phase", None),
        ("halt", None),
        ("halt", None),
        ("role", None),
    ]

    restarted = Runner().worker  # the next start reads what the batch wrote
    assert restarted.game.phase == "pre_open" and restarted.engine.phase == Phase.PRE_OPEN
    assert restarted.teams[team.pk].halted and restarted.instruments["SPX_4500_PUT"].halted
    assert restarted.policies["retail"].max_order_size == 7


def test_an_unknown_command_is_journalled_and_the_batch_still_commits(
    make_team: MakeTeam, instruments: list[str]
) -> None:
    team, _ = make_team()
    batch = Runner().run({"k": "from_a_newer_web_process"}, {"no": "kind"}, submit(team))
    assert replies(batch)[0]["status"] == "accepted"
    first, second = JournalEntry.objects.filter(pk__in=(1, 2))
    assert first.kind == "from_a_newer_web" and second.kind == "None"
    assert json.loads(first.result) == {"error": "unknown command 'from_a_newer_web_process'"}
    assert json.loads(second.result) == {"error": "unknown command None"}
    assert Order.objects.get().status == "new"


@pytest.fixture
def matching_loop(transactional_db: None) -> Any:
    """A matching loop started from the database, driven by hand; its Redis keys go at the end."""
    client = sync_client()
    queue.forget(client)
    loop = MatchingLoop()
    yield loop
    queue.forget(client)


@pytest.mark.django_db(transaction=True)  # the loop closes and reopens its database connection
def test_a_failing_command_is_set_aside_and_the_rest_proceed(
    make_team: MakeTeam, instruments: list[str], matching_loop: MatchingLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    team, _ = make_team()
    matching_loop.start()
    original = MatchingWorker._do_s

    def failing(self: MatchingWorker, batch: Batch, command_id: int, command: dict[str, Any]) -> str:
        if command.get("c") == "boom":
            raise RuntimeError("boom")
        return original(self, batch, command_id, command)

    monkeypatch.setattr(MatchingWorker, "_do_s", failing)
    items = [
        b"1 " + orjson.dumps(submit(team, c="boom")),
        b"2 " + orjson.dumps(submit(team, c="ok", p="99.0")),
    ]
    sync_client().rpush(queue.INFLIGHT, *items)
    matching_loop.process(items)
    assert list(JournalEntry.objects.values_list("id", "kind")) == [(1, "s"), (2, "s")]
    assert json.loads(JournalEntry.objects.get(pk=1).result) == {"error": "ENGINE_ERROR"}
    [order] = Order.objects.all()
    assert (order.client_order_id, order.status, order.accepted_seq) == ("ok", "new", 2)
    assert sync_client().llen(queue.INFLIGHT) == 0
    assert matching_loop.worker.last_decided == 2
    assert books_differences(matching_loop.worker.engine.resting_orders()) == []
