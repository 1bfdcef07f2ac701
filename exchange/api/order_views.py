"""The order path's three routes: ``POST /orders``, ``DELETE /orders/{id}``, ``DELETE /orders``.

Plain async views (measured cheaper than a DRF view per order; every other endpoint stays DRF):
the key from the key cache, the form checks, then the matching queue and the bounded wait for
the worker's verdict (``exchange.gateway``). No ORM, no database connection, no thread.

Each view is a function of the request's parts returning ``(status, body, headers)``, so the
ASGI fast path (``tradinggame.asgi``) serves them without building a Django request, and the
URLconf serves the same functions to everything else (the test client, ``runserver``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from django.conf import settings

from accounts.keycache import KeyOwner
from exchange import clock, wire
from exchange.api.order_input import OrderFormError, order_request, parse_body, printable
from exchange.codes import RejectCode
from exchange.gateway import AuthRefused, gateway
from exchange.matching.queue import Refused
from infra.errors import error_body

ORDER_ID = re.compile(r"^ORD_([0-9]{1,18})$")
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]
JSON = [(b"content-type", b"application/json")]


def _reply(status: int, body: Any, retry_after: int | None = None) -> Reply:
    headers = list(JSON)
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return status, orjson.dumps(body), headers


class Answered(Exception):
    """A route's reply decided before its own work (see ``_owner``)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply


def answers(view: Callable[..., Awaitable[Reply]]) -> Callable[..., Awaitable[Reply]]:
    @functools.wraps(view)
    async def route(*args: Any) -> Reply:
        try:
            return await view(*args)
        except Answered as answered:
            return answered.reply

    return route


async def _owner(headers: Mapping[str, str], address: str | None, unavailable: Callable[[Refused], Any]) -> KeyOwner:
    """The key's team, or ``Answered``: 401/403 in the error envelope, 503 (the key directory is
    out of reach) in the route's own shape, which ``unavailable`` builds."""
    try:
        return await gateway().owner(headers.get("x-api-key"), address)
    except AuthRefused as error:
        raise Answered(_reply(error.status, error_body(error.code, error.message), error.retry_after_s)) from None
    except Refused as refused:
        raise Answered(_reply(503, unavailable(refused), 1)) from None


def at_capacity() -> Reply | None:
    """``POST /orders`` refused before its request is read (503) while this process sheds new
    orders (``Gateway.shedding``); None otherwise. Every route to ``submit`` asks this first."""
    if not gateway().shedding():
        return None
    message = "this web process is at capacity; the order was not taken, retry shortly"
    stamp = clock.iso(clock.now())
    return _reply(
        503, wire.refused_order_reply(stamp, "MATCHING_UNAVAILABLE", message, details={"component": "web"}), 1
    )


@answers
async def submit(headers: Mapping[str, str], body: bytes, address: str | None) -> Reply:
    """``POST /orders``: always the order-reply shape, except 401/403 (the error envelope)."""
    stamp = clock.iso(clock.now())
    owner = await _owner(
        headers,
        address,
        lambda refused: wire.refused_order_reply(stamp, refused.code, refused.message, details=refused.details),
    )
    request_id = None
    try:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/json", ""):
            raise OrderFormError(RejectCode.UNSUPPORTED_MEDIA_TYPE, "send the order as application/json", status=415)
        data = parse_body(body)
        if isinstance(data.get("request_id"), str) and printable(data["request_id"]):
            request_id = data["request_id"][:64]
        order = order_request(data)
    except OrderFormError as error:
        reply = wire.refused_order_reply(stamp, error.code, error.message, request_id=request_id, details=error.details)
        return _reply(error.status, reply)
    command = {
        "k": "s",
        "i": order.instrument_id,
        "s": order.side,
        "y": order.order_type,
        "f": order.time_in_force,
        "p": None if order.price is None else str(order.price),
        "q": order.quantity,
        "c": order.client_order_id,
        "rq": order.request_id,
    }
    try:
        verdict = await gateway().command(owner, command, True, settings.EXCHANGE_VERDICT_TIMEOUT_S)
    except Refused as refused:
        reply = wire.refused_order_reply(
            stamp,
            refused.code,
            refused.message,
            client_order_id=order.client_order_id,
            request_id=order.request_id,
            details=refused.details,
        )
        return _reply(refused.status, reply, refused.retry_after_s)
    except TimeoutError:
        reply = wire.refused_order_reply(
            stamp,
            RejectCode.TIMEOUT,
            "the matching engine has not answered yet; the order may still be accepted (watch the WebSocket)",
            status="pending_new",
            client_order_id=order.client_order_id,
            request_id=order.request_id,
        )
        return _reply(504, reply)
    return _reply(200, verdict)


@answers
async def cancel_one(headers: Mapping[str, str], order_id: str, address: str | None) -> Reply:
    """``DELETE /orders/{id}``: the cancel-reply shape, except 401/403."""
    stamp = clock.iso(clock.now())
    owner = await _owner(
        headers, address, lambda refused: _cancel_refused(order_id, stamp, refused.code, refused.message)
    )
    match = ORDER_ID.match(order_id)
    if match is None:
        return _reply(404, _cancel_refused(order_id, stamp, RejectCode.ORDER_NOT_FOUND, "no such order"))
    try:
        verdict = await gateway().command(
            owner, {"k": "c", "o": int(match.group(1))}, False, settings.EXCHANGE_VERDICT_TIMEOUT_S
        )
    except Refused as refused:
        return _reply(
            refused.status, _cancel_refused(order_id, stamp, refused.code, refused.message), refused.retry_after_s
        )
    except TimeoutError:
        pending = wire.cancel_reply(order_id, stamp, "pending_cancel", error_code=RejectCode.TIMEOUT)
        pending["error_message"] = "the matching engine has not answered yet; the verdict comes over the WebSocket"
        return _reply(504, pending)
    status = 404 if verdict.get("error_code") == RejectCode.ORDER_NOT_FOUND else 200
    return _reply(status, verdict)


def _cancel_refused(order_id: str, stamp: str, code: str, message: str) -> wire.CancelReply:
    return wire.cancel_reply(order_id[:64], stamp, "rejected", error_code=code, error_message=message)


@answers
async def cancel_all(headers: Mapping[str, str], query: Mapping[str, str], address: str | None) -> Reply:
    """``DELETE /orders[?instrument_id=]``: ``{"results": [...]}``; its own errors in the envelope."""
    owner = await _owner(headers, address, lambda refused: error_body(refused.code, refused.message, refused.details))
    instrument = query.get("instrument_id") or None
    if instrument is not None and (len(instrument) > 64 or not printable(instrument)):
        return _reply(400, error_body("INVALID_FILTER", "instrument_id must be 1 to 64 printable characters"))
    try:
        verdict = await gateway().command(
            owner, {"k": "ca", "i": instrument}, False, settings.EXCHANGE_VERDICT_TIMEOUT_S
        )
    except Refused as refused:
        return _reply(refused.status, error_body(refused.code, refused.message, refused.details), refused.retry_after_s)
    except TimeoutError:
        return _reply(
            504, error_body("TIMEOUT", "the matching engine has not answered yet; cancels come over the WebSocket")
        )
    if "error" in verdict:
        phase = verdict.get("phase")
        return _reply(409, error_body("MARKET_CLOSED", f"cancels are not taken in phase {phase}", {"phase": phase}))
    return _reply(200, verdict)
