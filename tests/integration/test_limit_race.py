"""Twenty orders of one team racing a position limit from parallel connections: the single writer
decides them one after the other in queue order, so exactly the orders the limit allows pass (the
first ten it reaches) and the rest are refused with the numbers of the check."""

from __future__ import annotations

import threading

import pytest
from rest_framework.test import APIClient

from exchange.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def test_parallel_orders_respect_the_position_limit(make_team, instruments, no_rate_limit, matching) -> None:
    _, key = make_team("market_maker")  # ±50 per instrument
    start = threading.Barrier(20)
    replies: list[tuple[int, dict]] = []

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=key)
        start.wait()
        body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 5, "price": 100.0}
        reply = client.post("/orders", body, format="json")
        replies.append((reply.status_code, reply.json()))

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(replies) == 20
    assert {status for status, _ in replies} == {200}
    assert sorted(reply["status"] for _, reply in replies) == ["accepted"] * 10 + ["rejected"] * 10
    rejected = [reply for _, reply in replies if reply["status"] == "rejected"]
    assert {r["error_code"] for r in rejected} == {"POSITION_LIMIT_EXCEEDED"}
    assert {(r["details"]["limit"], r["details"]["open_buy_quantity"]) for r in rejected} == {(50, 50)}

    assert sum(Order.objects.filter(status="new").values_list("quantity", flat=True)) == 50
    assert set(Order.objects.filter(status="rejected").values_list("error_code", flat=True)) == {
        "POSITION_LIMIT_EXCEEDED"
    }
    # Orders are numbered in queue order and checked in that order: the ten first ones passed.
    statuses = list(Order.objects.order_by("id").values_list("status", flat=True))
    assert statuses == ["new"] * 10 + ["rejected"] * 10
