"""WebSocket authentication: ``?api_key=`` in the query string, verified like ``X-API-Key``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from accounts.keys import team_for_key


class ApiKeyAuthMiddleware:
    """Puts the key's team (or None) in ``scope["team"]``; the consumer decides what to do."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key = (query.get("api_key") or [None])[0]
        scope = dict(scope, team=await database_sync_to_async(team_for_key)(key))
        return await self.app(scope, receive, send)
