"""``manage.py send_signal TYPE (--role ROLE | --team TEAM) [--data JSON]``: private information
for one team or for every team of a role, as a ``signal`` frame."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Role
from exchange.services.market_info import MarketInfoUnavailable, signal_publish
from exchange.services.operator import OperatorError, team_lookup


class Command(BaseCommand):
    help = 'Send a `signal` frame, e.g. send_signal volatility_forecast --role hedge_fund --data \'{"regime": "high"}\''

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("signal_type", help="e.g. volatility_forecast, tracking_error")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--role", choices=list(Role.values))
        target.add_argument("--team", help="team name or TEAM_<n>")
        parser.add_argument("--data", default="{}", help="a JSON object of the signal's fields")

    def handle(
        self, *args: Any, signal_type: str, role: str | None, team: str | None, data: str, **options: Any
    ) -> None:
        try:
            fields = json.loads(data)
        except ValueError:
            raise CommandError("--data must be a JSON object") from None
        if not isinstance(fields, dict):
            raise CommandError("--data must be a JSON object")
        try:
            receiver = team_lookup(team) if team else None
            sent = signal_publish(signal_type, fields, role=role, team=receiver)
        except (ValueError, OperatorError) as error:
            raise CommandError(str(error)) from None
        except MarketInfoUnavailable as error:
            raise CommandError(f"the matching worker cannot send it: {error}") from None
        self.stdout.write(f"signal {signal_type} sent to {sent} team(s)")
