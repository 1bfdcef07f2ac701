"""ASGI entry point: HTTP goes to Django (REST, admin), ``/ws`` to the Channels consumer."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradinggame.settings")

import django  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

django.setup(set_prefix=False)


class SharedThreadASGIHandler(ASGIHandler):
    """Django's ASGI handler, minus the per-request ``ThreadSensitiveContext``.

    That context gives every request a new thread for its sync code, and a database connection
    is per thread: each request would open (and close) its own connection. Without it, sync
    views share one long-lived thread, so connections persist (``CONN_MAX_AGE``) and no thread
    is started per request. Sync views were already serialized on the GIL either way.
    """

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[override]
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)


django_http = SharedThreadASGIHandler()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from exchange.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_http) if settings.DEBUG else django_http,
        "websocket": websocket_application,
    }
)
