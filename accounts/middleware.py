"""WebSocket authentication: ``?api_key=`` in the query string, verified like ``X-API-Key``;
and the re-check that ends open connections whose key was revoked or whose team was disabled."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from accounts.keys import key_digest, keys_refused, verify_key
from accounts.throttle import TooManyFailedAttempts

log = logging.getLogger(__name__)

TOO_MANY_FAILED_ATTEMPTS = "too many failed attempts"


def recheck_interval_s() -> float:
    """``settings.EXCHANGE_WS_KEY_RECHECK_S``, at least 0.05 s."""
    return max(0.05, float(settings.EXCHANGE_WS_KEY_RECHECK_S))


def client_address(scope: dict[str, Any]) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class ApiKeyAuthMiddleware:
    """Puts the key's team (or None) in ``scope["team"]``; the consumer decides what to do.

    With a team it adds ``scope["api_key_digest"]`` (for ``watch_key``); when the address is
    refused for too many failed checks it adds ``scope["auth_refusal"]``, the close reason.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key = (query.get("api_key") or [None])[0]
        try:
            team = await database_sync_to_async(verify_key)(key, client_address(scope))
        except TooManyFailedAttempts:
            scope = dict(scope, team=None, auth_refusal=TOO_MANY_FAILED_ATTEMPTS)
        else:
            scope = dict(scope, team=team)
            if team is not None and key is not None:
                scope["api_key_digest"] = key_digest(key)
        return await self.app(scope, receive, send)


class KeyWatch:
    """Re-checks the keys of a process's open connections, all of them in one query, every
    ``EXCHANGE_WS_KEY_RECHECK_S`` seconds (default 2), and tells the connections whose key was
    revoked (a rotation revokes the old keys) or whose team was disabled.

    Polling the database rather than waiting for a notice: whatever path changed the key or the
    team (admin, a command, a plain ``UPDATE``), the change is seen, and no message can be lost.
    The task runs only while connections are watched. A failed query is logged and retried at
    the next tick: connections stay open while the database cannot be asked.
    """

    def __init__(self) -> None:
        self.watchers: dict[str, set[Callable[[str], None]]] = {}
        self.task: asyncio.Task[None] | None = None

    def watch(self, digest: str, on_refused: Callable[[str], None]) -> Callable[[], None]:
        self.watchers.setdefault(digest, set()).add(on_refused)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

        def unwatch() -> None:
            callbacks = self.watchers.get(digest)
            if callbacks is not None:
                callbacks.discard(on_refused)
                if not callbacks:
                    del self.watchers[digest]

        return unwatch

    async def run(self) -> None:
        while self.watchers:
            await asyncio.sleep(recheck_interval_s())
            if self.watchers:
                await self.check()

    async def check(self) -> None:
        try:
            refused = await database_sync_to_async(keys_refused)(list(self.watchers))
        except Exception:
            log.warning("could not re-check the API keys of open connections", exc_info=True)
            return
        for digest, reason in refused.items():
            for on_refused in list(self.watchers.pop(digest, ())):
                try:
                    on_refused(reason)
                except Exception:
                    log.exception("closing a connection of a refused key failed")


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, KeyWatch] = weakref.WeakKeyDictionary()


def watch_key(digest: str, on_refused: Callable[[str], None]) -> Callable[[], None]:
    """Call ``on_refused(reason)`` once the key is revoked or its team disabled; returns the
    function that stops watching (call it when the connection ends)."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = KeyWatch()
    return watch.watch(digest, on_refused)
