"""WebSocket delivery through the real ASGI application and the Redis channel layer: gaps and
lag close the connection with 4008, market data is conflated, events reach every connection."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from exchange.consumers import GroupOrder
from exchange.publisher import Outbox, publish_event, team_group
from tradinggame.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

STAMP = "2024-01-15T10:00:00.000000Z"


async def connect(key: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws?api_key={key}")
    assert (await communicator.connect(timeout=5))[0]
    snapshot = await communicator.receive_json_from(timeout=5)
    assert (snapshot["seq"], snapshot["type"]) == (1, "position_snapshot")
    return communicator


async def group_message(group: str, number: int | None, frames: list[dict[str, Any]], sent_at: float | None = None) -> None:
    kind = "market.messages" if group == "market" else "team.messages"
    message = {"type": kind, "messages": frames, "group_seq": number, "sent_at": time.time() if sent_at is None else sent_at}
    await get_channel_layer().group_send(group, message)


def signal(n: int) -> dict[str, Any]:
    return {"type": "signal", "data": {"signal_type": "test", "n": n}, "timestamp": STAMP}


async def expect_slow_consumer_close(communicator: WebsocketCommunicator, timeout: float = 5) -> None:
    closed = await communicator.receive_output(timeout=timeout)
    assert closed == {"type": "websocket.close", "code": 4008, "reason": "slow consumer"}


async def test_a_skipped_group_number_closes_with_4008_and_sends_nothing_past_the_gap(make_team, settings) -> None:
    settings.EXCHANGE_WS_GAP_GRACE_S = 0.3
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await group_message(team_group(team.pk), 41, [signal(1)])  # the first number seen is the baseline
    frame = await ws.receive_json_from(timeout=5)
    assert (frame["seq"], frame["data"]["n"]) == (2, 1)
    await group_message(team_group(team.pk), 43, [signal(3)])  # 42 was lost on the way
    started = time.monotonic()
    await expect_slow_consumer_close(ws)
    assert time.monotonic() - started >= 0.25  # it waited for a straggler first
    await ws.disconnect()


async def test_numbers_out_of_order_within_the_grace_are_put_back_in_order(make_team, settings) -> None:
    settings.EXCHANGE_WS_GAP_GRACE_S = 0.3
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    for number in (7, 9, 8, 6):  # 9 overtook 8; 6 was numbered before the baseline but came after it
        await group_message(team_group(team.pk), number, [signal(number)])
    frames = [await ws.receive_json_from(timeout=5) for _ in range(4)]
    assert [(f["seq"], f["data"]["n"]) for f in frames] == [(2, 7), (3, 8), (4, 9), (5, 6)]
    assert await ws.receive_nothing(timeout=0.6)  # no close once the gap is filled
    await ws.disconnect()


async def test_the_grace_starts_again_whenever_a_gap_fills() -> None:
    delivered: list[int] = []
    lost: list[bool] = []
    order = GroupOrder(0.2, lambda m: delivered.append(m["group_seq"]), lambda: lost.append(True))
    for number in (1, 3, 5):
        order.receive({"group_seq": number})
    await asyncio.sleep(0.15)
    order.receive({"group_seq": 2})  # progress; 4 is still missing
    await asyncio.sleep(0.15)
    assert not lost  # 0.3 s since 3 was held, but only 0.15 s since the last progress
    order.receive({"group_seq": 4})
    assert delivered == [1, 2, 3, 4, 5]
    await asyncio.sleep(0.3)
    assert not lost


async def test_a_gap_in_the_public_group_closes_with_4008(make_team, settings) -> None:
    settings.EXCHANGE_WS_GAP_GRACE_S = 0.2
    _, key = await sync_to_async(make_team)()
    ws = await connect(key)
    trade = {"type": "trade", "data": {"instrument_id": "SPX_4500_CALL", "trade_id": "TRD_1"}, "timestamp": STAMP}
    await group_message("market", 5, [trade])
    assert (await ws.receive_json_from(timeout=5))["type"] == "trade"
    await group_message("market", 7, [trade])
    await expect_slow_consumer_close(ws)
    await ws.disconnect()


async def test_frames_older_than_the_maximum_lag_close_with_4008(make_team, settings) -> None:
    settings.EXCHANGE_WS_MAX_LAG_S = 1.0
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await group_message(team_group(team.pk), 1, [signal(1)], sent_at=time.time() - 0.2)
    assert (await ws.receive_json_from(timeout=5))["data"]["n"] == 1
    await group_message(team_group(team.pk), 2, [signal(2)], sent_at=time.time() - 5)
    await expect_slow_consumer_close(ws)
    await ws.disconnect()


async def test_a_backlog_over_the_limit_closes_with_4008(make_team, settings) -> None:
    settings.EXCHANGE_WS_MAX_BACKLOG = 5
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await group_message(team_group(team.pk), 1, [signal(n) for n in range(20)])
    output = await ws.receive_output(timeout=5)
    while output["type"] == "websocket.send":  # frames already handed over may precede the close
        output = await ws.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4008, "reason": "slow consumer"}
    await ws.disconnect()


async def test_outbox_frames_carry_numbers_that_rise_by_one_per_group(make_team) -> None:
    team, key = await sync_to_async(make_team)()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(team_group(team.pk), channel)
    await layer.group_add("market", channel)
    for _ in range(3):
        outbox = Outbox()
        outbox.to_team(team.pk, "signal", {"signal_type": "test"}, STAMP)
        outbox.to_market("trade", {"instrument_id": "SPX_4500_CALL"}, STAMP)
        await outbox._send_all()
    messages = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(6)]
    for kind in ("team.messages", "market.messages"):
        numbers = [m["group_seq"] for m in messages if m["type"] == kind]
        assert numbers == list(range(numbers[0], numbers[0] + 3))
    assert all(time.time() - m["sent_at"] < 5 for m in messages)
    await layer.group_discard(team_group(team.pk), channel)
    await layer.group_discard("market", channel)


def market_data(n: int, instrument: str = "SPX_4500_CALL") -> dict[str, Any]:
    return {"instrument_id": instrument, "bid": 100.0 + n / 100, "bid_size": n, "ask": None, "ask_size": None, "last": None,
            "last_size": None}


async def publish_market(*frames: tuple[str, dict[str, Any]]) -> None:
    outbox = Outbox()
    for msg_type, data in frames:
        outbox.to_market(msg_type, data, STAMP)
    await outbox._send_all()


async def collect(ws: WebsocketCommunicator, seconds: float) -> list[tuple[float, dict[str, Any]]]:
    """Every frame arriving within ``seconds``, with its arrival time."""
    frames = []
    deadline = time.monotonic() + seconds
    # receive_nothing, unlike a receive that times out, leaves the application running
    while not await ws.receive_nothing(timeout=deadline - time.monotonic(), interval=0.001):
        frame = await ws.receive_json_from()
        frames.append((time.monotonic(), frame))
    return frames


async def test_a_burst_of_market_data_is_conflated_and_the_last_state_wins(make_team) -> None:
    _, key = await sync_to_async(make_team)()
    ws = await connect(key)
    collecting = asyncio.create_task(collect(ws, 0.8))  # arrival times are taken as frames come
    started = time.monotonic()
    for n in range(1, 51):
        await publish_market(("market_data", market_data(n)))
    published = time.monotonic()
    frames = await collecting
    md = [(at, f) for at, f in frames if f["type"] == "market_data"]
    assert [f["seq"] for _, f in frames] == list(range(2, 2 + len(frames)))
    assert md[-1][1]["data"]["bid_size"] == 50  # the final state arrives, nothing after it
    assert md[-1][0] <= published + 0.2  # flushed at the end of its window, not later
    within = [f for at, f in md if at - started <= 0.2]
    assert len(within) <= 2 + (published - started) / 0.1, (len(within), published - started)
    gaps = [b - a for (a, _), (b, _) in zip(md, md[1:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps), gaps  # at most ten a second
    await ws.disconnect()


async def test_trades_are_never_conflated_and_instruments_are_conflated_separately(make_team) -> None:
    _, key = await sync_to_async(make_team)()
    ws = await connect(key)
    for n in range(1, 31):
        await publish_market(
            ("market_data", market_data(n, "SPX_4500_CALL")),
            ("trade", {"instrument_id": "SPX_4500_CALL", "trade_id": f"TRD_{n}", "price": 100.0, "quantity": 1}),
            ("market_data", market_data(n, "SPX_4400_PUT")),
        )
    frames = [f for _, f in await collect(ws, 0.6)]
    assert [f["seq"] for f in frames] == list(range(2, 2 + len(frames)))
    assert [f["data"]["trade_id"] for f in frames if f["type"] == "trade"] == [f"TRD_{n}" for n in range(1, 31)]
    for instrument in ("SPX_4500_CALL", "SPX_4400_PUT"):
        states = [f["data"]["bid_size"] for f in frames if f["type"] == "market_data" and f["data"]["instrument_id"] == instrument]
        assert 1 <= len(states) < 30 and states[-1] == 30 and states == sorted(states)
    await ws.disconnect()


async def test_subscribe_narrows_instrument_frames_but_not_events(make_team) -> None:
    _, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await ws.send_json_to({"action": "subscribe", "instruments": ["SPX_4400_PUT"]})
    assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
    await publish_market(
        ("market_data", market_data(1, "SPX_4500_CALL")),
        ("trade", {"instrument_id": "SPX_4500_CALL", "trade_id": "TRD_1"}),
        ("trade", {"instrument_id": "SPX_4400_PUT", "trade_id": "TRD_2"}),
        ("event", {"event_type": "halt", "scope": "instrument", "instrument_id": "SPX_4500_CALL"}),
    )
    frames = [f for _, f in await collect(ws, 0.4)]
    assert [(f["seq"], f["type"]) for f in frames] == [(3, "trade"), (4, "event")]
    assert frames[0]["data"]["trade_id"] == "TRD_2" and frames[1]["data"]["event_type"] == "halt"
    await ws.disconnect()


async def test_publish_event_reaches_every_connection_at_once(make_team) -> None:
    _, key = await sync_to_async(make_team)()
    _, other_key = await sync_to_async(make_team)()
    connections = [await connect(key), await connect(key), await connect(other_key)]
    await connections[2].send_json_to({"action": "subscribe", "instruments": ["SPX_4400_PUT"]})
    assert (await connections[2].receive_json_from(timeout=5))["type"] == "subscribed"
    await sync_to_async(publish_event)("phase_change", {"phase": "continuous", "previous_phase": "pre_open"})
    for ws in connections:
        frame = await ws.receive_json_from(timeout=2)
        assert frame["type"] == "event" and frame["timestamp"].endswith("Z")
        assert frame["data"] == {"event_type": "phase_change", "phase": "continuous", "previous_phase": "pre_open"}
        await ws.disconnect()


async def test_an_idle_connection_outlives_the_layers_blocking_reads(make_team) -> None:
    """The layer's 5 s blocking pops must not race the Redis client's socket timeout."""
    _, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await asyncio.sleep(11)
    await ws.send_json_to({"action": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    await ws.disconnect()
