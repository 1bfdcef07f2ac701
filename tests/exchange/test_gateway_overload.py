"""A web process refuses new orders when it is past its capacity: enough of its commands wait for
verdicts and the oldest has waited too long, or it holds its limit of them; a refused order is
answered before its request is read."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
from pytest_django.fixtures import Settings

from accounts.keycache import KeyOwner
from exchange.gateway import SHED_MIN_WAITING, Gateway
from exchange.matching.queue import Refused
from exchange.wire import OrderReply
from infra.redis_breaker import redis_on_request_path
from tradinggame.fastpath import serve_order_path

OWNER = KeyOwner(team_pk=1, role="market_maker", active=True, created_us=0)


def held_gateway(monkeypatch: pytest.MonkeyPatch) -> tuple[Gateway, asyncio.Event]:
    """A gateway whose commands all wait for their verdicts until the event is set."""
    gateway = Gateway()
    release = asyncio.Event()

    async def slow_verdict(*args: object) -> dict[str, str]:
        await release.wait()
        return {"status": "accepted"}

    monkeypatch.setattr(gateway, "_command", slow_verdict)
    return gateway, release


async def test_new_orders_are_shed_once_the_oldest_of_enough_waiting_commands_has_waited_too_long(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EXCHANGE_WEB_MAX_IN_FLIGHT = 0
    settings.EXCHANGE_WEB_MAX_WAIT_S = 0.05
    gateway, release = held_gateway(monkeypatch)

    def send(n: int) -> list[asyncio.Task[Any]]:
        return [asyncio.create_task(gateway.command(OWNER, {"k": "s"}, True, 5.0)) for _ in range(n)]

    waiting = send(SHED_MIN_WAITING - 1)
    await asyncio.sleep(0.06)
    assert not gateway.shedding()  # old, but too few to say the process is past its capacity
    waiting += send(1)
    await asyncio.sleep(0)
    assert gateway.in_flight == SHED_MIN_WAITING
    assert gateway.shedding()  # enough of them, and the oldest waited longer than the limit
    settings.EXCHANGE_WEB_MAX_WAIT_S = 0
    assert not gateway.shedding()  # the rule is off
    settings.EXCHANGE_WEB_MAX_WAIT_S = 1.0
    assert not gateway.shedding()  # none has waited a second
    release.set()
    assert [await task for task in waiting] == [{"status": "accepted"}] * SHED_MIN_WAITING
    assert (gateway.in_flight, len(gateway.since)) == (0, 0)


async def test_a_shed_order_is_refused_before_its_request_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Gateway, "shedding", lambda self: True)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body of a shed order is not read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/orders", "headers": [(b"x-api-key", b"not looked at")]}
    await serve_order_path(scope, receive, send)
    start, body = sent
    headers = dict(start["headers"])
    assert (start["status"], headers[b"retry-after"], headers[b"content-type"]) == (503, b"1", b"application/json")
    reply = json.loads(body["body"])
    assert set(reply) == set(OrderReply.__required_keys__)
    assert (reply["status"], reply["error_code"], reply["details"]) == (
        "rejected",
        "MATCHING_UNAVAILABLE",
        {"component": "web"},
    )
    assert int(headers[b"content-length"]) == len(body["body"])


async def test_a_web_process_refuses_commands_past_its_in_flight_limit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EXCHANGE_WEB_MAX_IN_FLIGHT = 2
    gateway, release = held_gateway(monkeypatch)
    waiting = [asyncio.create_task(gateway.command(OWNER, {"k": "s"}, True, 1.0)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Refused) as refused:
        await gateway.command(OWNER, {"k": "s"}, True, 1.0)
    assert (refused.value.status, refused.value.code, refused.value.details) == (
        503,
        "MATCHING_UNAVAILABLE",
        {"component": "web"},
    )
    release.set()
    assert [await task for task in waiting] == [{"status": "accepted"}] * 2
    assert gateway.in_flight == 0
    assert await gateway.command(OWNER, {"k": "s"}, True, 1.0) == {"status": "accepted"}


async def test_a_command_fails_at_once_while_the_verdict_channel_cannot_subscribe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = Gateway()

    class Unreachable:
        async def subscribe(self, *channels: str) -> None:
            raise redis.ConnectionError("Redis is away")

        async def aclose(self) -> None:
            pass

    monkeypatch.setattr(gateway.client, "pubsub", Unreachable)
    started = time.monotonic()
    try:
        with pytest.raises(Refused) as refused:
            await gateway.command(OWNER, {"k": "s"}, False, 2.0)
    finally:
        redis_on_request_path.reset()
        if gateway.listener is not None:
            gateway.listener.cancel()
    assert refused.value.status == 503
    assert time.monotonic() - started < 0.5  # not the subscription's own 2 s
