"""The key directory: API key digests → (team, role, status) in Redis, and each web process's
short-lived cache of it, so the order path authenticates without touching the database.

Redis holds one hash, digest → ``"<team pk> <role> <active|disabled> <team created µs>"``, written
whenever a key or a team changes (``accounts.signals``) and rebuilt whole by the matching worker
at start (``publish_all``). A web process keeps what it read for at most ``CACHE_TTL_S``: a
revoked key, a rotation or a disabled team is refused by every process within that time, and a
new key works on every process as soon as its registration has answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from accounts.keys import KEY_PREFIX, key_digest
from accounts.models import ApiKey, Team

DIRECTORY = "itg:keys"
CACHE_TTL_S = 1.0
CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class KeyOwner:
    team_pk: int
    role: str
    active: bool
    created_us: int

    @property
    def team_id(self) -> str:
        return f"TEAM_{self.team_pk}"

    def encode(self) -> str:
        return f"{self.team_pk} {self.role} {'active' if self.active else 'disabled'} {self.created_us}"

    @classmethod
    def decode(cls, raw: bytes | str) -> KeyOwner:
        text = raw.decode() if isinstance(raw, bytes) else raw
        pk, role, status, created = text.split(" ")
        return cls(int(pk), role, status == "active", int(created))


def owner_of(team: Team) -> KeyOwner:
    return KeyOwner(team.pk, team.role, team.active, int(team.created_at.timestamp() * 1_000_000))


def publish_team(client: redis.Redis, team: Team) -> None:
    """Write the team's active keys (and drop its revoked ones) in the directory."""
    entry = owner_of(team).encode()
    pipe = client.pipeline(transaction=False)
    for digest, revoked_at in ApiKey.objects.filter(team=team).values_list("digest", "revoked_at"):
        if revoked_at is None:
            pipe.hset(DIRECTORY, digest, entry)
        else:
            pipe.hdel(DIRECTORY, digest)
    pipe.execute()


def publish_all(client: redis.Redis) -> int:
    """Rebuild the whole directory from the database; returns how many keys it holds."""
    entries = {
        digest: owner_of(team).encode()
        for digest, team in (
            (key.digest, key.team) for key in ApiKey.objects.filter(revoked_at__isnull=True).select_related("team")
        )
    }
    pipe = client.pipeline(transaction=True)
    pipe.delete(DIRECTORY)
    if entries:
        pipe.hset(DIRECTORY, mapping=entries)  # type: ignore[arg-type]
    pipe.execute()
    return len(entries)


class KeyCache:
    """One web process's view of the directory: digest → (owner or None, when read)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[KeyOwner | None, float]] = {}

    def cached(self, key: str) -> tuple[str, KeyOwner | None, bool]:
        """(digest, owner, fresh): ``fresh`` False means ask Redis (``remember`` the answer)."""
        digest = key_digest(key) if key.startswith(KEY_PREFIX) and len(key) <= 128 else ""
        hit = self.entries.get(digest)
        if hit is not None and time.monotonic() - hit[1] < CACHE_TTL_S:
            return digest, hit[0], True
        return digest, None, False

    def remember(self, digest: str, raw: bytes | None) -> KeyOwner | None:
        owner = KeyOwner.decode(raw) if raw else None
        if len(self.entries) >= CACHE_MAX:
            self.entries.clear()
        self.entries[digest] = (owner, time.monotonic())
        return owner
