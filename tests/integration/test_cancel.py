"""Cancels through the real worker: the reply waits for the engine's verdict."""

from __future__ import annotations

import pytest

from exchange.api import cancel_views
from exchange.services import matching

pytestmark = pytest.mark.django_db(transaction=True)

CANCEL_FIELDS = {"order_id", "client_order_id", "status", "cancelled_quantity", "filled_quantity", "error_code",
                 "error_message", "timestamp"}


def submit(api, key, **fields) -> str:
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 10, "price": 100.0}
    body.update(fields)
    reply = api(key).post("/orders", body, format="json").json()
    assert reply["status"] == "accepted"
    return reply["order_id"]


def test_cancel_a_resting_order_then_again(make_team, instruments, api, celery_worker) -> None:
    _, key = make_team()
    order_id = submit(api, key, client_order_id="c-1")
    response = api(key).delete(f"/orders/{order_id}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == CANCEL_FIELDS
    assert (body["order_id"], body["client_order_id"], body["status"]) == (order_id, "c-1", "cancelled")
    assert (body["cancelled_quantity"], body["filled_quantity"], body["error_code"]) == (10, 0, None)
    again = api(key).delete(f"/orders/{order_id}")
    assert again.status_code == 200
    assert (again.json()["status"], again.json()["error_code"]) == ("rejected", "ORDER_ALREADY_CANCELLED")
    order = api(key).get(f"/orders/{order_id}").json()
    assert (order["status"], order["cancelled_quantity"], order["remaining_quantity"]) == ("cancelled", 10, 0)


def test_cancel_after_partial_fill_and_after_full_fill(make_team, instruments, api, celery_worker) -> None:
    _, key = make_team()
    _, other = make_team()
    partial = submit(api, key)
    submit(api, other, side="sell", quantity=4)
    body = api(key).delete(f"/orders/{partial}").json()
    assert (body["status"], body["cancelled_quantity"], body["filled_quantity"]) == ("cancelled", 6, 4)
    full = submit(api, key, quantity=3)
    submit(api, other, side="sell", quantity=3)
    api(key).get("/orders")  # let the worker take both
    response = api(key).delete(f"/orders/{full}")
    assert (response.status_code, response.json()["error_code"]) == (200, "ORDER_ALREADY_FILLED")


@pytest.mark.parametrize("order_id", ["ORD_999999", "garbage", "TRD_1"])
def test_unknown_ids_are_404(make_team, api, order_id) -> None:
    _, key = make_team()
    response = api(key).delete(f"/orders/{order_id}")
    assert response.status_code == 404
    assert (response.json()["status"], response.json()["error_code"]) == ("rejected", "ORDER_NOT_FOUND")


def test_another_teams_order_is_404_and_stays(make_team, instruments, api, celery_worker) -> None:
    _, owner = make_team()
    _, intruder = make_team()
    order_id = submit(api, owner)
    response = api(intruder).delete(f"/orders/{order_id}")
    assert response.status_code == 404 and response.json()["error_code"] == "ORDER_NOT_FOUND"
    assert api(intruder).get(f"/orders/{order_id}").status_code == 404
    assert api(owner).get(f"/orders/{order_id}").json()["status"] in ("pending_new", "new")


def test_cancel_all_of_one_instrument(make_team, instruments, api, celery_worker) -> None:
    _, key = make_team()
    calls = [submit(api, key, price=p) for p in (98.0, 99.0)]
    put = submit(api, key, instrument_id="SPX_4500_PUT")
    response = api(key).delete("/orders?instrument_id=SPX_4500_CALL")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["order_id"], r["status"], r["cancelled_quantity"]) for r in results] == [
        (calls[0], "cancelled", 10), (calls[1], "cancelled", 10),
    ]
    assert [o["order_id"] for o in api(key).get("/orders").json()["orders"]] == [put]


def test_no_verdict_in_time_is_504_pending_cancel(make_team, instruments, api, monkeypatch) -> None:
    matching.matching_worker_stop()
    monkeypatch.setattr(cancel_views, "VERDICT_TIMEOUT_S", 0.3)
    _, key = make_team()
    order_id = submit(api, key)  # no worker is running: the order stays pending
    response = api(key).delete(f"/orders/{order_id}")
    assert response.status_code == 504
    assert response.json()["status"] == "pending_cancel"


def test_cancel_needs_a_key(db, api) -> None:
    response = api().delete("/orders/ORD_1")
    assert response.status_code == 401 and response.json()["error"]["code"] == "NOT_AUTHENTICATED"
    response = api("itg_bad").delete("/orders")
    assert response.status_code == 401 and response.json()["error"]["code"] == "INVALID_API_KEY"
