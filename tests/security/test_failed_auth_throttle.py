"""Repeated wrong keys from one address are refused for a window, over REST (429
``TOO_MANY_FAILED_AUTH`` with ``Retry-After``), the order path's async views (``POST /orders``,
``DELETE /orders/{id}``, ``DELETE /orders``) and the WebSocket handshake (1008 ``too many failed
attempts``), without the key being looked at; the counts live in Redis."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from accounts import keys, throttle
from accounts.keycache import CACHE_TTL_S
from exchange.gateway import AuthRefused, Gateway
from tradinggame.asgi import application

# Teams must be committed: the order path finds keys in the Redis key directory, written on commit.
pytestmark = pytest.mark.django_db(transaction=True)

ENVELOPE_KEYS = {"code", "message", "details"}


def bad_key(n: int) -> str:
    return f"itg_wrong-guess-{n:04d}-{'x' * 30}"


def get(api, key, address, path="/positions"):
    return api(key).get(path, REMOTE_ADDR=address)


def assert_refused(response, window_s: int = 60) -> int:
    assert response.status_code == 429, response.content
    error = response.json()["error"]
    assert set(error) == ENVELOPE_KEYS and error["code"] == "TOO_MANY_FAILED_AUTH"
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= window_s
    assert f"Retry in {retry_after} second" in error["message"]
    return retry_after


@pytest.fixture
def key_lookups(monkeypatch) -> list[str]:
    """Every key the verifier looks up from now on."""
    seen: list[str] = []
    real = keys.team_for_key

    def spy(key):
        seen.append(key)
        return real(key)

    monkeypatch.setattr(keys, "team_for_key", spy)
    return seen


def test_twenty_wrong_keys_then_429_without_looking_at_the_key(make_team, api, new_address, key_lookups) -> None:
    _, key = make_team()
    attacker, neighbour = new_address(), new_address()
    for n in range(20):
        response = get(api, bad_key(n), attacker)
        assert response.status_code == 401 and response.json()["error"]["code"] == "INVALID_API_KEY"
    assert len(key_lookups) == 20
    key_lookups.clear()

    assert_refused(get(api, bad_key(20), attacker))
    # Even the right key is refused from that address: a guess that happens to be right teaches nothing.
    assert_refused(get(api, key, attacker))
    assert_refused(api(key).post("/orders", {"instrument_id": "SPX_4500_CALL"}, format="json", REMOTE_ADDR=attacker))
    assert_refused(api(key).get("/orders/ORD_1", REMOTE_ADDR=attacker))
    # The order path's async views answer the same way.
    for path in ("/orders/ORD_1", "/orders"):
        assert_refused(api(key).delete(path, REMOTE_ADDR=attacker))
    assert key_lookups == []  # not one of those keys was looked up

    # Another address is not affected, with a good key or a bad one.
    assert get(api, key, neighbour).status_code == 200
    assert get(api, bad_key(99), neighbour).status_code == 401
    # Requests without a key are not key checks: the usual 401.
    assert api().get("/positions", REMOTE_ADDR=attacker).json()["error"]["code"] == "NOT_AUTHENTICATED"


def test_successful_requests_are_not_counted(make_team, api, new_address, settings) -> None:
    settings.AUTH_FAILURE_LIMIT = 5
    _, key = make_team()
    address = new_address()
    for n in range(4):
        assert get(api, bad_key(n), address).status_code == 401
    for _ in range(30):
        assert get(api, key, address).status_code == 200
    assert get(api, bad_key(4), address).status_code == 401  # the fifth failure reaches the limit
    assert_refused(get(api, key, address))


def test_the_refusal_ends_when_the_window_has_passed(make_team, api, new_address, settings) -> None:
    settings.AUTH_FAILURE_LIMIT = 3
    settings.AUTH_FAILURE_WINDOW_S = 1
    _, key = make_team()
    address = new_address()
    for n in range(3):
        assert get(api, bad_key(n), address).status_code == 401
    assert assert_refused(get(api, key, address), window_s=1) == 1
    time.sleep(1.1)
    assert get(api, key, address).status_code == 200
    # The count started again from zero: two more failures are not yet a refusal.
    assert [get(api, bad_key(n), address).status_code for n in range(2)] == [401, 401]
    assert get(api, key, address).status_code == 200


def test_rest_order_path_and_websocket_failures_share_one_count(make_team, api, new_address, settings) -> None:
    settings.AUTH_FAILURE_LIMIT = 5
    _, key = make_team()
    address = new_address()
    assert get(api, bad_key(1), address).status_code == 401
    assert api(bad_key(2)).delete("/orders/ORD_1", REMOTE_ADDR=address).status_code == 401
    assert api(bad_key(3)).delete("/orders", REMOTE_ADDR=address).status_code == 401
    order = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 1, "price": 1.0}
    assert api(bad_key(4)).post("/orders", order, format="json", REMOTE_ADDR=address).status_code == 401
    throttle.record_failure(address)  # a failed WebSocket handshake counts through the same call
    assert_refused(get(api, key, address))
    assert_refused(api(key).post("/orders", order, format="json", REMOTE_ADDR=address))


async def test_the_order_path_sees_a_refusal_within_a_second_even_for_a_key_it_knows(
    make_team, new_address, settings
) -> None:
    """The order path keeps keys and unrefused addresses for at most the key cache's second (one
    Redis round trip less per order); a refusal started anywhere reaches it within that second,
    and one it records itself at once."""
    settings.AUTH_FAILURE_LIMIT = 3
    _, key = await sync_to_async(make_team)()
    address, other = new_address(), new_address()
    door = Gateway()
    assert (await door.owner(key, address)).team_pk > 0
    for _ in range(3):  # refused through another process's failures
        await sync_to_async(throttle.record_failure)(address)
    await asyncio.sleep(CACHE_TTL_S)
    with pytest.raises(AuthRefused) as refused:
        await door.owner(key, address)
    assert (refused.value.status, refused.value.code) == (429, "TOO_MANY_FAILED_AUTH")
    assert 1 <= refused.value.retry_after_s <= 60

    assert (await door.owner(key, other)).team_pk > 0  # known and unrefused a moment ago
    for n in range(3):
        with pytest.raises(AuthRefused) as failed:
            await door.owner(bad_key(n), other)
        assert (failed.value.status, failed.value.code) == (401, "INVALID_API_KEY")
    with pytest.raises(AuthRefused) as at_once:
        await door.owner(key, other)
    assert at_once.value.code == "TOO_MANY_FAILED_AUTH"


async def ws_from(address: str | None, key: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws?api_key={key}")
    if address is not None:
        communicator.scope["client"] = [address, 50123]
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def test_websocket_handshakes_are_refused_1008_after_the_limit(make_team, api, new_address, settings) -> None:
    settings.AUTH_FAILURE_LIMIT = 5
    _, key = await sync_to_async(make_team)()
    attacker, neighbour = new_address(), new_address()
    for n in range(5):
        communicator = await ws_from(attacker, bad_key(n))
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 1008, "reason": "invalid or missing API key"}
    # The handshakes counted for REST too, and the right key is now refused on both.
    refused = await sync_to_async(get)(api, key, attacker)
    assert_refused(refused)
    communicator = await ws_from(attacker, key)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1008, "reason": "too many failed attempts"}

    welcome = await ws_from(neighbour, key)
    frame = await welcome.receive_json_from(timeout=5)
    assert frame["type"] == "position_snapshot"
    await welcome.disconnect()


async def test_rest_failures_refuse_the_websocket_of_the_same_address(make_team, api, new_address, settings) -> None:
    settings.AUTH_FAILURE_LIMIT = 3
    _, key = await sync_to_async(make_team)()
    address = new_address()
    for n in range(3):
        assert (await sync_to_async(get)(api, bad_key(n), address)).status_code == 401
    communicator = await ws_from(address, key)
    assert (await communicator.receive_output(timeout=5))["reason"] == "too many failed attempts"


def test_redis_down_fails_open_with_a_warning_and_never_500(
    make_team, api, new_address, settings, caplog, monkeypatch
) -> None:
    _, key = make_team()
    address = new_address()
    monkeypatch.setattr(throttle._redis, "_last_warning", float("-inf"))
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="accounts.throttle"):
        started = time.monotonic()
        codes = [get(api, bad_key(n), address).status_code for n in range(25)]
        assert codes == [401] * 25  # not counted, not refused, and no 500
        assert time.monotonic() - started < 10
        assert get(api, key, address).status_code == 200
        # The order path reads keys from Redis alone: without it, 503 in its own shapes, never a 500.
        every = api(bad_key(99)).delete("/orders", REMOTE_ADDR=address)
        assert (every.status_code, every.json()["error"]["code"]) == (503, "MATCHING_UNAVAILABLE")
        one = api(key).delete("/orders/ORD_1", REMOTE_ADDR=address)
        assert (one.status_code, one.json()["status"], one.json()["error_code"]) == (
            503,
            "rejected",
            "MATCHING_UNAVAILABLE",
        )
    warnings = [r for r in caplog.records if r.name == "accounts.throttle"]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()  # once, not per request
    assert key not in caplog.text


async def test_redis_down_websocket_keys_are_still_checked(make_team, new_address, settings) -> None:
    address = new_address()
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # the throttle's Redis; the channel layer keeps its own
    communicator = await ws_from(address, bad_key(1))
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1008, "reason": "invalid or missing API key"}


def test_concurrent_failures_are_counted_exactly_once_each(new_address, settings) -> None:
    """The count is one atomic script in Redis: 30 failures at once from many threads (as from
    several web processes) start exactly one refusal and leave exactly 10 counted after it."""
    settings.AUTH_FAILURE_LIMIT = 20
    address = new_address()
    start = threading.Barrier(30)
    results: list[int] = []

    def fail() -> None:
        start.wait()
        results.append(throttle.record_failure(address))

    threads = [threading.Thread(target=fail) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0] * 29 + [60]
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    assert client.zcard(throttle.fail_key(address)) == 10
    assert 58 <= throttle.blocked_for(address) <= 60
    assert 0 < client.pttl(throttle.fail_key(address)) <= 60_000  # nothing is kept forever


def test_a_limit_of_zero_turns_the_throttle_off(make_team, api, new_address, settings) -> None:
    settings.AUTH_FAILURE_LIMIT = 0
    _, key = make_team()
    address = new_address()
    assert [get(api, bad_key(n), address).status_code for n in range(25)] == [401] * 25
    assert get(api, key, address).status_code == 200


def test_no_client_address_is_one_shared_bucket(settings) -> None:
    """A server that reports no peer address (a Unix socket) still counts failures, all together."""
    settings.AUTH_FAILURE_LIMIT = 2
    throttle.reset(None)
    try:
        assert keys.verify_key(bad_key(1), None) is None
        assert keys.verify_key(bad_key(2), None) is None
        with pytest.raises(throttle.TooManyFailedAttempts):
            keys.verify_key(bad_key(3), None)
    finally:
        throttle.reset(None)
