"""The matching worker against the database: fills, fees, positions, cash, messages,
idempotence and rebuilding the books."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exchange.models import Account, Command, Fill, Order, Position, Trade
from exchange.services import matching
from exchange.services.matching import MatchingWorker


@pytest.fixture
def worker(db) -> MatchingWorker:
    return MatchingWorker()


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """Every outbox the worker publishes, captured instead of sent."""
    outboxes: list = []
    monkeypatch.setattr(matching.Outbox, "send_on_commit", lambda self: outboxes.append(self))
    return outboxes


def submit(api, key, **fields) -> int:
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 10, "price": 100.0}
    body.update(fields)
    reply = api(key).post("/orders", body, format="json").json()
    assert reply["status"] == "accepted", reply
    return int(reply["order_id"][4:])


def frames(outboxes, team) -> list[tuple[str, dict]]:
    return [(m["type"], m["data"]) for box in outboxes for m in box.private.get(team.pk, [])]


def test_crossing_orders_trade_with_fees_positions_and_cash(make_team, instruments, api, worker, sent) -> None:
    maker, maker_key = make_team("market_maker")
    taker, taker_key = make_team("hedge_fund")
    buy = submit(api, maker_key, client_order_id="MY_ORDER_001")
    sell = submit(api, taker_key, side="sell", quantity=4)
    assert worker.drain() == 2

    trade = Trade.objects.get()
    assert (trade.price, trade.quantity, trade.aggressor_side) == (Decimal("100.0000"), 4, "sell")
    buy_order, sell_order = Order.objects.get(pk=buy), Order.objects.get(pk=sell)
    assert (buy_order.status, buy_order.filled_quantity, buy_order.remaining_quantity) == ("partially_filled", 4, 6)
    assert (sell_order.status, sell_order.filled_quantity, sell_order.remaining_quantity) == ("filled", 4, 0)
    assert buy_order.fees == Decimal("-0.08") and sell_order.fees == Decimal("0.08")
    assert Position.objects.get(team=maker).quantity == 4 and Position.objects.get(team=taker).quantity == -4
    assert Account.objects.get(team=maker).cash == Decimal(-100 * 4 * 100) + Decimal("0.08")
    assert Account.objects.get(team=taker).cash == Decimal(100 * 4 * 100) - Decimal("0.08")
    assert not Command.objects.filter(processed_at__isnull=True).exists()

    maker_frames = frames(sent, maker)
    assert [t for t, _ in maker_frames] == ["new_order_ack", "execution_report"]
    ack, report = maker_frames[0][1], maker_frames[1][1]
    assert ack == {
        "order_id": f"ORD_{buy}", "client_order_id": "MY_ORDER_001", "instrument_id": "SPX_4500_CALL", "side": "buy",
        "quantity": 10, "order_type": "limit", "price": 100.0, "time_in_force": "gtc", "status": "new",
    }
    assert report == {
        "order_id": f"ORD_{buy}", "client_order_id": "MY_ORDER_001", "trade_id": trade.trade_id,
        "instrument_id": "SPX_4500_CALL", "side": "buy", "executed_quantity": 4, "executed_price": 100.0,
        "remaining_quantity": 6, "order_status": "partially_filled", "liquidity_type": "maker", "fees": -0.08,
        "position": 4,
    }
    taker_frames = frames(sent, taker)
    assert [t for t, _ in taker_frames] == ["new_order_ack", "execution_report"]
    assert taker_frames[1][1]["liquidity_type"] == "taker" and taker_frames[1][1]["fees"] == 0.08
    assert taker_frames[1][1]["position"] == -4 and taker_frames[1][1]["order_status"] == "filled"
    public = [m["type"] for box in sent for m in box.public]
    assert "trade" in public and "market_data" in public


def test_market_order_on_empty_book_is_acked_then_cancelled(make_team, instruments, api, worker, sent) -> None:
    team, key = make_team()
    order_id = submit(api, key, order_type="market", price=None)
    worker.drain()
    order = Order.objects.get(pk=order_id)
    assert (order.status, order.cancelled_quantity, order.cancel_reason) == ("cancelled", 10, "ioc_remainder")
    types = [t for t, _ in frames(sent, team)]
    assert types == ["new_order_ack", "cancel_ack"]


def test_draining_twice_or_from_a_fresh_worker_changes_nothing(make_team, instruments, api, worker, sent) -> None:
    _, a = make_team()
    _, b = make_team()
    for price in (99.0, 100.0, 101.0):
        submit(api, a, price=price)
    submit(api, b, side="sell", quantity=15, price=100.0)
    worker.drain()
    snapshot = list(Order.objects.values_list("id", "status", "filled_quantity", "remaining_quantity"))
    assert worker.drain() == 0
    # A redelivered wake-up on a worker that restarted: books rebuilt, nothing applied twice.
    fresh = MatchingWorker()
    assert fresh.drain() == 0
    assert list(Order.objects.values_list("id", "status", "filled_quantity", "remaining_quantity")) == snapshot
    assert Trade.objects.count() == 2 and Fill.objects.count() == 4
    resting = [(o.order_id, o.remaining) for o in fresh.engine.resting_orders()]
    assert resting == [(o.order_id, o.remaining) for o in worker.engine.resting_orders()]
    in_database = Order.objects.filter(status__in=["new", "partially_filled"])
    assert sorted(resting) == [(o.pk, o.remaining_quantity) for o in in_database.order_by("id")]


def test_a_rebuilt_book_keeps_time_priority(make_team, instruments, api, sent) -> None:
    _, first = make_team()
    _, second = make_team()
    _, taker = make_team()
    early = submit(api, first, price=100.0, quantity=5)
    late = submit(api, second, price=100.0, quantity=5)
    MatchingWorker().drain()
    submit(api, taker, side="sell", quantity=5, price=100.0)
    MatchingWorker().drain()  # a new worker: books come from the database
    assert Order.objects.get(pk=early).status == "filled"
    assert Order.objects.get(pk=late).status == "new"


def test_a_failing_command_is_set_aside_and_the_rest_proceed(make_team, instruments, api, worker, sent, monkeypatch) -> None:
    team, key = make_team()
    bad = submit(api, key, price=100.0)
    good = submit(api, key, price=99.0, client_order_id="ok")
    original = MatchingWorker._run

    def run(self, command):
        if command.order_id == bad:
            raise RuntimeError("boom")
        return original(self, command)

    monkeypatch.setattr(MatchingWorker, "_run", run)
    assert worker.drain() == 1
    assert Order.objects.get(pk=bad).status == "rejected" and Order.objects.get(pk=bad).error_code == "ENGINE_ERROR"
    assert Order.objects.get(pk=good).status == "new"
    assert not Command.objects.filter(processed_at__isnull=True).exists()


def test_books_rebuild_in_the_phase_of_the_journal_not_of_the_game_row(make_team, instruments, api, sent) -> None:
    from exchange.models import Game
    from exchange.services.operator import game_set_phase

    MatchingWorker().drain()
    game_set_phase("pre_open")  # journalled, not applied yet
    assert Game.objects.get(pk=1).phase == "pre_open"
    assert MatchingWorker._journal_phase(Game.objects.get(pk=1)) == "continuous"
    MatchingWorker().drain()
    assert MatchingWorker._journal_phase(Game.objects.get(pk=1)) == "pre_open"


def test_a_cancel_that_arrives_too_late_gets_a_cancel_reject(make_team, instruments, api, worker, sent) -> None:
    from exchange.services.cancels import order_cancel_request

    buyer, buyer_key = make_team()
    _, seller_key = make_team()
    buy = submit(api, buyer_key, client_order_id="late")
    submit(api, seller_key, side="sell")  # fills the buy before the cancel is taken
    [request] = order_cancel_request(buyer, [buy])
    assert request.verdict is None  # still open when asked: the engine decides
    worker.drain()
    types = [t for t, _ in frames(sent, buyer)]
    assert types == ["new_order_ack", "execution_report", "cancel_reject"]
    reject = frames(sent, buyer)[-1][1]
    assert reject == {
        "order_id": f"ORD_{buy}", "client_order_id": "late", "status": "cancel_rejected",
        "error_code": "ORDER_ALREADY_FILLED", "reason": reject["reason"],
    }
    assert Command.objects.get(pk=request.command_id).result["error_code"] == "ORDER_ALREADY_FILLED"
