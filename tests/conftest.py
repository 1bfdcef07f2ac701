"""Shared fixtures: teams with keys, an API client, the demo instruments, a check of replies
against the OpenAPI schema, and the session's embedded Redis (stopped at the end if the session
started it)."""

from __future__ import annotations

import os

os.environ.setdefault("ITG_INSTANCE", "test")

from collections.abc import Callable  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from accounts.models import Team  # noqa: E402


def pytest_sessionstart(session: pytest.Session) -> None:
    from tradinggame.celery import app

    app.control.purge()  # leftovers from an earlier run must not wake anything


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from django.conf import settings

    from infra import embedded_redis

    if settings.EMBEDDED_REDIS_DIR and os.environ.get("ITG_KEEP_REDIS") != "1":
        embedded_redis.stop(Path(settings.EMBEDDED_REDIS_DIR))


@pytest.fixture
def make_team(db: None) -> Callable[..., tuple[Team, str]]:
    """Create a team through the registration service; returns (team, api_key)."""
    from accounts.services import team_register

    counter = iter(range(1, 10_000))

    def make(role: str = "market_maker", name: str | None = None) -> tuple[Team, str]:
        return team_register(name or f"team_{role}_{next(counter)}", role)

    return make


@pytest.fixture
def no_rate_limit(db: None) -> None:
    """Lift every role's order rate limit (0 means none) for tests that send in bursts.

    Set in the database before the worker starts (it reads the policies at start); a test whose
    worker is already running uses ``manage.py set_role`` instead."""
    from exchange.models import RolePolicy
    from exchange.policies import role_policies

    role_policies()
    RolePolicy.objects.update(orders_per_second=0)


@pytest.fixture
def relaxed_limits(no_rate_limit: None) -> None:
    """Lift position and portfolio limits too, for load that may pile up unmatched orders."""
    from exchange.models import RolePolicy

    RolePolicy.objects.update(position_limit=10**6, portfolio_limit=10**7)


@pytest.fixture
def instruments(db: None) -> list[str]:
    from exchange.models import Instrument

    symbols = []
    for strike in (4400, 4500):
        for option_type in ("call", "put"):
            symbol = f"SPX_{strike}_{option_type.upper()}"
            Instrument.objects.get_or_create(
                symbol=symbol, defaults={"underlying": "SPX", "option_type": option_type, "strike": Decimal(strike)}
            )
            symbols.append(symbol)
    return symbols


def reset_matching_queue() -> None:
    """Forget the matching queue's keys: a test's database starts empty, so must its queue."""
    from exchange.matching.queue import forget
    from infra.redis_clients import sync_client

    forget(sync_client())


@pytest.fixture
def celery_worker(transactional_db: None) -> object:
    """A real Celery worker serving the matching queue in this process (solo pool, own thread);
    when ready it starts the matching loop, which this fixture waits for and stops at the end."""
    from celery.contrib.testing.worker import start_worker

    from exchange.matching import loop
    from tradinggame.celery import app

    loop.stop()
    reset_matching_queue()
    with start_worker(app, pool="solo", concurrency=1, queues=["matching"], perform_ping_check=False, shutdown_timeout=10):
        running = loop.start_in_thread()
        assert running.started.wait(15), "the matching loop did not start"
        yield running
        loop.stop()
    reset_matching_queue()


@pytest.fixture
def matching(celery_worker: object) -> object:
    """The matching worker running (an alias that reads better in order-path tests)."""
    return celery_worker


@pytest.fixture
def api() -> Callable[[str | None], APIClient]:
    def client(key: str | None = None) -> APIClient:
        c = APIClient()
        if key:
            c.credentials(HTTP_X_API_KEY=key)
        return c

    return client


@pytest.fixture
def order_body() -> Callable[..., dict[str, object]]:
    def body(**fields: object) -> dict[str, object]:
        base: dict[str, object] = {
            "instrument_id": "SPX_4500_CALL",
            "order_type": "limit",
            "side": "buy",
            "quantity": 10,
            "price": 100.0,
        }
        base.update(fields)
        return {k: v for k, v in base.items() if v is not None}

    return body


@pytest.fixture(scope="session", autouse=True)
def _release_stray_connections(django_db_setup: None, django_db_blocker: object) -> object:
    """Worker threads keep their own database connections; end them so the test database can go."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture(autouse=True)
def _redis_breaker_closed() -> None:
    """A test that takes Redis away trips the request-path breaker; the next test starts afresh."""
    from infra.redis_breaker import redis_on_request_path

    redis_on_request_path.reset()


@pytest.fixture(scope="session")
def documented() -> Callable[[str, str, Any], None]:
    """A check that a reply of the test client is one the served OpenAPI schema documents: its
    status among the operation's, its body valid against the schema for that status."""
    import requests
    import schemathesis
    from django.test import Client

    spec = Client().get("/schema/", {"format": "json"}).json()
    api = schemathesis.openapi.from_dict(spec)

    def check(method: str, template: str, response: Any) -> None:
        assert str(response.status_code) in spec["paths"][template][method]["responses"], (method, template, response)
        api[template][method.upper()].validate_response(
            schemathesis.Response(
                status_code=response.status_code,
                headers={name: [value] for name, value in response.headers.items()},
                content=response.content,
                request=requests.Request(method.upper(), f"http://testserver{template}").prepare(),
                elapsed=0.0,
                verify=False,
            )
        )

    return check
