"""The REST API: one view per action; writes go through services, reads through selectors."""

from __future__ import annotations

import re
from datetime import UTC

import redis
from django.conf import settings
from django.db import connection
from django.utils.dateparse import parse_datetime
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import team_of
from accounts.models import Role
from accounts.services import TeamNameTaken, team_register
from exchange import clock, wire
from exchange.api.order_input import printable
from exchange.matching.queue import matching_alive
from exchange.models import Fill, Instrument, Order
from exchange.selectors import (
    account_snapshot,
    book_depth,
    fill_object,
    game_state,
    last_trade,
    listed_instruments,
    order_object,
    team_fills,
    team_positions,
)
from infra.errors import ApiError

ID_PATTERN = re.compile(r"^(ORD|TRD|TEAM)_([0-9]{1,18})$")
DIGITS = re.compile(r"^[0-9]{1,3}$")


def query_param(request: Request, name: str) -> str | None:
    """A query parameter, refused (400) when it holds control characters."""
    value = request.query_params.get(name)
    if value is not None and not printable(value):
        raise ApiError("INVALID_REQUEST", f"{name} holds control characters", 400, {"field": name})
    return value or None


def parse_id(value: str, prefix: str) -> int | None:
    match = ID_PATTERN.match(value or "")
    if not match or match.group(1) != prefix:
        return None
    return int(match.group(2))


class HealthView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        components = wire.HealthComponents(database=_database_ok(), redis=False, matching_worker=False)
        try:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
            components["redis"] = bool(client.ping())
            components["matching_worker"] = matching_alive(client)
        except redis.RedisError:
            pass
        healthy = all(components.values())
        body = wire.Health(
            status="ok" if healthy else "degraded", service=settings.EXCHANGE_SERVICE_NAME, components=components
        )
        return Response(body, status=200 if healthy else 503)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


class RegisterInput(serializers.Serializer):
    team_name = serializers.CharField(min_length=3, max_length=50, trim_whitespace=True)
    role = serializers.ChoiceField(choices=Role.choices)


class RegisterView(APIView):
    """Open registration, while the game lets teams register (an operator can close it)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
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


class OrdersView(APIView):
    def get(self, request: Request) -> Response:
        team = team_of(request)
        orders = Order.objects.filter(team=team).order_by("id")
        if query_param(request, "status") != "all":
            orders = orders.filter(status__in=("pending_new", "new", "partially_filled"))
        if instrument := query_param(request, "instrument_id"):
            orders = orders.filter(instrument_symbol=instrument)
        if since := query_param(request, "since"):
            try:
                moment = parse_datetime(since)
                # In UTC before it reaches the database (PostgreSQL refuses offsets past ±15:59).
                moment = moment.astimezone(UTC) if moment and moment.tzinfo else moment and moment.replace(tzinfo=UTC)
            except (ValueError, OverflowError):
                moment = None
            if moment is None:
                raise ApiError("INVALID_REQUEST", "since must be an ISO-8601 timestamp", 400, {"field": "since"})
            orders = orders.filter(updated_at__gte=moment)
        return Response(wire.OrderList(orders=[order_object(order) for order in orders[:5000]]))


class OrderDetailView(APIView):
    def get(self, request: Request, order_id: str) -> Response:
        team = team_of(request)
        pk = parse_id(order_id, "ORD")
        order = Order.objects.filter(pk=pk, team=team).first() if pk else None
        if order is None:
            raise ApiError("ORDER_NOT_FOUND", "no such order", 404)
        fills = Fill.objects.filter(order=order).order_by("trade_id")
        return Response(
            wire.OrderDetail(**order_object(order), fills=[fill_object(f, order.client_order_id) for f in fills])
        )


class PositionsView(APIView):
    def get(self, request: Request, team_id: str | None = None) -> Response:
        team = team_of(request)
        if team_id is not None and team_id != team.team_id:
            raise ApiError("FORBIDDEN", "teams may only read their own positions", 403)
        return Response(wire.Positions(team_id=team.team_id, positions=team_positions(team)))


class FillsView(APIView):
    def get(self, request: Request) -> Response:
        team = team_of(request)
        since = query_param(request, "since_trade_id")
        since_pk = None
        if since:
            since_pk = parse_id(since, "TRD")
            if since_pk is None:
                raise ApiError("INVALID_TRADE_ID", "since_trade_id must look like TRD_<n>", 400)
        return Response(wire.FillList(fills=team_fills(team, since_pk)))


class InstrumentsView(APIView):
    def get(self, request: Request) -> Response:
        return Response(wire.InstrumentList(instruments=listed_instruments()))


class AccountView(APIView):
    def get(self, request: Request) -> Response:
        return Response(account_snapshot(team_of(request)))


class OrderBookView(APIView):
    def get(self, request: Request, instrument_id: str) -> Response:
        team_of(request)
        raw_depth = query_param(request, "depth") or "5"
        if not DIGITS.match(raw_depth) or not 1 <= int(raw_depth) <= 50:
            raise ApiError("INVALID_REQUEST", "depth must be an integer from 1 to 50", 400, {"field": "depth"})
        if not printable(instrument_id) or not Instrument.objects.filter(symbol=instrument_id, listed=True).exists():
            raise ApiError("INVALID_INSTRUMENT", f"{instrument_id} is not a listed instrument", 404)
        depth = book_depth(instrument_id, int(raw_depth))
        return Response(
            wire.OrderBook(
                instrument_id=instrument_id,
                bids=depth["bids"],
                asks=depth["asks"],
                last_trade=last_trade(instrument_id),
                timestamp=clock.iso(clock.now()),
            )
        )


class GameView(APIView):
    def get(self, request: Request) -> Response:
        game = game_state()
        return Response(
            wire.Game(
                phase=game.phase,
                next_phase=None,
                next_phase_at=None,
                schedule=[],
                server_time=clock.iso(clock.now()),
            )
        )
