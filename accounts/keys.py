"""API keys: generation, digest, and the one verifier used by REST and WebSocket alike.

Keys are 256-bit random secrets, so a single SHA-256 is enough (a password hasher would cost
~100 ms per request for no gain). Lookup is by digest; the final comparison is constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from accounts.models import ApiKey, Team

KEY_PREFIX = "itg_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def team_for_key(key: str | None) -> Team | None:
    """The team owning an active key, or None. Never raises for any input."""
    if not key or not isinstance(key, str) or not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    digest = key_digest(key)
    row = (
        ApiKey.objects.select_related("team")
        .filter(digest=digest, revoked_at__isnull=True)
        .only("digest", "team__id", "team__name", "team__role", "team__active", "team__trading_halted")
        .first()
    )
    if row is None or not hmac.compare_digest(row.digest, digest):
        return None
    return row.team
