"""Reads: game state, a team's orders, fills and positions, in their wire shapes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from accounts.models import Team
from exchange.clock import iso
from exchange.models import OPEN_STATUSES, Fill, Game, Order, Position
from exchange.prices import wire


def game_state() -> Game:
    game, _ = Game.objects.get_or_create(pk=1)
    return game


def average_price(order: Order) -> Decimal | None:
    if not order.filled_quantity:
        return None
    return (order.filled_notional / order.filled_quantity).quantize(Decimal("0.0001"))


def order_object(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "instrument_id": order.instrument_symbol,
        "side": order.side,
        "order_type": order.order_type,
        "time_in_force": order.time_in_force,
        "price": wire(order.price),
        "quantity": order.quantity,
        "filled_quantity": order.filled_quantity,
        "remaining_quantity": order.remaining_quantity,
        "cancelled_quantity": order.cancelled_quantity,
        "average_price": wire(average_price(order)),
        "fees": wire(order.fees),
        "status": order.status,
        "error_code": order.error_code,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
    }


def fill_object(fill: Fill, client_order_id: str | None) -> dict[str, Any]:
    return {
        "trade_id": f"TRD_{fill.trade_id}",
        "order_id": f"ORD_{fill.order_id}",
        "client_order_id": client_order_id,
        "instrument_id": fill.instrument_id,
        "side": fill.side,
        "quantity": fill.quantity,
        "price": wire(fill.price),
        "liquidity_type": fill.liquidity_type,
        "fees": wire(fill.fees),
        "position": fill.position_after,
        "timestamp": iso(fill.created_at),
    }


def team_positions(team: Team) -> dict[str, int]:
    return dict(Position.objects.filter(team=team).order_by("instrument_id").values_list("instrument_id", "quantity"))


def open_orders(team: Team) -> list[Order]:
    return list(Order.objects.filter(team=team, status__in=OPEN_STATUSES).order_by("id"))


def team_fills(team: Team, since_trade: int | None = None) -> list[dict[str, Any]]:
    fills = Fill.objects.filter(team=team).select_related("order").order_by("trade_id", "id")
    if since_trade is not None:
        fills = fills.filter(trade_id__gt=since_trade)
    return [fill_object(fill, fill.order.client_order_id) for fill in fills]


def position_snapshot(team: Team) -> dict[str, Any]:
    last = Fill.objects.filter(team=team).order_by("-trade_id").values_list("trade_id", flat=True).first()
    return {
        "positions": team_positions(team),
        "open_orders": [order_object(order) for order in open_orders(team)],
        "last_trade_id": f"TRD_{last}" if last else None,
    }
