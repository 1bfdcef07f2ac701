"""Order submission: the validator runs every rule the database can decide, stores the order
(accepted or rejected) and, once committed, wakes the matching worker or tells the team why not.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Sum

from accounts.models import Role, Team
from exchange import clock
from exchange.api.order_input import OrderRequest
from exchange.codes import RejectCode
from exchange.models import OPEN_STATUSES, Command, Game, Instrument, Order, OrderStatus, Phase, Position, RolePolicy
from exchange.policies import role_policy
from exchange.prices import to_ticks
from exchange.publisher import Outbox
from exchange.ratelimit import order_rate_check
from exchange.selectors import game_state

PRICE_PLACES = Decimal("0.0001")  # the database column's scale


@dataclass
class Rejection(Exception):
    code: RejectCode
    message: str
    details: dict[str, Any] | None = None


def lock_team(team: Team) -> None:
    # A row lock on PostgreSQL; SQLite's immediate transactions already serialize writers.
    if connection.vendor != "sqlite":
        Team.objects.select_for_update().filter(pk=team.pk).values_list("pk", flat=True).first()


def _exposure(position: int, open_buy: int, open_sell: int) -> int:
    """Worst-case |position| of one instrument if every open order filled."""
    return max(abs(position + open_buy), abs(position - open_sell))


def _check(team: Team, req: OrderRequest, game: Game, policy: RolePolicy) -> Instrument:
    """Raise the first Rejection that applies, in the order API.md lists them."""
    instrument = Instrument.objects.filter(symbol=req.instrument_id, listed=True).first()
    if instrument is None:
        raise Rejection(
            RejectCode.INVALID_INSTRUMENT,
            f"{req.instrument_id} is not a listed instrument",
            {"instrument_id": req.instrument_id},
        )
    if instrument.halted:
        raise Rejection(RejectCode.INSTRUMENT_HALTED, f"{instrument.symbol} is halted", {"instrument_id": instrument.symbol})
    if game.trading_halted or team.trading_halted:
        scope = "exchange" if game.trading_halted else "team"
        raise Rejection(RejectCode.TRADING_DISABLED, f"trading is disabled by an operator ({scope})", {"scope": scope})
    if game.phase in (Phase.CLOSED, Phase.OPENING_AUCTION):
        raise Rejection(
            RejectCode.MARKET_CLOSED, f"the market does not take orders in phase {game.phase}", {"phase": game.phase}
        )
    if req.order_type == "market" and not policy.market_orders_allowed:
        raise Rejection(
            RejectCode.ORDER_TYPE_NOT_ALLOWED,
            f"role {team.role} may not send market orders",
            {"role": team.role, "order_type": req.order_type},
        )
    if game.phase == Phase.PRE_OPEN and (req.order_type == "market" or req.time_in_force in ("ioc", "fok")):
        raise Rejection(
            RejectCode.ORDER_TYPE_NOT_ALLOWED,
            "before the open only resting limit orders (gtc, day) are taken",
            {"phase": game.phase, "order_type": req.order_type, "time_in_force": req.time_in_force},
        )
    if req.price is not None and to_ticks(req.price, instrument.tick_size) is None:
        raise Rejection(
            RejectCode.INVALID_PRICE,
            f"price {req.price} is not on the tick grid of {instrument.tick_size}",
            {"price": float(req.price), "tick_size": float(instrument.tick_size)},
        )
    max_size = min(policy.max_order_size, instrument.max_order_size)
    if req.quantity > max_size:
        raise Rejection(
            RejectCode.ORDER_SIZE_LIMIT_EXCEEDED,
            f"quantity {req.quantity} is above the maximum order size {max_size}",
            {"quantity": req.quantity, "limit": max_size},
        )
    open_orders = Order.objects.filter(team=team, status__in=OPEN_STATUSES)
    if req.client_order_id and open_orders.filter(client_order_id=req.client_order_id).exists():
        raise Rejection(
            RejectCode.DUPLICATE_CLIENT_ORDER_ID,
            f"an open order already uses client_order_id {req.client_order_id}",
            {"client_order_id": req.client_order_id},
        )
    other_side = "sell" if req.side == "buy" else "buy"
    if (
        team.role == Role.HEDGE_FUND
        and req.time_in_force not in ("ioc", "fok")
        and open_orders.filter(instrument=instrument, side=other_side).exists()
    ):
        raise Rejection(
            RejectCode.TWO_SIDED_QUOTE_NOT_ALLOWED,
            f"hedge funds may not rest a {req.side} while a {other_side} rests on {instrument.symbol}",
            {"instrument_id": instrument.symbol, "resting_side": other_side},
        )
    _check_limits(team, req, instrument, policy, open_orders)
    return instrument


def _check_limits(team: Team, req: OrderRequest, instrument: Instrument, policy: RolePolicy, open_orders: Any) -> None:
    positions = dict(Position.objects.filter(team=team).values_list("instrument_id", "quantity"))
    pending: dict[tuple[str, str], int] = {
        (row["instrument_id"], row["side"]): row["total"]
        for row in open_orders.values("instrument_id", "side").annotate(total=Sum("remaining_quantity"))
    }
    symbol = instrument.symbol
    position = positions.get(symbol, 0)
    open_buy, open_sell = pending.get((symbol, "buy"), 0), pending.get((symbol, "sell"), 0)
    limit = policy.position_limit
    if req.side == "buy" and position + open_buy + req.quantity > limit:
        raise Rejection(
            RejectCode.POSITION_LIMIT_EXCEEDED,
            f"buying {req.quantity} could take the position in {symbol} past +{limit}",
            {
                "current_position": position,
                "open_buy_quantity": open_buy,
                "order_quantity": req.quantity,
                "limit": limit,
            },
        )
    if req.side == "sell" and position - open_sell - req.quantity < -limit:
        raise Rejection(
            RejectCode.POSITION_LIMIT_EXCEEDED,
            f"selling {req.quantity} could take the position in {symbol} past -{limit}",
            {
                "current_position": position,
                "open_sell_quantity": open_sell,
                "order_quantity": req.quantity,
                "limit": limit,
            },
        )
    symbols = set(positions) | {s for s, _ in pending} | {symbol}
    exposures = {
        s: _exposure(positions.get(s, 0), pending.get((s, "buy"), 0), pending.get((s, "sell"), 0)) for s in symbols
    }
    used = sum(exposures.values())
    if req.side == "buy":
        open_buy += req.quantity
    else:
        open_sell += req.quantity
    after = used - exposures[symbol] + _exposure(position, open_buy, open_sell)
    if after > policy.portfolio_limit and after > used:
        raise Rejection(
            RejectCode.PORTFOLIO_LIMIT_EXCEEDED,
            f"the order could take total exposure to {after}, past the limit {policy.portfolio_limit}",
            {"portfolio_used": used, "portfolio_after": after, "limit": policy.portfolio_limit},
        )


def reject_data(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "instrument_id": order.instrument_symbol,
        "status": "rejected",
        "error_code": order.error_code,
        "reason": order.error_message,
    }


def order_submit(team: Team, req: OrderRequest) -> Order:
    """Validate and store one order; queue it for matching or announce its rejection, on commit.

    The rate limit comes first: an order over it raises ``RateLimitExceeded`` (or
    ``RateLimiterUnavailable``) before anything is stored or announced.
    """
    from exchange.tasks import wake_matching

    policy = role_policy(team.role)
    order_rate_check(team, policy)
    now = clock.now()
    with transaction.atomic():
        lock_team(team)
        game = game_state()
        order = Order(
            team=team,
            instrument_symbol=req.instrument_id,
            side=req.side,
            order_type=req.order_type,
            time_in_force=req.time_in_force,
            price=req.price,
            quantity=req.quantity,
            client_order_id=req.client_order_id,
            created_at=now,
            updated_at=now,
        )
        try:
            order.instrument = _check(team, req, game, policy)
        except Rejection as rejection:
            order.status = OrderStatus.REJECTED
            order.error_code = rejection.code
            order.error_message = rejection.message[:200]
            if order.price is not None:
                # An off-grid price may have more places than the column; the message keeps it whole.
                order.price = order.price.quantize(PRICE_PLACES, rounding=ROUND_DOWN)
            order.save()
            order.rejection_details = rejection.details  # type: ignore[attr-defined]
            outbox = Outbox()
            outbox.to_team(team.pk, "new_order_reject", reject_data(order), clock.iso(now))
            outbox.send_on_commit()
            return order
        order.status = OrderStatus.PENDING_NEW
        order.remaining_quantity = req.quantity
        order.save()
        Command.objects.create(kind=Command.Kind.SUBMIT, team=team, order=order, created_at=now)
        transaction.on_commit(wake_matching)
    return order
