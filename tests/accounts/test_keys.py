"""API keys: format, storage as digests only, verification and revocation."""

from __future__ import annotations

import pytest

from accounts.keys import generate_key, key_digest, team_for_key
from accounts.models import ApiKey
from accounts.services import key_rotate


def test_generated_keys_are_prefixed_random_and_long() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("itg_") and len(key) >= 40 for key in keys)


def test_digest_is_sha256_hex_and_not_the_key() -> None:
    key = generate_key()
    digest = key_digest(key)
    assert len(digest) == 64 and key not in digest
    assert key_digest(key) == digest


def test_only_the_digest_is_stored(make_team) -> None:
    team, key = make_team()
    row = ApiKey.objects.get(team=team)
    assert row.digest == key_digest(key)
    stored = [str(v) for v in ApiKey.objects.values_list(flat=False).get(pk=row.pk)]
    assert all(key not in value for value in stored)


def test_verification_finds_the_team(make_team) -> None:
    team, key = make_team()
    assert team_for_key(key) == team


@pytest.mark.parametrize("junk", [None, "", "itg_", "itg_nope", "not-a-key", "itg_" + "x" * 500, 42, "itg_\x00"])
def test_verification_refuses_junk(db, junk) -> None:
    assert team_for_key(junk) is None


def test_rotation_revokes_old_keys_at_once(make_team) -> None:
    team, old = make_team()
    new = key_rotate(team)
    assert team_for_key(old) is None
    assert team_for_key(new) == team
