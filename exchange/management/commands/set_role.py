"""``manage.py set_role ROLE [--orders-per-second N] [--position-limit N] [--portfolio-limit N]
[--max-order-size N] [--maker-fee X] [--taker-fee X]``: change a role's limits and fees."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Role
from exchange.services.operator import OperatorError, role_set


class Command(BaseCommand):
    help = (
        "Change a role's limits and fees. New orders see them as soon as the matching worker reaches "
        "the change (within a second); each change goes in the audit log the admin shows."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", choices=list(Role.values))
        parser.add_argument("--orders-per-second", type=int, help="per team; 0 means no limit")
        parser.add_argument("--position-limit", type=int, help="per instrument, either side")
        parser.add_argument("--portfolio-limit", type=int, help="sum of exposures over instruments")
        parser.add_argument("--max-order-size", type=int)
        parser.add_argument("--maker-fee", help="per contract; negative is a rebate")
        parser.add_argument("--taker-fee", help="per contract; negative is a rebate")

    def handle(self, *args: Any, role: str, **options: Any) -> None:
        values = {
            name: options[name]
            for name in ("orders_per_second", "position_limit", "portfolio_limit", "max_order_size", "maker_fee", "taker_fee")
        }
        try:
            update = role_set(role, f"manage.py set_role ({getpass.getuser()})", **values)
        except OperatorError as error:
            raise CommandError(str(error)) from error
        for line in update.summary():
            self.stdout.write(line)
