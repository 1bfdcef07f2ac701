"""The matching worker's heartbeat in Redis, which the health check reads."""

from __future__ import annotations

import time

import redis

HEARTBEAT_KEY = "itg:matching:heartbeat"
HEARTBEAT_TTL_S = 10


def beat(client: redis.Redis) -> None:
    client.set(HEARTBEAT_KEY, str(time.time()), ex=HEARTBEAT_TTL_S)


def worker_alive(client: redis.Redis) -> bool:
    return bool(client.exists(HEARTBEAT_KEY))
