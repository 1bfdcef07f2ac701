"""GET /: the health of the database, Redis and the matching worker (its "deciding" mark in Redis,
and a queue that is not left waiting on it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from exchange.matching import loop, queue
from infra.redis_clients import sync_client

pytestmark = pytest.mark.django_db(transaction=True)
Api = Callable[..., APIClient]

HEALTHY = {
    "status": "ok",
    "service": "intern-trading-game",
    "components": {"database": True, "redis": True, "matching_worker": True},
}


@pytest.fixture
def no_worker(transactional_db: None) -> Iterator[redis.Redis]:
    loop.stop()
    client = sync_client()
    client.delete(queue.QUEUE, queue.INFLIGHT, queue.DECIDED)
    yield client
    queue.forget(client)


def mark(client: redis.Redis, age_s: float) -> None:
    seconds, micros = client.time()
    client.set(queue.DECIDED, seconds * 1_000_000 + micros - int(age_s * 1_000_000), ex=60)


def health(api: Api) -> tuple[int, dict]:
    response = api().get("/")
    return response.status_code, response.json()


def test_healthy_with_the_matching_worker_running(api: Api, matching: object) -> None:
    assert health(api) == (200, HEALTHY)


def test_the_flag_stays_up_while_the_worker_idles(api: Api, matching: object) -> None:
    time.sleep(queue.DECIDED_TTL_S + 0.5)  # longer than the mark lives: an idle worker renews it
    assert health(api) == (200, HEALTHY)


def test_degraded_without_a_matching_worker(api: Api, no_worker: redis.Redis) -> None:
    status, body = health(api)
    assert status == 503 and body["status"] == "degraded"
    assert body["components"] == {"database": True, "redis": True, "matching_worker": False}


def test_degraded_when_the_worker_stopped(api: Api, matching: object) -> None:
    loop.stop()
    sync_client().delete(queue.DECIDED)  # what its time-to-live does within seconds
    status, body = health(api)
    assert status == 503 and body["components"]["matching_worker"] is False


def test_a_stalled_worker_is_down_once_commands_wait(api: Api, no_worker: redis.Redis, settings: Settings) -> None:
    settings.EXCHANGE_WORKER_STALL_S = 0.5
    mark(no_worker, age_s=1.0)
    assert health(api)[1]["components"]["matching_worker"] is True  # an empty queue waits on nobody
    no_worker.rpush(queue.QUEUE, b"1 {}")
    status, body = health(api)
    assert status == 503 and body["components"]["matching_worker"] is False
    mark(no_worker, age_s=0.0)  # deciding again
    assert health(api)[1]["components"]["matching_worker"] is True


def test_degraded_without_redis(api: Api, settings: Settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    status, body = health(api)
    assert status == 503
    assert body["components"] == {"database": True, "redis": False, "matching_worker": False}
