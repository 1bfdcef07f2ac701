"""API keys: generation, digest, and the one verifier used by REST and WebSocket alike.

Keys are 256-bit random secrets, so a single SHA-256 is enough (a password hasher would cost
~100 ms per request for no gain). Lookup is by digest; the final comparison is constant time.

``verify_key`` is what every entry point calls (the REST authentication class, the async cancel
views, the WebSocket middleware): it refuses an address with too many failed checks before
looking at its key, and counts each wrong key (``accounts.throttle``). Nothing is cached: a key
revoked or a team disabled is refused on the very next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from accounts import throttle
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


def verify_key(key: str | None, address: str | None) -> Team | None:
    """The team owning an active key presented from ``address``, or None (no key, or a wrong one).

    Raises ``throttle.TooManyFailedAttempts`` without looking at the key while the address is
    refused. A missing key is not a key check and is neither refused nor counted here.
    """
    if key is None:
        return None
    throttle.check(address)
    team = team_for_key(key)
    if team is None:
        throttle.record_failure(address)
    return team


KEY_REVOKED = "API key revoked"
TEAM_DISABLED = "team disabled"


def keys_refused(digests: list[str]) -> dict[str, str]:
    """Of these key digests, the ones no longer good, each with the reason: revoked (or gone) or
    team disabled. One query per 500 digests; for re-checking keys of open connections."""
    states: dict[str, tuple[bool, bool]] = {}
    for start in range(0, len(digests), 500):
        rows = ApiKey.objects.filter(digest__in=digests[start : start + 500]).values_list(
            "digest", "revoked_at", "team__active"
        )
        states.update((digest, (revoked_at is None, active)) for digest, revoked_at, active in rows)
    refused = {}
    for digest in digests:
        usable, active = states.get(digest, (False, False))
        if not usable:
            refused[digest] = KEY_REVOKED
        elif not active:
            refused[digest] = TEAM_DISABLED
    return refused
