"""Keeps the key directory in Redis (accounts.keycache) in step with teams and keys: every save
of a team or a key rewrites that team's entries once the transaction commits. Declares
``team_registered``, so apps that keep records per team create them without this app knowing them."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from accounts.keycache import publish_team
from accounts.models import ApiKey, Team
from infra.redis_clients import sync_client

log = logging.getLogger(__name__)

team_registered = Signal()
"""Sent by ``team_register`` with ``team``, inside its transaction, before the team's first key."""


def team_changed(team: Team) -> None:
    """Rewrite the team's directory entries after commit (also for bulk ``update()`` callers)."""

    def publish() -> None:
        try:
            publish_team(sync_client(), team)
        except redis.RedisError:  # the worker rebuilds the whole directory when Redis is back
            log.warning("could not update the key directory for %s", team.team_id, exc_info=True)

    transaction.on_commit(publish)


@receiver(post_save, sender=Team)
def _team_saved(sender: type[Team], instance: Team, **kwargs: Any) -> None:
    team_changed(instance)


@receiver(post_save, sender=ApiKey)
@receiver(post_delete, sender=ApiKey)
def _key_changed(sender: type[ApiKey], instance: ApiKey, **kwargs: Any) -> None:
    team = Team.objects.filter(pk=instance.team_id).first()
    if team is not None:
        team_changed(team)
