"""``manage.py check_invariants``: prove the exchange's invariants against the database, and
ask the running matching worker to compare its books with it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.invariants import database_violations


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
        from exchange.tasks import check_books

        token = uuid.uuid4().hex
        check_books.apply_async(args=[token], queue="matching")
        reply = redis.Redis.from_url(settings.REDIS_URL).blpop([f"itg:books-check:{token}"], timeout=timeout)
        if reply is None:
            return [f"the matching worker did not answer within {timeout:.0f} s"]
        return list(json.loads(reply[1]))
