"""The one place that builds Redis clients (settings.REDIS_URL): sync ones for the matching worker
and commands, async ones per event loop for the web process."""

from __future__ import annotations

import asyncio
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

_sync: dict[str, redis.Redis] = {}
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def sync_client(timeout_s: float = 2.0) -> redis.Redis:
    """A client shared by this process's threads (redis-py pools are thread safe)."""
    key = f"{settings.REDIS_URL}|{timeout_s}"
    client = _sync.get(key)
    if client is None:
        client = _sync[key] = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
    return client


ASYNC_TIMEOUT_S = 2.0


def async_client() -> aioredis.Redis:
    """The running event loop's client (asyncio connections belong to one loop).

    It has no socket timeout of its own: redis-py enforces one by wrapping every send in
    ``asyncio.wait_for``, a new task per command, which cost the order path more than the
    command. Callers bound their calls with ``asyncio.timeout(ASYNC_TIMEOUT_S)`` instead, once
    per round trip. A command that fails on a connection is tried once more at once, on a new
    one (a pooled connection can be stale after a Redis restart); redis-py's default waits with a
    growing backoff between three tries, which kept an order 0.2 s from its 503 while Redis was
    down."""
    loop = asyncio.get_running_loop()
    client = _async.get(loop)
    if client is None:
        client = _async[loop] = aioredis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=ASYNC_TIMEOUT_S,
            max_connections=1000,
            retry=AsyncRetry(NoBackoff(), 1),
        )
    return client


def forget() -> None:
    """Drop cached clients (tests that switch REDIS_URL)."""
    _sync.clear()
    _async.clear()
