"""The invariant checks: they pass on a consistent exchange and catch a broken one."""

from __future__ import annotations

import random
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from exchange.models import Fill, JournalEntry, Order, Position, Trade

pytestmark = pytest.mark.django_db(transaction=True)


def trade(api, buyer, seller) -> None:
    body = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "quantity": 5, "price": 100.0}
    assert api(buyer).post("/orders", dict(body, side="buy", quantity=8), format="json").json()["status"] == "accepted"
    assert api(seller).post("/orders", dict(body, side="sell"), format="json").json()["status"] == "accepted"


def test_all_invariants_hold_after_trading(make_team, instruments, api, celery_worker) -> None:
    _, buyer = make_team()
    _, seller = make_team()
    trade(api, buyer, seller)
    out = StringIO()
    call_command("check_invariants", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and all(line.startswith("ok") for line in lines), lines


def test_all_invariants_hold_after_a_burst_of_parallel_orders_and_cancels(
    make_team, instruments, relaxed_limits, matching
) -> None:
    """Six teams send crossing orders, cancels and cancel-alls at once from their own threads."""
    keys = [make_team(role)[1] for role in ("market_maker", "hedge_fund", "arbitrage", "retail") * 2][:6]
    start = threading.Barrier(len(keys))
    answers: list[int] = []
    failures: list[str] = []

    def trader(key: str, seed: int) -> None:
        rng = random.Random(seed)
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=key)
        mine: list[str] = []
        start.wait()
        for _ in range(25):
            roll = rng.random()
            if roll < 0.15 and mine:
                response = client.delete(f"/orders/{mine.pop(rng.randrange(len(mine)))}")
            elif roll < 0.2:
                response = client.delete("/orders")
            else:
                body = {
                    "instrument_id": rng.choice(instruments[2:]),
                    "order_type": "limit" if rng.random() < 0.85 else "market",
                    "side": rng.choice(("buy", "sell")),
                    "quantity": rng.randint(1, 5),
                }
                if body["order_type"] == "limit":
                    body["price"] = rng.choice((99.0, 99.5, 100.0, 100.5, 101.0))
                    body["time_in_force"] = rng.choice(("gtc", "gtc", "day", "ioc"))
                response = client.post("/orders", body, format="json")
                if response.status_code == 200 and response.json()["status"] == "accepted":
                    mine.append(response.json()["order_id"])
            answers.append(response.status_code)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.content[:200]!r}")

    threads = [threading.Thread(target=trader, args=(key, n)) for n, key in enumerate(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 25 * len(keys) and failures == []
    assert Trade.objects.exists()  # the burst did trade (the prices cross)
    assert Fill.objects.count() == 2 * Trade.objects.count()
    # Each request was one queued command, decided and journalled once.
    assert JournalEntry.objects.filter(kind__in=("s", "c", "ca")).count() == len(answers)
    out = StringIO()
    call_command("check_invariants", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and all(line.startswith("ok") for line in lines), lines


def test_a_tampered_position_and_book_are_caught(make_team, instruments, api, celery_worker) -> None:
    buyer_team, buyer = make_team()
    _, seller = make_team()
    trade(api, buyer, seller)
    call_command("check_invariants", stdout=StringIO())  # the worker has taken everything
    Position.objects.filter(team=buyer_team).update(quantity=7)
    Order.objects.filter(status="partially_filled").update(remaining_quantity=1, cancelled_quantity=2)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_invariants", stdout=out)
    text = out.getvalue()
    assert "FAIL 1 conservation" in text and "FAIL 2 positions and cash" in text
    assert "FAIL 5 books equal the database" in text and "books (" in text
