"""Role policies: GAME.md's defaults, created on first use; operators edit them in the admin."""

from __future__ import annotations

from decimal import Decimal

from accounts.models import Role
from exchange.models import RolePolicy

DEFAULTS: dict[str, dict[str, object]] = {
    Role.MARKET_MAKER: {
        "position_limit": 50,
        "portfolio_limit": 200,
        "max_order_size": 1000,
        "orders_per_second": 10,
        "maker_fee": Decimal("-0.02"),
        "taker_fee": Decimal("0.01"),
    },
    Role.HEDGE_FUND: {
        "position_limit": 150,
        "portfolio_limit": 500,
        "max_order_size": 500,
        "orders_per_second": 5,
        "maker_fee": Decimal("-0.01"),
        "taker_fee": Decimal("0.02"),
    },
    Role.ARBITRAGE: {
        "position_limit": 100,
        "portfolio_limit": 300,
        "max_order_size": 500,
        "orders_per_second": 7,
        "maker_fee": Decimal("-0.01"),
        "taker_fee": Decimal("0.02"),
    },
    Role.RETAIL: {
        "position_limit": 50,
        "portfolio_limit": 50,
        "max_order_size": 100,
        "orders_per_second": 1,
        "maker_fee": Decimal("0.01"),
        "taker_fee": Decimal("0.03"),
    },
}


def role_policy(role: str) -> RolePolicy:
    policy = RolePolicy.objects.filter(role=role).first()
    if policy is None:
        policy, _ = RolePolicy.objects.get_or_create(role=role, defaults=DEFAULTS[role])
    return policy


def role_policies() -> dict[str, RolePolicy]:
    policies = {p.role: p for p in RolePolicy.objects.all()}
    for role in DEFAULTS.keys() - policies.keys():
        policies[role] = role_policy(role)
    return policies
