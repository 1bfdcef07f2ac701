"""ASGI entry point: HTTP goes to Django (REST, admin), ``/ws`` to the Channels consumer."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradinggame.settings")  # before Django is configured

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


class OrderPathASGIHandler(SharedThreadASGIHandler):
    """Serves the order path's three routes without Django's request cycle.

    Django's handler sends ``request_started``/``request_finished`` (database housekeeping) and
    closes the response through ``sync_to_async``, and its middleware runs sync hooks the same
    way: each a thread hop, which cost more than the whole order path. These routes use no
    database, so they go straight to their async views (exchange.api.order_views); every other
    request takes the usual way.
    """

    async def __call__(self, scope: dict, receive: object, send: object) -> None:  # type: ignore[override]
        if scope["type"] == "http" and scope["method"] in ("POST", "DELETE"):
            path = scope["path"]
            if path == "/orders" or (path.startswith("/orders/") and "/" not in path[8:]):
                await serve_order_path(scope, receive, send)  # type: ignore[arg-type]
                return
        await super().__call__(scope, receive, send)


django_http = OrderPathASGIHandler()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from exchange.routing import websocket_application  # noqa: E402
from tradinggame.fastpath import serve_order_path  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_http) if settings.DEBUG else django_http,
        "websocket": websocket_application,
    }
)
