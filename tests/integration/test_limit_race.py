"""Twenty orders of one team racing a position limit from parallel connections never push it
past the limit (a row lock on PostgreSQL; immediate transactions on SQLite)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from exchange.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def test_parallel_orders_respect_the_position_limit(make_team, instruments, no_rate_limit) -> None:
    _, key = make_team("market_maker")  # ±50 per instrument
    start = threading.Barrier(20)
    statuses: list[str] = []

    def send() -> None:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=key)
        start.wait()
        try:
            reply = client.post("/orders", {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy",
                                            "quantity": 5, "price": 100.0}, format="json")
            statuses.append(reply.json()["status"] if reply.status_code == 200 else f"http {reply.status_code}")
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == ["accepted"] * 10 + ["rejected"] * 10
    open_buys = sum(Order.objects.filter(status="pending_new").values_list("quantity", flat=True))
    assert open_buys == 50
    assert set(Order.objects.filter(status="rejected").values_list("error_code", flat=True)) == {"POSITION_LIMIT_EXCEEDED"}
