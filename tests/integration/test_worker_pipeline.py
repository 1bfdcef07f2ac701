"""The order path through real parts: REST view → the matching queue in Redis → the worker a
real Celery worker starts (in-process, solo pool) → database → Redis channel layer → WebSocket
consumer; and the worker's loop itself: a batch decided and committed once, and commands seen
again after a crash (left in the in-flight list, or queued twice) decided once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import Team
from exchange.matching import loop as matching_loop
from exchange.matching import queue
from exchange.matching.loop import MatchingLoop
from exchange.models import Account, Fill, JournalEntry, Order, Position, Trade
from infra.redis_clients import sync_client
from tradinggame.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


PUBLIC = {"market_data", "trade"}


async def until(communicator: WebsocketCommunicator, wanted: str) -> dict:
    """The next frame of a type, checking that seq has no gap on the way."""
    last = getattr(communicator, "last_seq", 1)
    while True:
        frame = await communicator.receive_json_from(timeout=15)
        assert frame["seq"] == last + 1
        last = communicator.last_seq = frame["seq"]
        if frame["type"] == wanted:
            return frame
        assert frame["type"] in PUBLIC, frame


async def test_crossing_orders_reach_both_teams_over_the_websocket(make_team, instruments, api, celery_worker) -> None:
    maker, maker_key = await sync_to_async(make_team)("market_maker")
    taker, taker_key = await sync_to_async(make_team)("retail")
    maker_ws = WebsocketCommunicator(application, f"/ws?api_key={maker_key}")
    taker_ws = WebsocketCommunicator(application, f"/ws?api_key={taker_key}")
    for ws in (maker_ws, taker_ws):
        assert (await ws.connect(timeout=5))[0]
        assert (await ws.receive_json_from(timeout=5))["type"] == "position_snapshot"

    def post(key, **fields):
        body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 10, "price": 100.0}
        body.update(fields)
        return api(key).post("/orders", body, format="json").json()

    buy = await sync_to_async(post)(maker_key, client_order_id="rest-1")
    assert buy["status"] == "accepted"
    ack = await until(maker_ws, "new_order_ack")
    assert (ack["seq"], ack["data"]["order_id"]) == (2, buy["order_id"])

    sell = await sync_to_async(post)(taker_key, side="sell", quantity=10, price=99.0)
    assert sell["status"] == "accepted"
    taker_ack = await until(taker_ws, "new_order_ack")
    assert taker_ack["data"]["order_id"] == sell["order_id"]
    taker_fill = await until(taker_ws, "execution_report")
    maker_fill = await until(maker_ws, "execution_report")
    assert taker_fill["seq"] == taker_ack["seq"] + 1  # nothing between a team's ack and its fill
    assert taker_fill["data"]["executed_price"] == 100.0 and taker_fill["data"]["liquidity_type"] == "taker"
    assert taker_fill["data"]["fees"] == 0.3 and taker_fill["data"]["position"] == -10  # retail taker 0.03
    assert maker_fill["data"]["fees"] == -0.2 and maker_fill["data"]["position"] == 10  # market maker rebate
    assert maker_fill["data"]["client_order_id"] == "rest-1" and maker_fill["data"]["order_status"] == "filled"
    assert maker_fill["data"]["trade_id"] == taker_fill["data"]["trade_id"]
    for ws in (maker_ws, taker_ws):
        await ws.disconnect()


async def test_a_rejection_is_pushed_at_once(make_team, instruments, api, celery_worker) -> None:
    team, key = await sync_to_async(make_team)("retail")
    ws = WebsocketCommunicator(application, f"/ws?api_key={key}")
    assert (await ws.connect(timeout=5))[0]
    await ws.receive_json_from(timeout=5)
    body = {"instrument_id": "NOPE", "order_type": "limit", "side": "buy", "quantity": 1, "price": 1.0}
    reply = await sync_to_async(lambda: api(key).post("/orders", body, format="json").json())()
    frame = await ws.receive_json_from(timeout=10)
    assert frame["type"] == "new_order_reject" and frame["seq"] == 2
    assert frame["data"] == {
        "order_id": reply["order_id"],
        "client_order_id": None,
        "instrument_id": "NOPE",
        "status": "rejected",
        "error_code": "INVALID_INSTRUMENT",
        "reason": reply["error_message"],
    }
    await ws.disconnect()


# --- the loop itself, driven step by step ------------------------------------------------------------
WEB = "pipeline-test"


class Crash(Exception):
    """Stands for the process dying at that point."""


@pytest.fixture
def fresh_queue(transactional_db: None) -> Iterator[redis.Redis]:
    """No loop running and the queue's keys forgotten; this test drives ``MatchingLoop`` itself."""
    matching_loop.stop()
    client = sync_client()
    queue.forget(client)
    yield client
    queue.forget(client)


@pytest.fixture
def verdicts(fresh_queue: redis.Redis) -> Iterator[Any]:
    """The verdict channel of a pretend web process, subscribed before anything is queued."""
    pubsub = fresh_queue.pubsub()
    pubsub.subscribe(queue.VERDICTS + WEB)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    yield pubsub
    pubsub.close()


def received(pubsub: Any, wait_s: float = 0.5) -> list[list[tuple[int, Any]]]:
    """Every verdict message that reached the pretend web process, one list per message."""
    messages = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message and message["type"] == "message":
            messages.append(queue.decode_verdicts(message["data"]))
    return messages


def enqueue(client: redis.Redis, team: Team, **command: Any) -> int:
    """Queue a command as a web process does (the same script), answered on ``WEB``'s channel."""
    keys, argv = queue.enqueue_args(queue.encode({**command, "r": WEB, "t": team.pk}), None, 0)
    return queue.verdict_of_script(client.eval(queue.ENQUEUE, len(keys), *keys, *argv), 0)


def order(client: redis.Redis, team: Team, side: str, quantity: int = 5, price: str = "100") -> int:
    return enqueue(client, team, k="s", i="SPX_4500_CALL", s=side, y="limit", f="gtc", p=price, q=quantity, c=None)


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in (Order, Trade, Fill, Position, Account, JournalEntry)}


def started_loop() -> MatchingLoop:
    loop = MatchingLoop()
    loop.start()
    return loop


def test_a_batch_is_decided_and_committed_once(make_team, instruments, fresh_queue, verdicts, monkeypatch) -> None:
    (buyer, _), (seller, _) = make_team(), make_team()
    loop = started_loop()
    commits: list[int] = []
    real_write = matching_loop.write_batch

    def write(batch: Any, *args: Any) -> None:
        commits.append(len(batch))
        real_write(batch, *args)

    monkeypatch.setattr(matching_loop, "write_batch", write)
    ids = [order(fresh_queue, buyer, "buy"), order(fresh_queue, seller, "sell"), order(fresh_queue, seller, "sell", 2)]
    assert ids == list(range(ids[0], ids[0] + 3))  # numbered in queue order
    loop.step()

    assert commits == [3]  # one transaction for the whole batch
    assert list(JournalEntry.objects.values_list("id", "kind")) == [(i, "s") for i in ids]
    assert counts() == {"Order": 3, "Trade": 1, "Fill": 2, "Position": 2, "Account": 2, "JournalEntry": 3}
    assert fresh_queue.llen(queue.QUEUE) == fresh_queue.llen(queue.INFLIGHT) == 0
    messages = received(verdicts)
    assert len(messages) == 1  # one message per batch for this web process
    assert [command_id for command_id, _ in messages[0]] == ids
    assert [reply["status"] for _, reply in messages[0]] == ["accepted"] * 3
    assert messages[0][1][1]["filled_quantity"] == 5

    loop.step()  # nothing queued: nothing decided, nothing written again
    assert commits == [3] and received(verdicts) == []


def test_a_crash_between_commit_and_publish_leaves_the_batch_in_flight_and_it_is_decided_once(
    make_team, instruments, fresh_queue, verdicts, monkeypatch
) -> None:
    (buyer, _), (seller, _) = make_team(), make_team()
    loop = started_loop()
    ids = [order(fresh_queue, buyer, "buy"), order(fresh_queue, seller, "sell")]

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    monkeypatch.setattr(loop, "finish", crash)  # committed, then the process dies before publishing
    with pytest.raises(Crash):
        loop.step()
    committed = counts()
    assert committed == {"Order": 2, "Trade": 1, "Fill": 2, "Position": 2, "Account": 2, "JournalEntry": 2}
    in_flight = fresh_queue.lrange(queue.INFLIGHT, 0, -1)
    assert [queue.decode(item)[0] for item in in_flight] == ids  # still in flight: never dropped
    assert received(verdicts) == []  # and never answered

    restarted = started_loop()  # the new process finds them at start
    assert counts() == committed  # decided once: no order, trade or fill twice
    assert fresh_queue.llen(queue.INFLIGHT) == 0
    assert restarted.worker.last_decided == ids[-1]

    # Delivered yet again (a retry of the same message): still nothing changes.
    fresh_queue.rpush(queue.QUEUE, *in_flight)
    for _ in range(len(in_flight) + 1):  # however the worker splits them into batches
        restarted.step()
    assert counts() == committed and fresh_queue.llen(queue.QUEUE) == fresh_queue.llen(queue.INFLIGHT) == 0
    assert received(verdicts) == []

    # The books were rebuilt from the database: the next order finds the state the crash left.
    next_id = order(fresh_queue, buyer, "buy", 3, "99")
    assert next_id == ids[-1] + 1  # the command counter never goes back
    restarted.step()
    (message,) = received(verdicts)
    assert [(command_id, reply["status"]) for command_id, reply in message] == [(next_id, "accepted")]
    assert Order.objects.filter(status="new").count() == 1
    assert Position.objects.get(team=buyer).quantity == 5 and Position.objects.get(team=seller).quantity == -5


def test_a_crash_before_commit_loses_nothing_queued(make_team, instruments, fresh_queue, verdicts, monkeypatch) -> None:
    (buyer, _), (seller, _) = make_team(), make_team()
    loop = started_loop()
    ids = [order(fresh_queue, buyer, "buy"), order(fresh_queue, seller, "sell")]

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    monkeypatch.setattr(loop, "process", crash)  # taken off the queue, then the process dies
    with pytest.raises(Crash):
        loop.step()
    assert counts()["Order"] == 0 and fresh_queue.llen(queue.INFLIGHT) == 2

    started_loop()
    assert list(JournalEntry.objects.values_list("id", flat=True)) == ids
    assert counts() == {"Order": 2, "Trade": 1, "Fill": 2, "Position": 2, "Account": 2, "JournalEntry": 2}
    (message,) = received(verdicts)  # the web process still waiting gets its verdicts
    assert [(command_id, reply["status"]) for command_id, reply in message] == [(i, "accepted") for i in ids]


def test_the_same_command_queued_twice_is_decided_once(make_team, instruments, fresh_queue, verdicts) -> None:
    (buyer, _), _ = make_team(), make_team()
    loop = started_loop()
    command_id = order(fresh_queue, buyer, "buy")
    (item,) = fresh_queue.lrange(queue.QUEUE, 0, -1)
    fresh_queue.rpush(queue.QUEUE, item)  # a redelivered copy right behind it
    loop.step()
    assert list(JournalEntry.objects.values_list("id", flat=True)) == [command_id]
    assert Order.objects.count() == 1
    (message,) = received(verdicts)
    assert [command_id for command_id, _ in message] == [command_id]
    assert orjson.loads(JournalEntry.objects.get().result)["status"] == "new"
