"""``manage.py create_team NAME ROLE``: create a team and print its API key once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Role
from accounts.services import TeamNameTaken, team_register


class Command(BaseCommand):
    help = "Create a team with a role and print its API key (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("role", choices=list(Role.values))

    def handle(self, *args: Any, name: str, role: str, **options: Any) -> None:
        if not 3 <= len(name) <= 50:
            raise CommandError("team names are 3 to 50 characters")
        try:
            team, key = team_register(name, role)
        except TeamNameTaken:
            raise CommandError(f"a team named {name!r} already exists") from None
        self.stdout.write(f"{team.team_id} {team.name} ({team.role})")
        self.stdout.write(f"api_key: {key}")
