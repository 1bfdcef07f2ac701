"""``manage.py seed_demo``: a ready-to-trade demo game (idempotent).

Lists a ladder of strikes around spot on SPX and SPY (always SPX_4500_CALL/PUT), creates two
demo teams and an operator login, and prints their keys and password. Run again, it changes
nothing that exists; ``--rotate-keys`` issues fresh demo keys.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.models import Role, Team
from accounts.services import key_issue, key_rotate, team_register
from exchange.models import Game, Instrument

LADDERS = {"SPX": range(4300, 4701, 50), "SPY": range(430, 471, 5)}
DEMO_TEAMS = (("demo_market_maker", Role.MARKET_MAKER), ("demo_hedge_fund", Role.HEDGE_FUND))
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"


class Command(BaseCommand):
    help = "Create the demo game: instruments, two demo teams and an admin login (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rotate-keys", action="store_true", help="issue fresh keys for the demo teams")
        parser.add_argument("--keys-file", help="also write the demo keys to this file (KEY=VALUE lines)")

    @transaction.atomic
    def handle(self, *args: Any, rotate_keys: bool = False, keys_file: str | None = None, **options: Any) -> None:
        Game.objects.get_or_create(pk=1)
        created = 0
        instruments = [(u, s, t) for u, ladder in LADDERS.items() for s in ladder for t in ("call", "put")]
        for number, (underlying, strike, option_type) in enumerate(instruments, start=1):
            _, new = Instrument.objects.get_or_create(
                symbol=f"{underlying}_{strike}_{option_type.upper()}",
                defaults={"underlying": underlying, "option_type": option_type, "strike": Decimal(strike)},
            )
            created += new
            if number % 10 == 0 or number == len(instruments):
                self.stdout.write(f"\rinstruments {number}/{len(instruments)}", ending="")
        self.stdout.write(f"\n{created} instruments listed, {len(instruments) - created} already there")

        lines = []
        for name, role in DEMO_TEAMS:
            team = Team.objects.filter(name=name).first()
            if team is None:
                team, key = team_register(name, role)
            elif rotate_keys or not team.api_keys.filter(revoked_at__isnull=True).exists():
                key = key_rotate(team) if rotate_keys else key_issue(team)
            else:
                key = None
            shown = key or "(unchanged; run seed_demo --rotate-keys for a new one)"
            self.stdout.write(f"{team.team_id} {team.name} ({team.role}) api_key: {shown}")
            if key:
                lines.append(f"{name.upper()}_KEY={key}")

        user_model = get_user_model()
        if not user_model.objects.filter(username=ADMIN_USER).exists():
            user_model.objects.create_superuser(ADMIN_USER, "admin@localhost", ADMIN_PASSWORD)
            self.stdout.write(f"admin login: {ADMIN_USER} / {ADMIN_PASSWORD} (change it for anything but a demo)")
        else:
            self.stdout.write(f"admin login: {ADMIN_USER} (exists; password unchanged)")
        if keys_file and lines:
            with open(keys_file, "w") as handle:
                handle.write("\n".join(lines) + "\n")
