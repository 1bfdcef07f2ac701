"""A web process refuses new orders when it is past its CPU: its event loop runs late (when an operator
sets that limit), or too many of its commands wait for verdicts."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from pytest_django.fixtures import Settings

from accounts.keycache import KeyOwner
from exchange.gateway import Gateway
from exchange.matching.queue import Refused
from infra.redis_breaker import redis_on_request_path


async def test_a_late_event_loop_counts_as_overloaded_only_with_a_limit_set(settings: Settings) -> None:
    settings.EXCHANGE_WEB_MAX_LAG_S = 0.02
    gateway = Gateway()
    try:
        assert not gateway.overloaded()  # starts watching the loop
        await asyncio.sleep(0.01)
        time.sleep(0.15)  # the loop is held: its next timer runs late
        await asyncio.sleep(0.01)
        assert gateway.overloaded()
        settings.EXCHANGE_WEB_MAX_LAG_S = 0  # off: never refuses
        assert not gateway.overloaded()
    finally:
        if gateway.lag_watch is not None:
            gateway.lag_watch.cancel()


async def test_a_web_process_refuses_commands_past_its_in_flight_limit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EXCHANGE_WEB_MAX_IN_FLIGHT = 2
    gateway = Gateway()
    release = asyncio.Event()

    async def slow_verdict(*args: object) -> dict[str, str]:
        await release.wait()
        return {"status": "accepted"}

    monkeypatch.setattr(gateway, "_command", slow_verdict)
    owner = KeyOwner(team_pk=1, role="market_maker", active=True, created_us=0)
    waiting = [asyncio.create_task(gateway.command(owner, {"k": "s"}, True, 1.0)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Refused) as refused:
        await gateway.command(owner, {"k": "s"}, True, 1.0)
    assert (refused.value.status, refused.value.code, refused.value.details) == (
        503,
        "MATCHING_UNAVAILABLE",
        {"component": "web"},
    )
    release.set()
    assert [await task for task in waiting] == [{"status": "accepted"}] * 2
    assert gateway.in_flight == 0
    assert await gateway.command(owner, {"k": "s"}, True, 1.0) == {"status": "accepted"}


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
    owner = KeyOwner(team_pk=1, role="market_maker", active=True, created_us=0)
    started = time.monotonic()
    try:
        with pytest.raises(Refused) as refused:
            await gateway.command(owner, {"k": "s"}, False, 2.0)
    finally:
        redis_on_request_path.reset()
        if gateway.listener is not None:
            gateway.listener.cancel()
    assert refused.value.status == 503
    assert time.monotonic() - started < 0.5  # not the subscription's own 2 s
