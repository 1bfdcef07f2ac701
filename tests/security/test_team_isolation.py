"""Invariant 8 in the parts the other isolation tests leave out: another team's order ids, trade
ids and team ids give answers that cannot be told from those for ids that do not exist."""

from __future__ import annotations

import pytest

from exchange.services.matching import MatchingWorker

# Cancels are async views: their database calls need a real transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def submit(api, key, **fields) -> str:
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 5, "price": 100.0}
    body.update(fields)
    reply = api(key).post("/orders", body, format="json").json()
    assert reply["status"] == "accepted", reply
    return reply["order_id"]


@pytest.fixture
def desks(make_team, instruments, api, no_rate_limit):
    """Alice trades with Carol (one trade Bob is not part of), then Bob trades with Carol.
    Alice keeps a resting order and a filled one."""
    (alice_team, alice), (_, bob), (_, carol) = make_team("market_maker"), make_team("hedge_fund"), make_team("arbitrage")
    worker = MatchingWorker()
    alice_filled = submit(api, alice, client_order_id="alice-secret")
    submit(api, carol, side="sell", quantity=5)
    worker.drain()
    alice_resting = submit(api, alice, price=90.0, quantity=3, instrument_id="SPX_4400_PUT")
    bob_order = submit(api, bob, side="buy", price=101.0, quantity=2)
    submit(api, carol, side="sell", price=101.0, quantity=2)
    worker.drain()
    alice_trade = api(alice).get("/fills").json()["fills"][0]["trade_id"]
    return {
        "alice": alice, "bob": bob, "alice_team": alice_team.team_id, "alice_trade": alice_trade,
        "alice_orders": [alice_filled, alice_resting], "bob_order": bob_order,
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
    assert api(bob).get("/account").json()["team_id"] != desks["alice_team"]
