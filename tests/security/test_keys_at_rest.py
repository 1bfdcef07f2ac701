"""No API key is ever stored in clear: keys issued by every path the server has (registration,
``create_team``, ``seed_demo``, rotation, the admin's rotate action) appear nowhere in a dump of
the whole database, nor in its sessions, nor in the database files themselves."""

from __future__ import annotations

import json
import os
import re
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection

from accounts.keys import team_for_key
from accounts.models import Team
from accounts.services import key_rotate

pytestmark = pytest.mark.django_db(transaction=True)  # committed, so the files on disk hold it all

KEY = re.compile(r"itg_[A-Za-z0-9_-]{40,}")


def issued_keys(api, admin_client) -> list[str]:
    keys = [api().post("/auth/register", {"team_name": "Registered", "role": "retail"}, format="json").json()["api_key"]]
    out = StringIO()
    call_command("create_team", "Commanded", "arbitrage", stdout=out)
    call_command("seed_demo", stdout=out)
    call_command("seed_demo", "--rotate-keys", stdout=out)
    keys += KEY.findall(out.getvalue())
    team = Team.objects.get(name="Registered")
    keys.append(key_rotate(team))
    page = admin_client.post("/admin/accounts/team/", {"action": "rotate_key", "_selected_action": [team.pk]}, follow=True)
    keys += KEY.findall(page.content.decode())
    return keys


def test_a_dump_of_every_app_holds_no_key(api, admin_client) -> None:
    keys = issued_keys(api, admin_client)
    assert len(set(keys)) >= 7  # register, create_team, 2 demo teams x 2, rotate, admin rotate
    current = [key for key in keys if team_for_key(key) is not None]
    assert len(current) == 4  # those not rotated away since: they are real, working keys

    out = StringIO()
    call_command("dumpdata", "--all", stdout=out)  # every installed app, every row
    dump = out.getvalue()
    assert len(json.loads(dump)) > 100  # it is the whole database (instruments, teams, keys, users...)
    sessions = json.dumps([SessionStore().decode(s.session_data) for s in Session.objects.all()])
    for key in keys:
        secret = key.removeprefix("itg_")
        for text in (dump, sessions):
            assert key not in text and secret not in text and secret[:16] not in text


def raw_database() -> bytes:
    """The database as stored: the SQLite files, or PostgreSQL's own dump of every table."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        name = Path(db["NAME"])
        return b"".join(path.read_bytes() for path in (name, Path(f"{name}-wal")) if path.exists())
    command = ["pg_dump", "--data-only", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432),
               "-U", db["USER"], db["NAME"]]
    return subprocess.run(command, check=True, capture_output=True, timeout=120,
                          env={**os.environ, "PGPASSWORD": db["PASSWORD"] or ""}).stdout


def test_the_stored_database_holds_no_key(api, admin_client) -> None:
    keys = issued_keys(api, admin_client)
    raw = raw_database()
    assert b"SPX_4500_CALL" in raw or b"demo_market_maker" in raw  # it is the data
    for key in keys:
        assert key.encode() not in raw and key.removeprefix("itg_")[:16].encode() not in raw
