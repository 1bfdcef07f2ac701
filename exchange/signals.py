"""Changes made outside the matching queue (the admin, registration) that the matching worker
must see: each is queued to the worker once it commits. A registered team gets its cash account
in the registration's own transaction."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.models import Team
from accounts.signals import team_registered
from exchange.models import Game, Instrument, RolePolicy
from exchange.services.accounts import account_open
from exchange.services.operator import game_refresh, instrument_refresh, policies_refresh, team_refresh


@receiver(post_save, sender=Team)
def _team_saved(sender: type[Team], instance: Team, **kwargs: Any) -> None:
    team_refresh(instance.pk)


@receiver(team_registered, sender=Team)
def _team_registered(sender: type[Team], team: Team, **kwargs: Any) -> None:
    account_open(team)


@receiver(post_save, sender=Instrument)
def _instrument_saved(sender: type[Instrument], instance: Instrument, **kwargs: Any) -> None:
    instrument_refresh(instance.symbol)


@receiver(post_save, sender=Game)
def _game_saved(sender: type[Game], instance: Game, **kwargs: Any) -> None:
    game_refresh()


@receiver(post_save, sender=RolePolicy)
def _policy_saved(sender: type[RolePolicy], instance: RolePolicy, **kwargs: Any) -> None:
    policies_refresh()
