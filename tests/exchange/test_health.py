"""GET /: the health of the database, Redis and the matching worker."""

from __future__ import annotations

import redis
from django.conf import settings

from exchange.liveness import HEARTBEAT_KEY, beat


def test_healthy_when_every_component_answers(db, api) -> None:
    beat(redis.Redis.from_url(settings.REDIS_URL))
    response = api().get("/")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "service": "intern-trading-game",
        "components": {"database": True, "redis": True, "matching_worker": True},
    }


def test_degraded_without_a_live_matching_worker(db, api) -> None:
    redis.Redis.from_url(settings.REDIS_URL).delete(HEARTBEAT_KEY)
    response = api().get("/")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert response.json()["components"] == {"database": True, "redis": True, "matching_worker": False}


def test_degraded_without_redis(db, api, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = api().get("/")
    assert response.status_code == 503
    assert response.json()["components"] == {"database": True, "redis": False, "matching_worker": False}
