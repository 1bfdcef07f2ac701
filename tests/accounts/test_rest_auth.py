"""REST authentication by X-API-Key, registration, and the operator's create_team command."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.keys import team_for_key
from accounts.models import Team
from exchange.models import Game


def test_missing_key_is_401_in_the_error_shape(db, api) -> None:
    response = api().get("/positions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "NOT_AUTHENTICATED"
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_unknown_key_is_401(db, api) -> None:
    response = api("itg_unknown").get("/positions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_API_KEY"


def test_valid_key_reads_own_positions(make_team, api) -> None:
    team, key = make_team()
    response = api(key).get("/positions")
    assert response.status_code == 200
    assert response.json() == {"team_id": team.team_id, "positions": {}}


def test_disabled_team_is_403(make_team, api) -> None:
    team, key = make_team()
    Team.objects.filter(pk=team.pk).update(active=False)
    response = api(key).get("/positions")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "TEAM_DISABLED"


def test_other_teams_positions_are_403(make_team, api) -> None:
    _, key = make_team()
    other, _ = make_team()
    response = api(key).get(f"/positions/{other.team_id}")
    assert response.status_code == 403


def test_register_returns_the_key_once(db, api) -> None:
    response = api().post("/auth/register", {"team_name": "Alpha Desk", "role": "hedge_fund"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"team_id", "team_name", "role", "api_key", "created_at"}
    assert body["team_id"].startswith("TEAM_") and body["role"] == "hedge_fund"
    assert team_for_key(body["api_key"]).name == "Alpha Desk"


def test_register_duplicate_name_is_409(db, api) -> None:
    api().post("/auth/register", {"team_name": "Alpha", "role": "retail"}, format="json")
    response = api().post("/auth/register", {"team_name": "alpha", "role": "retail"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "TEAM_NAME_TAKEN"


@pytest.mark.parametrize(
    "body, code",
    [
        ({"team_name": "ab", "role": "retail"}, "INVALID_REQUEST"),
        ({"team_name": "x" * 51, "role": "retail"}, "INVALID_REQUEST"),
        ({"team_name": "Valid", "role": "banker"}, "INVALID_REQUEST"),
        ({"team_name": "Valid"}, "INVALID_REQUEST"),
        ({"team_name": "Valid", "role": "retail", "colour": "red"}, "UNKNOWN_FIELD"),
        (["team_name"], "INVALID_JSON"),
    ],
)
def test_register_bad_input_is_400_and_creates_nothing(db, api, body, code) -> None:
    response = api().post("/auth/register", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert Team.objects.count() == 0


def test_register_malformed_json_is_400(db, api) -> None:
    response = api().generic("POST", "/auth/register", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_JSON"


def test_registration_can_be_closed(db, api) -> None:
    Game.objects.update_or_create(pk=1, defaults={"registration_open": False})
    response = api().post("/auth/register", {"team_name": "Late Team", "role": "retail"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "REGISTRATION_CLOSED"


def test_create_team_command_prints_a_working_key(db) -> None:
    out = StringIO()
    call_command("create_team", "Gamma", "arbitrage", stdout=out)
    key = next(line.split(": ")[1] for line in out.getvalue().splitlines() if line.startswith("api_key"))
    assert team_for_key(key).role == "arbitrage"


def test_admin_rotate_key_action(make_team, admin_client) -> None:
    team, old = make_team()
    response = admin_client.post(
        "/admin/accounts/team/", {"action": "rotate_key", "_selected_action": [team.pk]}, follow=True
    )
    assert response.status_code == 200
    assert team_for_key(old) is None
    assert team.api_keys.filter(revoked_at__isnull=True).count() == 1
