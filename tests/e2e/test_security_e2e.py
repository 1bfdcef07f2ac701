"""Security over the real processes: keys never reach the web server's log, wrong keys from one
address are refused across the server (the count lives in Redis, shared with this process), and
open connections of a rotated key or a disabled team are closed within seconds."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator

import pytest
import requests
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings

from accounts import throttle
from accounts.keycache import CACHE_TTL_S, DIRECTORY
from accounts.keys import key_digest
from accounts.models import Team
from accounts.services import key_rotate
from infra.redis_clients import sync_client

pytestmark = pytest.mark.e2e

HERE, NEIGHBOUR = "127.0.0.1", "127.0.0.2"  # the loopback answers from any 127/8 source address


@pytest.fixture
def clean_addresses() -> Iterator[None]:
    """This test's failures must not refuse the tests after it (they share the address and Redis)."""
    for address in (HERE, NEIGHBOUR):
        throttle.reset(address)
    yield
    for address in (HERE, NEIGHBOUR):
        throttle.reset(address)


def call(stack, key: str | None, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return requests.request(method, stack.base_url + path, headers=headers, timeout=10, **kwargs)


def call_from(stack, source: str, key: str, method: str, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10, source_address=(source, 0))
    try:
        connection.request(method, path, headers={"X-API-Key": key})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


async def closed_by_server(ws) -> tuple[int | None, str | None]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout=10)
    return ws.close_code, ws.close_reason


async def close_of(uri: str, **kwargs) -> tuple[int | None, str | None]:
    async with websockets.connect(uri, open_timeout=10, **kwargs) as ws:
        return await closed_by_server(ws)


def whole_log(stack, name: str) -> str:
    return (stack.log_dir / f"{name}.log").read_text(errors="replace")


async def test_keys_never_reach_the_web_log(stack, clean_addresses) -> None:
    key = stack.register("Log Desk", "retail")
    wrong = "itg_" + "W" * 43  # shaped like a real key
    async with websockets.connect(f"{stack.ws_url}?api_key={key}") as ws:
        assert json.loads(await ws.recv())["type"] == "position_snapshot"
    assert await close_of(f"{stack.ws_url}?api_key={wrong}") == (1008, "invalid or missing API key")
    assert call(stack, wrong, "GET", "/positions").status_code == 401
    assert call(stack, key, "GET", "/positions").status_code == 200
    assert call(stack, key, "GET", f"/fills?api_key={key}").status_code == 200  # a key in a REST query too
    assert call(stack, None, "DELETE", f"/orders/ORD_1?api_key={wrong}").status_code == 401

    deadline = time.monotonic() + 5
    while whole_log(stack, "web").count("api_key=[redacted]") < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    log = whole_log(stack, "web")
    assert log.count("api_key=[redacted]") >= 4, stack.logs("web")
    assert "WebSocket /ws?api_key=[redacted]" in log
    for secret in (key, wrong):
        assert secret not in log and secret.removeprefix("itg_") not in log
        assert secret not in stack.logs("web")
    assert key not in whole_log(stack, "worker")


async def test_wrong_keys_from_one_address_are_refused_by_the_real_server(stack, clean_addresses) -> None:
    key = stack.register("Guarded Desk", "market_maker")
    for n in range(settings.AUTH_FAILURE_LIMIT):
        response = call(stack, f"itg_guess-{n:03d}-{'x' * 30}", "GET", "/positions")
        assert response.status_code == 401, response.text
    refused = call(stack, key, "GET", "/positions")  # the right key, from the refused address
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "TOO_MANY_FAILED_AUTH"
    assert 1 <= int(refused.headers["Retry-After"]) <= settings.AUTH_FAILURE_WINDOW_S
    cancel = call(stack, key, "DELETE", "/orders")
    assert cancel.status_code == 429 and cancel.json()["error"]["code"] == "TOO_MANY_FAILED_AUTH"
    assert "Retry-After" in cancel.headers
    assert await close_of(f"{stack.ws_url}?api_key={key}") == (1008, "too many failed attempts")
    # The web process wrote the refusal to Redis; this process reads the same one.
    assert throttle.blocked_for(HERE) > 0 and throttle.blocked_for(NEIGHBOUR) == 0

    # Another address is not affected, over REST or WebSocket.
    status, body = call_from(stack, NEIGHBOUR, key, "GET", "/positions")
    assert status == 200 and body["positions"] == {}
    async with websockets.connect(f"{stack.ws_url}?api_key={key}", local_addr=(NEIGHBOUR, 0)) as ws:
        assert json.loads(await ws.recv())["type"] == "position_snapshot"

    throttle.reset(HERE)  # what an operator does to lift a refusal early
    assert call(stack, key, "GET", "/positions").status_code == 200


async def test_rotation_and_disabling_close_open_connections_within_seconds(stack) -> None:
    rotated_key = stack.register("Rotated Desk", "market_maker")
    disabled_key = stack.register("Disabled Desk", "hedge_fund")
    bystander_key = stack.register("Bystander Desk", "retail")
    async with (
        websockets.connect(f"{stack.ws_url}?api_key={rotated_key}") as rotated,
        websockets.connect(f"{stack.ws_url}?api_key={disabled_key}") as disabled,
        websockets.connect(f"{stack.ws_url}?api_key={bystander_key}") as bystander,
    ):
        for ws in (rotated, disabled, bystander):
            assert json.loads(await ws.recv())["type"] == "position_snapshot"
        team = await sync_to_async(Team.objects.get)(name="Rotated Desk")
        new_key = await sync_to_async(key_rotate)(team)
        await sync_to_async(Team.objects.filter(name="Disabled Desk").update)(active=False)
        started = time.monotonic()

        assert await closed_by_server(rotated) == (1008, "API key revoked")
        assert await closed_by_server(disabled) == (1008, "team disabled")
        assert time.monotonic() - started < 5

        await bystander.send(json.dumps({"action": "ping"}))
        assert json.loads(await asyncio.wait_for(bystander.recv(), timeout=5))["type"] == "pong"

    assert call(stack, rotated_key, "GET", "/positions").status_code == 401
    assert call(stack, new_key, "GET", "/positions").status_code == 200
    assert call(stack, disabled_key, "GET", "/positions").status_code == 403
    assert await close_of(f"{stack.ws_url}?api_key={rotated_key}") == (1008, "invalid or missing API key")


def test_a_valid_key_is_neither_refused_nor_counted_while_a_lost_key_directory_is_rebuilt(
    stack, clean_addresses
) -> None:
    """Redis lost its data (a restart without persistence): until the matching worker has put the
    key directory back, the order path cannot tell a valid key from a wrong one, so it answers 503
    (try again) rather than 401, and counts nothing against the address."""
    key = stack.register("Directory Desk", "market_maker")
    order = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 1, "price": 90.0}
    assert call(stack, key, "POST", "/orders", json=order).json()["status"] == "accepted"
    stack.kill("worker")
    sync_client().flushdb()
    time.sleep(CACHE_TTL_S + 0.1)  # the web process's own cache of the key has expired
    for _ in range(settings.AUTH_FAILURE_LIMIT + 5):
        reply = call(stack, key, "POST", "/orders", json=order)
        assert reply.status_code == 503 and reply.json()["error_code"] == "MATCHING_UNAVAILABLE", reply.text
    assert throttle.blocked_for(HERE) == 0
    assert call(stack, key, "GET", "/positions").status_code == 200

    stack.start("worker")  # it rebuilds the directory and seeds the queue again
    deadline = time.monotonic() + 30
    while (reply := call(stack, key, "POST", "/orders", json=order)).status_code == 503:
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.1)
    assert reply.status_code == 200 and reply.json()["status"] == "accepted", reply.text
    assert sync_client().hexists(DIRECTORY, key_digest(key))
    assert call(stack, "itg_" + "W" * 43, "POST", "/orders", json=order).status_code == 401  # wrong again
