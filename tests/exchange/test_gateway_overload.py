"""A web process refuses new orders while its event loop runs late, when an operator sets the limit."""

from __future__ import annotations

import asyncio
import time

from pytest_django.fixtures import Settings

from exchange.gateway import Gateway


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
