"""The per-team registry of open WebSocket connections, shared by every web process through Redis.

One sorted set per team: members are connection (channel) names, scores the moment each entry
expires. A live connection pushes its expiry forward every third of the TTL, so the entries of a
process that crashed fall out within one TTL instead of holding the team's slots forever. Scores
use the Redis server's clock, so web processes on different machines agree on "expired".
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from redis.asyncio import Redis

from infra.redis_clients import ASYNC_TIMEOUT_S, async_client

# KEYS[1] the team's set; ARGV: connection name, limit, ttl seconds. Returns 1 if the slot is held.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""

# ARGV: connection name, ttl seconds. Returns 1 if the entry was still there (0: added again).
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1 - added
"""


def key_prefix() -> str:
    """The channel layer's prefix: instances sharing one Redis keep their registries apart by it."""
    return str(settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "itg"))


class ConnectionRegistry:
    """Claims, refreshes and releases one team's connection slots."""

    def __init__(self, team_pk: int, limit: int, ttl_s: float) -> None:
        self.key = f"{key_prefix()}:ws:connections:team.{team_pk}"
        self.limit = limit
        self.ttl_s = ttl_s

    @property
    def redis(self) -> Redis:
        """The running event loop's client (asyncio connections belong to one loop)."""
        return async_client()

    async def claim(self, connection: str) -> bool:
        async with asyncio.timeout(ASYNC_TIMEOUT_S):
            return bool(await self.redis.eval(_CLAIM, 1, self.key, connection, self.limit, self.ttl_s))

    async def refresh(self, connection: str) -> bool:
        """Push the entry's expiry forward; False if it had vanished (and is now back)."""
        async with asyncio.timeout(ASYNC_TIMEOUT_S):
            return bool(await self.redis.eval(_REFRESH, 1, self.key, connection, self.ttl_s))

    async def release(self, connection: str) -> None:
        async with asyncio.timeout(ASYNC_TIMEOUT_S):
            await self.redis.zrem(self.key, connection)

    async def count(self) -> int:
        """Live entries (for tests and operators; expired ones may still be counted until the next claim)."""
        async with asyncio.timeout(ASYNC_TIMEOUT_S):
            return int(await self.redis.zcard(self.key))
