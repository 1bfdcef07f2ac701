"""Drill 5: 1,000 WebSocket connections opened at once (200 teams × 5, the per-team limit), all
against one web process. Every one gets its ``position_snapshot`` within a bound; a sixth
connection of a team is refused with 1008; one trade then reaches all 1,000 connections.
The long variant opens the 1,000 connections, closes them and opens them again, three times.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections import Counter
from typing import Any

import pytest
import requests
import websockets
from chaos_support import LONG, percentile, report

pytestmark = pytest.mark.chaos

TEAMS = 200
PER_TEAM = 5
ROUNDS = 3 if LONG else 1
ALL_SNAPSHOTS_WITHIN_S = 30.0  # on a loaded 2-core machine; see docs/reliability.md for measurements
FAN_OUT_WITHIN_S = 10.0
FDS_NEEDED = 4096


def raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FDS_NEEDED:
        target = FDS_NEEDED if hard == resource.RLIM_INFINITY else min(FDS_NEEDED, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def open_all(ws_url: str, keys: list[str]) -> tuple[list[Any], list[float], list[str], float]:
    """Open PER_TEAM connections per key at once; (sockets, seconds to each snapshot, failures, wall time)."""
    start = asyncio.Event()

    async def one(key: str) -> tuple[Any, float | None, str | None]:
        await start.wait()
        began = time.perf_counter()
        try:
            ws = await websockets.connect(f"{ws_url}?api_key={key}", open_timeout=60, max_queue=None)
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
        except Exception as error:  # noqa: BLE001 - every failure is reported
            return None, None, f"{type(error).__name__}: {error}"
        if (frame["seq"], frame["type"]) != (1, "position_snapshot"):
            return ws, None, f"first frame {frame['type']}"
        return ws, time.perf_counter() - began, None

    tasks = [asyncio.create_task(one(key)) for key in keys for _ in range(PER_TEAM)]
    await asyncio.sleep(0.1)
    began = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - began
    sockets = [ws for ws, _, _ in results if ws is not None]
    return sockets, [s for _, s, _ in results if s is not None], [e for _, _, e in results if e], wall


async def next_of_type(ws: Any, kind: str, timeout: float) -> dict[str, Any] | None:
    deadline = time.perf_counter() + timeout
    while (left := deadline - time.perf_counter()) > 0:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=left))
        except (TimeoutError, websockets.ConnectionClosed):
            return None
        if frame["type"] == kind:
            return frame
    return None


async def drill(stack: Any, keys: list[str]) -> dict[str, Any]:
    rounds = []
    for n in range(ROUNDS):
        sockets, to_snapshot, failures, wall = await open_all(stack.ws_url, keys)
        result: dict[str, Any] = {
            "snapshots": len(to_snapshot),
            "failed": len(failures),
            "failures": dict(Counter(failures)),
            "all_snapshots_s": round(wall, 2),
            "snapshot_p50_s": round(percentile(to_snapshot, 0.5), 2),
            "snapshot_p99_s": round(percentile(to_snapshot, 0.99), 2),
            "snapshot_max_s": round(max(to_snapshot, default=0), 2),
        }
        sockets = [ws for ws in sockets if ws.state is websockets.State.OPEN]
        try:
            if n == 0:
                # One connection more for a team is refused: the limit holds under the flood too.
                async with websockets.connect(f"{stack.ws_url}?api_key={keys[0]}", open_timeout=30) as extra:
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(extra.recv(), timeout=30)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, closed.value
                # One trade reaches every connection.
                order = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "quantity": 1, "price": 100.0}
                for key, side in ((keys[1], "buy"), (keys[2], "sell")):
                    reply = await asyncio.to_thread(
                        requests.post,
                        stack.base_url + "/orders",
                        json=dict(order, side=side),
                        headers={"X-API-Key": key},
                        timeout=30,
                    )
                    assert reply.json()["status"] == "accepted", reply.text
                sent = time.perf_counter()
                trades = await asyncio.gather(*(next_of_type(ws, "trade", FAN_OUT_WITHIN_S) for ws in sockets))
                missed = sum(frame is None for frame in trades)
                result["trade_missed"] = missed
                result["trade_to_all_s"] = round(time.perf_counter() - sent, 2)
        finally:
            closing = time.perf_counter()
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
            result["close_all_s"] = round(time.perf_counter() - closing, 2)
        rounds.append(result)
        await asyncio.sleep(0.5)  # the slots are given back on close
    return {"rounds": rounds}


def test_thousand_websockets_at_once_all_get_their_snapshot(start_stack) -> None:
    from accounts.services import team_register

    limits = raise_fd_limit()  # before the stack starts: its processes inherit the limit
    began = time.perf_counter()
    keys = [team_register(f"Flood {n:03d}", "market_maker")[1] for n in range(TEAMS)]
    register_s = time.perf_counter() - began
    stack = start_stack()
    outcome = asyncio.run(drill(stack, keys))
    log = (stack.log_dir / "web.log").read_text(errors="replace")
    report(
        "ws_flood",
        teams=TEAMS,
        per_team=PER_TEAM,
        fd_limit=limits[0],
        register_teams_s=round(register_s, 2),
        channel_layer_pool_exhausted=log.count("Too many connections"),
        **outcome,
    )
    for result in outcome["rounds"]:
        assert result["failed"] == 0 and result["snapshots"] == TEAMS * PER_TEAM, (
            f"{result['failed']} of {TEAMS * PER_TEAM} connections got no snapshot: {result['failures']}"
        )
        assert result["all_snapshots_s"] < ALL_SNAPSHOTS_WITHIN_S, outcome
        assert result.get("trade_missed", 0) == 0 and result.get("trade_to_all_s", 0) < FAN_OUT_WITHIN_S, outcome
    assert "Exception in ASGI application" not in log, log[-3000:]
    ok, output = stack.check_invariants()
    assert ok, output
