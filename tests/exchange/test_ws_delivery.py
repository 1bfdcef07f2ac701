"""WebSocket delivery through the real ASGI application and the Redis pub/sub channel layer:
messages are taken in (epoch, group_seq) order, a gap, a full backlog or lag closes the
connection with 4008, and the subscription narrows public frames but not events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from pytest_django.fixtures import Settings

from accounts.models import Team
from exchange.delivery import MARKET_GROUP, group_channel, team_group
from exchange.matching.publish import Publisher
from exchange.matching.queue import WorkerLink
from exchange.matching.worker import Batch
from infra.redis_clients import async_client, sync_client
from tradinggame.asgi import application

MakeTeam = Callable[..., tuple[Team, str]]

pytestmark = pytest.mark.django_db(transaction=True)

STAMP = "2024-01-15T10:00:00.000000Z"


async def connect(key: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws?api_key={key}")
    assert (await communicator.connect(timeout=5))[0]
    snapshot = await communicator.receive_json_from(timeout=5)
    assert (snapshot["seq"], snapshot["type"]) == (1, "position_snapshot")
    return communicator


def layer_message(
    group: str, epoch: str, number: int, frames: list[list[Any]], sent_at: float | None = None
) -> dict[str, Any]:
    return {
        "type": "market.messages" if group == MARKET_GROUP else "team.messages",
        "epoch": epoch,
        "group_seq": number,
        "sent_at": time.time() if sent_at is None else sent_at,
        "frames": frames,
    }


async def publish(group: str, epoch: str, number: int, frames: list[list[Any]], sent_at: float | None = None) -> None:
    """As the matching worker does; the pub/sub layer's ``group_send`` is one PUBLISH of the same bytes."""
    await get_channel_layer().group_send(group, layer_message(group, epoch, number, frames, sent_at))


def signal(n: int) -> list[Any]:
    return ["signal", STAMP, json.dumps({"signal_type": "test", "n": n}), None]


def public(frame_type: str, data: dict[str, Any]) -> list[Any]:
    return [frame_type, STAMP, json.dumps(data, separators=(",", ":")), data.get("instrument_id")]


async def expect_close(communicator: WebsocketCommunicator, code: int = 4008, reason: str = "slow consumer") -> None:
    """Frames already handed to the socket may come first; then the close, and nothing else."""
    output = await communicator.receive_output(timeout=5)
    while output["type"] == "websocket.send":
        output = await communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": code, "reason": reason}


async def test_a_raw_publish_to_the_group_channel_is_delivered_with_its_data_as_published(make_team: MakeTeam) -> None:
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    layer = get_channel_layer()
    prefix = django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    frames = [["execution_report", STAMP, '{"order_id":"ORD_1","executed_price":100.50}', "SPX_4500_CALL"]]
    payload = layer.serialize(layer_message(team_group(team.pk), "worker-1", 1, frames))
    await async_client().publish(group_channel(prefix, team_group(team.pk)), payload)
    text = await ws.receive_from(timeout=5)
    assert text == (
        '{"seq":2,"type":"execution_report","timestamp":"2024-01-15T10:00:00.000000Z",'
        '"data":{"order_id":"ORD_1","executed_price":100.50}}'
    )
    await ws.disconnect()


async def test_numbers_in_sequence_are_delivered_without_a_seq_gap(make_team: MakeTeam) -> None:
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    for number in range(41, 51):  # the first number heard is the baseline
        await publish(team_group(team.pk), "e1", number, [signal(number), signal(number)])
    frames = [await ws.receive_json_from(timeout=5) for _ in range(20)]
    assert [f["seq"] for f in frames] == list(range(2, 22))
    assert [f["data"]["n"] for f in frames] == [n for n in range(41, 51) for _ in range(2)]
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_a_skipped_group_number_closes_with_4008_at_once_and_sends_nothing_past_the_gap(
    make_team: MakeTeam,
) -> None:
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await publish(team_group(team.pk), "e1", 41, [signal(41)])
    frame = await ws.receive_json_from(timeout=5)
    assert (frame["seq"], frame["data"]["n"]) == (2, 41)
    started = time.monotonic()
    await publish(team_group(team.pk), "e1", 43, [signal(43)])  # 42 was lost on the way
    output = await ws.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4008, "reason": "slow consumer"}
    assert time.monotonic() - started < 1.0  # no grace: within an epoch the order is the publish order
    await ws.disconnect()


async def test_a_new_epoch_is_a_new_baseline(make_team: MakeTeam) -> None:
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await publish(team_group(team.pk), "before-restart", 900, [signal(1)])
    await publish(team_group(team.pk), "before-restart", 901, [signal(2)])
    await publish(team_group(team.pk), "after-restart", 1, [signal(3)])
    await publish(team_group(team.pk), "after-restart", 2, [signal(4)])
    frames = [await ws.receive_json_from(timeout=5) for _ in range(4)]
    assert [(f["seq"], f["data"]["n"]) for f in frames] == [(2, 1), (3, 2), (4, 3), (5, 4)]
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_a_gap_in_the_public_group_closes_with_4008(make_team: MakeTeam) -> None:
    _, key = await sync_to_async(make_team)()
    ws = await connect(key)
    trade = public("trade", {"instrument_id": "SPX_4500_CALL", "trade_id": "TRD_1"})
    await publish(MARKET_GROUP, "e1", 5, [trade])
    assert (await ws.receive_json_from(timeout=5))["type"] == "trade"
    await publish(MARKET_GROUP, "e1", 7, [trade])
    await expect_close(ws)
    await ws.disconnect()


async def test_frames_older_than_the_maximum_lag_close_with_4008(make_team: MakeTeam, settings: Settings) -> None:
    settings.EXCHANGE_WS_MAX_LAG_S = 1.0
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await publish(team_group(team.pk), "e1", 1, [signal(1)], sent_at=time.time() - 0.2)
    assert (await ws.receive_json_from(timeout=5))["data"]["n"] == 1
    await publish(team_group(team.pk), "e1", 2, [signal(2)], sent_at=time.time() - 5)
    await expect_close(ws)
    await ws.disconnect()


async def test_a_backlog_over_the_limit_closes_with_4008(make_team: MakeTeam, settings: Settings) -> None:
    settings.EXCHANGE_WS_MAX_BACKLOG = 5
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await publish(team_group(team.pk), "e1", 1, [signal(n) for n in range(20)])
    await expect_close(ws)
    await ws.disconnect()


def batch_of(private: dict[int, list[Any]] | None = None, public: list[Any] | None = None) -> Batch:
    batch = Batch(now=datetime.now(UTC), stamp=STAMP)
    for team_pk, frames in (private or {}).items():
        batch.private[team_pk].extend(frames)
    batch.public.extend(public or [])
    return batch


def entry(kind: str, data: dict[str, Any]) -> list[Any]:
    return [kind, STAMP, orjson.dumps(data).decode(), data.get("instrument_id")]


PUBLISHER = Publisher(WorkerLink(sync_client()), "tests")


async def test_worker_messages_carry_its_epoch_and_numbers_rising_by_one_per_group(make_team: MakeTeam) -> None:
    team, _ = await sync_to_async(make_team)()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(team_group(team.pk), channel)
    await layer.group_add(MARKET_GROUP, channel)
    publisher = Publisher(WorkerLink(sync_client()), "epoch-1")
    for _ in range(3):
        batch = batch_of(
            {team.pk: [entry("signal", {"signal_type": "test"})]},
            [entry("trade", {"instrument_id": "SPX_4500_CALL", "price": 100.5})],
        )
        await sync_to_async(publisher.send)(batch, finished_inflight=False)
    messages = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(6)]
    for kind in ("team.messages", "market.messages"):
        numbers = [m["group_seq"] for m in messages if m["type"] == kind]
        assert numbers == [1, 2, 3]
    assert {m["epoch"] for m in messages} == {"epoch-1"}
    assert all(time.time() - m["sent_at"] < 5 for m in messages)
    trade = next(m for m in messages if m["type"] == "market.messages")["frames"]
    assert trade == [["trade", STAMP, '{"instrument_id":"SPX_4500_CALL","price":100.5}', "SPX_4500_CALL"]]
    await layer.group_discard(team_group(team.pk), channel)
    await layer.group_discard(MARKET_GROUP, channel)


def market_data(n: int, instrument: str = "SPX_4500_CALL") -> dict[str, Any]:
    return {"instrument_id": instrument, "bid": 100.0 + n / 100, "bid_size": n, "ask": None, "ask_size": None}


async def publish_market(*frames: tuple[str, dict[str, Any]]) -> None:
    batch = batch_of(public=[entry(msg_type, data) for msg_type, data in frames])
    await sync_to_async(PUBLISHER.send)(batch, finished_inflight=False)


async def collect(ws: WebsocketCommunicator, seconds: float) -> list[dict[str, Any]]:
    """Every frame arriving within ``seconds``."""
    frames = []
    deadline = time.monotonic() + seconds
    # receive_nothing, unlike a receive that times out, leaves the application running
    while not await ws.receive_nothing(timeout=deadline - time.monotonic(), interval=0.001):
        frames.append(await ws.receive_json_from())
    return frames


async def test_market_data_is_forwarded_as_published_the_publisher_conflates(make_team: MakeTeam) -> None:
    _, key = await sync_to_async(make_team)()
    ws = await connect(key)
    for n in range(1, 51):
        await publish_market(("market_data", market_data(n)))
    frames = await collect(ws, 0.5)
    assert [f["seq"] for f in frames] == list(range(2, 52))
    assert [f["data"]["bid_size"] for f in frames] == list(range(1, 51))
    await ws.disconnect()


async def test_subscribe_narrows_instrument_frames_but_not_events_or_underlyings(make_team: MakeTeam) -> None:
    _, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await ws.send_json_to({"action": "subscribe", "instruments": ["SPX_4400_PUT"]})
    assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
    await publish_market(
        ("market_data", market_data(1, "SPX_4500_CALL")),
        ("trade", {"instrument_id": "SPX_4500_CALL", "trade_id": "TRD_1"}),
        ("trade", {"instrument_id": "SPX_4400_PUT", "trade_id": "TRD_2"}),
        ("event", {"event_type": "halt", "scope": "instrument", "instrument_id": "SPX_4500_CALL"}),
        ("underlying", {"symbol": "SPX", "price": 4412.25}),
    )
    frames = await collect(ws, 0.4)
    assert [(f["seq"], f["type"]) for f in frames] == [(3, "trade"), (4, "event"), (5, "underlying")]
    assert frames[0]["data"]["trade_id"] == "TRD_2" and frames[1]["data"]["event_type"] == "halt"
    await ws.send_json_to({"action": "subscribe", "instruments": []})  # all again
    assert (await ws.receive_json_from(timeout=5))["data"] == {"instruments": []}
    await publish_market(("trade", {"instrument_id": "SPX_4500_CALL", "trade_id": "TRD_3"}))
    assert (await ws.receive_json_from(timeout=5))["data"]["trade_id"] == "TRD_3"
    await ws.disconnect()


async def test_an_event_reaches_every_connection_at_once(make_team: MakeTeam) -> None:
    _, key = await sync_to_async(make_team)()
    _, other_key = await sync_to_async(make_team)()
    connections = [await connect(key), await connect(key), await connect(other_key)]
    await connections[2].send_json_to({"action": "subscribe", "instruments": ["SPX_4400_PUT"]})
    assert (await connections[2].receive_json_from(timeout=5))["type"] == "subscribed"
    await publish_market(("event", {"event_type": "phase_change", "phase": "continuous", "previous_phase": "pre_open"}))
    for ws in connections:
        frame = await ws.receive_json_from(timeout=2)
        assert frame["type"] == "event" and frame["timestamp"].endswith("Z")
        assert frame["data"] == {"event_type": "phase_change", "phase": "continuous", "previous_phase": "pre_open"}
        await ws.disconnect()


async def test_an_idle_connection_keeps_hearing_its_groups(make_team: MakeTeam) -> None:
    """Nothing on the subscription for longer than any socket timeout must not end it."""
    team, key = await sync_to_async(make_team)()
    ws = await connect(key)
    await asyncio.sleep(6)
    await publish(team_group(team.pk), "e1", 1, [signal(1)])
    assert (await ws.receive_json_from(timeout=5))["data"]["n"] == 1
    await ws.send_json_to({"action": "ping"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
    await ws.disconnect()
