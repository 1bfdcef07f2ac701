"""The order path through real parts: REST view → journal → Celery ``matching`` queue → a real
Celery worker (in-process, solo pool) → database → Redis channel layer → WebSocket consumer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

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
        "order_id": reply["order_id"], "client_order_id": None, "instrument_id": "NOPE", "status": "rejected",
        "error_code": "INVALID_INSTRUMENT", "reason": reply["error_message"],
    }
    await ws.disconnect()
