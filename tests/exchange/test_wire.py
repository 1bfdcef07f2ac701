"""Every frame a team receives matches its one declaration in exchange/wire.py, and every REST
reply the schema generated from those declarations: the frames and replies of a real order flow
(worker, channel layer, consumer), the checker itself on bad frames, and the shapes' enumerations
against the models'."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

from accounts.models import Role, Team
from exchange import models, wire
from exchange.wire import frame_problems
from tradinggame.asgi import application

MakeTeam = Callable[..., tuple[Team, str]]
STAMP = "2024-01-15T10:00:00.123456Z"


def test_a_well_formed_frame_has_no_problems() -> None:
    data = {
        "order_id": "ORD_1",
        "client_order_id": None,
        "status": "cancelled",
        "cancelled_quantity": 3,
        "reason": "ioc_remainder",
    }
    assert frame_problems({"seq": 4, "type": "cancel_ack", "timestamp": STAMP, "data": data}) == []


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ({"seq": 1, "type": "pong", "timestamp": STAMP}, "envelope keys"),
        ({"seq": "1", "type": "pong", "timestamp": STAMP, "data": {}}, "seq is not an integer"),
        ({"seq": 1, "type": "pong", "timestamp": "2024-01-15T10:00:00", "data": {}}, "timestamp"),
        ({"seq": 1, "type": "mystery", "timestamp": STAMP, "data": {}}, "undeclared frame type"),
        (
            {"seq": 1, "type": "trade", "timestamp": STAMP, "data": {"instrument_id": "X"}},
            "trade: data.trade_id is missing",
        ),
        (
            {"seq": 1, "type": "underlying", "timestamp": STAMP, "data": {"symbol": "SPX", "price": "4500"}},
            "data.price = '4500' is not a number",
        ),
        (
            {
                "seq": 1,
                "type": "cancel_ack",
                "timestamp": STAMP,
                "data": {
                    "order_id": "ORD_1",
                    "client_order_id": None,
                    "status": "done",
                    "cancelled_quantity": 1,
                    "reason": "x",
                },
            },
            "data.status = 'done' is not one of",
        ),
        (
            {"seq": 1, "type": "pong", "timestamp": STAMP, "data": {"extra": 1}},
            "data.extra is not declared",
        ),
    ],
)
def test_the_checker_names_what_is_wrong(frame: dict[str, Any], problem: str) -> None:
    problems = frame_problems(frame)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    ("declared", "choices"),
    [
        (wire.Side, models.Side),
        (wire.OrderType, models.OrderType),
        (wire.TimeInForce, models.TimeInForce),
        (wire.Liquidity, models.Fill.Liquidity),
        (wire.Phase, models.Phase),
        (wire.Role, Role),
        (wire.StoredStatus, [s for s in models.OrderStatus if s != models.OrderStatus.PENDING_NEW]),
        (wire.OptionType, models.Instrument.OptionType),
    ],
)
def test_the_shapes_enumerations_are_the_models(declared: Any, choices: Any) -> None:
    assert set(get_args(declared)) == {str(choice) for choice in choices}


@pytest.mark.django_db(transaction=True)
async def test_every_frame_and_reply_of_an_order_flow_matches_its_declaration(
    matching: object,
    make_team: MakeTeam,
    instruments: list[str],
    api: Callable[[str | None], APIClient],
    order_body: Callable[..., dict[str, object]],
    documented: Callable[[str, str, Any], None],
) -> None:
    buyer, buyer_key = await sync_to_async(make_team)()
    seller, seller_key = await sync_to_async(make_team)()
    sockets = []
    for key in (buyer_key, seller_key):
        ws = WebsocketCommunicator(application, f"/ws?api_key={key}")
        assert (await ws.connect(timeout=5))[0]
        sockets.append(ws)

    def call(method: str, template: str, key: str, path: str, **fields: object) -> Any:
        """One request of the flow; its reply must be one the schema documents for the operation."""
        client = api(key)
        response = (
            client.post(path, order_body(**fields), format="json")
            if method == "post"
            else getattr(client, method)(path)
        )
        documented(method, template, response)
        return response.json()

    rest = sync_to_async(call)
    first = await rest("post", "/orders", buyer_key, "/orders", client_order_id="b1", quantity=10)
    assert first["status"] == "accepted"
    ioc = await rest("post", "/orders", seller_key, "/orders", side="sell", quantity=4, time_in_force="ioc")
    assert ioc["filled_quantity"] == 4
    refused = await rest("post", "/orders", seller_key, "/orders", instrument_id="NOT_LISTED")
    assert refused["error_code"] == "INVALID_INSTRUMENT"
    ord_1 = first["order_id"]
    for key in (buyer_key, seller_key):
        assert (await rest("get", "/fills", key, "/fills"))["fills"]
        assert (await rest("get", "/account", key, "/account"))["positions"]
        await rest("get", "/positions", key, "/positions")
        await rest("get", "/orders", key, "/orders?status=all")
    assert (await rest("get", "/orders/{order_id}", buyer_key, f"/orders/{ord_1}"))["fills"]
    book = await rest("get", "/orderbook/{instrument_id}", buyer_key, "/orderbook/SPX_4500_CALL")
    assert book["bids"] and book["last_trade"]
    await rest("get", "/positions/{team_id}", buyer_key, f"/positions/{buyer.team_id}")
    await rest("get", "/instruments", buyer_key, "/instruments")
    await rest("get", "/game", buyer_key, "/game")
    assert (await rest("delete", "/orders/{order_id}", buyer_key, f"/orders/{ord_1}"))["status"] == "cancelled"
    again = await rest("delete", "/orders/{order_id}", buyer_key, f"/orders/{ord_1}")
    assert again["error_code"] == "ORDER_ALREADY_CANCELLED"
    assert (await rest("delete", "/orders/{order_id}", buyer_key, "/orders/ORD_0"))["error_code"] == "ORDER_NOT_FOUND"
    await rest("post", "/orders", buyer_key, "/orders", client_order_id="b2", quantity=1, price=99.0)
    assert [r["client_order_id"] for r in (await rest("delete", "/orders", buyer_key, "/orders"))["results"]] == ["b2"]
    await sockets[0].send_json_to({"action": "ping"})
    await sockets[1].send_json_to({"action": "no such thing"})
    seen: dict[str, int] = {}
    for ws in sockets:
        while not await ws.receive_nothing(timeout=1.0, interval=0.01):
            frame = await ws.receive_json_from()
            assert frame_problems(frame) == [], frame
            seen[frame["type"]] = seen.get(frame["type"], 0) + 1
        await ws.disconnect()
    expected = {
        "position_snapshot",
        "new_order_ack",
        "execution_report",
        "trade",
        "market_data",
        "cancel_ack",
        "cancel_reject",
        "new_order_reject",
        "pong",
        "error",
    }
    assert expected <= seen.keys(), seen
