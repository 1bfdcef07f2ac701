"""The default role policies of GAME.md and the game row; operators edit both in the admin."""

from decimal import Decimal

from django.db import migrations

DEFAULTS = {
    # role: position limit, portfolio limit, max order size, orders/s, maker fee, taker fee
    "market_maker": (50, 200, 1000, 10, "-0.02", "0.01"),
    "hedge_fund": (150, 500, 500, 5, "-0.01", "0.02"),
    "arbitrage": (100, 300, 500, 7, "-0.01", "0.02"),
    "retail": (50, 50, 100, 1, "0.01", "0.03"),
}


def create_defaults(apps, schema_editor):
    RolePolicy = apps.get_model("exchange", "RolePolicy")
    Game = apps.get_model("exchange", "Game")
    for role, (position, portfolio, size, rate, maker, taker) in DEFAULTS.items():
        RolePolicy.objects.get_or_create(
            role=role,
            defaults={
                "position_limit": position,
                "portfolio_limit": portfolio,
                "max_order_size": size,
                "orders_per_second": rate,
                "maker_fee": Decimal(maker),
                "taker_fee": Decimal(taker),
            },
        )
    Game.objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("exchange", "0001_initial")]
    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
