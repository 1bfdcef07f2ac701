"""One URL, two kinds of view: DRF (sync) for reads and submits, async views for cancels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.views import APIView

from exchange.api import cancel_views


def by_method(drf_view: type[APIView], delete: str) -> Callable[..., Any]:
    sync_view = drf_view.as_view()
    cancel = getattr(cancel_views, delete)

    @csrf_exempt
    async def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if request.method == "DELETE":
            return await cancel(request, **kwargs)
        return await sync_to_async(sync_view)(request, **kwargs)

    return view
