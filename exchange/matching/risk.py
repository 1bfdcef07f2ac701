"""The business rules of ``POST /orders``, in the order API.md lists them, against the worker's
in-memory state. The first rule that fails decides; ``None`` means the order may go to the engine."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

from exchange.codes import RejectCode
from exchange.matching.state import GameState, InstrumentState, Policy, TeamState
from exchange.prices import to_ticks

CLOSED_PHASES = ("closed", "opening_auction")


class Rejection(NamedTuple):
    code: str
    message: str
    details: dict[str, Any] | None


def exposure(position: int, open_buy: int, open_sell: int) -> int:
    """Worst-case |position| of one instrument if every open order filled."""
    return max(abs(position + open_buy), abs(position - open_sell))


def check_order(
    team: TeamState,
    instrument: InstrumentState | None,
    symbol: str,
    game: GameState,
    policy: Policy,
    side: str,
    order_type: str,
    time_in_force: str,
    price: Decimal | None,
    quantity: int,
    coid: str | None,
) -> Rejection | None:
    if instrument is None or not instrument.listed:
        return Rejection(
            RejectCode.INVALID_INSTRUMENT, f"{symbol} is not a listed instrument", {"instrument_id": symbol}
        )
    if instrument.halted:
        return Rejection(RejectCode.INSTRUMENT_HALTED, f"{symbol} is halted", {"instrument_id": symbol})
    if game.halted or team.halted:
        scope = "exchange" if game.halted else "team"
        return Rejection(RejectCode.TRADING_DISABLED, f"trading is disabled by an operator ({scope})", {"scope": scope})
    if game.phase in CLOSED_PHASES:
        return Rejection(
            RejectCode.MARKET_CLOSED, f"the market does not take orders in phase {game.phase}", {"phase": game.phase}
        )
    if order_type == "market" and not policy.market_orders_allowed:
        return Rejection(
            RejectCode.ORDER_TYPE_NOT_ALLOWED,
            f"role {team.role} may not send market orders",
            {"role": team.role, "order_type": order_type},
        )
    if game.phase == "pre_open" and (order_type == "market" or time_in_force in ("ioc", "fok")):
        return Rejection(
            RejectCode.ORDER_TYPE_NOT_ALLOWED,
            "before the open only resting limit orders (gtc, day) are taken",
            {"phase": game.phase, "order_type": order_type, "time_in_force": time_in_force},
        )
    if price is not None and to_ticks(price, instrument.tick) is None:
        return Rejection(
            RejectCode.INVALID_PRICE,
            f"price {price} is not on the tick grid of {instrument.tick}",
            {"price": float(price), "tick_size": float(instrument.tick)},
        )
    max_size = min(policy.max_order_size, instrument.max_order_size)
    if quantity > max_size:
        return Rejection(
            RejectCode.ORDER_SIZE_LIMIT_EXCEEDED,
            f"quantity {quantity} is above the maximum order size {max_size}",
            {"quantity": quantity, "limit": max_size},
        )
    if coid is not None and coid in team.open_coids:
        return Rejection(
            RejectCode.DUPLICATE_CLIENT_ORDER_ID,
            f"an open order already uses client_order_id {coid}",
            {"client_order_id": coid},
        )
    other = team.open_sell if side == "buy" else team.open_buy
    if (
        team.role == "hedge_fund"
        and time_in_force in ("gtc", "day")
        and order_type == "limit"
        and other.get(symbol, 0) > 0
    ):
        resting_side = "sell" if side == "buy" else "buy"
        return Rejection(
            RejectCode.TWO_SIDED_QUOTE_NOT_ALLOWED,
            f"hedge funds may not rest a {side} while a {resting_side} rests on {symbol}",
            {"instrument_id": symbol, "resting_side": resting_side},
        )
    return check_limits(team, symbol, policy, side, quantity)


def check_limits(team: TeamState, symbol: str, policy: Policy, side: str, quantity: int) -> Rejection | None:
    position = team.positions.get(symbol, 0)
    open_buy = team.open_buy.get(symbol, 0)
    open_sell = team.open_sell.get(symbol, 0)
    limit = policy.position_limit
    if side == "buy" and position + open_buy + quantity > limit:
        return Rejection(
            RejectCode.POSITION_LIMIT_EXCEEDED,
            f"buying {quantity} could take the position in {symbol} past +{limit}",
            {"current_position": position, "open_buy_quantity": open_buy, "order_quantity": quantity, "limit": limit},
        )
    if side == "sell" and position - open_sell - quantity < -limit:
        return Rejection(
            RejectCode.POSITION_LIMIT_EXCEEDED,
            f"selling {quantity} could take the position in {symbol} past -{limit}",
            {"current_position": position, "open_sell_quantity": open_sell, "order_quantity": quantity, "limit": limit},
        )
    before = exposure(position, open_buy, open_sell)
    after_here = (
        exposure(position, open_buy + quantity, open_sell)
        if side == "buy"
        else exposure(position, open_buy, open_sell + quantity)
    )
    if after_here <= before:
        return None  # the order cannot add exposure: no need to add up the portfolio
    used = portfolio_used(team)
    after = used - before + after_here
    if after > policy.portfolio_limit:
        return Rejection(
            RejectCode.PORTFOLIO_LIMIT_EXCEEDED,
            f"the order could take total exposure to {after}, past the limit {policy.portfolio_limit}",
            {"portfolio_used": used, "portfolio_after": after, "limit": policy.portfolio_limit},
        )
    return None


def portfolio_used(team: TeamState) -> int:
    symbols = set(team.positions) | set(team.open_buy) | set(team.open_sell)
    return sum(exposure(team.positions.get(s, 0), team.open_buy.get(s, 0), team.open_sell.get(s, 0)) for s in symbols)
