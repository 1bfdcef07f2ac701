"""The per-team order rate limit: a sliding one-second window in Redis, answered with 429 and
``Retry-After``, storing and announcing nothing; 503 when Redis cannot be asked."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from django.conf import settings as django_settings

from exchange import ratelimit
from exchange.models import Order, RolePolicy
from exchange.policies import role_policy
from exchange.publisher import Outbox

REPLY_FIELDS = {
    "order_id", "client_order_id", "status", "timestamp", "filled_quantity", "average_price", "fees",
    "liquidity_type", "error_code", "error_message", "details", "request_id",
}


@pytest.fixture
def published(monkeypatch) -> list[Outbox]:
    """Every outbox the order path would publish, captured instead of sent."""
    outboxes: list[Outbox] = []
    monkeypatch.setattr(Outbox, "send_on_commit", lambda self: outboxes.append(self))
    return outboxes


def post(api, key, order_body, **fields):
    return api(key).post("/orders", order_body(**fields), format="json")


def test_retail_second_order_within_a_second_is_429_then_accepted_again(
    make_team, instruments, api, order_body, published
) -> None:
    _, key = make_team("retail")  # 1 order per second
    first = post(api, key, order_body, client_order_id="first")
    assert first.status_code == 200 and first.json()["status"] == "accepted"

    limited = post(api, key, order_body, client_order_id="second", request_id="r-2")
    assert limited.status_code == 429
    body = limited.json()
    assert set(body) == REPLY_FIELDS
    assert body["status"] == "rejected" and body["order_id"] is None
    assert body["error_code"] == "RATE_LIMIT_EXCEEDED"
    assert (body["client_order_id"], body["request_id"]) == ("second", "r-2")
    details = body["details"]
    assert (details["limit"], details["window_s"]) == (1, 1)
    assert 0 < details["retry_after_ms"] <= 1000
    assert limited["Retry-After"] == "1"  # whole seconds, rounded up
    assert Order.objects.count() == 1  # nothing stored for the 429
    assert published == []  # and nothing for the WebSocket

    time.sleep(details["retry_after_ms"] / 1000 + 0.05)
    again = post(api, key, order_body, client_order_id="third")
    assert again.status_code == 200 and again.json()["status"] == "accepted"
    assert Order.objects.count() == 2


def test_market_maker_gets_exactly_ten_of_eleven_quick_orders(make_team, instruments, api, order_body) -> None:
    _, key = make_team("market_maker")  # 10 orders per second
    started = time.monotonic()
    codes = [post(api, key, order_body, quantity=1).status_code for _ in range(11)]
    assert time.monotonic() - started < 1.0, "the eleven orders must go out within one window"
    assert codes == [200] * 10 + [429]
    assert Order.objects.count() == 10


def test_rejected_orders_count_but_malformed_ones_do_not(make_team, instruments, api, order_body) -> None:
    _, key = make_team("retail")
    malformed = api(key).post("/orders", {"side": "buy"}, format="json")
    assert malformed.status_code == 400  # the form is checked first and costs nothing
    business = post(api, key, order_body, instrument_id="NOPE")
    assert business.status_code == 200 and business.json()["error_code"] == "INVALID_INSTRUMENT"
    assert post(api, key, order_body).status_code == 429  # a business rejection used the slot


def test_the_limit_follows_the_role_policy_at_once(make_team, instruments, api, order_body) -> None:
    _, key = make_team("retail")
    role_policy("retail")
    RolePolicy.objects.filter(role="retail").update(orders_per_second=2)
    assert [post(api, key, order_body, quantity=1).status_code for _ in range(3)] == [200, 200, 429]
    RolePolicy.objects.filter(role="retail").update(orders_per_second=0)  # 0: no limit
    assert [post(api, key, order_body, quantity=1).status_code for _ in range(3)] == [200, 200, 200]


def test_teams_have_their_own_windows(make_team, instruments, api, order_body) -> None:
    _, first = make_team("retail")
    _, second = make_team("retail")
    assert post(api, first, order_body).status_code == 200
    assert post(api, second, order_body).status_code == 200
    assert post(api, first, order_body).status_code == 429


def test_redis_unreachable_is_503_in_the_order_reply_shape(
    make_team, instruments, api, order_body, settings, published
) -> None:
    _, key = make_team("retail")
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    response = post(api, key, order_body, client_order_id="c-1")
    assert response.status_code == 503
    body = response.json()
    assert set(body) == REPLY_FIELDS
    assert (body["status"], body["order_id"], body["error_code"]) == ("rejected", None, "SERVICE_UNAVAILABLE")
    assert body["client_order_id"] == "c-1" and response["Retry-After"] == "1"
    assert Order.objects.count() == 0 and published == []


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def test_the_window_slides_instead_of_following_calendar_seconds() -> None:
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    key = f"{ratelimit.KEY_PREFIX}:test:{uuid.uuid4().hex}"
    now = _redis_now(client)
    time.sleep((0.5 - now % 1) % 1)  # start half-way through a calendar second
    assert ratelimit.admit(key, 2)[:2] == (True, 1)
    time.sleep(0.2)
    assert ratelimit.admit(key, 2)[:2] == (True, 2)

    now = _redis_now(client)
    time.sleep(1 - now % 1 + 0.05)  # a new calendar second, but the window still holds both
    admitted, count, retry_after_ms = ratelimit.admit(key, 2)
    assert (admitted, count) == (False, 2)
    assert 100 < retry_after_ms < 500

    time.sleep(retry_after_ms / 1000 + 0.05)  # the first one has left the window, the second has not
    assert ratelimit.admit(key, 2)[:2] == (True, 2)
    assert ratelimit.admit(key, 2)[0] is False
    assert 0 < client.pttl(key) <= 1000  # idle windows expire on their own


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert ratelimit.RateLimitExceeded(limit=1, retry_after_ms=1).retry_after_s == 1
    assert ratelimit.RateLimitExceeded(limit=1, retry_after_ms=1000).retry_after_s == 1
    assert ratelimit.RateLimitExceeded(limit=1, retry_after_ms=1001).retry_after_s == 2
