"""REST authentication by ``X-API-Key`` and the permission that refuses disabled teams."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from accounts.keys import team_for_key
from accounts.models import Team
from tradinggame.errors import ApiError


class ApiKeyAuthentication(authentication.BaseAuthentication):
    header = "HTTP_X_API_KEY"

    def authenticate(self, request: Request) -> tuple[Team, None] | None:
        key = request.META.get(self.header)
        if key is None:
            return None
        team = team_for_key(key)
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
