"""End-to-end fixtures: the processes of the Procfile (the ones ``make run`` starts), on a free
port, against the test database and the session's Redis, driven over real HTTP and WebSocket."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from exchange.matching.queue import forget
from infra.redis_clients import sync_client
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
                symbol=f"SPX_{strike}_{kind.upper()}",
                defaults={"underlying": "SPX", "option_type": kind, "strike": strike},
            )
    forget(sync_client())  # the database starts empty: so does the matching queue
    running = ProcfileStack(tmp_path, {"DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL})
    running.start()
    try:
        running.wait_healthy()
        yield running
        # Whatever the test did, the exchange must still hold invariants 1-5, the running
        # worker's books included.
        report = StringIO()
        call_command("check_invariants", stdout=report)
        assert report.getvalue().count("ok  ") == 5, report.getvalue()
    finally:
        running.stop()
