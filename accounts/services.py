"""Writes for teams and keys: registration, key issue and rotation."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.keys import generate_key, key_digest
from accounts.models import ApiKey, Team
from accounts.signals import team_changed, team_registered


class TeamNameTaken(Exception):
    pass


def key_issue(team: Team) -> str:
    """Create a new key for a team and return it; this is the only time it exists in clear."""
    key = generate_key()
    ApiKey.objects.create(team=team, digest=key_digest(key), prefix=key[:10])
    return key


@transaction.atomic
def team_register(name: str, role: str) -> tuple[Team, str]:
    if Team.objects.filter(name__iexact=name).exists():
        raise TeamNameTaken(name)
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name, role=role)
    except IntegrityError as exc:
        raise TeamNameTaken(name) from exc
    team_registered.send(sender=Team, team=team)
    return team, key_issue(team)


@transaction.atomic
def key_rotate(team: Team) -> str:
    """Revoke every active key of the team at once and issue a fresh one."""
    ApiKey.objects.filter(team=team, revoked_at__isnull=True).update(revoked_at=timezone.now())
    team_changed(team)  # update() sends no signals
    return key_issue(team)
