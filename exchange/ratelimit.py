"""Order rate limit per team: a sliding one-second window kept in Redis, shared by every web process.

Each order that passes the form checks makes exactly one call to an atomic Lua script. The
script reads the time from the Redis server (one clock for every web process), drops the
entries that have left the window, and either records the order or answers how long until the
oldest entry leaves. Refused attempts are not recorded, so a bot that keeps hammering is let
in again as soon as its oldest order is one second old.

The limit is ``RolePolicy.orders_per_second`` of the team's role; 0 means no limit.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from accounts.models import Team
from exchange.models import RolePolicy
from exchange.policies import role_policy
from tradinggame.redis_breaker import redis_on_request_path

WINDOW_S = 1
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
KEY_PREFIX = "itg:order-rate"

# KEYS[1]: the team's window, a sorted set of admitted orders scored by server time in µs.
# ARGV[1]: the limit; ARGV[2]: the window in µs.
# Returns {admitted (1|0), orders in the window, µs until a slot frees up (0 when admitted)}.
SLIDING_WINDOW = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, time[1] .. '.' .. time[2] .. '-' .. count)
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, count + 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, count, tonumber(oldest[2]) + window - now}
"""


@dataclass
class RateLimitExceeded(Exception):
    """The team has used its orders for the current window."""

    limit: int
    retry_after_ms: int

    @property
    def retry_after_s(self) -> int:
        """For the ``Retry-After`` header: whole seconds, rounded up, at least 1."""
        return max(1, math.ceil(self.retry_after_ms / 1000))

    @property
    def details(self) -> dict[str, Any]:
        return {"limit": self.limit, "window_s": WINDOW_S, "retry_after_ms": self.retry_after_ms}

    @property
    def message(self) -> str:
        return f"the limit is {self.limit} order(s) per second; retry in {self.retry_after_ms} ms"


class RateLimiterUnavailable(Exception):
    """Redis could not be asked, so the order can be neither counted nor let through."""

    message = "the order rate limiter is unavailable; the order was not taken, retry shortly"


class _Limiter:
    """One Redis client and its registered script per Redis URL, created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._url: str | None = None
        self._script: Any = None

    def script(self) -> Any:
        url = settings.REDIS_URL
        with self._lock:
            if self._script is None or self._url != url:
                client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
                self._script, self._url = client.register_script(SLIDING_WINDOW), url
            return self._script


_limiter = _Limiter()


def window_key(team: Team) -> str:
    # The creation time is part of the key so that a team id reused after the database was
    # reset for a new game never inherits an old team's window.
    return f"{KEY_PREFIX}:{team.pk}:{int(team.created_at.timestamp() * 1_000_000)}"


def admit(key: str, limit: int) -> tuple[bool, int, int]:
    """Run the window script once: (admitted, orders in the window, ms until a slot frees up)."""
    if not redis_on_request_path.allows():
        raise RateLimiterUnavailable()
    try:
        admitted, count, wait_us = _limiter.script()(keys=[key], args=[limit, WINDOW_S * 1_000_000])
    except redis.RedisError as error:
        redis_on_request_path.trip()
        raise RateLimiterUnavailable() from error
    return bool(admitted), int(count), math.ceil(int(wait_us) / 1000)


def order_rate_check(team: Team, policy: RolePolicy | None = None) -> None:
    """Count one order of the team; raise ``RateLimitExceeded`` when it is over its role's limit."""
    limit = (policy or role_policy(team.role)).orders_per_second
    if limit <= 0:
        return
    admitted, _, retry_after_ms = admit(window_key(team), limit)
    if not admitted:
        raise RateLimitExceeded(limit=limit, retry_after_ms=max(1, retry_after_ms))
