"""The web process's side of the order path: no database, no thread, no lock.

One ``Gateway`` per event loop holds a Redis client, this process's verdict channel and the
futures waiting on it. A command costs one Redis round trip (the queue script: availability,
rate limit, enqueue); the worker publishes each batch's verdicts for this process in one message
on the channel, and the listener resolves the waiting futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Any

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings

from accounts import throttle
from accounts.keycache import CACHE_MAX, CACHE_TTL_S, DIRECTORY, KeyCache, KeyOwner
from exchange.matching import queue
from exchange.matching.publish import ROLE_RATES
from infra.redis_breaker import redis_on_request_path
from infra.redis_clients import ASYNC_TIMEOUT_S, async_client

log = logging.getLogger(__name__)

RATES_TTL_S = 1.0
SHED_MIN_WAITING = 16  # fewer waiting commands are never a reason to refuse (exchange.gateway.Gateway.shedding)
EARLY_KEEP_S = 10.0
LISTEN_POLL_S = 0.05  # how often a command waiting for the verdict channel checks that the listener still tries


class AuthRefused(Exception):
    """401/403/429 in the error envelope."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after_s = status, code, message, retry_after_s


class Gateway:
    def __init__(self) -> None:
        self.web_id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.client: aioredis.Redis = async_client()
        self.script = self.client.register_script(queue.ENQUEUE)
        self.queued: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.early: dict[int, tuple[Any, float]] = {}  # verdicts that beat their request's own reply
        # The commands between the view and their verdict, in this process: serial -> when each
        # came, oldest first.
        self.since: OrderedDict[int, float] = OrderedDict()
        self.serial = 0
        self.keys = KeyCache()
        self.cleared: dict[str | None, float] = {}  # address -> when it was last seen unrefused
        self.rates: dict[str, int] = {}
        self.rates_read_at = -RATES_TTL_S
        self.listening: asyncio.Event = asyncio.Event()
        self.listener: asyncio.Task[None] | None = None
        self.listen_failed = False  # the listener's last subscription attempt failed

    @property
    def in_flight(self) -> int:
        """How many commands of this process wait for their verdicts."""
        return len(self.since)

    # --- authentication: the key cache, Redis on a miss ---------------------------------------------
    async def owner(self, key: str | None, address: str | None) -> KeyOwner:
        """The key's team; an address refused for wrong keys (accounts.throttle) gets 429 before
        its key is looked at, so a right guess from it teaches nothing."""
        if key is None:
            raise AuthRefused(401, "NOT_AUTHENTICATED", "send your API key in the X-API-Key header")
        digest, owner, fresh = self.keys.cached(key)
        check_block = throttle.limit() > 0 and not self._cleared(address)
        if not fresh or check_block:
            if not redis_on_request_path.allows():
                raise queue.unavailable()
            try:
                pipe = self.client.pipeline(transaction=False)
                if check_block:
                    pipe.pttl(throttle.block_key(address))
                if not fresh and digest:
                    pipe.exists(DIRECTORY)
                    pipe.hget(DIRECTORY, digest)
                async with asyncio.timeout(ASYNC_TIMEOUT_S):
                    answers = await pipe.execute() if len(pipe) else []
            except (redis.RedisError, OSError) as error:
                redis_on_request_path.trip()
                raise queue.unavailable() from error
            if check_block:
                blocked_ms = int(answers.pop(0))
                if blocked_ms > 0:
                    raise _too_many_failed(max(1, math.ceil(blocked_ms / 1000)))
                self.cleared[address] = time.monotonic()
            if not fresh:
                directory_exists, raw = answers if answers else (True, None)
                if raw is None and not directory_exists:
                    # Redis lost its data and the worker has not rebuilt the directory yet: the
                    # miss says nothing about the key, so it is neither refused nor counted.
                    raise queue.unavailable("the key directory is being rebuilt")
                owner = self.keys.remember(digest, raw)
        if owner is None:
            self.cleared.pop(address, None)
            await self._failed_key(address)
            raise AuthRefused(401, "INVALID_API_KEY", "the API key is unknown or revoked")
        if not owner.active:
            raise AuthRefused(403, "TEAM_DISABLED", "this team has been disabled by an operator")
        return owner

    @staticmethod
    async def _failed_key(address: str | None) -> None:
        """Wrong keys count against the address (accounts.throttle); a refused address gets 429."""

        def count() -> int | None:
            try:
                throttle.check(address)
            except throttle.TooManyFailedAttempts as refused:
                return refused.retry_after_s
            throttle.record_failure(address)
            return None

        retry_after = await sync_to_async(count, thread_sensitive=False)()
        if retry_after is not None:
            raise _too_many_failed(retry_after)

    def _cleared(self, address: str | None) -> bool:
        """Whether the address was seen unrefused within the key cache's lifetime."""
        seen = self.cleared.get(address)
        if seen is None or time.monotonic() - seen >= CACHE_TTL_S:
            if len(self.cleared) >= CACHE_MAX:
                self.cleared.clear()
            return False
        return True

    async def rate_limit(self, role: str) -> int:
        if time.monotonic() - self.rates_read_at >= RATES_TTL_S:
            async with asyncio.timeout(ASYNC_TIMEOUT_S):
                raw = await self.client.hgetall(ROLE_RATES)
            self.rates = {k.decode(): int(v) for k, v in raw.items()}
            self.rates_read_at = time.monotonic()
        return self.rates.get(role, 0)

    # --- commands -------------------------------------------------------------------------------------
    async def command(self, owner: KeyOwner, command: dict[str, Any], limited: bool, timeout_s: float) -> Any:
        """Queue the command and await its verdict: the reply, ``Refused`` (429/503) or
        ``TimeoutError`` (504)."""
        started = time.monotonic()
        if not redis_on_request_path.allows():
            raise queue.unavailable()
        limit = settings.EXCHANGE_WEB_MAX_IN_FLIGHT
        if limit and self.in_flight >= limit:
            raise queue.Refused(
                503,
                "MATCHING_UNAVAILABLE",
                f"this web process has {self.in_flight} commands waiting for their verdicts; retry shortly",
                1,
                {"component": "web"},
            )
        self.serial += 1
        serial = self.serial
        self.since[serial] = started
        try:
            return await self._command(owner, command, limited, timeout_s, started)
        finally:
            del self.since[serial]

    async def _command(
        self, owner: KeyOwner, command: dict[str, Any], limited: bool, timeout_s: float, started: float
    ) -> Any:
        try:
            await self._listen()
            limit = await self.rate_limit(owner.role) if limited else 0
            window = queue.rate_key(owner.team_pk, owner.created_us) if limit else None
            keys, argv = queue.enqueue_args(
                queue.encode({**command, "r": self.web_id, "t": owner.team_pk}), window, limit
            )
            result = await self._enqueue(keys, argv)
        except (redis.RedisError, OSError, TimeoutError) as error:
            redis_on_request_path.trip()
            raise queue.unavailable() from error
        command_id = queue.verdict_of_script(result, limit)
        early = self.early.pop(command_id, None)
        if early is not None:
            return early[0]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        try:
            async with asyncio.timeout(max(0.01, timeout_s - (time.monotonic() - started))):
                return await future
        finally:
            self.waiting.pop(command_id, None)

    async def _enqueue(self, keys: list[str], argv: list[Any]) -> Any:
        """Run the queue script for one command. Commands that arrive in the same turn of the
        event loop share one pipeline: a Redis round trip costs the process ~0.1 ms of CPU,
        several commands in one trip ~0.03 ms each. Their order in the pipeline is their order
        of arrival, which is their order in the queue."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queued.append((keys, argv, future))
        if len(self.queued) == 1:
            asyncio.get_running_loop().call_soon(self._send_queued)
        return await future

    def _send_queued(self) -> None:
        commands, self.queued = self.queued, []
        asyncio.get_running_loop().create_task(self._run_queued(commands))

    async def _run_queued(self, commands: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            async with asyncio.timeout(ASYNC_TIMEOUT_S):
                results = await self._run_scripts(commands)
        except BaseException as error:
            for _, _, future in commands:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else redis.RedisError(str(error)))
            if not isinstance(error, Exception):
                raise
            return
        for (_, _, future), result in zip(commands, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _run_scripts(self, commands: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        if len(commands) == 1:
            keys, argv, _ = commands[0]
            return [await self.script(keys=keys, args=argv)]
        pipe = self.client.pipeline(transaction=False)
        for keys, argv, _ in commands:
            pipe.evalsha(self.script.sha, len(keys), *keys, *argv)  # the SHA is computed locally
        results: list[Any] = await pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            if isinstance(result, redis.exceptions.NoScriptError):  # Redis restarted
                keys, argv, _ = commands[index]
                results[index] = await self.script(keys=keys, args=argv)
        return results

    # --- verdicts: one pub/sub channel per web process -------------------------------------------------
    def shedding(self) -> bool:
        """Whether this process is past its capacity: at least ``SHED_MIN_WAITING`` of its commands
        wait for verdicts and the oldest has waited ``EXCHANGE_WEB_MAX_WAIT_S``, or it holds
        ``EXCHANGE_WEB_MAX_IN_FLIGHT``. New orders are then refused before they are read (503), so
        the ones it took are still answered in time: past its CPU, a process reads requests faster
        than it finishes them, and every order it took more would make every reply later."""
        limit = settings.EXCHANGE_WEB_MAX_IN_FLIGHT
        if limit and self.in_flight >= limit:
            return True
        wait_limit = settings.EXCHANGE_WEB_MAX_WAIT_S
        return (
            bool(wait_limit)
            and self.in_flight >= SHED_MIN_WAITING
            and time.monotonic() - next(iter(self.since.values())) > wait_limit
        )

    async def _listen(self) -> None:
        """The verdict channel is subscribed before a command is sent (a verdict published before
        would be lost). While the listener cannot subscribe (Redis is away), fail at once: the
        caller answers 503 rather than wait out the subscription's own timeout."""
        if self.listener is None or self.listener.done():
            self.listening.clear()
            self.listen_failed = False
            self.listener = asyncio.get_running_loop().create_task(self._receive(), name="verdicts")
        if self.listening.is_set():
            return
        async with asyncio.timeout(2):
            while not self.listening.is_set():
                if self.listen_failed or self.listener.done():
                    raise redis.ConnectionError("the verdict channel is not subscribed")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LISTEN_POLL_S):
                        await self.listening.wait()

    async def _receive(self) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(queue.VERDICTS + self.web_id)
                async with asyncio.timeout(2):  # the subscription is in place before any command is sent
                    while (await pubsub.get_message(timeout=1)) is None:
                        pass
                self.listen_failed = False
                self.listening.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._resolve(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                # The traceback once per outage, not on every retry.
                log.warning(
                    "the verdict channel of %s was lost; subscribing again",
                    self.web_id,
                    exc_info=self.listening.is_set(),
                )
                self.listening.clear()
                self.listen_failed = True  # commands fail at once, and trip the breaker themselves
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _resolve(self, data: bytes) -> None:
        now = time.monotonic()
        for command_id, verdict in queue.decode_verdicts(data):
            future = self.waiting.get(command_id)
            if future is not None:
                if not future.done():
                    future.set_result(verdict)
            else:
                self.early[command_id] = (verdict, now)
        if len(self.early) > 1000:
            self.early = {k: v for k, v in self.early.items() if now - v[1] < EARLY_KEEP_S}


def _too_many_failed(retry_after_s: int) -> AuthRefused:
    unit = "second" if retry_after_s == 1 else "seconds"
    message = f"too many failed API key checks from this address. Retry in {retry_after_s} {unit}."
    return AuthRefused(429, "TOO_MANY_FAILED_AUTH", message, retry_after_s)


_gateways: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gateway] = weakref.WeakKeyDictionary()


def gateway() -> Gateway:
    """The running event loop's gateway."""
    loop = asyncio.get_running_loop()
    found = _gateways.get(loop)
    if found is None:
        found = _gateways[loop] = Gateway()
    return found
