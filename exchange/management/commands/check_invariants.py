"""``manage.py check_invariants``: prove the exchange's invariants against the database, and
ask the running matching worker to compare its books with it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.invariants import database_violations
from exchange.matching.queue import Refused, operator_command


class Command(BaseCommand):
    help = "Check invariants 1–5 (conservation, positions and cash, quantities, exactly once, books)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-books", action="store_true", help="skip the matching worker's books")
        parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the worker")

    def handle(self, *args: Any, no_books: bool, timeout: float, **options: Any) -> None:
        results = database_violations()
        if not no_books:
            results["5 books equal the database"] = self._books(timeout)
        failed = 0
        for name, problems in results.items():
            mark = self.style.SUCCESS("ok  ") if not problems else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {name}")
            for problem in problems[:20]:
                self.stdout.write(f"       {problem}")
            failed += bool(problems)
        if failed:
            raise CommandError(f"{failed} invariant(s) broken")

    def _books(self, timeout: float) -> list[str]:
        """The worker compares its books with the database when it reaches this command, after
        everything queued before it has committed."""
        try:
            result = operator_command("books", timeout_s=timeout)
        except Refused as refused:
            return [f"the matching worker cannot be asked: {refused.message}"]
        except TimeoutError:
            return [f"the matching worker did not answer within {timeout:.0f} s"]
        return list(result["differences"])
