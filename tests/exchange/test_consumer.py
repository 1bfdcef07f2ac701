"""The /ws consumer through the real ASGI application and the Redis channel layer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from exchange.models import Position
from exchange.publisher import Outbox
from tradinggame.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def connect(key: str | None) -> WebsocketCommunicator:
    path = "/ws" if key is None else f"/ws?api_key={key}"
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


@pytest.mark.parametrize("key", [None, "itg_wrong", "garbage"])
async def test_bad_key_is_accepted_then_closed_1008(key) -> None:
    communicator = await connect(key)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1008, "reason": "invalid or missing API key"}


async def test_first_frame_is_the_position_snapshot(make_team, instruments, api, order_body) -> None:
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


async def test_ping_subscribe_and_unknown_frames(make_team) -> None:
    _, key = await sync_to_async(make_team)()
    communicator = await connect(key)
    assert (await communicator.receive_json_from(timeout=5))["seq"] == 1
    await communicator.send_json_to({"action": "ping"})
    pong = await communicator.receive_json_from(timeout=5)
    assert (pong["seq"], pong["type"], pong["data"]) == (2, "pong", {})
    await communicator.send_to(text_data="{broken")
    error = await communicator.receive_json_from(timeout=5)
    assert error["seq"] == 3 and error["type"] == "error" and error["data"]["code"] == "INVALID_JSON"
    await communicator.send_json_to({"action": "trade_for_me"})
    error = await communicator.receive_json_from(timeout=5)
    assert error["seq"] == 4 and error["data"]["code"] == "UNKNOWN_ACTION"
    await communicator.send_json_to({"action": "subscribe", "instruments": ["SPX_4500_CALL"]})
    subscribed = await communicator.receive_json_from(timeout=5)
    assert subscribed["seq"] == 5 and subscribed["data"]["instruments"] == ["SPX_4500_CALL"]
    await communicator.disconnect()


async def test_team_messages_reach_every_connection_of_the_team_only(make_team) -> None:
    team, key = await sync_to_async(make_team)()
    other, other_key = await sync_to_async(make_team)()
    first, second, stranger = await connect(key), await connect(key), await connect(other_key)
    for communicator in (first, second, stranger):
        assert (await communicator.receive_json_from(timeout=5))["type"] == "position_snapshot"
    outbox = Outbox()
    outbox.to_team(team.pk, "new_order_ack", {"order_id": "ORD_1"}, "2024-01-15T10:00:00.000000Z")
    outbox.to_team(team.pk, "execution_report", {"order_id": "ORD_1"}, "2024-01-15T10:00:00.000001Z")
    outbox.to_market("trade", {"instrument_id": "SPX_4500_CALL"}, "2024-01-15T10:00:00.000001Z")
    await outbox._send_all()
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
