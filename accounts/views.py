"""Open registration: ``POST /auth/register``."""

from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Role
from accounts.services import TeamNameTaken, team_register
from infra.errors import ApiError


class RegisterInput(serializers.Serializer):
    team_name = serializers.CharField(min_length=3, max_length=50, trim_whitespace=True)
    role = serializers.ChoiceField(choices=Role.choices)


class RegisterView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        from exchange.selectors import game_state

        if not isinstance(request.data, dict):
            raise ApiError("INVALID_JSON", "the body must be a JSON object")
        unknown = sorted(set(request.data) - {"team_name", "role"})
        if unknown:
            raise ApiError("UNKNOWN_FIELD", f"unknown field: {unknown[0]}", details={"fields": unknown})
        data = RegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        if not game_state().registration_open:
            raise ApiError("REGISTRATION_CLOSED", "registration is closed; ask an operator for a team", 403)
        try:
            team, key = team_register(data.validated_data["team_name"], data.validated_data["role"])
        except TeamNameTaken:
            raise ApiError("TEAM_NAME_TAKEN", "a team with this name already exists", 409) from None
        return Response(
            {
                "team_id": team.team_id,
                "team_name": team.name,
                "role": team.role,
                "api_key": key,
                "created_at": team.created_at,
            },
            status=status.HTTP_201_CREATED,
        )
