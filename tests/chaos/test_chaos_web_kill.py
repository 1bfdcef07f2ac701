"""Drill 3: kill -9 the web process while bots trade with a WebSocket open, start it again.

Each bot reconnects, gets its ``position_snapshot`` and catches up with
``GET /fills?since_trade_id=<the last trade it saw>``. What it saw before the kill, plus the
catch-up, plus what its new connection brings, equals the database's fills for its team: nothing
missing, nothing twice on one connection, and its last known position is the database's.
The long variant kills the web process twice.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
import requests
import websockets
from chaos_support import INSTRUMENTS, LONG, Trader, fills_exactly_once, orders_per_client_id, report

from accounts.models import Team
from exchange.models import Fill, Position

pytestmark = pytest.mark.chaos

PAIRS = 3
KILLS = 2 if LONG else 1
FILLS_BEFORE_KILL = 150  # per kill, seen by all bots together
BACKLOG_S = 0.3
AFTER_S = 8.0 if LONG else 3.0


def trade_number(trade_id: str) -> int:
    return int(trade_id[4:])


class Bot:
    """A team's WebSocket client that reconnects and resyncs as the API documents."""

    def __init__(self, name: str, key: str, ws_url: str, base_url: str) -> None:
        self.name, self.key, self.ws_url, self.base_url = name, key, ws_url, base_url
        self.connections: list[list[tuple[int, int, int]]] = []  # per connection: (trade, order, position)
        self.caught_up: list[tuple[int, int, int]] = []  # from GET /fills after a reconnect
        self.snapshots: list[dict[str, Any]] = []
        self.last_trade: int | None = None
        self.seq_errors: list[str] = []
        self.connected = asyncio.Event()
        self.connected_at: list[float] = []
        self.lost_at: list[float] = []
        self.catch_up_calls: list[str] = []

    def record(self, fill: tuple[int, int, int], into: list[tuple[int, int, int]]) -> None:
        into.append(fill)
        self.last_trade = max(self.last_trade or 0, fill[0])

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with websockets.connect(
                    f"{self.ws_url}?api_key={self.key}", open_timeout=5, max_queue=None
                ) as ws:
                    first = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                    assert (first["seq"], first["type"]) == (1, "position_snapshot"), first
                    self.snapshots.append(first["data"])
                    fills: list[tuple[int, int, int]] = []
                    if self.connections:  # a reconnect: fetch what happened since the last trade seen
                        query = f"?since_trade_id=TRD_{self.last_trade}" if self.last_trade else ""
                        self.catch_up_calls.append(query)
                        reply = await asyncio.to_thread(
                            requests.get, f"{self.base_url}/fills{query}", headers={"X-API-Key": self.key}, timeout=10
                        )
                        reply.raise_for_status()
                        for f in reply.json()["fills"]:
                            self.record(
                                (trade_number(f["trade_id"]), int(f["order_id"][4:]), f["position"]), self.caught_up
                            )
                    self.connections.append(fills)
                    self.connected_at.append(time.monotonic())
                    self.connected.set()
                    seq = 1
                    while not stop.is_set():
                        try:
                            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=0.25))
                        except TimeoutError:
                            continue
                        if frame["seq"] != seq + 1:
                            self.seq_errors.append(
                                f"connection {len(self.connections)}: seq {frame['seq']} after {seq}"
                            )
                        seq = frame["seq"]
                        if frame["type"] == "execution_report":
                            data = frame["data"]
                            self.record(
                                (trade_number(data["trade_id"]), int(data["order_id"][4:]), data["position"]), fills
                            )
            except (websockets.ConnectionClosed, OSError, TimeoutError):
                if self.connected.is_set():
                    self.lost_at.append(time.monotonic())
                self.connected.clear()
                await asyncio.sleep(0.1)


class BotRunner(threading.Thread):
    """The bots' event loop, in a thread of its own (the test thread kills and restarts processes)."""

    def __init__(self, bots: list[Bot]) -> None:
        super().__init__(daemon=True)
        self.bots = bots
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        async def main() -> None:
            self.stop_event = asyncio.Event()
            await asyncio.gather(*(bot.run(self.stop_event) for bot in self.bots))

        try:
            self.loop.run_until_complete(main())
        except BaseException as error:  # reported by the test
            self.error = error

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.join(timeout=30)

    def seen(self) -> int:
        return sum(len(c) for bot in self.bots for c in bot.connections)

    def all_connected(self) -> bool:
        return all(bot.connected.is_set() for bot in self.bots)


def test_web_killed_bots_resync_from_snapshot_and_fills(start_stack) -> None:
    stack = start_stack()
    bots, traders = [], []
    stop = threading.Event()
    for n in range(PAIRS):
        for side in ("buy", "sell"):
            name = f"Resync {n} {side}"
            key = stack.register(name, "market_maker")
            bots.append(Bot(name, key, stack.ws_url, stack.base_url))
            traders.append(
                Trader(stack.base_url, key, side, INSTRUMENTS[n % len(INSTRUMENTS)], None, stop, pause_s=0.005)
            )
    runner = BotRunner(bots)
    runner.start()
    deadline = time.monotonic() + 20
    while not runner.all_connected():
        assert time.monotonic() < deadline and runner.is_alive(), runner.error
        time.sleep(0.05)
    for trader in traders:
        trader.start()

    kills = []
    try:
        for _ in range(KILLS):
            floor = runner.seen() + FILLS_BEFORE_KILL
            deadline = time.monotonic() + 60
            while runner.seen() < floor:
                assert time.monotonic() < deadline, "fills stopped arriving over the WebSocket"
                time.sleep(0.02)
            connections_before = [len(bot.connections) for bot in bots]
            # Orders pile up unmatched for a moment (no worker), then the web process dies and the
            # worker comes back and matches the backlog while no web process runs: those fills
            # reach no WebSocket, and only the catch-up can recover them. (Stopping the worker with
            # SIGSTOP instead could freeze it inside a write transaction, which blocks every order.)
            stack.kill("worker")
            time.sleep(BACKLOG_S)
            stack.kill("web")  # SIGKILL: no close frames, no goodbye
            killed_at = time.monotonic()
            backlog = sum(stack.waiting_commands())
            stack.start("worker")
            stack.wait_worker_drained(timeout=30)
            matched_while_down_s = time.monotonic() - killed_at
            seen_at_kill = runner.seen()
            stack.start("web")
            started_at = time.monotonic()
            stack.wait_healthy()
            healthy_at = time.monotonic()
            deadline = time.monotonic() + 30
            while not all(len(bot.connections) > n for bot, n in zip(bots, connections_before, strict=True)):
                assert time.monotonic() < deadline, "a bot could not reconnect:\n" + stack.logs("web")[-3000:]
                time.sleep(0.02)
            reconnected_at = max(bot.connected_at[-1] for bot in bots)
            kills.append(
                {
                    "fills_seen_before_kill": seen_at_kill,
                    "commands_unmatched_at_kill": backlog,
                    "backlog_matched_while_web_down_after_s": round(matched_while_down_s, 2),
                    "web_start_to_healthy_s": round(healthy_at - started_at, 2),
                    "kill_to_all_bots_resynced_s": round(reconnected_at - killed_at, 2),
                    "web_start_to_all_bots_resynced_s": round(reconnected_at - started_at, 2),
                }
            )
            time.sleep(AFTER_S)
    finally:
        stop.set()
        for trader in traders:
            trader.join(timeout=30)
    drain_s = stack.wait_worker_drained()
    time.sleep(1.0)  # the last frames of the last batch

    # Each bot waits for the fills it is still owed (bounded), then stops.
    expected = {
        bot.name: set(Fill.objects.filter(team=Team.objects.get(name=bot.name)).values_list("trade_id", "order_id"))
        for bot in bots
    }
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all({(t, o) for c in [*b.connections, b.caught_up] for t, o, _ in c} >= expected[b.name] for b in bots):
            break
        time.sleep(0.1)
    runner.stop()
    assert runner.error is None, repr(runner.error)

    per_bot = {}
    for bot in bots:
        team = Team.objects.get(name=bot.name)
        on_ws = [(t, o) for c in bot.connections for t, o, _ in c]
        union = set(on_ws) | {(t, o) for t, o, _ in bot.caught_up}
        assert not bot.seq_errors, (bot.name, bot.seq_errors[:5])
        for n, connection_fills in enumerate(bot.connections):
            twice = [f for f, k in Counter((t, o) for t, o, _ in connection_fills).items() if k > 1]
            assert not twice, f"{bot.name}: connection {n + 1} delivered fills twice: {twice[:5]}"
        assert len({(t, o) for t, o, _ in bot.caught_up}) == len(bot.caught_up), "GET /fills repeated a fill"
        missing, extra = expected[bot.name] - union, union - expected[bot.name]
        assert not missing and not extra, (
            f"{bot.name}: missing {sorted(missing)[:5]}, not in the database {sorted(extra)[:5]}"
        )
        # Its last known position (from the newest fill it holds) is the database's.
        newest = max((f for c in [*bot.connections, bot.caught_up] for f in c), default=None)
        position = Position.objects.filter(team=team).values_list("quantity", flat=True).first() or 0
        assert (newest[2] if newest else 0) == position, (bot.name, newest, position)
        per_bot[bot.name] = {
            "fills": len(expected[bot.name]),
            "over_ws": len(set(on_ws)),
            "from_catch_up": len({(t, o) for t, o, _ in bot.caught_up}),
            "only_from_catch_up": len({(t, o) for t, o, _ in bot.caught_up} - set(on_ws)),
            "connections": len(bot.connections),
        }
    assert fills_exactly_once() == []
    assert orders_per_client_id() == [], "an order resent after the web process died was taken twice"
    ok, output = stack.check_invariants()
    assert ok, output

    replies = [r for t in traders for r in t.replies]
    report(
        "web_kill",
        bots=len(bots),
        kills=kills,
        final_drain_s=round(drain_s, 2),
        fills_total=sum(v["fills"] for v in per_bot.values()),
        fills_recovered_only_by_catch_up=sum(v["only_from_catch_up"] for v in per_bot.values()),
        order_requests=dict(Counter(str(r.status) for r in replies)),
        per_bot=per_bot,
    )
