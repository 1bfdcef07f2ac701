"""Fault drills: the processes of the Procfile (what ``make run`` starts) on loopback, driven over
real HTTP and WebSocket while a process is killed or Redis goes away.

Quick variants run by default; ``CHAOS_LONG=1`` (``make chaos``) makes them longer and repeats
the faults. See docs/reliability.md.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chaos_support import DrillStack, RedisServer, database_url
from django.conf import settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: fault drills against the real processes (kill -9, Redis outage, 1,000 WebSockets); "
        "CHAOS_LONG=1 runs the long variants",
    )


@pytest.fixture(autouse=True)
def _steady_clients() -> Iterator[None]:
    """The drills time replies in this process: what earlier tests left alive is moved out of the
    collector's sight first, so a full collection cannot stall the clients for a tenth of a
    second and make a prompt reply look late."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def chaos_db(transactional_db: None) -> None:
    """The demo instruments, and limits that load cannot hit (the rate limiter is still asked).
    The database starts empty: so does the matching queue on the session's Redis."""
    from exchange.matching.queue import forget
    from exchange.models import Instrument, RolePolicy
    from exchange.policies import role_policies
    from infra.redis_clients import sync_client

    forget(sync_client())

    for strike in (4400, 4500):
        for kind in ("call", "put"):
            Instrument.objects.get_or_create(
                symbol=f"SPX_{strike}_{kind.upper()}",
                defaults={"underlying": "SPX", "option_type": kind, "strike": strike},
            )
    role_policies()
    RolePolicy.objects.update(orders_per_second=100_000, position_limit=10**6, portfolio_limit=10**7)


@pytest.fixture
def start_stack(chaos_db: None, tmp_path: Path) -> Iterator[Callable[..., DrillStack]]:
    """Start a stack on the test database (the session's Redis unless ``redis_url`` is given)."""
    started: list[DrillStack] = []

    def start(redis_url: str | None = None, **env: str) -> DrillStack:
        stack = DrillStack(
            tmp_path, {"DATABASE_URL": database_url(), "REDIS_URL": redis_url or settings.REDIS_URL, **env}
        )
        started.append(stack)
        stack.start()
        stack.wait_healthy()
        return stack

    try:
        yield start
    finally:
        for stack in started:
            stack.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()
