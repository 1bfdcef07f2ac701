"""Request guards that must run before anything reads the body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

from exchange import clock, wire
from exchange.codes import RejectCode
from infra.errors import error_body

MAX_BODY_BYTES = 64 * 1024


def _too_large(request: HttpRequest) -> HttpResponse | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= MAX_BODY_BYTES:
        return None
    message = f"the body is larger than {MAX_BODY_BYTES} bytes"
    details = {"max_bytes": MAX_BODY_BYTES}
    if request.path == "/orders" and request.method == "POST":
        stamp = clock.iso(clock.now())
        reply = wire.refused_order_reply(stamp, RejectCode.PAYLOAD_TOO_LARGE, message, details=details)
        return JsonResponse(reply, status=413)
    return JsonResponse(error_body(RejectCode.PAYLOAD_TOO_LARGE, message, details), status=413)


class BodySizeLimit:
    """Answer an oversized body with 413 in JSON (the documented shapes), unread."""

    async_capable = True
    sync_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        return _too_large(request) or self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return _too_large(request) or await self.get_response(request)
