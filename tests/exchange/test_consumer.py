"""The /ws consumer through the real ASGI application and the Redis channel layer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

from accounts.models import Team
from exchange.matching.publish import Publisher
from exchange.matching.queue import WorkerLink
from exchange.matching.worker import Batch, frame
from exchange.models import Position
from infra.redis_breaker import redis_on_request_path
from infra.redis_clients import sync_client
from tradinggame.asgi import application

MakeTeam = Callable[..., tuple[Team, str]]

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(key: str | None) -> WebsocketCommunicator:
    path = "/ws" if key is None else f"/ws?api_key={key}"
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


@pytest.mark.parametrize("key", [None, "itg_wrong", "garbage"])
async def test_bad_key_is_accepted_then_closed_1008(key: str | None) -> None:
    communicator = await connect(key)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1008, "reason": "invalid or missing API key"}


async def test_first_frame_is_the_position_snapshot(
    matching: object,
    make_team: MakeTeam,
    instruments: list[str],
    api: Callable[[str | None], APIClient],
    order_body: Callable[..., dict[str, object]],
) -> None:
    team, key = await sync_to_async(make_team)()
    await sync_to_async(Position.objects.create)(team=team, instrument_id="SPX_4500_CALL", quantity=-3)
    reply = await sync_to_async(lambda: api(key).post("/orders", order_body(client_order_id="c1"), format="json"))()
    communicator = await connect(key)
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["seq"] == 1 and frame["type"] == "position_snapshot" and frame["timestamp"].endswith("Z")
    assert frame["data"]["positions"] == {"SPX_4500_CALL": -3}
    assert frame["data"]["last_trade_id"] is None
    [open_order] = frame["data"]["open_orders"]
    assert open_order["order_id"] == reply.json()["order_id"] and open_order["client_order_id"] == "c1"
    assert open_order["status"] in ("pending_new", "new") and open_order["remaining_quantity"] == 10
    await communicator.disconnect()


async def test_ping_subscribe_and_unknown_frames(make_team: MakeTeam) -> None:
    _, key = await sync_to_async(make_team)()
    communicator = await connect(key)
    assert (await communicator.receive_json_from(timeout=5))["seq"] == 1
    await communicator.send_json_to({"action": "ping"})
    pong = await communicator.receive_json_from(timeout=5)
    assert (pong["seq"], pong["type"], pong["data"]) == (2, "pong", {})
    await communicator.send_to(text_data="{broken")
    error = await communicator.receive_json_from(timeout=5)
    assert error["seq"] == 3 and error["type"] == "error" and error["data"]["code"] == "INVALID_JSON"
    assert isinstance(error["data"]["message"], str) and set(error["data"]) == {"code", "message"}
    await communicator.send_json_to({"action": "trade_for_me"})
    error = await communicator.receive_json_from(timeout=5)
    assert error["seq"] == 4 and error["data"]["code"] == "UNKNOWN_ACTION"
    await communicator.send_json_to({"action": "subscribe", "instruments": ["SPX_4500_CALL"]})
    subscribed = await communicator.receive_json_from(timeout=5)
    assert subscribed["seq"] == 5 and subscribed["data"]["instruments"] == ["SPX_4500_CALL"]
    await communicator.send_to(bytes_data=b'{"action": "ping"}')
    error = await communicator.receive_json_from(timeout=5)
    assert error["seq"] == 6 and error["data"]["code"] == "INVALID_JSON"
    await communicator.disconnect()


async def test_redis_unavailable_at_join_closes_1013(make_team: MakeTeam) -> None:
    _, key = await sync_to_async(make_team)()
    redis_on_request_path.trip()
    try:
        communicator = await connect(key)
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 1013, "reason": "service unavailable, try again"}
    finally:
        redis_on_request_path.reset()
    communicator = await connect(key)  # and admitted again once Redis answers
    assert (await communicator.receive_json_from(timeout=5))["type"] == "position_snapshot"
    await communicator.disconnect()


async def test_team_messages_reach_every_connection_of_the_team_only(make_team: MakeTeam) -> None:
    team, key = await sync_to_async(make_team)()
    other, other_key = await sync_to_async(make_team)()
    first, second, stranger = await connect(key), await connect(key), await connect(other_key)
    for communicator in (first, second, stranger):
        assert (await communicator.receive_json_from(timeout=5))["type"] == "position_snapshot"
    batch = Batch(now=datetime.now(UTC), stamp="2024-01-15T10:00:00.000001Z")
    batch.private[team.pk] += [
        frame("new_order_ack", "2024-01-15T10:00:00.000000Z", {"order_id": "ORD_1"}),
        frame("execution_report", "2024-01-15T10:00:00.000001Z", {"order_id": "ORD_1"}),
    ]
    batch.public.append(frame("trade", "2024-01-15T10:00:00.000001Z", {"instrument_id": "SPX_4500_CALL"}, "SPX_4500_CALL"))
    await sync_to_async(Publisher(WorkerLink(sync_client()), "consumer-test").send)(batch, finished_inflight=False)
    for communicator in (first, second):
        frames = [await communicator.receive_json_from(timeout=5) for _ in range(3)]
        assert [(f["seq"], f["type"]) for f in frames] == [(2, "new_order_ack"), (3, "execution_report"), (4, "trade")]
    only_public = await stranger.receive_json_from(timeout=5)
    assert (only_public["seq"], only_public["type"]) == (2, "trade")
    assert await stranger.receive_nothing(timeout=0.3)
    for communicator in (first, second, stranger):
        await communicator.disconnect()


async def test_unknown_paths_are_closed_not_crashed() -> None:
    communicator = WebsocketCommunicator(application, "/nowhere?api_key=x")
    assert (await communicator.connect(timeout=5))[0]
    closed = await communicator.receive_output(timeout=5)
    assert closed["type"] == "websocket.close" and closed["code"] == 1008
