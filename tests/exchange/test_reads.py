"""Read endpoints: account with P&L, order book depth, order history, game, instruments; each
read right after the order replies, which come only once the worker committed."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Team

pytestmark = pytest.mark.django_db(transaction=True)
MakeTeam = Callable[..., tuple[Team, str]]
Api = Callable[..., APIClient]


def submit(api: Api, key: str, **fields: Any) -> str:
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 10, "price": 100.0}
    body.update(fields)
    reply = api(key).post("/orders", body, format="json").json()
    assert reply["status"] == "accepted", reply
    return reply["order_id"]


@pytest.fixture
def two_teams(
    make_team: MakeTeam, instruments: list[str], no_rate_limit: None
) -> tuple[tuple[Team, str], tuple[Team, str]]:
    return make_team("market_maker"), make_team("hedge_fund")


def test_account_pnl_by_average_cost(
    two_teams: tuple[tuple[Team, str], tuple[Team, str]], api: Api, matching: object
) -> None:
    (_, mm), (_, hf) = two_teams
    submit(api, mm, quantity=10, price=100.0)  # mm buys 10 @ 100 (maker)
    submit(api, hf, side="sell", quantity=10, price=100.0)
    submit(api, mm, side="sell", quantity=4, price=103.0)  # mm sells 4 @ 103 (maker)
    submit(api, hf, side="buy", quantity=4, price=103.0)
    submit(api, hf, side="sell", quantity=1, price=101.0)  # a lone ask: one-sided book, marked at the last trade
    account = api(mm).get("/account").json()
    assert account["role"] == "market_maker" and account["portfolio_limit"] == 200
    # realized: 4 × (103 − 100) × 100 = 1200; fees: 14 contracts × −0.02 = −0.28 (a rebate)
    assert account["realized_pnl"] == 1200.0 and account["fees_paid"] == -0.28
    # cash: −10×100×100 + 4×103×100 + 0.28
    assert account["cash"] == float(Decimal(-100000 + 41200) + Decimal("0.28"))
    [position] = account["positions"]
    assert position["position"] == 6 and position["average_price"] == 100.0
    mark = position["mark_price"]
    assert mark == 103.0
    assert account["unrealized_pnl"] == (mark - 100.0) * 6 * 100
    assert account["total_pnl"] == pytest.approx(account["cash"] + 6 * mark * 100)
    assert account["portfolio_used"] == 6


def test_order_book_depth_and_last_trade(
    two_teams: tuple[tuple[Team, str], tuple[Team, str]], api: Api, matching: object
) -> None:
    (_, mm), (_, hf) = two_teams
    for price, quantity in ((99.0, 5), (99.0, 3), (98.5, 2)):
        submit(api, mm, price=price, quantity=quantity)
    submit(api, hf, side="sell", price=101.0, quantity=7)
    submit(api, hf, side="sell", price=99.0, quantity=1, time_in_force="ioc")
    book = api(mm).get("/orderbook/SPX_4500_CALL?depth=1").json()
    assert book["bids"] == [{"price": 99.0, "quantity": 7}] and book["asks"] == [{"price": 101.0, "quantity": 7}]
    assert book["last_trade"]["price"] == 99.0 and book["last_trade"]["quantity"] == 1
    full = api(mm).get("/orderbook/SPX_4500_CALL").json()
    assert [level["price"] for level in full["bids"]] == [99.0, 98.5]
    assert api(mm).get("/orderbook/SPX_4500_CALL?depth=51").status_code == 400
    assert api(mm).get("/orderbook/NOPE").status_code == 404


def test_order_history_and_one_order_with_fills(
    two_teams: tuple[tuple[Team, str], tuple[Team, str]], api: Api, matching: object
) -> None:
    (_, mm), (_, hf) = two_teams
    first = submit(api, mm, price=100.0, quantity=5)
    second = submit(api, mm, price=99.0, quantity=5)
    submit(api, hf, side="sell", price=100.0, quantity=5)
    assert [o["order_id"] for o in api(mm).get("/orders").json()["orders"]] == [second]
    history = api(mm).get("/orders?status=all").json()["orders"]
    assert [(o["order_id"], o["status"]) for o in history] == [(first, "filled"), (second, "new")]
    one = api(mm).get(f"/orders/{first}").json()
    assert one["average_price"] == 100.0 and one["fees"] == -0.1
    [fill] = one["fills"]
    assert (fill["quantity"], fill["price"], fill["liquidity_type"], fill["position"]) == (5, 100.0, "maker", 5)
    assert api(hf).get(f"/orders/{first}").status_code == 404
    assert api(mm).get("/orders?since=2999-01-01T00:00:00Z").json()["orders"] == []
    assert api(mm).get("/orders?since=yesterday").status_code == 400
    fills = api(mm).get("/fills").json()["fills"]
    assert api(mm).get(f"/fills?since_trade_id={fills[-1]['trade_id']}").json()["fills"] == []
    assert api(mm).get("/fills?since_trade_id=ORD_1").status_code == 400


def test_an_accepted_order_reads_back_at_once(
    two_teams: tuple[tuple[Team, str], tuple[Team, str]], api: Api, matching: object
) -> None:
    (_, mm), _ = two_teams
    order_id = submit(api, mm, client_order_id="now")
    one = api(mm).get(f"/orders/{order_id}").json()
    assert (one["order_id"], one["status"], one["client_order_id"], one["remaining_quantity"]) == (
        order_id,
        "new",
        "now",
        10,
    )
    assert [o["order_id"] for o in api(mm).get("/orders").json()["orders"]] == [order_id]


def test_game_and_instruments(two_teams: tuple[tuple[Team, str], tuple[Team, str]], api: Api) -> None:
    (_, mm), _ = two_teams
    game = api(mm).get("/game").json()
    assert game["phase"] == "continuous" and game["server_time"].endswith("Z")
    instruments = api(mm).get("/instruments").json()["instruments"]
    call = next(i for i in instruments if i["instrument_id"] == "SPX_4500_CALL")
    assert call == {
        "instrument_id": "SPX_4500_CALL",
        "underlying": "SPX",
        "option_type": "call",
        "strike": 4500.0,
        "expiry": None,
        "tick_size": 0.01,
        "multiplier": 100,
        "max_order_size": 1000,
        "status": "active",
    }


@pytest.mark.parametrize(
    "path",
    [
        "/orders?since=0001-01-01T00:00:00%2B01:00",
        "/orders?since=9999-12-31T23:59:59-01:00",
        "/orderbook/SPX_4500_CALL?depth=%C2%B2",
    ],
)
def test_odd_query_values_are_400(two_teams: tuple[tuple[Team, str], tuple[Team, str]], api: Api, path: str) -> None:
    (_, mm), _ = two_teams
    response = api(mm).get(path)
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_REQUEST"


def test_a_far_utc_offset_is_read_in_utc(two_teams: tuple[tuple[Team, str], tuple[Team, str]], api: Api) -> None:
    (_, mm), _ = two_teams
    response = api(mm).get("/orders?since=2536-08-31T20:28:14.206275-18:56")
    assert response.status_code == 200 and response.json() == {"orders": []}
