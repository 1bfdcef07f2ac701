"""The invariant checks: they pass on a consistent exchange and catch a broken one."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from exchange.models import Order, Position

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
