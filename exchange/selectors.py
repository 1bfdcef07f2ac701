"""Reads: game state, instruments, books, a team's orders, fills and positions, in their wire shapes
(``exchange.wire``)."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Max, Min, Sum

from accounts.models import Team
from exchange import prices, wire
from exchange.clock import iso
from exchange.models import OPEN_STATUSES, Account, Fill, Game, Instrument, Order, Position, Trade


def game_state() -> Game:
    game, _ = Game.objects.get_or_create(pk=1)
    return game


def average_price(order: Order) -> Decimal | None:
    if not order.filled_quantity:
        return None
    return (order.filled_notional / order.filled_quantity).quantize(Decimal("0.0001"))


def order_object(order: Order) -> wire.OrderObject:
    return {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "instrument_id": order.instrument_symbol,
        "side": order.side,
        "order_type": order.order_type,
        "time_in_force": order.time_in_force,
        "price": prices.wire(order.price),
        "quantity": order.quantity,
        "filled_quantity": order.filled_quantity,
        "remaining_quantity": order.remaining_quantity,
        "cancelled_quantity": order.cancelled_quantity,
        "average_price": prices.wire(average_price(order)),
        "fees": prices.wire(order.fees),
        "status": order.status,
        "error_code": order.error_code,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
    }


def fill_object(fill: Fill, client_order_id: str | None) -> wire.FillObject:
    return {
        "trade_id": f"TRD_{fill.trade_id}",
        "order_id": f"ORD_{fill.order_id}",
        "client_order_id": client_order_id,
        "instrument_id": fill.instrument_id,
        "side": fill.side,
        "quantity": fill.quantity,
        "price": prices.wire(fill.price),
        "liquidity_type": fill.liquidity_type,
        "fees": prices.wire(fill.fees),
        "position": fill.position_after,
        "timestamp": iso(fill.created_at),
    }


def team_positions(team: Team) -> dict[str, int]:
    return dict(Position.objects.filter(team=team).order_by("instrument_id").values_list("instrument_id", "quantity"))


def open_orders(team: Team) -> list[Order]:
    return list(Order.objects.filter(team=team, status__in=OPEN_STATUSES).order_by("id"))


def team_fills(team: Team, since_trade: int | None = None) -> list[wire.FillObject]:
    fills = Fill.objects.filter(team=team).select_related("order").order_by("trade_id", "id")
    if since_trade is not None:
        fills = fills.filter(trade_id__gt=since_trade)
    return [fill_object(fill, fill.order.client_order_id) for fill in fills]


def position_snapshot(team: Team) -> wire.PositionSnapshot:
    last = Fill.objects.filter(team=team).order_by("-trade_id").values_list("trade_id", flat=True).first()
    return {
        "positions": team_positions(team),
        "open_orders": [order_object(order) for order in open_orders(team)],
        "last_trade_id": f"TRD_{last}" if last else None,
    }


def listed_instruments() -> list[wire.Instrument]:
    return [
        {
            "instrument_id": i.symbol,
            "underlying": i.underlying,
            "option_type": i.option_type,
            "strike": prices.wire(i.strike),
            "expiry": i.expiry.isoformat() if i.expiry else None,
            "tick_size": prices.wire(i.tick_size),
            "multiplier": i.multiplier,
            "max_order_size": i.max_order_size,
            "status": "halted" if i.halted else "active",
        }
        for i in Instrument.objects.filter(listed=True)
    ]


def book_depth(symbol: str, levels: int) -> dict[str, list[wire.BookLevel]]:
    """Aggregated resting quantity per price, best first (the open orders are the books)."""
    resting = Order.objects.filter(instrument_id=symbol, status__in=("new", "partially_filled"), price__isnull=False)
    sides: dict[str, list[wire.BookLevel]] = {}
    for side, key, ordering in (("buy", "bids", "-price"), ("sell", "asks", "price")):
        rows = (
            resting.filter(side=side).values("price").annotate(quantity=Sum("remaining_quantity")).order_by(ordering)
        )[:levels]
        sides[key] = [{"price": prices.wire(row["price"]), "quantity": row["quantity"]} for row in rows]
    return sides


def last_trade(symbol: str) -> wire.LastTrade | None:
    trade = Trade.objects.filter(instrument_id=symbol).order_by("-id").first()
    if trade is None:
        return None
    return {
        "trade_id": trade.trade_id,
        "price": prices.wire(trade.price),
        "quantity": trade.quantity,
        "aggressor_side": trade.aggressor_side,
        "timestamp": iso(trade.created_at),
    }


def mark_price(symbol: str) -> Decimal | None:
    """The mid of the best bid and ask; the last trade when the book is one-sided or empty."""
    resting = Order.objects.filter(instrument_id=symbol, status__in=("new", "partially_filled"), price__isnull=False)
    bid = resting.filter(side="buy").aggregate(best=Max("price"))["best"]
    ask = resting.filter(side="sell").aggregate(best=Min("price"))["best"]
    if bid is not None and ask is not None:
        return (bid + ask) / 2
    last = Trade.objects.filter(instrument_id=symbol).order_by("-id").values_list("price", flat=True).first()
    return last


def account_snapshot(team: Team) -> wire.Account:
    """Cash, fees and P&L by the average-cost method, marked at the mid (or last trade).

    realized + unrealized − fees_paid == cash + Σ position × mark × multiplier.
    """
    from exchange.policies import role_policy

    account = Account.objects.filter(team=team).first()
    policy = role_policy(team.role)
    held: dict[str, tuple[int, Decimal]] = {}  # instrument -> (position, average cost)
    realized = Decimal(0)
    multipliers = dict(Instrument.objects.values_list("symbol", "multiplier"))
    for fill in Fill.objects.filter(team=team).order_by("trade_id", "id"):
        position, cost = held.get(fill.instrument_id, (0, Decimal(0)))
        signed = fill.quantity if fill.side == "buy" else -fill.quantity
        if position == 0 or (position > 0) == (signed > 0):  # opening or adding
            cost = (cost * abs(position) + fill.price * abs(signed)) / (abs(position) + abs(signed))
            position += signed
        else:  # reducing, maybe flipping
            closed = min(abs(signed), abs(position))
            direction = 1 if position > 0 else -1
            realized += (fill.price - cost) * closed * direction * multipliers[fill.instrument_id]
            position += signed
            if position != 0 and (position > 0) != (direction > 0):
                cost = fill.price
            elif position == 0:
                cost = Decimal(0)
        held[fill.instrument_id] = (position, cost)

    unrealized = Decimal(0)
    positions: list[wire.AccountPosition] = []
    used = 0
    for symbol, quantity in team_positions(team).items():
        mark = mark_price(symbol)
        _, cost = held.get(symbol, (0, Decimal(0)))
        if mark is not None and quantity:
            unrealized += (mark - cost) * quantity * multipliers[symbol]
        used += abs(quantity)
        positions.append(
            {
                "instrument_id": symbol,
                "position": quantity,
                "limit": policy.position_limit,
                "limit_left": {"buy": policy.position_limit - quantity, "sell": policy.position_limit + quantity},
                "average_price": prices.wire(cost.quantize(Decimal("0.0001"))) if quantity else None,
                "mark_price": prices.wire(mark),
            }
        )
    fees = account.fees_paid if account else Decimal(0)
    return {
        "team_id": team.team_id,
        "role": team.role,
        "cash": prices.wire(account.cash if account else Decimal(0)),
        "fees_paid": prices.wire(fees),
        "realized_pnl": prices.wire(realized),
        "unrealized_pnl": prices.wire(unrealized),
        "total_pnl": prices.wire(realized + unrealized - fees),
        "positions": positions,
        "portfolio_limit": policy.portfolio_limit,
        "portfolio_used": used,
    }
