"""Failed API key checks per client address, counted in Redis and shared by every web process.

An address that presents ``AUTH_FAILURE_LIMIT`` wrong keys (default 20) within
``AUTH_FAILURE_WINDOW_S`` seconds (default 60) is refused for one whole window from that moment:
REST answers 429 ``TOO_MANY_FAILED_AUTH`` with ``Retry-After`` and the WebSocket handshake is closed
with 1008 ``too many failed attempts``, without the key being looked at. Accepted keys are never
counted, and a request without any key is not a key check.

Two keys per address:

- ``itg:auth-fail:<address>``: a sorted set of the failures of the last window (scores in ms of the
  Redis server's clock, so every web process agrees on the window);
- ``itg:auth-block:<address>``: present while the address is refused; its TTL is the time left.

Recording a failure is one Lua script, so concurrent failures in several processes are counted
exactly. The check before each key lookup is one ``PTTL``. When Redis cannot be reached, the
throttle lets requests through (keys are still verified) and logs a warning, at most every
``LOG_EVERY_S`` seconds per process.

``settings.AUTH_FAILURE_LIMIT`` and ``settings.AUTH_FAILURE_WINDOW_S`` are read at each check; a
limit of 0 turns the throttle off.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.redis_breaker import redis_on_request_path  # noqa: E402

log = logging.getLogger(__name__)

FAIL_PREFIX = "itg:auth-fail"
BLOCK_PREFIX = "itg:auth-block"
LOG_EVERY_S = 30.0
REDIS_TIMEOUT_S = 0.5
UNKNOWN_ADDRESS = "unknown"

# KEYS[1]: the address's failures; KEYS[2]: its block flag. ARGV[1]: limit; ARGV[2]: window in ms.
# Returns the block's length in ms when this failure reached the limit, else 0.
RECORD_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], now, t[1] .. '.' .. t[2] .. '-' .. count)
count = count + 1
if count >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], count, 'PX', window)
  redis.call('DEL', KEYS[1])
  return window
end
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


class TooManyFailedAttempts(Exception):
    """The address is refused for ``retry_after_s`` more seconds; its key was not checked."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed API key checks; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def limit() -> int:
    return int(settings.AUTH_FAILURE_LIMIT)


def window_ms() -> int:
    return max(1, int(float(settings.AUTH_FAILURE_WINDOW_S) * 1000))


def _address(address: str | None) -> str:
    return (address or UNKNOWN_ADDRESS)[:64]


def fail_key(address: str | None) -> str:
    return f"{FAIL_PREFIX}:{_address(address)}"


def block_key(address: str | None) -> str:
    return f"{BLOCK_PREFIX}:{_address(address)}"


class _Redis:
    """One client and its registered script per Redis URL, created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._url: str | None = None
        self._client: redis.Redis | None = None
        self._script: Any = None
        self._last_warning = float("-inf")

    def client(self) -> tuple[redis.Redis, Any]:
        url = settings.REDIS_URL
        with self._lock:
            if self._client is None or self._url != url:
                # One quick retry (a pooled connection that went stale), no backoff: a dead Redis
                # must cost a request well under a second before the throttle steps aside.
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=REDIS_TIMEOUT_S,
                    socket_connect_timeout=REDIS_TIMEOUT_S,
                    retry=Retry(NoBackoff(), 1),
                )
                self._client, self._script, self._url = client, client.register_script(RECORD_FAILURE), url
            return self._client, self._script

    def unavailable(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= LOG_EVERY_S:
            self._last_warning = now
            log.warning("failed-key throttle unavailable (Redis: %s); key checks go on without it", error)


_redis = _Redis()
_REDIS_DOWN = (redis.RedisError, OSError, ValueError)


def blocked_for(address: str | None) -> int:
    """Whole seconds (at least 1) the address is still refused for; 0 when it is not refused."""
    if limit() <= 0 or not redis_on_request_path.allows():
        return 0
    try:
        client, _ = _redis.client()
        left_ms = int(client.pttl(block_key(address)))
    except _REDIS_DOWN as error:
        redis_on_request_path.trip()
        _redis.unavailable(error)
        return 0
    return max(1, math.ceil(left_ms / 1000)) if left_ms > 0 else 0


def check(address: str | None) -> None:
    """Raise ``TooManyFailedAttempts`` when the address is refused."""
    retry_after_s = blocked_for(address)
    if retry_after_s:
        raise TooManyFailedAttempts(retry_after_s)


def record_failure(address: str | None) -> int:
    """Count one wrong key; the seconds of the block this failure started (0: none started)."""
    if limit() <= 0 or not redis_on_request_path.allows():
        return 0
    try:
        _, script = _redis.client()
        blocked_ms = int(script(keys=[fail_key(address), block_key(address)], args=[limit(), window_ms()]))
    except _REDIS_DOWN as error:
        redis_on_request_path.trip()
        _redis.unavailable(error)
        return 0
    if blocked_ms:
        log.warning("address %s refused for %d s after %d failed API key checks", _address(address), blocked_ms // 1000, limit())
    return math.ceil(blocked_ms / 1000)


def reset(address: str | None) -> None:
    """Forget an address's failures and lift its block (for operators and tests)."""
    client, _ = _redis.client()
    client.delete(fail_key(address), block_key(address))
