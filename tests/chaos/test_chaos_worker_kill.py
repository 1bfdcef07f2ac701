"""Drill 1: kill -9 the matching worker while several teams send crossing orders and cancels,
start it again; every accepted order is matched exactly once, no fill is repeated, the books
equal the database and the invariants hold. The long variant kills it three times."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from chaos_support import LONG, Trader, fills_exactly_once, order_outcomes, register_pairs, report

from exchange.models import Command, Fill, Trade

pytestmark = pytest.mark.chaos

PAIRS = 4 if LONG else 3
ORDERS_PER_TEAM = 400 if LONG else 100
KILLS = 3 if LONG else 1
CANCEL_EVERY = 10
DOWN_S = 1.0  # how long no worker runs, while orders keep being accepted


def unprocessed(up_to: int | None = None) -> int:
    pending = Command.objects.filter(processed_at__isnull=True)
    return (pending.filter(id__lte=up_to) if up_to else pending).count()


def time_priority_breaks() -> list[str]:
    """At one price, resting orders are filled oldest first (``accepted_seq``), across the restarts."""
    makers = Fill.objects.filter(liquidity_type="maker").order_by("trade_id")
    last: dict[tuple[str, str, object], int] = {}
    breaks = []
    for trade, instrument, side, price, seq in makers.values_list(
        "trade_id", "instrument_id", "side", "price", "order__accepted_seq"
    ):
        key = (instrument, side, price)
        if key in last and seq < last[key]:
            breaks.append(f"TRD_{trade}: maker accepted at {seq} filled after one accepted at {last[key]}")
        last[key] = seq
    return breaks


def test_worker_killed_under_load_matches_every_order_once(start_stack) -> None:
    stack = start_stack()
    stop = threading.Event()
    traders = [
        Trader(stack.base_url, key, side, instrument, ORDERS_PER_TEAM, stop, cancel_every=CANCEL_EVERY)
        for key, side, instrument in register_pairs(stack, PAIRS, "Kill")
    ]
    total = len(traders) * ORDERS_PER_TEAM
    started = time.monotonic()
    for trader in traders:
        trader.start()

    kills = []
    try:
        for n in range(KILLS):
            target = total * (n + 1) // (KILLS + 1)
            deadline = time.monotonic() + 60
            while sum(len(t.accepted) for t in traders) < target:
                assert time.monotonic() < deadline, "orders stopped being accepted"
                assert any(t.is_alive() for t in traders), "the load ended before the kill"
                time.sleep(0.01)
            stack.kill("worker")  # SIGKILL
            killed_at = time.monotonic()
            accepted_at_kill = sum(len(t.accepted) for t in traders)
            in_flight = unprocessed()
            time.sleep(DOWN_S)
            piled_up = unprocessed()
            last_command = Command.objects.order_by("-id").values_list("id", flat=True).first()
            stack.start("worker")
            restarted = time.monotonic()
            while unprocessed(last_command):
                assert time.monotonic() - restarted < 60, stack.logs("worker")
                time.sleep(0.05)
            kills.append({
                "accepted_before_kill": accepted_at_kill,
                "unmatched_at_kill": in_flight,
                "unmatched_at_restart": piled_up,
                "accepted_while_down": sum(len(t.accepted) for t in traders) - accepted_at_kill,
                "backlog_drained_s": round(time.monotonic() - restarted, 2),
                "kill_to_drained_s": round(time.monotonic() - killed_at, 2),
            })
    finally:
        for trader in traders:
            trader.join(timeout=120)
        stop.set()
    assert not any(t.is_alive() for t in traders)
    load_s = time.monotonic() - started
    drain_s = stack.wait_worker_drained()

    replies = [r for t in traders for r in t.replies]
    statuses = Counter((r.method, r.status) for r in replies)
    assert not [r for r in replies if r.status is None or r.status >= 500 and r.status != 504], statuses
    # A cancel answers 504 pending_cancel only when no verdict came within 5 s (worker down).
    slowest = max(r.elapsed for r in replies)

    crossing = [o for t in traders for o in t.accepted]
    passive = [o for t in traders for o in t.passive]
    assert len(crossing) == total, statuses
    assert order_outcomes(crossing) == {"filled": total}, "every crossing order fills exactly once"
    assert order_outcomes(passive) == {"cancelled": len(passive)}, "every cancel is applied"
    assert Trade.objects.count() == total // 2
    per_order = Counter(Fill.objects.values_list("order_id", flat=True))
    assert len(per_order) == total and set(per_order.values()) == {1}, "one fill per 1-lot order"
    assert fills_exactly_once() == []
    assert time_priority_breaks() == [], "makers at one price are taken in the order the engine accepted them"
    ok, output = stack.check_invariants()
    assert ok, output
    assert "Traceback" not in stack.logs("web"), stack.logs("web")

    report(
        "worker_kill",
        teams=len(traders), crossing_orders=total, passive_orders_cancelled=len(passive),
        trades=Trade.objects.count(), kills=kills, load_s=round(load_s, 2), final_drain_s=round(drain_s, 2),
        replies={f"{method} {status}": n for (method, status), n in statuses.items()},
        slowest_reply_s=round(slowest, 2),
    )
