"""End-to-end fixtures: the processes of the Procfile (the ones ``make run`` starts), on a free
port, against the test database and the session's Redis, driven over real HTTP and WebSocket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tradinggame.procfile import ProcfileStack


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def stack(transactional_db: None, tmp_path: Path) -> Iterator[ProcfileStack]:
    from exchange.models import Instrument

    for strike in (4400, 4500):
        for kind in ("call", "put"):
            Instrument.objects.get_or_create(
                symbol=f"SPX_{strike}_{kind.upper()}", defaults={"underlying": "SPX", "option_type": kind, "strike": strike}
            )
    running = ProcfileStack(tmp_path, {"DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL})
    running.start()
    try:
        running.wait_healthy()
        yield running
    finally:
        running.stop()
