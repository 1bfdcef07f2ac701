"""The per-team registry of open WebSocket connections, shared by every web process through Redis.

One sorted set per team: members are connection (channel) names, scores the moment each entry
expires. A live connection pushes its expiry forward every third of the TTL, so the entries of a
process that crashed fall out within one TTL instead of holding the team's slots forever. Scores
use the Redis server's clock, so web processes on different machines agree on "expired".
"""

from __future__ import annotations

from typing import Any

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


def redis_for(layer: Any, name: str) -> Any:
    """The channel layer's Redis connection (for the running event loop) that holds ``name``."""
    return layer.connection(layer.consistent_hash(name))


class ConnectionRegistry:
    """Claims, refreshes and releases one team's connection slots."""

    def __init__(self, layer: Any, team_pk: int, limit: int, ttl_s: float) -> None:
        self.layer = layer
        self.key = f"{layer.prefix}:ws:connections:team.{team_pk}"
        self.limit = limit
        self.ttl_s = ttl_s

    async def claim(self, connection: str) -> bool:
        redis = redis_for(self.layer, self.key)
        return bool(await redis.eval(_CLAIM, 1, self.key, connection, self.limit, self.ttl_s))

    async def refresh(self, connection: str) -> bool:
        """Push the entry's expiry forward; False if it had vanished (and is now back)."""
        return bool(await redis_for(self.layer, self.key).eval(_REFRESH, 1, self.key, connection, self.ttl_s))

    async def release(self, connection: str) -> None:
        await redis_for(self.layer, self.key).zrem(self.key, connection)

    async def count(self) -> int:
        """Live entries (for tests and operators; expired ones may still be counted until the next claim)."""
        return int(await redis_for(self.layer, self.key).zcard(self.key))
