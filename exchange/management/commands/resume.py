"""``manage.py resume --team NAME_OR_TEAM_ID | --instrument SYMBOL | --exchange``: lift a halt."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.management.commands.halt import add_scope_arguments, scope_of
from exchange.services.operator import OperatorError, resume


class Command(BaseCommand):
    help = "Lift the halt of a team, an instrument or the whole exchange."

    def add_arguments(self, parser: CommandParser) -> None:
        add_scope_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            change = resume(**scope_of(options))
        except OperatorError as error:
            raise CommandError(str(error)) from error
        for line in change.summary():
            self.stdout.write(line)
