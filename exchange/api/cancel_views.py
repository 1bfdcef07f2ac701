"""Cancels: ``DELETE /orders/{order_id}`` and ``DELETE /orders``.

Async views, because the reply waits (bounded) for the matching engine's verdict and a waiting
request must not hold a worker thread. They answer in the cancel-reply shape, except 401/403.
"""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, JsonResponse

from accounts.authentication import TooManyFailedAuth, client_address
from accounts.keys import verify_key
from accounts.models import Team
from accounts.throttle import TooManyFailedAttempts
from exchange import clock, verdicts
from exchange.api.order_input import printable
from exchange.codes import RejectCode
from exchange.models import Order
from exchange.services.cancels import CancelRequest, cancel_verdicts_from_journal, order_cancel_request
from tradinggame.errors import error_body

VERDICT_TIMEOUT_S = 5.0


async def authenticated_team(request: HttpRequest) -> Team | JsonResponse:
    key = request.headers.get("X-API-Key")
    if key is None:
        return JsonResponse(error_body("NOT_AUTHENTICATED", "send your API key in the X-API-Key header"), status=401)
    try:
        team = await database_sync_to_async(verify_key)(key, client_address(request.META))
    except TooManyFailedAttempts as refused:
        refusal = TooManyFailedAuth(refused.retry_after_s)  # the same body as the REST views give
        response = JsonResponse(error_body(refusal.error_code, str(refusal.detail)), status=429)
        response["Retry-After"] = str(refused.retry_after_s)
        return response
    if team is None:
        return JsonResponse(error_body("INVALID_API_KEY", "the API key is unknown or revoked"), status=401)
    if not team.active:
        return JsonResponse(error_body("TEAM_DISABLED", "this team has been disabled by an operator"), status=403)
    return team


def cancel_reply(order: Order | None, order_id: str, verdict: dict[str, Any] | None) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "order_id": order_id,
        "client_order_id": order.client_order_id if order else None,
        "status": "pending_cancel",
        "cancelled_quantity": 0,
        "filled_quantity": order.filled_quantity if order else 0,
        "error_code": None,
        "error_message": None,
        "timestamp": clock.iso(clock.now()),
    }
    if verdict is not None:
        reply["status"] = verdict["status"]
        reply["cancelled_quantity"] = verdict.get("cancelled_quantity", 0)
        reply["filled_quantity"] = verdict.get("filled_quantity", reply["filled_quantity"])
        reply["error_code"] = verdict.get("error_code")
        reply["error_message"] = verdict.get("error_message")
    return reply


async def settle(requests: list[CancelRequest], started: float) -> list[dict[str, Any]]:
    """Wait for the engine's verdicts, then read any that were missed from the journal."""
    waiting = [r.command_id for r in requests if r.verdict is None and r.command_id is not None]
    # The bound counts from the request's arrival, not from when the cancel was journalled.
    left = max(0.1, VERDICT_TIMEOUT_S - (time.monotonic() - started))
    found = await verdicts.wait(waiting, left) if waiting else {}
    missed = [pk for pk in waiting if pk not in found]
    if missed:
        found.update(await database_sync_to_async(cancel_verdicts_from_journal)(missed))
    replies = []
    for request in requests:
        verdict = request.verdict if request.verdict is not None else found.get(request.command_id or 0)
        replies.append(cancel_reply(request.order, request.order.order_id, verdict))
    return replies


def _status(reply: dict[str, Any]) -> int:
    if reply["status"] == "pending_cancel":
        return 504
    if reply["error_code"] == RejectCode.ORDER_NOT_FOUND:
        return 404
    return 200


async def cancel_one(request: HttpRequest, order_id: str) -> JsonResponse:
    started = time.monotonic()
    from exchange.api.views import parse_id

    team = await authenticated_team(request)
    if isinstance(team, JsonResponse):
        return team
    pk = parse_id(order_id, "ORD")
    requests = await database_sync_to_async(order_cancel_request)(team, [pk]) if pk else []
    if not requests:
        reply = cancel_reply(
            None,
            order_id,
            {"status": "rejected", "error_code": RejectCode.ORDER_NOT_FOUND, "error_message": "no such order"},
        )
        return JsonResponse(reply, status=404)
    [reply] = await settle(requests, started)
    return JsonResponse(reply, status=_status(reply))


async def cancel_all(request: HttpRequest) -> JsonResponse:
    started = time.monotonic()
    team = await authenticated_team(request)
    if isinstance(team, JsonResponse):
        return team
    instrument = request.GET.get("instrument_id") or None
    if instrument is not None and not printable(instrument):
        return JsonResponse(error_body("INVALID_REQUEST", "instrument_id holds control characters"), status=400)
    requests = await database_sync_to_async(order_cancel_request)(team, None, instrument)
    replies = await settle(requests, started)
    return JsonResponse(
        {"results": replies}, status=504 if any(r["status"] == "pending_cancel" for r in replies) else 200
    )
