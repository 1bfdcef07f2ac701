"""Operator commands against the real pipeline (REST and ``manage.py`` → the matching queue →
the worker → database → WebSocket): halts with and without sweeping resting orders, resumes, and
stepping the phases through the close and the opening auction.

Operator commands travel the orders' queue and return once the worker has committed them, and an
order's reply comes after its batch committed: what a command or a reply reports is already in
the database when it returns."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import call_command

from exchange.models import Order, Trade
from tradinggame.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def send(api, key, **fields) -> dict:
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 10, "price": 100.0}
    body.update(fields)
    response = api(key).post("/orders", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def accepted(api, key, **fields) -> int:
    reply = send(api, key, **fields)
    assert reply["status"] == "accepted", reply
    return int(reply["order_id"][4:])


def refused(api, key, **fields) -> str:
    reply = send(api, key, **fields)
    assert reply["status"] == "rejected", reply
    return reply["error_code"]


def manage(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def state(order_pk: int) -> tuple[str, str | None]:
    order = Order.objects.get(pk=order_pk)
    return order.status, order.cancel_reason


def test_instrument_halt_sweeps_its_book_only_and_resume_reopens_it(make_team, instruments, api, celery_worker) -> None:
    _, key = make_team()
    call = accepted(api, key)
    put = accepted(api, key, instrument_id="SPX_4500_PUT", price=50.0)
    assert state(call) == state(put) == ("new", None)

    manage("halt", "--instrument", "SPX_4500_CALL", "--cancel-resting")
    order = Order.objects.get(pk=call)
    assert (order.status, order.cancel_reason, order.cancelled_quantity, order.remaining_quantity) == (
        "cancelled",
        "operator",
        10,
        0,
    )
    assert state(put) == ("new", None)
    assert refused(api, key) == "INSTRUMENT_HALTED"
    assert accepted(api, key, instrument_id="SPX_4500_PUT", price=49.0)

    manage("resume", "--instrument", "SPX_4500_CALL")
    accepted(api, key)
    assert Order.objects.filter(status="new").count() == 3


def test_team_halt_refuses_its_orders_and_kept_orders_can_still_fill(
    make_team, instruments, api, celery_worker
) -> None:
    halted, halted_key = make_team()
    _, other_key = make_team()
    resting = accepted(api, halted_key)

    manage("halt", "--team", halted.team_id)
    assert refused(api, halted_key, price=99.0) == "TRADING_DISABLED"
    accepted(api, other_key, side="sell", quantity=4)  # the kept order still trades
    order = Order.objects.get(pk=resting)
    assert (order.status, order.filled_quantity) == ("partially_filled", 4)

    manage("halt", "--team", halted.name, "--cancel-resting")
    other_resting = accepted(api, other_key, price=98.0)
    order.refresh_from_db()
    assert (order.status, order.cancel_reason, order.cancelled_quantity) == ("cancelled", "operator", 6)
    assert state(other_resting) == ("new", None)  # other teams keep theirs

    manage("resume", "--team", halted.team_id)
    accepted(api, halted_key, price=97.0)


def test_exchange_halt_stops_everyone_and_resume_restores(make_team, instruments, api, celery_worker) -> None:
    _, first = make_team()
    _, second = make_team()
    orders = [accepted(api, first), accepted(api, second, side="sell", price=101.0, instrument_id="SPX_4500_PUT")]

    out = manage("halt", "--exchange", "--cancel-resting")
    assert "2 open order(s) will be cancelled with reason operator" in out
    assert [state(pk) for pk in orders] == [("cancelled", "operator")] * 2
    assert refused(api, first) == refused(api, second) == "TRADING_DISABLED"

    manage("halt", "--instrument", "SPX_4500_CALL")
    assert refused(api, first) == "INSTRUMENT_HALTED"  # the instrument check comes first
    manage("resume", "--exchange")
    assert refused(api, first) == "INSTRUMENT_HALTED"  # each halt is its own switch
    assert accepted(api, second, instrument_id="SPX_4500_PUT")
    manage("resume", "--instrument", "SPX_4500_CALL")
    assert accepted(api, first)


def test_close_cancels_day_orders_keeps_gtc_and_refuses_orders(make_team, instruments, api, celery_worker) -> None:
    _, key = make_team()
    day = accepted(api, key, time_in_force="day", price=95.0)
    gtc = accepted(api, key, time_in_force="gtc", price=96.0)

    out = manage("set_phase", "closed")
    assert "1 open day order(s) will be cancelled with reason session_end" in out
    order = Order.objects.get(pk=day)
    assert (order.status, order.cancel_reason, order.cancelled_quantity) == ("cancelled", "session_end", 10)
    assert state(gtc) == ("new", None)
    assert refused(api, key) == "MARKET_CLOSED"
    cancel = api(key).delete(f"/orders/ORD_{gtc}").json()
    assert (cancel["status"], cancel["error_code"]) == ("rejected", "MARKET_CLOSED")

    manage("set_phase", "continuous")
    assert state(gtc) == ("new", None)
    assert accepted(api, key, price=94.0)


def test_an_operator_command_is_decided_in_queue_order_with_the_orders(
    make_team, instruments, api, matching, paused
) -> None:
    """An order sent before the close is taken under the old rules (and then swept by it as a day
    order); one sent after it is refused, whatever moment the worker reaches them."""
    _, key = make_team()
    done: dict[str, Any] = {}

    def run(name: str, call: Callable[[], Any]) -> threading.Thread:
        thread = threading.Thread(target=lambda: done.__setitem__(name, call()))
        thread.start()
        return thread

    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 3, "price": 90.0}
    with paused:
        threads = [run("before", lambda: api(key).post("/orders", dict(body, time_in_force="day"), format="json"))]
        paused.wait_queued(1)
        threads.append(run("close", lambda: manage("set_phase", "closed")))
        paused.wait_queued(2)
        threads.append(run("after", lambda: api(key).post("/orders", body, format="json")))
        paused.wait_queued(3)
        assert done == {}  # nothing decided while the worker holds still
    for thread in threads:
        thread.join(20)
    before = done["before"].json()
    assert before["status"] == "accepted"
    assert "1 open day order(s) will be cancelled with reason session_end" in done["close"]
    assert (done["after"].json()["status"], done["after"].json()["error_code"]) == ("rejected", "MARKET_CLOSED")
    assert state(int(before["order_id"][4:])) == ("cancelled", "session_end")


def test_pre_open_rests_then_the_auction_crosses_at_one_price(make_team, instruments, api, celery_worker) -> None:
    _, buyer = make_team()
    _, seller = make_team()
    manage("set_phase", "pre_open")
    buys = [accepted(api, buyer, price=101.0, quantity=6), accepted(api, buyer, price=100.5, quantity=4)]
    sell = accepted(api, seller, side="sell", price=99.0, quantity=10)
    assert refused(api, buyer, time_in_force="ioc") == "ORDER_TYPE_NOT_ALLOWED"
    assert [state(pk)[0] for pk in (*buys, sell)] == ["new"] * 3  # crossing, yet resting
    assert not Trade.objects.exists()

    manage("set_phase", "opening_auction")
    assert refused(api, buyer, price=102.0) == "MARKET_CLOSED"
    assert not Trade.objects.exists()

    out = manage("set_phase", "continuous")
    assert "opening auction" in out
    prices = set(Trade.objects.values_list("price", flat=True))
    assert len(prices) == 1, prices  # everything that crosses trades at one price
    assert Decimal("99") <= prices.pop() <= Decimal("100.5")
    assert sum(Trade.objects.values_list("quantity", flat=True)) == 10
    assert [state(pk)[0] for pk in (*buys, sell)] == ["filled"] * 3


async def frame_of_type(ws: WebsocketCommunicator, wanted: str) -> dict:
    while True:
        frame = await ws.receive_json_from(timeout=15)
        if frame["type"] == wanted:
            return frame
        assert frame["type"] in {"market_data", "trade", "new_order_ack", "event"}, frame


async def test_what_a_bot_sees_of_a_halt_and_a_phase_change(make_team, instruments, api, celery_worker) -> None:
    team, key = await sync_to_async(make_team)()
    _, bystander_key = await sync_to_async(make_team)()
    ws = WebsocketCommunicator(application, f"/ws?api_key={key}")
    bystander = WebsocketCommunicator(application, f"/ws?api_key={bystander_key}")
    for communicator in (ws, bystander):
        assert (await communicator.connect(timeout=5))[0]
        assert (await communicator.receive_json_from(timeout=5))["type"] == "position_snapshot"
    order_id = (await sync_to_async(send)(api, key, client_order_id="q-1"))["order_id"]
    await frame_of_type(ws, "new_order_ack")

    await sync_to_async(manage)("halt", "--team", team.team_id, "--cancel-resting")
    halt_frame = await frame_of_type(ws, "event")
    assert halt_frame["data"] == {
        "event_type": "halt",
        "scope": "team",
        "team_id": team.team_id,
        "cancel_resting": True,
    }
    cancel = await frame_of_type(ws, "cancel_ack")
    assert cancel["seq"] > halt_frame["seq"]
    assert cancel["data"] == {
        "order_id": order_id,
        "client_order_id": "q-1",
        "status": "cancelled",
        "cancelled_quantity": 10,
        "reason": "operator",
    }

    await sync_to_async(manage)("set_phase", "pre_open")
    for communicator in (ws, bystander):
        # For the bystander this is the first event: the team's halt was told to that team only.
        frame = await frame_of_type(communicator, "event")
        assert frame["data"] == {"event_type": "phase_change", "phase": "pre_open", "previous_phase": "continuous"}
    for communicator in (ws, bystander):
        await communicator.disconnect()
