"""``manage.py publish_underlying SYMBOL PRICE``: announce an underlying price to every bot."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.services.market_info import MarketInfoUnavailable, underlying_publish


class Command(BaseCommand):
    help = "Send an `underlying` frame (symbol, price) to every WebSocket connection."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("symbol", help="e.g. SPX")
        parser.add_argument("price", help="e.g. 4412.25")

    def handle(self, *args: Any, symbol: str, price: str, **options: Any) -> None:
        try:
            value = Decimal(price)
            underlying_publish(symbol.upper(), value)
        except (InvalidOperation, ValueError) as error:
            raise CommandError(f"price must be a positive number: {error}") from None
        except MarketInfoUnavailable as error:
            raise CommandError(f"the matching worker cannot send it: {error}") from None
        self.stdout.write(f"underlying {symbol.upper()} {value} sent to every connection")
