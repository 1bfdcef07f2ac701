"""The OpenAPI 3 description of the API, served at ``/schema/`` with Swagger UI at ``/docs/``.

Everything about the schema lives here, applied to the views from outside:

- the reply bodies, made from their one declaration in ``exchange.wire`` (``exchange.api.openapi``),
  narrowed per HTTP status to the codes and statuses that status can carry;
- ``extend_schema_view(...)`` on each view class, executed when this module is imported
  (``tradinggame.urls`` imports it);
- ``Endpoints``: the URL patterns that the schema generator cannot read by itself. ``/orders`` and
  ``/orders/{order_id}`` are dispatched by method (``exchange.api.dispatch``: a DRF view for GET,
  the plain async functions of ``exchange.api.order_views`` for POST and DELETE), so each is
  documented by its DRF view plus a stand-in view class per async operation;
  ``/positions/{team_id}`` gets a stand-in of its own because its 403 differs from ``/positions``;
- ``postprocess``: the components made from wire shapes, the long description (conventions,
  rejection codes, the WebSocket protocol) and the ``X-API-Key`` security scheme.

The rejection codes come from ``exchange.codes.RejectCode``; a new code shows up in the
description and, unless it is listed below as a form, transport, cancel or engine-only code,
among the business rejections (HTTP 200) of ``POST /orders``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from django.urls import URLPattern
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.generators import EndpointEnumerator
from drf_spectacular.generators import SchemaGenerator as BaseSchemaGenerator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange import wire
from exchange.api import views
from exchange.api.openapi import Components, one_of
from exchange.api.order_input import MAX_BODY
from exchange.codes import RejectCode
from exchange.engine.types import CancelReason

API_KEY_SCHEME = "ApiKeyAuth"

# --- codes ------------------------------------------------------------------------------------

# Malformed orders (HTTP 400, no order stored). INVALID_INSTRUMENT (instrument_id not a string of
# 1-64 printable characters) and INVALID_PRICE (not a positive finite number) are also business
# rejections when the value is well formed but refused.
FORM_CODES = (
    RejectCode.INVALID_JSON,
    RejectCode.MISSING_FIELD,
    RejectCode.UNKNOWN_FIELD,
    RejectCode.INVALID_INSTRUMENT,
    RejectCode.INVALID_SIDE,
    RejectCode.INVALID_ORDER_TYPE,
    RejectCode.INVALID_QUANTITY,
    RejectCode.INVALID_PRICE,
    RejectCode.MISSING_PRICE,
    RejectCode.PRICE_NOT_ALLOWED,
    RejectCode.INVALID_TIME_IN_FORCE,
    RejectCode.INVALID_FIELD,
)
_FORM_ONLY = set(FORM_CODES) - {RejectCode.INVALID_INSTRUMENT, RejectCode.INVALID_PRICE}
# Answered before or instead of a verdict, with their own HTTP status (order-reply or cancel-reply shape).
TRANSPORT_STATUS = {
    RejectCode.PAYLOAD_TOO_LARGE: 413,
    RejectCode.UNSUPPORTED_MEDIA_TYPE: 415,
    RejectCode.RATE_LIMIT_EXCEEDED: 429,
    RejectCode.MATCHING_UNAVAILABLE: 503,
    RejectCode.TIMEOUT: 504,
}
TRANSPORT_CODES = tuple(TRANSPORT_STATUS)
_CANCEL_ONLY = {RejectCode.ORDER_NOT_FOUND, RejectCode.ORDER_ALREADY_FILLED, RejectCode.ORDER_ALREADY_CANCELLED}
# Refusals no reply carries: the worker assigns order ids itself (DUPLICATE_ORDER_ID would be a bug),
# and ENGINE_ERROR is journalled for a command that failed on its own (its client got 504).
ENGINE_ONLY = {RejectCode.ENGINE_ERROR, RejectCode.DUPLICATE_ORDER_ID}
# HTTP 200 "rejected": every other code.
BUSINESS_CODES = tuple(c for c in RejectCode if c not in _FORM_ONLY | set(TRANSPORT_CODES) | _CANCEL_ONLY | ENGINE_ONLY)

CODE_NOTES: dict[str, str] = {
    RejectCode.INVALID_JSON: "the body is not a JSON object (also `NaN`/`Infinity`)",
    RejectCode.MISSING_FIELD: "a required field is missing or null",
    RejectCode.UNKNOWN_FIELD: "a field the API does not know (typos must not pass silently)",
    RejectCode.INVALID_INSTRUMENT: "not a listed instrument (400 when not a string of 1-64 printable characters)",
    RejectCode.INSTRUMENT_HALTED: "the instrument is halted by an operator",
    RejectCode.INVALID_ORDER_TYPE: "`order_type` is not `limit` or `market`",
    RejectCode.INVALID_SIDE: "`side` is not `buy` or `sell`",
    RejectCode.INVALID_QUANTITY: "`quantity` is not a JSON integer >= 1 (`10.0` is refused)",
    RejectCode.INVALID_PRICE: "not a positive finite JSON number (400), or off the tick grid (200)",
    RejectCode.MISSING_PRICE: "a limit order without `price`",
    RejectCode.PRICE_NOT_ALLOWED: "a market order with `price`",
    RejectCode.INVALID_TIME_IN_FORCE: "`time_in_force` is not `gtc`, `day`, `ioc` or `fok`",
    RejectCode.INVALID_FIELD: "a field of the wrong JSON type, or a string that is empty, longer than 64 characters or holds control characters (`details.field` names it)",
    RejectCode.MARKET_CLOSED: "the phase does not accept orders (`closed`, `opening_auction`) or cancels",
    RejectCode.POSITION_LIMIT_EXCEEDED: "position + open orders on that side + this order would pass the per-instrument limit",
    RejectCode.PORTFOLIO_LIMIT_EXCEEDED: "the worst-case sum of absolute positions over instruments would pass the role's limit",
    RejectCode.ORDER_SIZE_LIMIT_EXCEEDED: "above the smaller of the role's and the instrument's maximum order size",
    RejectCode.RATE_LIMIT_EXCEEDED: "too many orders per second for the role (HTTP 429, `Retry-After`, no order stored)",
    RejectCode.DUPLICATE_CLIENT_ORDER_ID: "an open order of the team already uses this `client_order_id`",
    RejectCode.ORDER_TYPE_NOT_ALLOWED: "the role may not send market orders; before the open only resting limit orders",
    RejectCode.TWO_SIDED_QUOTE_NOT_ALLOWED: "a hedge fund resting both sides of one instrument",
    RejectCode.TRADING_DISABLED: "the team or the whole exchange is halted by an operator",
    RejectCode.ENGINE_ERROR: "the matching engine could not take the order",
    RejectCode.DUPLICATE_ORDER_ID: "the matching engine already holds an order with this id",
    RejectCode.UNSUPPORTED_MEDIA_TYPE: "the body is not sent as `application/json` (HTTP 415)",
    RejectCode.PAYLOAD_TOO_LARGE: f"the body is larger than {MAX_BODY // 1024} KiB (HTTP 413, nothing read)",
    RejectCode.MATCHING_UNAVAILABLE: "the matching worker is down or stalled, its queue is full, or Redis is "
    "unavailable (HTTP 503, `Retry-After: 1`, nothing queued or stored)",
    RejectCode.TIMEOUT: "queued, but the verdict did not come within the bounded wait (HTTP 504 `pending_new` / "
    "`pending_cancel`; the verdict still comes over the WebSocket)",
    RejectCode.ORDER_NOT_FOUND: "cancel: unknown id, another team's order, or a rejected order (HTTP 404)",
    RejectCode.ORDER_ALREADY_FILLED: "cancel: the order is filled",
    RejectCode.ORDER_ALREADY_CANCELLED: "cancel: the order is already cancelled",
}


def _codes(codes: Iterable[str]) -> str:
    return ", ".join(f"`{c}`" for c in codes)


# --- replies, made from the wire shapes -------------------------------------------------------

COMPONENTS = Components()


def reply(schema: dict[str, Any], description: str = "") -> OpenApiResponse:
    return OpenApiResponse(response=schema, description=description)


def error(description: str, *codes: str) -> OpenApiResponse:
    """The error envelope, with the codes one reply can carry."""
    schema = COMPONENTS.inline(wire.ErrorReply, error={"code": one_of(codes)})
    return reply(schema, f"{description} Codes: {_codes(codes)}.")


UNAUTHORIZED = error(
    "No key (`NOT_AUTHENTICATED`) or an unknown or revoked key (`INVALID_API_KEY`) in `X-API-Key`.",
    "NOT_AUTHENTICATED",
    "INVALID_API_KEY",
)
TEAM_DISABLED = error("The team has been disabled by an operator.", "TEAM_DISABLED")


def authenticated(responses: dict[int, Any], forbidden: OpenApiResponse = TEAM_DISABLED) -> dict[int, Any]:
    return {**responses, 401: UNAUTHORIZED, 403: forbidden}


def refused_order(
    name: str, description: str, codes: Iterable[str], status: Any = Literal["rejected"]
) -> dict[str, Any]:
    """The order-reply shape of a request that made no order: no ``order_id``, always a code."""
    return COMPONENTS.ref(wire.OrderReply, name, description, status=status, order_id=None, error_code=one_of(codes))


def refused_cancel(name: str, description: str, code: str, status: Any = Literal["rejected"]) -> dict[str, Any]:
    """The cancel-reply shape of a cancel that got no verdict, or one about no order of the team."""
    return COMPONENTS.ref(wire.CancelReply, name, description, status=status, error_code=one_of([code]))


ORDER_VERDICT = COMPONENTS.ref(
    wire.OrderReply,
    description="The matching engine's verdict, sent once it is in the database: accepted (with the fills it made "
    "at once, if any) or rejected by a business rule (stored for audit, `new_order_reject` pushed over the "
    "WebSocket). `error_code` is null when accepted.",
    status=Literal["accepted", "rejected"],
    order_id=str,
    error_code=one_of(BUSINESS_CODES) | None,
)
ORDER_MALFORMED = refused_order(
    "OrderReplyMalformed", "The body cannot be read as an order: nothing stored, nothing on the WebSocket.", FORM_CODES
)
ORDER_TOO_LARGE = refused_order(
    "OrderReplyTooLarge",
    f"The body is larger than {MAX_BODY} bytes: refused unread.",
    [RejectCode.PAYLOAD_TOO_LARGE],
)
ORDER_UNSUPPORTED_MEDIA_TYPE = refused_order(
    "OrderReplyUnsupportedMediaType",
    "The body is not sent as `application/json`.",
    [RejectCode.UNSUPPORTED_MEDIA_TYPE],
)
ORDER_RATE_LIMITED = refused_order(
    "OrderReplyRateLimited",
    "Over the role's orders per second: no order stored, nothing on the WebSocket; retry after "
    "`Retry-After` seconds (`details.retry_after_ms` is more precise).",
    [RejectCode.RATE_LIMIT_EXCEEDED],
)
ORDER_UNAVAILABLE = refused_order(
    "OrderReplyUnavailable",
    "The matching worker is down or stalled, its queue holds more than the operators' backlog, or Redis is "
    "unavailable: the order was not queued and nothing is stored; retry after `Retry-After` seconds.",
    [RejectCode.MATCHING_UNAVAILABLE],
)
ORDER_PENDING = refused_order(
    "OrderReplyPending",
    "Queued, but the verdict did not come within the bounded wait (an operator setting, default 2 s): the "
    "order may still be accepted, and then its `new_order_ack` (with its `client_order_id`) comes over the "
    "WebSocket. `pending_new` is never a stored order's status.",
    [RejectCode.TIMEOUT],
    status=Literal["pending_new"],
)

CANCEL_VERDICT = COMPONENTS.ref(
    wire.CancelReply,
    description="The matching engine's verdict: `cancelled`, or `rejected` with the reason.",
    status=Literal["cancelled", "rejected"],
    error_code=one_of([RejectCode.ORDER_ALREADY_FILLED, RejectCode.ORDER_ALREADY_CANCELLED, RejectCode.MARKET_CLOSED])
    | None,
)
CANCEL_NOT_FOUND = refused_cancel(
    "CancelReplyNotFound",
    "No such order of this team (also another team's order, and a rejected order).",
    RejectCode.ORDER_NOT_FOUND,
)
CANCEL_PENDING = refused_cancel(
    "CancelReplyPending",
    "Queued, but the verdict did not come within the bounded wait (an operator setting, default 2 s); it still "
    "comes over the WebSocket (`cancel_ack` or `cancel_reject`).",
    RejectCode.TIMEOUT,
    status=Literal["pending_cancel"],
)
CANCEL_UNAVAILABLE = refused_cancel(
    "CancelReplyUnavailable",
    "The matching worker is down or stalled, its queue is full, or Redis is unavailable: the cancel was not "
    "queued; retry after `Retry-After` seconds.",
    RejectCode.MATCHING_UNAVAILABLE,
)
CANCELLED_ALL = COMPONENTS.ref(
    wire.CancelAllReply,
    results={"status": Literal["cancelled"], "error_code": None, "error_message": None},
)


# --- stand-in views for what the generator cannot see -----------------------------------------


class SubmitOrderView(APIView):
    """``POST /orders``, served by ``exchange.api.order_views.submit``."""

    def post(self, request: Request) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


class CancelOrderView(APIView):
    """``DELETE /orders/{order_id}``, served by ``exchange.api.order_views.cancel_one``."""

    def delete(self, request: Request, order_id: str) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


class CancelAllOrdersView(APIView):
    """``DELETE /orders``, served by ``exchange.api.order_views.cancel_all``."""

    def delete(self, request: Request) -> Response:  # pragma: no cover - never routed
        raise NotImplementedError


class TeamPositionsView(views.PositionsView):
    """``GET /positions/{team_id}``: the same view as ``/positions``, with its own 403."""


# URL name -> the view classes that document it, in place of the pattern's own callback.
DOCUMENTED_BY: dict[str, tuple[type[APIView], ...]] = {
    "orders": (views.OrdersView, SubmitOrderView, CancelAllOrdersView),
    "order-detail": (views.OrderDetailView, CancelOrderView),
    "team-positions": (TeamPositionsView,),
}


def _documented(patterns: Iterable[Any]) -> Iterator[Any]:
    for pattern in patterns:
        stand_ins = DOCUMENTED_BY.get(pattern.name) if isinstance(pattern, URLPattern) else None
        if not stand_ins:
            yield pattern
            continue
        for view in stand_ins:
            yield URLPattern(pattern.pattern, view.as_view(), name=pattern.name)


class Endpoints(EndpointEnumerator):
    def _get_api_endpoints(self, patterns: Any, prefix: str) -> list[Any]:
        patterns = self.patterns if patterns is None else patterns
        return super()._get_api_endpoints(list(_documented(patterns)), prefix)


class SchemaGenerator(BaseSchemaGenerator):
    endpoint_inspector_cls = Endpoints


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = API_KEY_SCHEME

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return SECURITY_SCHEME


SECURITY_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "X-API-Key",
    "description": "The team's key (`itg_...`), from `POST /auth/register` or an operator.",
}

# --- the operations ---------------------------------------------------------------------------

ORDER_ID = OpenApiParameter("order_id", str, OpenApiParameter.PATH, description="`ORD_<n>`.")
RETRY_AFTER_503 = OpenApiParameter(
    "Retry-After", int, OpenApiParameter.HEADER, response=[503], description="Seconds to wait before sending again."
)
INSTRUMENT_FILTER = OpenApiParameter(
    "instrument_id", str, OpenApiParameter.QUERY, required=False, description="Only this instrument's orders."
)

extend_schema_view(
    get=extend_schema(
        operation_id="health",
        summary="Health of the exchange",
        description='Open without a key. 503 with `status: "degraded"` when the database, Redis or the '
        "matching worker's heartbeat is missing.",
        tags=["system"],
        responses={
            200: reply(COMPONENTS.ref(wire.Health), "Every component is up."),
            503: reply(COMPONENTS.ref(wire.Health), "At least one component is down."),
        },
    )
)(views.HealthView)

extend_schema_view(
    post=extend_schema(
        operation_id="register",
        summary="Register a team",
        description="Open without a key. `team_name` is unique; surrounding blanks are trimmed. The API key is "
        "shown only in this reply. Operators can close open registration (403 `REGISTRATION_CLOSED`).",
        tags=["auth"],
        request=views.RegisterInput,
        responses={
            201: reply(COMPONENTS.ref(wire.Registered), "The team and its key."),
            400: error(
                "The body is not a JSON object (`INVALID_JSON`), has an unknown field (`UNKNOWN_FIELD`) or a "
                "field fails its rule (`INVALID_REQUEST`, per field in `details.fields`).",
                "INVALID_JSON",
                "UNKNOWN_FIELD",
                "INVALID_REQUEST",
            ),
            403: error("Registration is closed; ask an operator for a team.", "REGISTRATION_CLOSED"),
            409: error("A team with this name already exists.", "TEAM_NAME_TAKEN"),
            415: error("The body is not sent as `application/json`.", "UNSUPPORTED_MEDIA_TYPE"),
        },
        examples=[
            OpenApiExample(
                "A market maker", value={"team_name": "Alpha Quants", "role": "market_maker"}, request_only=True
            )
        ],
    )
)(views.RegisterView)

extend_schema_view(
    post=extend_schema(
        operation_id="submit_order",
        summary="Submit an order",
        description=(
            "Always answers in the order-reply shape (except 401/403 and a 429 `TOO_MANY_FAILED_AUTH`, which use "
            "the error envelope). The order travels the matching engine's first-in-first-out queue; the reply is "
            "its verdict, sent once it is in the database (bounded wait: 504 `pending_new` after it). An order "
            "that trades at once shows its fills in the reply; acks and fills also arrive over the WebSocket, and "
            "`GET /orders/{order_id}` is authoritative.\n\n"
            "Checks run in this order and the first failure wins: form (400) → `INVALID_INSTRUMENT` → "
            "`INSTRUMENT_HALTED` / `TRADING_DISABLED` → `MARKET_CLOSED` → `ORDER_TYPE_NOT_ALLOWED` → "
            "`INVALID_PRICE` (off the tick grid) → `ORDER_SIZE_LIMIT_EXCEEDED` → `DUPLICATE_CLIENT_ORDER_ID` → "
            "`TWO_SIDED_QUOTE_NOT_ALLOWED` → `POSITION_LIMIT_EXCEEDED` → `PORTFOLIO_LIMIT_EXCEEDED`. "
            "The rate limit is counted once the form is valid, before every business rule.\n\n"
            f"Business rejections (HTTP 200): {_codes(BUSINESS_CODES)}.\n\n"
            f"Malformed (HTTP 400): {_codes(FORM_CODES)}.\n\n"
            "Resends: an order whose `client_order_id` and fields equal the team's latest order with that id gets "
            "that order's verdict again (same `order_id`, no new WebSocket message)."
        ),
        tags=["orders"],
        request={"application/json": COMPONENTS.ref(wire.OrderForm, closed=True)},
        parameters=[
            OpenApiParameter(
                "Retry-After",
                int,
                OpenApiParameter.HEADER,
                response=[429, 503],
                description="Seconds to wait before sending again.",
            )
        ],
        responses=authenticated(
            {
                200: reply(ORDER_VERDICT, "The verdict: accepted, or rejected by a business rule."),
                400: reply(ORDER_MALFORMED, f"Malformed. Codes: {_codes(FORM_CODES)}."),
                413: reply(ORDER_TOO_LARGE, f"Body over {MAX_BODY} bytes. Code: `PAYLOAD_TOO_LARGE`."),
                415: reply(ORDER_UNSUPPORTED_MEDIA_TYPE, "Not `application/json`. Code: `UNSUPPORTED_MEDIA_TYPE`."),
                429: reply(ORDER_RATE_LIMITED, "Rate limited. Code: `RATE_LIMIT_EXCEEDED`."),
                503: reply(ORDER_UNAVAILABLE, "Not queued. Code: `MATCHING_UNAVAILABLE`."),
                504: reply(ORDER_PENDING, "No verdict in time: `pending_new`. Code: `TIMEOUT`."),
            }
        ),
        examples=[
            OpenApiExample(
                "Limit buy",
                value={
                    "instrument_id": "SPX_4500_CALL",
                    "order_type": "limit",
                    "side": "buy",
                    "quantity": 10,
                    "price": 128.5,
                    "client_order_id": "MY_ORDER_001",
                },
                request_only=True,
            ),
            OpenApiExample(
                "Market sell",
                value={"instrument_id": "SPX_4500_CALL", "order_type": "market", "side": "sell", "quantity": 5},
                request_only=True,
            ),
        ],
    ),
)(SubmitOrderView)

extend_schema_view(
    get=extend_schema(
        operation_id="list_orders",
        summary="The team's orders",
        description="Open orders (`new`, `partially_filled`), oldest first; `status=all` adds finished ones.",
        tags=["orders"],
        parameters=[
            OpenApiParameter(
                "status",
                str,
                OpenApiParameter.QUERY,
                required=False,
                enum=["open", "all"],
                default="open",
                description="`all` adds filled, cancelled and rejected orders.",
            ),
            INSTRUMENT_FILTER,
            OpenApiParameter(
                "since",
                OpenApiTypes.DATETIME,
                OpenApiParameter.QUERY,
                required=False,
                description="Only orders updated at or after this moment (ISO-8601; no offset means UTC).",
            ),
        ],
        responses=authenticated(
            {
                200: reply(COMPONENTS.ref(wire.OrderList)),
                400: error(
                    "`since` is not an ISO-8601 timestamp, or a parameter holds control characters.", "INVALID_REQUEST"
                ),
            }
        ),
    ),
)(views.OrdersView)

extend_schema_view(
    delete=extend_schema(
        operation_id="cancel_all_orders",
        summary="Cancel all open orders",
        description="One command on the same first-in-first-out path as orders (it counts as one cancel): "
        "the matching engine cancels what is open when it reaches it, and the reply waits (bounded, an "
        "operator setting, default 2 s) for that verdict. Errors use the error envelope; each cancelled "
        "order also gets its `cancel_ack` over the WebSocket.",
        tags=["orders"],
        parameters=[
            OpenApiParameter(
                "instrument_id",
                str,
                OpenApiParameter.QUERY,
                required=False,
                description="Only this instrument's orders.",
            ),
            RETRY_AFTER_503,
        ],
        responses=authenticated(
            {
                200: reply(CANCELLED_ALL, "The orders taken off the book (`[]` when none was open)."),
                400: error(
                    "`instrument_id` is longer than 64 characters or holds control characters.", "INVALID_FILTER"
                ),
                409: error("The phase takes no cancels (`closed`, `opening_auction`).", "MARKET_CLOSED"),
                503: error(
                    "The matching worker is down or stalled, its queue is full, or Redis is unavailable: nothing "
                    "was queued.",
                    "MATCHING_UNAVAILABLE",
                ),
                504: error(
                    "Queued, but the verdict did not come in time; the cancels still happen and come over the "
                    "WebSocket.",
                    "TIMEOUT",
                ),
            }
        ),
    )
)(CancelAllOrdersView)

extend_schema_view(
    get=extend_schema(
        operation_id="get_order",
        summary="One order with its fills",
        tags=["orders"],
        parameters=[ORDER_ID],
        responses=authenticated(
            {
                200: reply(COMPONENTS.ref(wire.OrderDetail)),
                404: error("No such order of this team (another team's id included).", "ORDER_NOT_FOUND"),
            }
        ),
    )
)(views.OrderDetailView)

extend_schema_view(
    delete=extend_schema(
        operation_id="cancel_order",
        summary="Cancel an order",
        description="Travels through the same first-in-first-out path as orders, so a cancel never overtakes "
        "an order sent before it. The reply waits (bounded, an operator setting, default 2 s) for the matching "
        "engine's verdict. Always the cancel-reply shape (except 401/403). A refused cancel also pushes a "
        "`cancel_reject` over the WebSocket, except `ORDER_NOT_FOUND`.",
        tags=["orders"],
        parameters=[ORDER_ID, RETRY_AFTER_503],
        responses=authenticated(
            {
                200: reply(
                    CANCEL_VERDICT,
                    "`cancelled`, or `rejected` with `ORDER_ALREADY_FILLED`, `ORDER_ALREADY_CANCELLED` or "
                    "`MARKET_CLOSED`.",
                ),
                404: reply(
                    CANCEL_NOT_FOUND, "`ORDER_NOT_FOUND`: an unknown id, another team's order or a rejected order."
                ),
                503: reply(CANCEL_UNAVAILABLE, "Not queued: `MATCHING_UNAVAILABLE`."),
                504: reply(CANCEL_PENDING, "No verdict in time: `pending_cancel`, `TIMEOUT`."),
            }
        ),
    )
)(CancelOrderView)

extend_schema_view(
    get=extend_schema(
        operation_id="get_positions",
        summary="The team's positions",
        tags=["portfolio"],
        responses=authenticated({200: reply(COMPONENTS.ref(wire.Positions))}),
    )
)(views.PositionsView)

extend_schema_view(
    get=extend_schema(
        operation_id="get_team_positions",
        summary="A team's positions (own team only)",
        tags=["portfolio"],
        parameters=[OpenApiParameter("team_id", str, OpenApiParameter.PATH, description="`TEAM_<n>`.")],
        responses=authenticated(
            {200: reply(COMPONENTS.ref(wire.Positions))},
            forbidden=error(
                "Another team's id (`FORBIDDEN`), or the team is disabled (`TEAM_DISABLED`).",
                "FORBIDDEN",
                "TEAM_DISABLED",
            ),
        ),
    )
)(TeamPositionsView)

extend_schema_view(
    get=extend_schema(
        operation_id="list_fills",
        summary="The team's executions",
        description="Oldest first. After a disconnect, pass the last `trade_id` seen to catch up.",
        tags=["portfolio"],
        parameters=[
            OpenApiParameter(
                "since_trade_id",
                str,
                OpenApiParameter.QUERY,
                required=False,
                description="Exclusive: only fills of later trades. `TRD_<n>`.",
            )
        ],
        responses=authenticated(
            {
                200: reply(COMPONENTS.ref(wire.FillList)),
                400: error(
                    "`since_trade_id` does not look like `TRD_<n>` (`INVALID_TRADE_ID`) or holds control "
                    "characters (`INVALID_REQUEST`).",
                    "INVALID_TRADE_ID",
                    "INVALID_REQUEST",
                ),
            }
        ),
    )
)(views.FillsView)

extend_schema_view(
    get=extend_schema(
        operation_id="get_account",
        summary="Cash, fees, P&L and limits",
        tags=["portfolio"],
        responses=authenticated({200: reply(COMPONENTS.ref(wire.Account))}),
    )
)(views.AccountView)

extend_schema_view(
    get=extend_schema(
        operation_id="list_instruments",
        summary="Listed instruments",
        tags=["market"],
        responses=authenticated({200: reply(COMPONENTS.ref(wire.InstrumentList))}),
    )
)(views.InstrumentsView)

extend_schema_view(
    get=extend_schema(
        operation_id="get_orderbook",
        summary="Aggregated depth of one instrument",
        tags=["market"],
        parameters=[
            OpenApiParameter("instrument_id", str, OpenApiParameter.PATH, description="A listed instrument."),
            OpenApiParameter(
                "depth",
                int,
                OpenApiParameter.QUERY,
                required=False,
                default=5,
                description="Price levels per side, 1 to 50.",
            ),
        ],
        responses=authenticated(
            {
                200: reply(COMPONENTS.ref(wire.OrderBook)),
                400: error("`depth` is not an integer from 1 to 50.", "INVALID_REQUEST"),
                404: error("Not a listed instrument.", "INVALID_INSTRUMENT"),
            }
        ),
    )
)(views.OrderBookView)

extend_schema_view(
    get=extend_schema(
        operation_id="get_game",
        summary="Phase, schedule and server time",
        tags=["system"],
        responses=authenticated({200: reply(COMPONENTS.ref(wire.Game))}),
    )
)(views.GameView)


# --- the description --------------------------------------------------------------------------

TAGS = [
    {"name": "system", "description": "Health and the game's phase."},
    {"name": "auth", "description": "Registration; every other call sends `X-API-Key`."},
    {"name": "orders", "description": "Submit, query and cancel orders."},
    {"name": "portfolio", "description": "Positions, fills and the account."},
    {"name": "market", "description": "Instruments and order books."},
]


def _code_table() -> str:
    rows = ["| code | HTTP on `POST /orders` | meaning |", "|---|---|---|"]
    for code in RejectCode:
        if code in _CANCEL_ONLY:
            where = "cancels only"
        elif code in ENGINE_ONLY:
            where = "— (never in a reply)"
        elif code in TRANSPORT_STATUS:
            where = str(TRANSPORT_STATUS[code])
            if code in (RejectCode.MATCHING_UNAVAILABLE, RejectCode.TIMEOUT):
                where += " (cancels too)"
        elif code in _FORM_ONLY:
            where = "400"
        elif code in FORM_CODES:
            where = "400 / 200"
        else:
            where = "200"
        rows.append(f"| `{code}` | {where} | {CODE_NOTES.get(code, '')} |")
    return "\n".join(rows)


def description() -> str:
    reasons = ", ".join(f"`{r}`" for r in CancelReason)
    return f"""\
The REST and WebSocket interface that trading bots use.

## Conventions

- JSON everywhere, UTF-8. Timestamps are UTC ISO-8601 with microseconds and a `Z`
  (`2024-01-15T10:00:00.123456Z`).
- Prices and money are JSON **numbers** (never strings), at most the instrument's tick precision
  (default tick 0.01). Quantities are positive integers (contracts).
- Ids are opaque strings: `TEAM_<n>`, `ORD_<n>`, `TRD_<n>`.
- Authentication: header `X-API-Key: <key>` on every call except `GET /`, `POST /auth/register`,
  `/schema/` and `/docs/`. Missing key → 401 `NOT_AUTHENTICATED`; unknown or revoked key → 401
  `INVALID_API_KEY`; disabled team → 403 `TEAM_DISABLED`.
- Unknown JSON fields are refused with 400 `UNKNOWN_FIELD`. A body over {MAX_BODY // 1024} KiB gets 413
  `PAYLOAD_TOO_LARGE`, unread.
- An address that sent too many wrong keys is refused for a while on every call that takes a key:
  429 `TOO_MANY_FAILED_AUTH` in the error envelope, with `Retry-After`, whatever the key.

## Errors

Every error outside the order and cancel replies has one body:

```json
{{"error": {{"code": "UPPER_SNAKE", "message": "human text", "details": {{}}}}}}
```

with the HTTP status: 400 malformed, 401, 403, 404, 405 (`METHOD_NOT_ALLOWED`), 409, 413, 415,
429 (with `Retry-After`), 503 when Redis, the database or the matching worker is unavailable.
Each operation below lists the codes it can answer.

`POST /orders` always answers in the **order-reply** shape and `DELETE /orders/{{order_id}}` in the
**cancel-reply** shape, whatever the status (except 401, 403 and the failed-key 429, which use the
envelope). `DELETE /orders` (cancel all) answers its own errors (400, 409 `MARKET_CLOSED`, 503, 504)
in the envelope and the cancel-reply shape inside `results`.

Orders and cancels travel one first-in-first-out queue to the matching engine, and each reply is
its verdict once committed. Before queueing, 503 `MATCHING_UNAVAILABLE` (`Retry-After: 1`, nothing
stored) when the matching worker is down or stalled or its queue is over the operators' backlog;
after the bounded wait (default 2 s), 504 `TIMEOUT` with `pending_new` / `pending_cancel`: the
verdict still comes over the WebSocket.

## Order rejection codes

`error_code` of order replies, cancel replies and WebSocket rejections (`exchange.codes.RejectCode`):

{_code_table()}

`details` carries the numbers (`current_position`, `open_buy_quantity`, `limit`, ...).

## WebSocket: `ws://host:port/ws?api_key=KEY`

One JSON text frame per server message, every one in this envelope:

```json
{{"seq": 2, "type": "new_order_ack", "timestamp": "2024-01-15T10:00:00.123456Z", "data": {{}}}}
```

- `seq` starts at 1 on each connection and rises by exactly 1 per frame on that connection,
  whatever its type (`pong`, `subscribed` and `error` included). The server never skips a number: a
  client it cannot keep up with is closed with code **4008** (`slow consumer`) instead of losing
  messages, so a client that sees no gap has seen everything since it connected.
- The first frame (seq 1) is always `position_snapshot`.
- A bad or missing key: the handshake is accepted, then closed with code **1008** (policy violation)
  and a reason (`invalid or missing API key`; `team disabled`). Any other path is closed with 1008 too.
- A team may hold several connections (an operator setting, default 5); each receives all of the
  team's messages. One over the limit is closed with 1008 `too many connections`.
- Messages for a team without a connection are not queued: the REST queries are the catch-up path
  (`GET /orders`, `GET /fills?since_trade_id=`).

### Client → server

| frame | answer |
|---|---|
| `{{"action": "ping"}}` | `pong`, data `{{}}` |
| `{{"action": "subscribe", "instruments": ["SPX_4500_CALL"]}}` | `subscribed`, data `{{"instruments": [...]}}`; public frames of this connection are narrowed to these instruments (an empty list: all again, the default) |
| anything else | `error`, data `{{"code": "INVALID_JSON" or "UNKNOWN_ACTION", "message": ...}}`; never a disconnect |

### Private frames (to the order's team only)

| type | when | data |
|---|---|---|
| `position_snapshot` | first frame of every connection | `positions` (instrument_id → signed int), `open_orders` (order objects as in `GET /orders`, oldest first), `last_trade_id` (the team's newest trade id or null) |
| `new_order_ack` | the matching engine took the order | `order_id, client_order_id, instrument_id, side, quantity, order_type, price, time_in_force, status: "new"` |
| `new_order_reject` | validation refused it (same moment as the REST rejection), or the engine did | `order_id, client_order_id, instrument_id, status: "rejected", error_code, reason` |
| `execution_report` | each fill, to both sides of the trade | `order_id, client_order_id, trade_id, instrument_id, side, executed_quantity, executed_price, remaining_quantity, order_status ("partially_filled" or "filled"), liquidity_type ("maker" or "taker"), fees (positive paid, negative rebate), position (net, after this fill)` |
| `cancel_ack` | an order left the book without filling fully | `order_id, client_order_id, status: "cancelled", cancelled_quantity, reason` ({reasons}) |
| `cancel_reject` | a cancel request failed | `order_id, client_order_id, status: "cancel_rejected", error_code, reason` |
| `event` | a halt or resume of the team | `event_type` (`halt`, `resume`), `scope: "team"`, `team_id`, `cancel_resting` (halts) |
| `signal` | role-specific information (hedge fund: volatility forecast; arbitrage: tracking error) | `signal_type, ...` |

### Public frames (to every connection, narrowed by `subscribe`)

| type | data |
|---|---|
| `market_data` | `instrument_id, bid, bid_size, ask, ask_size, last, last_size, volume` (null where there is none; `volume`: contracts traded in the instrument this session); conflated to at most 10 per second per instrument, latest state wins |
| `trade` | `instrument_id, trade_id, price, quantity, aggressor_side`; never dropped |
| `underlying` | `symbol, price` |
| `event` | `event_type` (`phase_change` with `phase, previous_phase`; `halt` / `resume` with `scope` (`instrument`, `exchange`), `instrument_id`, `cancel_resting`; `news`; ...) |

### Order of frames

For one order on one connection: `new_order_ack` first (market, `ioc` and `fok` orders included),
then its `execution_report`s, then a `cancel_ack` for any remainder that leaves the book. Nothing
follows `filled` or `cancel_ack` except a `cancel_reject` answering a cancel that arrived too late.
Within one matching batch a team's private frames come before the public ones. The REST reply and
the frames travel separately: correlate them by `order_id` or `client_order_id`, and expect an ack
to arrive before the REST reply at times.

## Fees

`fees` is what the exchange charges for a fill: positive paid, negative a rebate received. Cash moves
by −side × price × quantity × multiplier − fee (side +1 buy, −1 sell).
"""


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Add the components made from wire shapes, the description, the tags and the security scheme."""
    result["info"]["description"] = description()
    result["tags"] = TAGS
    components = result.setdefault("components", {})
    components.setdefault("securitySchemes", {})[API_KEY_SCHEME] = SECURITY_SCHEME
    schemas = {**components.get("schemas", {}), **copy.deepcopy(COMPONENTS.schemas)}
    schemas["RegisterInput"]["additionalProperties"] = False  # the view refuses other fields (UNKNOWN_FIELD)
    components["schemas"] = dict(sorted(schemas.items()))
    for operation in (op for path in result["paths"].values() for op in path.values()):
        if "requestBody" in operation:  # every body this API takes is required (a shape's is not marked so)
            operation["requestBody"]["required"] = True
    _drop_enum_ids(result)
    return result


def _drop_enum_ids(node: Any) -> None:
    """The generator's internal enum hashes are of no use to readers of the schema."""
    if isinstance(node, dict):
        node.pop("x-spec-enum-id", None)
        for value in node.values():
            _drop_enum_ids(value)
    elif isinstance(node, list):
        for value in node:
            _drop_enum_ids(value)
