"""WebSocket routes: ``/ws?api_key=...``."""

from __future__ import annotations

from channels.routing import URLRouter
from django.urls import re_path

from accounts.middleware import ApiKeyAuthMiddleware
from exchange.consumers import TeamConsumer

websocket_application = ApiKeyAuthMiddleware(URLRouter([re_path(r"^ws/?$", TeamConsumer.as_asgi())]))
