"""Cancel verdicts: the matching worker posts each one to Redis after commit, and the web
process that asked waits for it there (``BLPOP``) instead of polling the database."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

KEY = "itg:verdict:{}"
KEEP_S = 60


def post(client: redis.Redis, verdicts: dict[int, dict[str, Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for command_id, verdict in verdicts.items():
        key = KEY.format(command_id)
        pipe.rpush(key, json.dumps(verdict))
        pipe.expire(key, KEEP_S)
    pipe.execute()


async def wait(command_ids: list[int], timeout_s: float) -> dict[int, dict[str, Any]]:
    """The verdicts that arrive within the time allowed, by command id (bounded even when Redis
    stops answering: the caller then reads the journal)."""
    found: dict[int, dict[str, Any]] = {}
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_collect(command_ids, timeout_s, found), timeout_s)
    return found


async def _collect(command_ids: list[int], timeout_s: float, found: dict[int, dict[str, Any]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    try:
        for command_id in command_ids:
            left = deadline - loop.time()
            if left <= 0:
                break
            reply = await client.blpop([KEY.format(command_id)], timeout=max(left, 0.01))
            if reply is not None:
                found[command_id] = json.loads(reply[1])
    except redis.RedisError:
        pass  # the caller falls back to the journal
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 0.5)
