"""A revoked or rotated key, or a disabled team, stops working at once: the next request to the
DRF views is refused, the order path (which reads keys from the Redis key directory through a
cache of at most a second) refuses it within that second, new WebSocket connections are closed
1008, and open ones are closed 1008 within seconds."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient
from django.utils import timezone

from accounts.keycache import CACHE_TTL_S
from accounts.keys import key_digest
from accounts.models import ApiKey, Team
from accounts.services import key_issue, key_rotate
from exchange.models import Order
from tradinggame.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_rotation_refuses_the_old_key_on_the_next_rest_request(
    make_team, instruments, api, order_body, matching
) -> None:
    team, old = make_team()
    assert api(old).get("/positions").status_code == 200
    assert api(old).delete("/orders").status_code == 200
    new = key_rotate(team)
    for response in (
        api(old).get("/positions"),
        api(old).post("/orders", order_body(), format="json"),
        api(old).delete("/orders/ORD_1"),
        api(old).delete("/orders"),
    ):
        assert (response.status_code, error_code(response)) == (401, "INVALID_API_KEY")
    assert api(new).get("/positions").status_code == 200
    assert api(new).delete("/orders").status_code == 200
    assert api(new).post("/orders", order_body(), format="json").json()["status"] == "accepted"


async def refused_within(client: AsyncClient, key: str, status: int, seconds: float) -> None:
    """Send ``DELETE /orders`` with the key until it is refused with ``status``: every request sent
    ``seconds`` or more after the change is refused (earlier ones may still be served from a cache)."""
    changed = time.monotonic()
    while True:
        sent = time.monotonic() - changed
        response = await client.delete("/orders", headers={"X-API-Key": key})
        if response.status_code == status:
            return
        assert response.status_code == 200, response.content
        assert sent < seconds, f"still {response.status_code} for a request sent {sent:.2f} s after the change"
        await asyncio.sleep(0.02)


async def test_the_order_path_refuses_a_rotated_key_it_knows_within_a_second(make_team, instruments, matching) -> None:
    """One event loop, one process's order path: the key is in its cache when it is rotated."""
    team, old = await sync_to_async(make_team)()
    client = AsyncClient()
    assert (await client.delete("/orders", headers={"X-API-Key": old})).status_code == 200
    new = await sync_to_async(key_rotate)(team)
    await refused_within(client, old, 401, CACHE_TTL_S)
    response = await client.delete("/orders", headers={"X-API-Key": old})
    assert (response.status_code, error_code(response)) == (401, "INVALID_API_KEY")
    # The new key works on its first request: it was in the key directory before rotation returned.
    assert (await client.delete("/orders", headers={"X-API-Key": new})).status_code == 200


async def test_the_order_path_refuses_a_team_disabled_by_an_operator_within_a_second(
    make_team, instruments, matching
) -> None:
    team, key = await sync_to_async(make_team)()
    client = AsyncClient()
    assert (await client.delete("/orders", headers={"X-API-Key": key})).status_code == 200
    team.active = False
    await sync_to_async(team.save)()  # what the admin's change form does
    await refused_within(client, key, 403, CACHE_TTL_S)
    team.active = True
    await sync_to_async(team.save)()
    enabled = time.monotonic()
    while True:
        sent = time.monotonic() - enabled
        status = (await client.delete("/orders", headers={"X-API-Key": key})).status_code
        if status == 200:
            break
        assert status == 403 and sent < CACHE_TTL_S, (status, sent)
        await asyncio.sleep(0.02)


def test_one_revoked_key_of_several(make_team, api, matching) -> None:
    team, first = make_team()
    second = key_issue(team)
    revoked = ApiKey.objects.get(digest=key_digest(first))
    revoked.revoked_at = timezone.now()
    revoked.save()  # as the admin does
    for response in (api(first).get("/positions"), api(first).delete("/orders")):
        assert (response.status_code, error_code(response)) == (401, "INVALID_API_KEY")
    assert api(second).get("/positions").status_code == 200
    assert api(second).delete("/orders").status_code == 200


def test_a_disabled_team_is_refused_at_once_and_back_when_enabled(
    make_team, instruments, api, order_body, matching
) -> None:
    team, key = make_team()
    team.active = False
    team.save()  # as the admin's change form does: the key directory follows on commit
    for response in (
        api(key).get("/positions"),
        api(key).post("/orders", order_body(), format="json"),
        api(key).delete("/orders/ORD_1"),
        api(key).delete("/orders"),
    ):
        assert (response.status_code, error_code(response)) == (403, "TEAM_DISABLED")
    assert not Order.objects.exists()  # nothing was queued for it
    team.active = True
    team.save()
    assert api(key).get("/positions").status_code == 200
    assert api(key).post("/orders", order_body(), format="json").json()["status"] == "accepted"


async def open_ws(key: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws?api_key={key}")
    assert (await communicator.connect(timeout=5))[0]
    return communicator


async def snapshot(communicator: WebsocketCommunicator) -> None:
    assert (await communicator.receive_json_from(timeout=5))["type"] == "position_snapshot"


async def next_output_within(communicator: WebsocketCommunicator, seconds: float) -> tuple[dict, float]:
    started = time.monotonic()
    output = await communicator.receive_output(timeout=seconds)
    return output, time.monotonic() - started


async def still_open(communicator: WebsocketCommunicator) -> bool:
    await communicator.send_json_to({"action": "ping"})
    return (await communicator.receive_json_from(timeout=5))["type"] == "pong"


async def test_new_connections_of_a_rotated_key_or_disabled_team_are_closed_1008(make_team) -> None:
    team, old = await sync_to_async(make_team)()
    new = await sync_to_async(key_rotate)(team)
    refused = await open_ws(old)
    assert await refused.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "invalid or missing API key",
    }
    await sync_to_async(Team.objects.filter(pk=team.pk).update)(active=False)
    disabled = await open_ws(new)
    assert await disabled.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "team disabled",
    }


async def test_an_open_connection_of_a_rotated_key_is_closed_within_seconds(make_team) -> None:
    """The default re-check period (2 s) is what this measures."""
    team, old = await sync_to_async(make_team)()
    _, bystander_key = await sync_to_async(make_team)()
    doomed, bystander = await open_ws(old), await open_ws(bystander_key)
    for communicator in (doomed, bystander):
        await snapshot(communicator)
    new = await sync_to_async(key_rotate)(team)
    fresh = await open_ws(new)
    await snapshot(fresh)

    closed, waited = await next_output_within(doomed, 10)
    assert closed == {"type": "websocket.close", "code": 1008, "reason": "API key revoked"}
    assert waited < 4.0
    # The new key's connection and another team's are untouched.
    assert await still_open(fresh) and await still_open(bystander)
    for communicator in (fresh, bystander):
        await communicator.disconnect()


async def test_open_connections_of_a_disabled_team_are_closed(make_team, settings) -> None:
    settings.EXCHANGE_WS_KEY_RECHECK_S = 0.2
    team, key = await sync_to_async(make_team)()
    _, other_key = await sync_to_async(make_team)()
    first, second, other = await open_ws(key), await open_ws(key), await open_ws(other_key)
    for communicator in (first, second, other):
        await snapshot(communicator)
    await sync_to_async(Team.objects.filter(pk=team.pk).update)(active=False)
    for communicator in (first, second):
        closed, waited = await next_output_within(communicator, 5)
        assert closed == {"type": "websocket.close", "code": 1008, "reason": "team disabled"}
        assert waited < 2.0
    assert await still_open(other)
    await other.disconnect()


async def test_a_revoked_key_of_several_closes_only_its_own_connections(make_team, settings) -> None:
    settings.EXCHANGE_WS_KEY_RECHECK_S = 0.2
    team, first_key = await sync_to_async(make_team)()
    second_key = await sync_to_async(key_issue)(team)
    revoked, kept = await open_ws(first_key), await open_ws(second_key)
    for communicator in (revoked, kept):
        await snapshot(communicator)
    await sync_to_async(ApiKey.objects.filter(digest=key_digest(first_key)).update)(revoked_at=timezone.now())
    closed, _ = await next_output_within(revoked, 5)
    assert (closed["code"], closed["reason"]) == (1008, "API key revoked")
    assert await still_open(kept)
    await kept.disconnect()


async def test_a_deleted_key_closes_its_connections(make_team, settings) -> None:
    settings.EXCHANGE_WS_KEY_RECHECK_S = 0.2
    team, key = await sync_to_async(make_team)()
    communicator = await open_ws(key)
    await snapshot(communicator)
    await sync_to_async(ApiKey.objects.filter(team=team).delete)()
    closed, _ = await next_output_within(communicator, 5)
    assert (closed["code"], closed["reason"]) == (1008, "API key revoked")
