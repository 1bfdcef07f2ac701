"""The operator admin needs a staff login and keeps CSRF protection; the API sends no CORS
headers, so browsers on other origins cannot read its answers."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.keys import team_for_key

CHANGELIST = "/admin/accounts/team/"


def rotate(client: Client, team_pk: int, **extra: str):
    return client.post(CHANGELIST, {"action": "rotate_key", "_selected_action": [team_pk], **extra})


def assert_sent_to_login(response, path: str) -> None:
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/") and "next=" in response["Location"], response["Location"]


@pytest.mark.parametrize("path", ["/admin/", CHANGELIST, "/admin/accounts/apikey/", "/admin/auth/user/"])
def test_anonymous_visitors_are_sent_to_the_login_page(db, client, path) -> None:
    assert_sent_to_login(client.get(path), path)


def test_anonymous_actions_change_nothing(make_team, client) -> None:
    team, key = make_team()
    assert_sent_to_login(rotate(client, team.pk), CHANGELIST)
    assert team_for_key(key) == team


def test_a_logged_in_user_who_is_not_staff_is_refused(make_team, client) -> None:
    team, key = make_team()
    get_user_model().objects.create_user("player", password="a-long-enough-password")
    # The login form refuses non-staff accounts...
    response = client.post("/admin/login/?next=/admin/", {"username": "player", "password": "a-long-enough-password"})
    assert response.status_code == 200 and b"staff account" in response.content
    assert_sent_to_login(client.get("/admin/"), "/admin/")
    # ...and a session logged in elsewhere gets no further.
    client.force_login(get_user_model().objects.get(username="player"))
    assert_sent_to_login(client.get(CHANGELIST), CHANGELIST)
    assert_sent_to_login(rotate(client, team.pk), CHANGELIST)
    assert team_for_key(key) == team


def test_staff_without_permissions_cannot_see_or_rotate_teams(make_team, client) -> None:
    team, key = make_team()
    staff = get_user_model().objects.create_user("clerk", password="a-long-enough-password", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200
    assert client.get(CHANGELIST).status_code == 403
    assert rotate(client, team.pk).status_code == 403
    assert team_for_key(key) == team


def test_staff_who_may_only_view_teams_cannot_rotate_keys(make_team, client) -> None:
    team, key = make_team()
    staff = get_user_model().objects.create_user("viewer", password="a-long-enough-password", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_team"))
    client.force_login(staff)
    assert client.get(CHANGELIST).status_code == 200
    rotate(client, team.pk)  # viewing is not changing
    assert team_for_key(key) == team


def test_admin_posts_without_the_csrf_token_are_refused(make_team, admin_user) -> None:
    team, key = make_team()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    refused = rotate(client, team.pk)
    assert refused.status_code == 403 and b"CSRF" in refused.content
    assert team_for_key(key) == team  # nothing rotated
    wrong = rotate(client, team.pk, csrfmiddlewaretoken="x" * 64)
    assert wrong.status_code == 403 and team_for_key(key) == team

    # With the token of the form the same request goes through: the 403 was the CSRF check.
    client.get(CHANGELIST)
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    assert rotate(client, team.pk, csrfmiddlewaretoken=token).status_code == 302
    assert team_for_key(key) is None


def test_the_admin_login_form_needs_the_csrf_token(admin_user) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/admin/login/", {"username": admin_user.username, "password": "password"})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_csrf_and_clickjacking_middleware_stay_installed() -> None:
    assert "django.middleware.csrf.CsrfViewMiddleware" in settings.MIDDLEWARE
    assert "django.middleware.clickjacking.XFrameOptionsMiddleware" in settings.MIDDLEWARE
    assert "corsheaders" not in settings.INSTALLED_APPS
    assert not any("cors" in middleware.lower() for middleware in settings.MIDDLEWARE)


ORIGIN = "https://evil.example"


def cors_headers(response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


@pytest.mark.django_db(transaction=True)  # the matching worker runs in a thread of its own
def test_no_api_response_carries_cors_headers(make_team, instruments, api, matching) -> None:
    _, key = make_team()
    keyed, anonymous = api(key), api()
    order = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 1, "price": 100.0}
    preflight = {
        "HTTP_ORIGIN": ORIGIN,
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
        "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "x-api-key, content-type",
    }
    responses = {
        "GET /": anonymous.get("/", HTTP_ORIGIN=ORIGIN),
        "GET /positions": keyed.get("/positions", HTTP_ORIGIN=ORIGIN),
        "GET /positions bad key": api("itg_wrong").get("/positions", HTTP_ORIGIN=ORIGIN),
        "GET /positions no key": anonymous.get("/positions", HTTP_ORIGIN=ORIGIN),
        "GET /fills": keyed.get("/fills", HTTP_ORIGIN=ORIGIN),
        "GET /account": keyed.get("/account", HTTP_ORIGIN=ORIGIN),
        "DELETE /orders/ORD_987654": keyed.delete("/orders/ORD_987654", HTTP_ORIGIN=ORIGIN),
        "DELETE /orders": keyed.delete("/orders", HTTP_ORIGIN=ORIGIN),
        "POST /orders": keyed.post("/orders", order, format="json", HTTP_ORIGIN=ORIGIN),
        "POST /orders bad key": api("itg_wrong").post("/orders", order, format="json", HTTP_ORIGIN=ORIGIN),
        "POST /orders not JSON": keyed.generic(
            "POST", "/orders", "{", content_type="application/json", HTTP_ORIGIN=ORIGIN
        ),
        "DELETE /orders/garbage": keyed.delete("/orders/garbage", HTTP_ORIGIN=ORIGIN),
        "POST /auth/register": anonymous.post(
            "/auth/register", {"team_name": "Browser", "role": "retail"}, format="json", HTTP_ORIGIN=ORIGIN
        ),
        "GET /schema/": anonymous.get("/schema/", HTTP_ORIGIN=ORIGIN),
        "OPTIONS /orders": anonymous.options("/orders", **preflight),
        "OPTIONS /orders keyed": keyed.options("/orders", **preflight),
        "OPTIONS /orders/ORD_1": anonymous.options(
            "/orders/ORD_1", **dict(preflight, HTTP_ACCESS_CONTROL_REQUEST_METHOD="DELETE")
        ),
        "OPTIONS /auth/register": anonymous.options("/auth/register", **preflight),
        "OPTIONS /": anonymous.options("/", **preflight),
    }
    assert responses["GET /"].status_code == 200
    assert responses["GET /positions"].status_code == 200 and responses["POST /orders"].status_code == 200
    assert responses["DELETE /orders"].status_code == 200
    assert responses["DELETE /orders/ORD_987654"].status_code == 404
    for name, response in responses.items():
        assert response.status_code != 500, name
        assert cors_headers(response) == [], (name, cors_headers(response))
