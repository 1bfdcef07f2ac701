"""One error body for every endpoint: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers, status
from rest_framework.response import Response


class ApiError(exceptions.APIException):
    """An error with a stable UPPER_SNAKE code, raised by views and turned into the envelope."""

    def __init__(self, code: str, message: str, http_status: int = 400, details: dict[str, Any] | None = None) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = http_status
        self.error_code = code
        self.message = message
        self.details = details or {}


_DRF_CODES = {
    exceptions.ParseError: "INVALID_JSON",
    exceptions.NotAuthenticated: "NOT_AUTHENTICATED",
    exceptions.AuthenticationFailed: "INVALID_API_KEY",
    exceptions.PermissionDenied: "FORBIDDEN",
    exceptions.NotFound: "NOT_FOUND",
    exceptions.MethodNotAllowed: "METHOD_NOT_ALLOWED",
    exceptions.NotAcceptable: "NOT_ACCEPTABLE",
    exceptions.UnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE",
    exceptions.Throttled: "RATE_LIMIT_EXCEEDED",
    exceptions.ValidationError: "INVALID_REQUEST",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(error_body(exc.error_code, exc.message, exc.details), status=exc.status_code)
    from rest_framework.views import exception_handler as drf_exception_handler  # imports this module's users

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "error_code", None) or next(
        (c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "ERROR"
    )
    if isinstance(exc, exceptions.ValidationError):
        message, details = "the request is not valid", {"fields": exc.detail}
    else:
        message, details = str(getattr(exc, "detail", exc)), {}
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response.status_code = status.HTTP_401_UNAUTHORIZED
    response.data = error_body(code, message, details)
    return response


def not_found(request: Any, exception: Exception | None = None) -> Any:
    from django.http import JsonResponse

    return JsonResponse(error_body("NOT_FOUND", "no such endpoint"), status=404)


def server_error(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse(error_body("INTERNAL_ERROR", "the server failed; nothing was changed by this request"), status=500)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with deeply nested bodies refused like any other unreadable JSON."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON nested too deeply") from None
