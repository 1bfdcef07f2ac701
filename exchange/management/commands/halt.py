"""``manage.py halt --team NAME_OR_TEAM_ID | --instrument SYMBOL | --exchange [--cancel-resting]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.services.operator import OperatorError, halt, instrument_lookup, team_lookup


def add_scope_arguments(parser: CommandParser) -> None:
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--team", metavar="NAME_OR_TEAM_ID", help="a team, by name or TEAM_<n>")
    scope.add_argument("--instrument", metavar="SYMBOL", help="an instrument, e.g. SPX_4500_CALL")
    scope.add_argument("--exchange", action="store_true", help="the whole exchange")


def scope_of(options: dict[str, Any]) -> dict[str, Any]:
    """The service's scope arguments from the command line, or a CommandError."""
    try:
        if options["team"]:
            return {"team": team_lookup(options["team"])}
        if options["instrument"]:
            return {"instrument": instrument_lookup(options["instrument"])}
    except OperatorError as error:
        raise CommandError(str(error)) from None
    return {"exchange": True}


class Command(BaseCommand):
    help = "Halt a team, an instrument or the whole exchange; optionally cancel its resting orders."

    def add_arguments(self, parser: CommandParser) -> None:
        add_scope_arguments(parser)
        parser.add_argument(
            "--cancel-resting", action="store_true", help="also cancel resting orders (cancel_ack reason operator)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            change = halt(**scope_of(options), cancel_resting=options["cancel_resting"])
        except OperatorError as error:
            raise CommandError(str(error)) from error
        for line in change.summary():
            self.stdout.write(line)
