"""One URL, two kinds of view: DRF (sync) for reads, the order path's async views for POST and
DELETE (exchange.api.order_views)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.views import APIView

from accounts.authentication import client_address
from exchange.api import order_views


def response(reply: order_views.Reply) -> HttpResponse:
    status, body, headers = reply
    result = HttpResponse(body, status=status, content_type="application/json")
    for name, value in headers:
        if name != b"content-type":
            result[name.decode()] = value.decode()
    return result


def by_method(drf_view: type[APIView]) -> Callable[..., Any]:
    sync_view = drf_view.as_view()

    @csrf_exempt
    async def view(request: HttpRequest, order_id: str | None = None) -> HttpResponse:
        address = client_address(request.META)
        if request.method == "POST" and order_id is None:
            return response(
                order_views.at_capacity() or await order_views.submit(request.headers, request.body, address)
            )
        if request.method == "DELETE" and order_id is None:
            return response(await order_views.cancel_all(request.headers, request.GET, address))
        if request.method == "DELETE":
            return response(await order_views.cancel_one(request.headers, order_id, address))
        kwargs = {} if order_id is None else {"order_id": order_id}
        return await sync_to_async(sync_view)(request, **kwargs)

    return view
