"""No API key is ever stored in clear: keys issued by every path the server has (registration,
``create_team``, ``seed_demo``, rotation, the admin's rotate action) appear nowhere in a dump of
the whole database, nor in its sessions, nor in the database files themselves; and keys used on
the order path (the key directory, the queue, the journal) appear neither in Redis nor in a log."""

from __future__ import annotations

import json
import logging
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

from accounts.keys import key_digest, team_for_key
from accounts.models import Team
from accounts.services import key_rotate
from exchange.models import JournalEntry
from infra.redis_clients import sync_client

pytestmark = pytest.mark.django_db(transaction=True)  # committed, so the files on disk hold it all

KEY = re.compile(r"itg_[A-Za-z0-9_-]{40,}")


def issued_keys(api, admin_client) -> list[str]:
    keys = [
        api().post("/auth/register", {"team_name": "Registered", "role": "retail"}, format="json").json()["api_key"]
    ]
    out = StringIO()
    call_command("create_team", "Commanded", "arbitrage", stdout=out)
    call_command("seed_demo", stdout=out)
    call_command("seed_demo", "--rotate-keys", stdout=out)
    keys += KEY.findall(out.getvalue())
    team = Team.objects.get(name="Registered")
    keys.append(key_rotate(team))
    page = admin_client.post(
        "/admin/accounts/team/", {"action": "rotate_key", "_selected_action": [team.pk]}, follow=True
    )
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
    command = [
        "pg_dump",
        "--data-only",
        "-h",
        db["HOST"] or "127.0.0.1",
        "-p",
        str(db["PORT"] or 5432),
        "-U",
        db["USER"],
        db["NAME"],
    ]
    return subprocess.run(
        command, check=True, capture_output=True, timeout=120, env={**os.environ, "PGPASSWORD": db["PASSWORD"] or ""}
    ).stdout


def test_the_stored_database_holds_no_key(api, admin_client) -> None:
    keys = issued_keys(api, admin_client)
    raw = raw_database()
    assert b"SPX_4500_CALL" in raw or b"demo_market_maker" in raw  # it is the data
    for key in keys:
        assert key.encode() not in raw and key.removeprefix("itg_")[:16].encode() not in raw


def redis_contents() -> bytes:
    """Every key and value of this instance's Redis database."""
    client = sync_client()
    parts: list[bytes] = []
    for name in client.scan_iter(count=1000):
        kind = client.type(name)
        parts.append(name)
        if kind == b"string":
            parts.append(client.get(name) or b"")
        elif kind == b"hash":
            parts.extend(f for pair in client.hgetall(name).items() for f in pair)
        elif kind == b"list":
            parts.extend(client.lrange(name, 0, -1))
        elif kind == b"set":
            parts.extend(client.smembers(name))
        elif kind == b"zset":
            parts.extend(client.zrange(name, 0, -1))
    return b"\n".join(parts)


def test_the_order_path_keeps_no_key_in_redis_the_journal_or_the_logs(
    make_team, instruments, api, matching, caplog
) -> None:
    team, key = make_team()
    _, other = make_team()
    order = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 2, "price": 100.0}
    with caplog.at_level(logging.DEBUG):
        order_id = api(key).post("/orders", order, format="json").json()["order_id"]
        assert (
            api(other).post("/orders", dict(order, side="sell", quantity=1), format="json").json()["status"]
            == "accepted"
        )
        assert api(key).delete(f"/orders/{order_id}").json()["status"] == "cancelled"
        assert api(key).delete("/orders").status_code == 200
        assert api(key[:-1]).post("/orders", order, format="json").status_code == 401  # a near miss
        assert api(key + "x").delete("/orders").status_code == 401
        rotated = key_rotate(team)
        assert api(rotated).delete("/orders").status_code == 200
    stored = redis_contents()
    assert key_digest(rotated).encode() in stored  # the directory is there, by digest
    journal = "\n".join(JournalEntry.objects.values_list("command", flat=True))
    assert journal.count('"k":"s"') == 2
    for secret in (key, rotated, other):
        for text in (stored.decode("latin-1"), journal, caplog.text):
            assert secret not in text and secret.removeprefix("itg_")[:16] not in text
