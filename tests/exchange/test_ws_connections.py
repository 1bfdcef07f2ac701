"""The per-team connection limit, kept in Redis so it holds across web processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from pytest_django.fixtures import Settings

from accounts.models import Team
from exchange.connections import ConnectionRegistry
from tradinggame.asgi import application

MakeTeam = Callable[..., tuple[Team, str]]

pytestmark = pytest.mark.django_db(transaction=True)


async def open_ws(key: str) -> tuple[WebsocketCommunicator, dict]:
    """Connect and return the first thing the server sends: a frame or a close."""
    communicator = WebsocketCommunicator(application, f"/ws?api_key={key}")
    assert (await communicator.connect(timeout=5))[0]
    return communicator, await communicator.receive_output(timeout=5)


def registry(team_pk: int, limit: int = 2, ttl_s: float = 30) -> ConnectionRegistry:
    return ConnectionRegistry(team_pk, limit, ttl_s)


async def fresh(team_pk: int) -> ConnectionRegistry:
    """The team's registry, emptied of anything an earlier test run left behind."""
    entries = registry(team_pk)
    await entries.redis.delete(entries.key)
    return entries


def test_the_registry_keeps_its_key_under_the_layer_prefix(settings: Settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"CONFIG": {"prefix": "itg3"}}}
    assert registry(7).key == "itg3:ws:connections:team.7"


async def test_one_connection_over_the_limit_is_accepted_then_closed_1008(
    make_team: MakeTeam, settings: Settings
) -> None:
    settings.EXCHANGE_MAX_CONNECTIONS_PER_TEAM = 2
    team, key = await sync_to_async(make_team)()
    other, other_key = await sync_to_async(make_team)()
    await fresh(team.pk)
    await fresh(other.pk)
    first, hello = await open_ws(key)
    second, hello2 = await open_ws(key)
    assert hello["type"] == hello2["type"] == "websocket.send"  # position snapshots
    third, refused = await open_ws(key)
    assert refused == {"type": "websocket.close", "code": 1008, "reason": "too many connections"}
    await third.disconnect()
    stranger, hello3 = await open_ws(other_key)  # the limit is per team
    assert hello3["type"] == "websocket.send"
    assert await registry(team.pk).count() == 2

    await first.disconnect()  # its slot is given back at once
    assert await registry(team.pk).count() == 1
    again, hello4 = await open_ws(key)
    assert hello4["type"] == "websocket.send"
    for communicator in (second, stranger, again):
        await communicator.disconnect()
    assert await registry(team.pk).count() == 0


async def test_slots_of_a_crashed_process_expire_and_live_ones_count(make_team: MakeTeam, settings: Settings) -> None:
    settings.EXCHANGE_MAX_CONNECTIONS_PER_TEAM = 2
    team, key = await sync_to_async(make_team)()
    entries = await fresh(team.pk)
    redis = entries.redis
    seconds, _ = await redis.time()
    # Two entries of a process that died a minute ago, one of a live process elsewhere.
    await redis.zadd(entries.key, {"specific.dead!a": seconds - 60, "specific.dead!b": seconds - 50})
    await redis.zadd(entries.key, {"specific.elsewhere!c": seconds + 30})
    first, hello = await open_ws(key)
    assert hello["type"] == "websocket.send"
    second, refused = await open_ws(key)
    assert refused["type"] == "websocket.close" and refused["code"] == 1008
    await second.disconnect()
    await first.disconnect()
    assert await redis.zrange(entries.key, 0, -1) == [b"specific.elsewhere!c"]


async def test_a_live_connection_keeps_its_slot_past_the_ttl(make_team: MakeTeam, settings: Settings) -> None:
    settings.EXCHANGE_WS_REGISTRY_TTL_S = 0.6  # refreshed every 0.2 s
    team, key = await sync_to_async(make_team)()
    entries = await fresh(team.pk)
    ws, hello = await open_ws(key)
    assert hello["type"] == "websocket.send"
    await asyncio.sleep(1.5)
    assert await entries.count() == 1
    await entries.claim("specific.probe!x")  # a claim purges whatever expired
    assert await entries.count() == 2
    await entries.release("specific.probe!x")
    await ws.disconnect()


async def test_a_connection_whose_registration_vanished_is_told_to_resync(
    make_team: MakeTeam, settings: Settings
) -> None:
    """Redis lost its data (a restart) or the process stalled for a whole TTL: messages may be gone."""
    settings.EXCHANGE_WS_REGISTRY_TTL_S = 0.6
    team, key = await sync_to_async(make_team)()
    entries = await fresh(team.pk)
    ws, hello = await open_ws(key)
    assert hello["type"] == "websocket.send"
    await entries.redis.delete(entries.key)
    closed = await ws.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": 4008, "reason": "slow consumer"}
    await ws.disconnect()
    assert await entries.count() == 0
