"""Cash accounts: every team has one from the moment it exists."""

from __future__ import annotations

from accounts.models import Team
from exchange.models import Account


def account_open(team: Team) -> Account:
    account, _ = Account.objects.get_or_create(team=team)
    return account
