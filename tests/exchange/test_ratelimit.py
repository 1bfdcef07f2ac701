"""The per-team order rate limit: a sliding one-second window kept by the matching queue's script
(the same Redis call that queues the order), answered with 429 and ``Retry-After``, storing and
queueing nothing; the role's limit follows ``set_role`` at once; 503 when Redis cannot be asked."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
import redis
from django.core.management import call_command
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from accounts.models import Team
from exchange.matching import loop, queue
from exchange.models import JournalEntry, Order
from exchange.services import operator
from exchange.wire import OrderReply
from infra.redis_clients import sync_client

pytestmark = pytest.mark.django_db(transaction=True)
MakeTeam = Callable[..., tuple[Team, str]]
Api = Callable[..., APIClient]

REPLY_FIELDS = set(OrderReply.__required_keys__)  # the reply's one declaration
ORDER = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 1, "price": 100.0}


def post(api: Any, key: str, **fields: Any) -> Any:
    return api(key).post("/orders", {**ORDER, **fields}, format="json")


def submits() -> int:
    return JournalEntry.objects.filter(kind="s").count()


@pytest.fixture
def retail(make_team: Callable[..., tuple[Team, str]], instruments: list[str]) -> tuple[Team, str]:
    return make_team("retail")  # 1 order per second


def test_a_retail_teams_second_order_within_a_second_is_429_then_accepted_again(
    retail: tuple[Team, str], api: Api, matching: object
) -> None:
    _, key = retail
    first = post(api, key, client_order_id="first")
    assert first.status_code == 200 and first.json()["status"] == "accepted"

    limited = post(api, key, client_order_id="second", request_id="r-2")
    assert limited.status_code == 429
    body = limited.json()
    assert set(body) == REPLY_FIELDS
    assert (body["status"], body["order_id"], body["error_code"]) == ("rejected", None, "RATE_LIMIT_EXCEEDED")
    assert (body["client_order_id"], body["request_id"]) == ("second", "r-2")
    details = body["details"]
    assert (details["limit"], details["window_s"]) == (1, 1)
    assert 0 < details["retry_after_ms"] <= 1000
    assert limited["Retry-After"] == "1"  # whole seconds, rounded up
    assert Order.objects.count() == 1 and submits() == 1  # never queued: nothing stored, nothing pushed

    time.sleep(details["retry_after_ms"] / 1000 + 0.05)
    again = post(api, key, client_order_id="third")
    assert again.status_code == 200 and again.json()["status"] == "accepted"
    assert Order.objects.count() == 2


def test_a_market_maker_gets_exactly_ten_of_eleven_quick_orders(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, key = make_team("market_maker")  # 10 orders per second
    started = time.monotonic()
    codes = [post(api, key).status_code for _ in range(11)]
    assert time.monotonic() - started < 1.0, "the eleven orders must go out within one window"
    assert codes == [200] * 10 + [429]
    assert Order.objects.count() == 10


def test_the_form_comes_before_the_rate_limit_and_the_rate_limit_before_business_rules(
    retail: tuple[Team, str], api: Api, matching: object
) -> None:
    _, key = retail
    malformed = api(key).post("/orders", {"side": "buy"}, format="json")
    assert malformed.status_code == 400  # the form is checked first and costs nothing
    business = post(api, key, instrument_id="NOPE")
    assert business.status_code == 200 and business.json()["error_code"] == "INVALID_INSTRUMENT"
    assert post(api, key).status_code == 429  # a business rejection used the slot
    operator.game_set_phase("closed")
    assert post(api, key).json()["error_code"] == "RATE_LIMIT_EXCEEDED"  # not MARKET_CLOSED: nothing was decided


def run_set_role(*args: str) -> str:
    out = StringIO()
    call_command("set_role", *args, stdout=out)
    return out.getvalue()


def test_the_limit_follows_set_role_at_once(retail: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = retail
    assert "retail.orders_per_second: 1 -> 2" in run_set_role("retail", "--orders-per-second", "2")
    assert [post(api, key).status_code for _ in range(3)] == [200, 200, 429]
    run_set_role("retail", "--orders-per-second", "0")  # 0: no limit
    assert [post(api, key).status_code for _ in range(3)] == [200, 200, 200]


def test_teams_have_their_own_windows(make_team: MakeTeam, instruments: list[str], api: Api, matching: object) -> None:
    _, first = make_team("retail")
    _, second = make_team("retail")
    assert post(api, first).status_code == 200
    assert post(api, second).status_code == 200
    assert post(api, first).status_code == 429


def test_cancels_are_not_rate_limited(retail: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = retail
    order_id = post(api, key).json()["order_id"]
    assert api(key).delete(f"/orders/{order_id}").json()["status"] == "cancelled"
    assert api(key).delete("/orders").status_code == 200


def test_redis_unreachable_is_503_in_the_order_reply_shape(
    retail: tuple[Team, str], api: Api, settings: Settings
) -> None:
    _, key = retail
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    response = post(api, key, client_order_id="c-1")
    assert response.status_code == 503
    body = response.json()
    assert set(body) == REPLY_FIELDS
    assert (body["status"], body["order_id"], body["error_code"]) == ("rejected", None, "MATCHING_UNAVAILABLE")
    assert body["details"] == {"component": "redis"} and response["Retry-After"] == "1"
    assert Order.objects.count() == 0


# --- the queue script's window, called directly -----------------------------------------------------
@pytest.fixture
def script_client(transactional_db: None) -> Iterator[redis.Redis]:
    """The queue as a worker would leave it (marked, numbered) with nobody draining it."""
    loop.stop()
    client = sync_client()
    client.delete(queue.QUEUE, queue.INFLIGHT)
    seconds, micros = client.time()
    client.set(queue.DECIDED, seconds * 1_000_000 + micros, ex=60)
    client.setnx(queue.SEQ, 0)
    yield client
    queue.forget(client)


def enqueue(client: redis.Redis, window: str, limit: int) -> tuple[int, int]:
    keys, argv = queue.enqueue_args(b"{}", window, limit)
    status, value = client.eval(queue.ENQUEUE, len(keys), *keys, *argv)
    return int(status), int(value)


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def test_the_window_slides_instead_of_following_calendar_seconds(script_client: redis.Redis) -> None:
    client = script_client
    window = queue.rate_key(10**9, int(uuid.uuid4().int % 10**12))
    time.sleep((0.5 - redis_now(client) % 1) % 1)  # start half-way through a calendar second
    assert enqueue(client, window, 2)[0] == queue.QUEUED
    time.sleep(0.2)
    assert enqueue(client, window, 2)[0] == queue.QUEUED

    time.sleep(1 - redis_now(client) % 1 + 0.05)  # a new calendar second, but the window still holds both
    status, wait_us = enqueue(client, window, 2)
    assert status == queue.RATE_LIMITED
    assert 100_000 < wait_us < 500_000

    time.sleep(wait_us / 1_000_000 + 0.05)  # the first one has left the window, the second has not
    assert enqueue(client, window, 2)[0] == queue.QUEUED
    assert enqueue(client, window, 2)[0] == queue.RATE_LIMITED
    assert 0 < client.pttl(window) <= 1000  # idle windows expire on their own
    assert client.llen(queue.QUEUE) == 3  # only the admitted commands were queued


def test_a_refused_command_is_not_numbered(script_client: redis.Redis) -> None:
    client = script_client
    window = queue.rate_key(10**9, int(uuid.uuid4().int % 10**12))
    first = enqueue(client, window, 1)
    assert enqueue(client, window, 1)[0] == queue.RATE_LIMITED
    second = enqueue(client, queue.rate_key(10**9 + 1, 1), 1)
    assert (first[0], second[0]) == (queue.QUEUED, queue.QUEUED)
    assert second[1] == first[1] + 1  # ids follow the list order, without gaps
    assert [queue.decode(item)[0] for item in client.lrange(queue.QUEUE, 0, -1)] == [first[1], second[1]]


def test_a_team_reset_with_the_same_id_has_a_window_of_its_own() -> None:
    assert queue.rate_key(5, 1_700_000_000_000_000) != queue.rate_key(5, 1_700_000_000_000_001)


@pytest.mark.parametrize(
    "wait_us, retry_ms, retry_s", [(1, 1, 1), (999_000, 999, 1), (1_000_000, 1000, 1), (1_000_001, 1001, 2)]
)
def test_retry_after_is_whole_seconds_rounded_up(wait_us: int, retry_ms: int, retry_s: int) -> None:
    with pytest.raises(queue.Refused) as refused:
        queue.verdict_of_script([queue.RATE_LIMITED, wait_us], 3)
    assert (refused.value.status, refused.value.code, refused.value.retry_after_s) == (
        429,
        "RATE_LIMIT_EXCEEDED",
        retry_s,
    )
    assert refused.value.details == {"limit": 3, "window_s": 1, "retry_after_ms": retry_ms}
