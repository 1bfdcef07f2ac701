"""Kill -9 the matching worker while orders are being accepted, start it again: every accepted
order is matched exactly once and the books balance."""

from __future__ import annotations

import threading
import time
from collections import Counter
from io import StringIO

import pytest
import requests
from django.core.management import call_command

from exchange.models import Command, Fill, Order, Position, Trade

pytestmark = pytest.mark.e2e

PAIRS = 150


def test_worker_killed_mid_load_loses_and_repeats_nothing(stack, relaxed_limits) -> None:
    first, second = stack.register("Crash A", "market_maker"), stack.register("Crash B", "market_maker")
    accepted: list[str] = []
    session = requests.Session()

    def send(key: str, side: str) -> None:
        reply = session.post(stack.base_url + "/orders", headers={"X-API-Key": key}, timeout=10, json={
            "instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": side, "quantity": 1, "price": 100.0,
        }).json()
        assert reply["status"] == "accepted", reply
        accepted.append(reply["order_id"])

    def load() -> None:
        # Each pair crosses: A buys and B sells, then A sells and B buys, so positions stay small.
        for n in range(PAIRS):
            a_side, b_side = ("buy", "sell") if n % 2 == 0 else ("sell", "buy")
            send(first, a_side)
            send(second, b_side)

    sender = threading.Thread(target=load)
    sender.start()
    deadline = time.monotonic() + 60
    while len(accepted) < PAIRS // 2 and sender.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(accepted) >= PAIRS // 2, "orders stopped being accepted before the kill"
    stack.kill("worker")  # SIGKILL, mid-stream
    killed_at = len(accepted)
    time.sleep(0.5)
    stack.start("worker")
    sender.join(timeout=120)
    assert not sender.is_alive() and len(accepted) == 2 * PAIRS
    assert killed_at < 2 * PAIRS, "the kill must land while orders are still coming in"

    deadline = time.monotonic() + 60
    while Command.objects.filter(processed_at__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Command.objects.filter(processed_at__isnull=True).exists(), stack.logs("worker")

    orders = Order.objects.filter(pk__in=[int(o[4:]) for o in accepted])
    assert Counter(orders.values_list("status", flat=True)) == {"filled": 2 * PAIRS}
    assert Trade.objects.count() == PAIRS
    assert Fill.objects.count() == 2 * PAIRS
    per_order = Counter(Fill.objects.values_list("order_id", flat=True))
    assert set(per_order.values()) == {1}, "no fill is ever repeated"
    assert sum(Position.objects.values_list("quantity", flat=True)) == 0
    for order in orders:
        assert order.filled_quantity + order.remaining_quantity + order.cancelled_quantity == order.quantity
    out = StringIO()
    call_command("check_invariants", stdout=out)  # 1-5, the restarted worker's books included
    assert out.getvalue().count("ok  ") == 5, out.getvalue()
