"""The matching queue: one Redis list carries every command (orders, cancels, operator actions)
to the single writer, first in, first out.

A web process puts a command on the list with one script call that also answers the questions
asked before queueing: is the worker there and keeping up (503 otherwise), is the team within
its order rate (429 otherwise). The script numbers each command from a counter the worker seeds
at start, so list order and command-id order are the same, and the worker recognises a command
it has already decided (a redelivery after a crash) by its id alone.

The worker moves a batch from the list to an in-flight list, decides and commits it, and drops
the in-flight list in the same pipeline that sends the replies. After a crash it finds the
in-flight commands again and skips those whose ids it committed.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from django.conf import settings

from infra.redis_clients import sync_client

QUEUE = "itg:matching:queue"
INFLIGHT = "itg:matching:inflight"
SEQ = "itg:matching:seq"
DECIDED = "itg:matching:decided"
VERDICTS = "itg:matching:verdicts:"  # + the web process's id: one pub/sub channel each
REPLY = "itg:matching:reply:"  # + the command id: a list an operator command waits on
RATE = "itg:order-rate:"  # + the team's window id
DECIDED_TTL_S = 3
RATE_WINDOW_US = 1_000_000

QUEUED, RATE_LIMITED, UNAVAILABLE = 1, 0, -1
WORKER_DOWN, WORKER_STALLED, BACKLOG_FULL = 1, 2, 3
UNAVAILABLE_REASONS = {
    WORKER_DOWN: "the matching worker is not running",
    WORKER_STALLED: "the matching worker has decided nothing for a while",
    BACKLOG_FULL: "the matching queue is full",
}

# KEYS: queue, seq, decided, rate window.  ARGV: payload, limit (0: none), window µs, backlog, stall µs.
# Returns {1, command id} | {0, µs until a rate slot frees} | {-1, reason}.
ENQUEUE = """
local decided = redis.call('GET', KEYS[3])
if not decided or redis.call('EXISTS', KEYS[2]) == 0 then return {-1, 1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local depth = redis.call('LLEN', KEYS[1])
if depth > 0 and now - tonumber(decided) > tonumber(ARGV[5]) then return {-1, 2} end
if depth >= tonumber(ARGV[4]) then return {-1, 3} end
local limit = tonumber(ARGV[2])
if limit > 0 then
  local window = tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[4])
  if count >= limit then
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now}
  end
  redis.call('ZADD', KEYS[4], now, t[1] .. '.' .. t[2] .. '-' .. count)
  redis.call('PEXPIRE', KEYS[4], math.ceil(window / 1000))
end
local id = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[1], id .. ' ' .. ARGV[1])
return {1, id}
"""

# Moves at most n commands from the head of the queue to the in-flight list and returns them.
_TAKE_FUNCTION = """
local function take(queue, inflight, n)
  if n < 1 then return {} end
  local items = redis.call('LRANGE', queue, 0, n - 1)
  if #items > 0 then
    redis.call('LTRIM', queue, #items, -1)
    redis.call('RPUSH', inflight, unpack(items))
  end
  return items
end
"""

# KEYS: queue, inflight.  ARGV: at most this many.
TAKE = _TAKE_FUNCTION + "return take(KEYS[1], KEYS[2], tonumber(ARGV[1]))"

# The worker's "I am deciding" mark, in Redis time (health and the web processes read its age).
_MARK_FUNCTION = """
local function mark(key, ttl)
  local t = redis.call('TIME')
  redis.call('SET', key, tonumber(t[1]) * 1000000 + tonumber(t[2]), 'EX', tonumber(ttl))
end
"""

# KEYS: decided, seq.  ARGV: ttl s.  Returns 0 when the command counter is gone (Redis lost its
# data), so the worker seeds it again.
MARK = (
    _MARK_FUNCTION
    + """
mark(KEYS[1], ARGV[1])
return redis.call('EXISTS', KEYS[2])
"""
)

# After a batch committed: its publishes, drop the in-flight list, the mark, and take the next
# batch, all in one command (a round trip, and each command sent, costs the worker more CPU than
# Redis spends running them).
# KEYS: inflight, decided, seq, queue.  ARGV: drop in-flight (0|1), mark ttl s, take at most n,
# then channel, payload, channel, payload...  Returns {counter exists (0|1), the taken commands}.
FINISH = (
    _MARK_FUNCTION
    + _TAKE_FUNCTION
    + """
for i = 4, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end
mark(KEYS[2], ARGV[2])
local items = take(KEYS[4], KEYS[1], tonumber(ARGV[3]))
return {redis.call('EXISTS', KEYS[3]), items}
"""
)

# KEYS: seq.  ARGV: the largest command id already decided.  Never moves the counter back.
SEED = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('GET', KEYS[1])
"""


class WorkerLink:
    """The matching thread's own Redis connection, called without redis-py's client machinery.

    The worker makes one or two Redis calls per batch, and the client's path around each (the
    argument filtering, the retry wrapper, a pool checkout and check-in) cost it as much CPU as
    the call itself. Scripts are loaded once (``load_scripts``, at every start of the loop) and
    called by digest. A failed call drops the connection and raises; the loop then starts again,
    which loads the scripts again (a Redis that restarted has lost them).
    """

    SCRIPTS = (TAKE, MARK, FINISH)

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.connection: Any = None
        self.digests: dict[str, str] = {}

    def load_scripts(self) -> None:
        self.digests = {source: self.client.script_load(source) for source in self.SCRIPTS}

    def script(self, source: str, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The command that runs a script (for ``calls``), loaded on first use."""
        digest = self.digests.get(source)
        if digest is None:
            digest = self.digests[source] = self.client.script_load(source)
        return ("EVALSHA", digest, len(keys), *keys, *args)

    def call(self, *command: Any) -> Any:
        return self.calls(command)[0]

    def calls(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The commands in one write, their replies in order. After a blocking command, the rest
        run the moment it returns, in the same round trip."""
        if self.connection is None:
            pool = self.client.connection_pool
            self.connection = pool.connection_class(**pool.connection_kwargs)
        connection = self.connection
        try:
            # One write: redis-py would send a large argument (the batch's frames) as a write of its own.
            connection.send_packed_command([b"".join(connection.pack_commands(commands))])
            return [connection.read_response() for _ in commands]
        except BaseException:
            self.close()  # replies may be left unread: never reuse the connection
            raise

    def close(self) -> None:
        if self.connection is not None:
            self.connection.disconnect()
            self.connection = None


@dataclass(frozen=True)
class Refused(Exception):
    """The command was not queued: rate limited (429) or the worker cannot take it (503)."""

    status: int
    code: str
    message: str
    retry_after_s: int
    details: dict[str, Any] | None = None


def rate_key(team_pk: int, created_us: int) -> str:
    # The team's creation time is part of the key, so a team id reused after the database was
    # reset never inherits an old team's window.
    return f"{RATE}{team_pk}:{created_us}"


def enqueue_args(payload: bytes, rate_window: str | None, limit: int) -> tuple[list[str], list[Any]]:
    keys = [QUEUE, SEQ, DECIDED, rate_window or QUEUE]
    argv = [
        payload,
        limit if rate_window else 0,
        RATE_WINDOW_US,
        settings.EXCHANGE_MAX_BACKLOG,
        int(settings.EXCHANGE_WORKER_STALL_S * 1_000_000),
    ]
    return keys, argv


def verdict_of_script(result: list[int], limit: int) -> int:
    """The command id, or raise ``Refused`` with the reply the client gets."""
    status, value = int(result[0]), int(result[1])
    if status == QUEUED:
        return value
    if status == RATE_LIMITED:
        wait_ms = max(1, math.ceil(value / 1000))
        raise Refused(
            429,
            "RATE_LIMIT_EXCEEDED",
            f"the limit is {limit} order(s) per second; retry in {wait_ms} ms",
            max(1, math.ceil(wait_ms / 1000)),
            {"limit": limit, "window_s": 1, "retry_after_ms": wait_ms},
        )
    raise Refused(
        503, "MATCHING_UNAVAILABLE", UNAVAILABLE_REASONS.get(value, "unavailable"), 1, {"component": "matching"}
    )


def unavailable(message: str = "Redis is unavailable") -> Refused:
    return Refused(503, "MATCHING_UNAVAILABLE", message, 1, {"component": "redis"})


def encode(command: dict[str, Any]) -> bytes:
    return orjson.dumps(command)


def decode(item: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = item.partition(b" ")
    return int(head), orjson.loads(body)


def operator_command(kind: str, timeout_s: float = 10.0, wait: bool = True, **arguments: Any) -> dict[str, Any]:
    """Queue an operator command behind everything sent before it and wait for its result
    (``wait=False``: only queue it).

    Raises ``Refused`` when the worker cannot take it and ``TimeoutError`` when it took the
    command but did not answer in time (it will still carry it out).
    """
    client = sync_client(timeout_s + 2)
    reply_to = f"{os.getpid()}.{time.monotonic_ns()}"
    command = {"k": kind, "reply": reply_to, **arguments} if wait else {"k": kind, **arguments}
    keys, argv = enqueue_args(encode(command), None, 0)
    argv[3] = 10**9  # operators are never turned away for a long queue
    try:
        command_id = verdict_of_script(client.eval(ENQUEUE, len(keys), *keys, *argv), 0)
        if not wait:
            return {"command_id": command_id}
        answer = client.blpop([REPLY + reply_to], timeout=timeout_s)
    except redis.RedisError as error:
        raise unavailable(str(error)) from error
    if answer is None:
        raise TimeoutError(f"command #{command_id} was queued but not answered within {timeout_s:g} s")
    return dict(orjson.loads(answer[1]), command_id=command_id)


def decode_verdicts(data: bytes) -> list[tuple[int, Any]]:
    """One batch's verdicts for one web process: ``[[command id, reply], ...]``."""
    return [(int(command_id), verdict) for command_id, verdict in orjson.loads(data)]


def matching_alive(client: redis.Redis) -> bool:
    """Whether matching works: the worker marked itself deciding within the last seconds, and
    the queue is not waiting on it longer than the stall allowance."""
    pipe = client.pipeline(transaction=False)
    pipe.get(DECIDED)
    pipe.llen(QUEUE)
    pipe.time()
    decided, depth, (seconds, micros) = pipe.execute()
    if decided is None:
        return False
    waited_us = seconds * 1_000_000 + micros - int(decided)
    return depth == 0 or waited_us <= settings.EXCHANGE_WORKER_STALL_S * 1_000_000


def forget(client: redis.Redis) -> None:
    """Drop the queue's keys: for a database that starts empty (a new game, a test), whose
    journal must not meet commands or counters of the one before."""
    client.delete(QUEUE, INFLIGHT, SEQ, DECIDED, "itg:keys", "itg:role-rates")
