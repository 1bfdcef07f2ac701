"""WebSocket routes: ``/ws?api_key=...``; any other path is accepted and closed with 1008."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from django.urls import re_path

from accounts.middleware import ApiKeyAuthMiddleware
from exchange.consumers import POLICY_VIOLATION, TeamConsumer


class UnknownPathConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.close(code=POLICY_VIOLATION, reason="unknown path; connect to /ws?api_key=...")


websocket_application = ApiKeyAuthMiddleware(
    URLRouter([re_path(r"^ws/?$", TeamConsumer.as_asgi()), re_path(r"", UnknownPathConsumer.as_asgi())])
)
