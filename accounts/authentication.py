"""REST authentication by ``X-API-Key`` and the permission that refuses disabled teams."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from accounts.keys import verify_key
from accounts.models import Team
from accounts.throttle import TooManyFailedAttempts
from infra.errors import ApiError

TOO_MANY_FAILED_AUTH = "TOO_MANY_FAILED_AUTH"
TOO_MANY_FAILED_AUTH_MESSAGE = "too many failed API key checks from this address"


class TooManyFailedAuth(exceptions.Throttled):
    """429 in the error envelope, with ``Retry-After`` (DRF adds the header from ``wait``)."""

    error_code = TOO_MANY_FAILED_AUTH
    extra_detail_singular = "Retry in {wait} second."
    extra_detail_plural = "Retry in {wait} seconds."

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(wait=retry_after_s, detail=TOO_MANY_FAILED_AUTH_MESSAGE + ".")


def client_address(meta: dict[str, Any]) -> str | None:
    """The peer's address as the ASGI server reports it (``REMOTE_ADDR``)."""
    return meta.get("REMOTE_ADDR") or None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    header = "HTTP_X_API_KEY"

    def authenticate(self, request: Request) -> tuple[Team, None] | None:
        key = request.META.get(self.header)
        if key is None:
            return None
        try:
            team = verify_key(key, client_address(request.META))
        except TooManyFailedAttempts as refused:
            raise TooManyFailedAuth(refused.retry_after_s) from None
        if team is None:
            raise ApiError("INVALID_API_KEY", "the API key is unknown or revoked", 401)
        return team, None

    def authenticate_header(self, request: Request) -> str:
        return "X-API-Key"


class IsActiveTeam(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        team = request.user
        if not isinstance(team, Team):
            raise ApiError("NOT_AUTHENTICATED", "send your API key in the X-API-Key header", 401)
        if not team.active:
            raise ApiError("TEAM_DISABLED", "this team has been disabled by an operator", 403)
        return True


def team_of(request: Request) -> Team:
    team = request.user
    if not isinstance(team, Team):  # pragma: no cover - IsActiveTeam guarantees it
        raise exceptions.NotAuthenticated()
    return team
