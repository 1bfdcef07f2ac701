"""The ASGI side of the order path: read the request, call its view, write the reply.

Bodies over 64 KiB are refused (413 in the order-reply shape) without being read further.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from exchange import clock, wire
from exchange.api import order_views
from exchange.api.order_input import MAX_BODY
from exchange.codes import RejectCode

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def read_body(receive: Receive) -> bytes | None:
    """The whole body, or None once it passes ``MAX_BODY`` (or the client went away)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def serve_order_path(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    # Past its capacity, the process refuses a new order before reading it: a refusal that costs
    # little, so the orders it took are still answered in time.
    shed = order_views.at_capacity() if scope["method"] == "POST" and scope["path"] == "/orders" else None
    status, payload, extra = shed or await _route(scope, receive)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*extra, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _route(scope: dict[str, Any], receive: Receive) -> order_views.Reply:
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    client = scope.get("client")
    address = str(client[0]) if client else None
    path = scope["path"]
    if scope["method"] == "POST" and path == "/orders":
        body = await read_body(receive)
        if body is None:
            reply = wire.refused_order_reply(
                clock.iso(clock.now()),
                RejectCode.PAYLOAD_TOO_LARGE,
                f"the body is larger than {MAX_BODY} bytes",
                details={"max_bytes": MAX_BODY},
            )
            status, payload, extra = 413, orjson.dumps(reply), order_views.JSON
        else:
            status, payload, extra = await order_views.submit(headers, body, address)
    elif scope["method"] == "DELETE" and path == "/orders":
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        status, payload, extra = await order_views.cancel_all(headers, query, address)
    elif scope["method"] == "DELETE":
        status, payload, extra = await order_views.cancel_one(headers, path[len("/orders/") :], address)
    else:  # POST /orders/{id}: the route exists for GET and DELETE only
        payload = orjson.dumps({"error": {"code": "METHOD_NOT_ALLOWED", "message": "use GET or DELETE", "details": {}}})
        status, extra = 405, [*order_views.JSON, (b"allow", b"GET, DELETE")]
    return status, payload, extra
