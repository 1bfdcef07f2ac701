"""Invariant 8 over the real processes: no team can read, cancel or infer another team's
orders, fills, positions or keys."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
import websockets

pytestmark = pytest.mark.e2e


def call(stack, key: str, method: str, path: str, **kwargs):
    return requests.request(method, stack.base_url + path, headers={"X-API-Key": key}, timeout=10, **kwargs)


async def frames_until_quiet(ws, quiet_s: float = 1.0) -> list[dict]:
    frames = []
    while True:
        try:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=quiet_s)))
        except TimeoutError:
            return frames


async def test_teams_see_only_their_own(stack) -> None:
    alice = stack.register("Alice Desk", "market_maker")
    bob = stack.register("Bob Desk", "hedge_fund")
    order = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "quantity": 5, "price": 100.0}
    async with websockets.connect(f"{stack.ws_url}?api_key={bob}") as bob_ws:
        await bob_ws.recv()  # snapshot
        resting = call(
            stack, alice, "POST", "/orders", json=dict(order, side="buy", client_order_id="alice-secret")
        ).json()
        call(stack, alice, "POST", "/orders", json=dict(order, side="buy", price=99.0, quantity=2))
        bob_order = call(stack, bob, "POST", "/orders", json=dict(order, side="sell", quantity=3)).json()
        bob_frames = await frames_until_quiet(bob_ws)

    alice_ids = {resting["order_id"]}
    alice_team = call(stack, alice, "GET", "/positions").json()["team_id"]
    # Bob's private frames name only Bob's orders; the public tape names no order at all.
    for frame in bob_frames:
        text = json.dumps(frame)
        assert "alice-secret" not in text and resting["order_id"] not in text, frame
        if frame["type"] in ("new_order_ack", "execution_report", "cancel_ack"):
            assert frame["data"]["order_id"] == bob_order["order_id"]
    assert any(f["type"] == "execution_report" for f in bob_frames)

    # Reads and cancels of another team's order look exactly like an unknown id.
    for order_id in alice_ids:
        theirs = call(stack, bob, "GET", f"/orders/{order_id}")
        unknown = call(stack, bob, "GET", "/orders/ORD_999999")
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["error"] == unknown.json()["error"]
        cancel = call(stack, bob, "DELETE", f"/orders/{order_id}")
        assert cancel.status_code == 404 and cancel.json()["error_code"] == "ORDER_NOT_FOUND"
    assert call(stack, alice, "GET", f"/orders/{resting['order_id']}").json()["status"] == "partially_filled"
    assert call(stack, bob, "GET", f"/positions/{alice_team}").status_code == 403

    # Lists hold only the caller's own records.
    assert [o["order_id"] for o in call(stack, bob, "GET", "/orders?status=all").json()["orders"]] == [
        bob_order["order_id"]
    ]
    assert {f["order_id"] for f in call(stack, bob, "GET", "/fills").json()["fills"]} == {bob_order["order_id"]}
    account = call(stack, bob, "GET", "/account").json()
    assert account["team_id"] != alice_team and [p["position"] for p in account["positions"]] == [-3]
    cancel_all = call(stack, bob, "DELETE", "/orders").json()["results"]
    assert cancel_all == []  # Bob's order filled; Alice's are not Bob's to cancel
    assert len(call(stack, alice, "GET", "/orders").json()["orders"]) == 2
    # A key is shown once: nothing readable gives it back.
    for path in ("/orders?status=all", "/fills", "/account", "/positions"):
        assert alice not in call(stack, alice, "GET", path).text
