"""Invariant 8 in the parts the other isolation tests leave out: another team's order ids, trade
ids and team ids give answers that cannot be told from those for ids that do not exist."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from tradinggame.asgi import application

# The matching worker runs in a thread of its own: the test's data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def submit(api, key, **fields) -> str:
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 5, "price": 100.0}
    body.update(fields)
    reply = api(key).post("/orders", body, format="json").json()
    assert reply["status"] == "accepted", reply
    return reply["order_id"]


@pytest.fixture
def desks(make_team, instruments, api, no_rate_limit, matching):
    """Alice trades with Carol (one trade Bob is not part of), then Bob trades with Carol.
    Alice keeps a resting order and a filled one."""
    (alice_team, alice), (_, bob), (_, carol) = (
        make_team("market_maker"),
        make_team("hedge_fund"),
        make_team("arbitrage"),
    )
    alice_filled = submit(api, alice, client_order_id="alice-secret")
    submit(api, carol, side="sell", quantity=5)
    alice_resting = submit(api, alice, price=90.0, quantity=3, instrument_id="SPX_4400_PUT")
    bob_order = submit(api, bob, side="buy", price=101.0, quantity=2)
    submit(api, carol, side="sell", price=101.0, quantity=2)
    alice_trade = api(alice).get("/fills").json()["fills"][0]["trade_id"]
    return {
        "alice": alice,
        "bob": bob,
        "alice_team": alice_team.team_id,
        "alice_trade": alice_trade,
        "alice_orders": [alice_filled, alice_resting],
        "bob_order": bob_order,
    }


def without_volatile(reply: dict) -> dict:
    return {k: v for k, v in reply.items() if k not in ("order_id", "timestamp")}


def test_reads_and_cancels_of_another_teams_orders_are_404_like_unknown_ids(desks, api) -> None:
    bob = desks["bob"]
    unknown_read = api(bob).get("/orders/ORD_987654")
    unknown_cancel = api(bob).delete("/orders/ORD_987654")
    assert unknown_read.status_code == unknown_cancel.status_code == 404
    for order_id in desks["alice_orders"]:  # one filled (it has fills), one resting
        read = api(bob).get(f"/orders/{order_id}")
        assert read.status_code == 404 and read.content == unknown_read.content
        cancel = api(bob).delete(f"/orders/{order_id}")
        assert cancel.status_code == 404
        assert cancel.json()["order_id"] == order_id  # the id asked for is echoed, nothing more
        assert without_volatile(cancel.json()) == without_volatile(unknown_cancel.json())
    resting = api(desks["alice"]).get(f"/orders/{desks['alice_orders'][1]}").json()
    assert resting["status"] == "new" and resting["remaining_quantity"] == 3  # untouched


def test_fills_since_another_teams_trade_reveal_nothing_of_theirs(desks, api) -> None:
    bob = desks["bob"]
    own = api(bob).get("/fills").json()["fills"]
    assert [f["order_id"] for f in own] == [desks["bob_order"]]
    since_theirs = api(bob).get(f"/fills?since_trade_id={desks['alice_trade']}")
    assert since_theirs.status_code == 200
    # Exactly the caller's own fills after that number: what any trade id of the public tape gives.
    assert since_theirs.json()["fills"] == own
    text = since_theirs.text
    assert "alice-secret" not in text and not any(order_id in text for order_id in desks["alice_orders"])
    # An id that does not exist answers the same way (no hint which ids are real).
    assert api(bob).get("/fills?since_trade_id=TRD_987654").json() == {"fills": []}


def test_positions_of_another_team_are_403_like_a_team_that_does_not_exist(desks, api) -> None:
    bob = desks["bob"]
    theirs = api(bob).get(f"/positions/{desks['alice_team']}")
    nobody = api(bob).get("/positions/TEAM_987654")
    assert theirs.status_code == nobody.status_code == 403
    assert theirs.content == nobody.content and theirs.json()["error"]["code"] == "FORBIDDEN"


def test_lists_hold_only_the_callers_records(desks, api) -> None:
    bob = desks["bob"]
    assert [o["order_id"] for o in api(bob).get("/orders?status=all").json()["orders"]] == [desks["bob_order"]]
    assert api(bob).get("/orders?instrument_id=SPX_4400_PUT").json()["orders"] == []
    assert api(bob).delete("/orders?instrument_id=SPX_4400_PUT").json()["results"] == []
    assert api(bob).delete("/orders").json()["results"] == []  # Bob's one order filled: nothing of his is open
    resting = api(desks["alice"]).get(f"/orders/{desks['alice_orders'][1]}").json()
    assert (resting["status"], resting["remaining_quantity"]) == ("new", 3)  # Alice's order stays
    assert api(bob).get("/account").json()["team_id"] != desks["alice_team"]


async def private_frames(ws: WebsocketCommunicator, wait_s: float) -> list[dict]:
    """The team's own frames that arrive within ``wait_s`` (public market frames left out)."""
    frames = []
    while not await ws.receive_nothing(timeout=wait_s):
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] not in ("market_data", "trade"):
            frames.append(frame)
    return frames


async def test_a_cancel_of_another_teams_order_pushes_nothing_to_either_team(desks, api) -> None:
    alice_ws = WebsocketCommunicator(application, f"/ws?api_key={desks['alice']}")
    bob_ws = WebsocketCommunicator(application, f"/ws?api_key={desks['bob']}")
    for ws in (alice_ws, bob_ws):
        assert (await ws.connect(timeout=5))[0]
        assert (await ws.receive_json_from(timeout=5))["type"] == "position_snapshot"
    filled, resting = desks["alice_orders"]
    for order_id in (filled, resting):
        response = await sync_to_async(api(desks["bob"]).delete)(f"/orders/{order_id}")
        assert response.status_code == 404
    # Alice's own refused cancel does push a cancel_reject: the first frame she gets is that one.
    own = await sync_to_async(api(desks["alice"]).delete)(f"/orders/{filled}")
    assert own.json()["error_code"] == "ORDER_ALREADY_FILLED"
    frames = await private_frames(alice_ws, 1.0)
    assert [(f["type"], f["data"]["order_id"], f["data"]["error_code"]) for f in frames] == [
        ("cancel_reject", filled, "ORDER_ALREADY_FILLED")
    ]
    assert await private_frames(bob_ws, 0.2) == []
    for ws in (alice_ws, bob_ws):
        await ws.disconnect()
