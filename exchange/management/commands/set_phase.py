"""``manage.py set_phase PHASE``: step the trading phase by hand and say what it does."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from exchange.models import Phase
from exchange.services.operator import game_set_phase


class Command(BaseCommand):
    help = "Set the trading phase (closed, pre_open, opening_auction, continuous); the books follow in order."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("phase", choices=list(Phase.values))

    def handle(self, *args: Any, phase: str, **options: Any) -> None:
        for line in game_set_phase(phase).summary():
            self.stdout.write(line)
