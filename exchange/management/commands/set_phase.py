"""``manage.py set_phase PHASE``: step the trading phase by hand and say what it does."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.models import Phase
from exchange.services.operator import OperatorError, game_set_phase


class Command(BaseCommand):
    help = "Set the trading phase (closed, pre_open, opening_auction, continuous); the books follow in order."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("phase", choices=list(Phase.values))

    def handle(self, *args: Any, phase: str, **options: Any) -> None:
        try:
            change = game_set_phase(phase)
        except OperatorError as error:
            raise CommandError(str(error)) from error
        for line in change.summary():
            self.stdout.write(line)
