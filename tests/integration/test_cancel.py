"""Cancels through the real worker: they travel the orders' queue, so a cancel never overtakes an
order sent before it, and the reply waits for the worker's verdict (bounded: 504 after that)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from exchange.models import JournalEntry, Order

pytestmark = pytest.mark.django_db(transaction=True)

CANCEL_FIELDS = {
    "order_id", "client_order_id", "status", "cancelled_quantity", "filled_quantity", "error_code",
    "error_message", "timestamp",
}  # fmt: skip


def submit(api: Callable[..., APIClient], key: str, **fields: Any) -> str:
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 10, "price": 100.0}
    body.update(fields)
    reply = api(key).post("/orders", body, format="json").json()
    assert reply["status"] == "accepted", reply
    return reply["order_id"]


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run a request in a thread of its own (it waits for its verdict); its result lands in the list."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return thread, result


def test_cancel_a_resting_order_then_again(make_team, instruments, api, matching) -> None:
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
    assert again.json()["client_order_id"] == "c-1"
    order = api(key).get(f"/orders/{order_id}").json()
    assert (order["status"], order["cancelled_quantity"], order["remaining_quantity"]) == ("cancelled", 10, 0)


def test_cancel_after_partial_fill_and_after_full_fill(make_team, instruments, api, matching) -> None:
    _, key = make_team()
    _, other = make_team()
    partial = submit(api, key)
    submit(api, other, side="sell", quantity=4)
    body = api(key).delete(f"/orders/{partial}").json()
    assert (body["status"], body["cancelled_quantity"], body["filled_quantity"]) == ("cancelled", 6, 4)
    full = submit(api, key, quantity=3)
    submit(api, other, side="sell", quantity=3)  # its reply comes after the commit: the fill is in
    response = api(key).delete(f"/orders/{full}")
    assert response.status_code == 200
    assert (response.json()["error_code"], response.json()["filled_quantity"]) == ("ORDER_ALREADY_FILLED", 3)


@pytest.mark.parametrize("order_id", ["ORD_999999", "ORD_0", "garbage", "TRD_1", "ORD_1x"])
def test_unknown_ids_are_404(make_team, api, matching, order_id) -> None:
    _, key = make_team()
    response = api(key).delete(f"/orders/{order_id}")
    assert response.status_code == 404
    body = response.json()
    assert set(body) == CANCEL_FIELDS
    assert (body["order_id"], body["status"], body["error_code"]) == (order_id, "rejected", "ORDER_NOT_FOUND")


def test_another_teams_order_is_404_and_stays(make_team, instruments, api, matching) -> None:
    _, owner = make_team()
    _, intruder = make_team()
    order_id = submit(api, owner)
    response = api(intruder).delete(f"/orders/{order_id}")
    assert response.status_code == 404 and response.json()["error_code"] == "ORDER_NOT_FOUND"
    assert api(intruder).get(f"/orders/{order_id}").status_code == 404
    assert api(intruder).delete("/orders").json() == {"results": []}
    order = api(owner).get(f"/orders/{order_id}").json()
    assert (order["status"], order["remaining_quantity"]) == ("new", 10)


def test_cancel_all_of_one_instrument(make_team, instruments, api, matching) -> None:
    _, key = make_team()
    calls = [submit(api, key, price=p) for p in (98.0, 99.0)]
    put = submit(api, key, instrument_id="SPX_4500_PUT")
    response = api(key).delete("/orders?instrument_id=SPX_4500_CALL")
    assert response.status_code == 200
    results = response.json()["results"]
    assert all(set(r) == CANCEL_FIELDS for r in results)
    # API.md does not order the results (the worker gives them in book order, best price first).
    assert sorted((r["order_id"], r["status"], r["cancelled_quantity"]) for r in results) == sorted(
        [(calls[0], "cancelled", 10), (calls[1], "cancelled", 10)]
    )
    assert [o["order_id"] for o in api(key).get("/orders").json()["orders"]] == [put]
    assert api(key).delete("/orders?instrument_id=SPX_4500_CALL").json() == {"results": []}


def test_a_cancel_never_overtakes_the_order_sent_before_it(make_team, instruments, api, matching, paused) -> None:
    """The worker holds both commands; the cancel, sent second, finds the order it names already
    on the book (a cancel that overtook it would answer ORDER_NOT_FOUND)."""
    _, key = make_team()
    first = submit(api, key, price=90.0)
    next_id = f"ORD_{int(first[4:]) + 1}"  # the worker numbers orders in queue order
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 7, "price": 91.0}
    with paused:
        order_thread, order_reply = in_thread(lambda: api(key).post("/orders", body, format="json"))
        paused.wait_queued(1)
        cancel_thread, cancel_reply = in_thread(lambda: api(key).delete(f"/orders/{next_id}"))
        paused.wait_queued(2)
        all_thread, all_reply = in_thread(lambda: api(key).delete("/orders"))
        paused.wait_queued(3)
    for thread in (order_thread, cancel_thread, all_thread):
        thread.join(20)
    assert (order_reply[0].status_code, order_reply[0].json()["order_id"]) == (200, next_id)
    assert order_reply[0].json()["status"] == "accepted"
    cancel = cancel_reply[0]
    assert cancel.status_code == 200, cancel.content
    assert (cancel.json()["status"], cancel.json()["cancelled_quantity"]) == ("cancelled", 7)
    # The cancel-all came last: the one order still open is the first one.
    assert all_reply[0].status_code == 200
    assert [(r["order_id"], r["cancelled_quantity"]) for r in all_reply[0].json()["results"]] == [(first, 10)]
    kinds = list(JournalEntry.objects.order_by("id").values_list("kind", flat=True))
    assert kinds[-3:] == ["s", "c", "ca"]


def test_no_verdict_in_time_is_504_pending_cancel_and_the_cancel_still_happens(
    make_team, instruments, api, matching, paused, settings
) -> None:
    _, key = make_team()
    order_id = submit(api, key)
    settings.EXCHANGE_VERDICT_TIMEOUT_S = 0.3
    with paused:
        started = time.monotonic()
        response = api(key).delete(f"/orders/{order_id}")
        assert time.monotonic() - started < 5
        assert response.status_code == 504
        body = response.json()
        assert set(body) == CANCEL_FIELDS
        assert (body["order_id"], body["status"], body["error_code"]) == (order_id, "pending_cancel", "TIMEOUT")
        every = api(key).delete("/orders")
        assert every.status_code == 504 and every.json()["error"]["code"] == "TIMEOUT"
        assert Order.objects.get(pk=int(order_id[4:])).status == "new"
    # Queued, so decided once the worker goes on: the order leaves the book.
    deadline = time.monotonic() + 15
    while Order.objects.get(pk=int(order_id[4:])).status != "cancelled":
        assert time.monotonic() < deadline, "the queued cancel was never decided"
        time.sleep(0.05)
    order = Order.objects.get(pk=int(order_id[4:]))
    assert (order.cancelled_quantity, order.cancel_reason) == (10, "user_requested")


def test_without_a_worker_cancels_are_503_and_queue_nothing(make_team, instruments, api) -> None:
    _, key = make_team()
    response = api(key).delete("/orders/ORD_1")
    assert response.status_code == 503
    assert (response.json()["status"], response.json()["error_code"]) == ("rejected", "MATCHING_UNAVAILABLE")
    assert response["Retry-After"] == "1"
    every = api(key).delete("/orders")
    assert every.status_code == 503 and every.json()["error"]["code"] == "MATCHING_UNAVAILABLE"


def test_cancel_needs_a_key(db, api) -> None:
    response = api().delete("/orders/ORD_1")
    assert response.status_code == 401 and response.json()["error"]["code"] == "NOT_AUTHENTICATED"
    response = api("itg_bad").delete("/orders")
    assert response.status_code == 401 and response.json()["error"]["code"] == "INVALID_API_KEY"
