"""End-to-end load benchmark: teams in pairs trade crossing orders through the public API.

    python benchmarks/load.py [--pairs 4] [--mode closed|open] [--rate 800] [--warmup 3] [--duration 15]

It starts the processes of the Procfile (exactly what ``make run`` starts) on a fresh database
(a SQLite file in var/bench unless DATABASE_URL is set, the embedded Redis unless REDIS_URL is
set), lifts the market maker role's limits with ``manage.py set_role`` once the stack is healthy,
registers 2 × pairs market-maker teams, opens one WebSocket per team (ready once its
``position_snapshot`` arrives), and sends 1-lot limit orders at one price: the first team of each
pair only buys, the second only sells, so every order fills.

closed loop: every team sends its next order as soon as the previous REST reply arrives.
open loop:   orders leave on a fixed timetable (``--rate`` per second in total) over as many
             keep-alive connections as needed (up to ``--connections``).

Every latency is measured from the order's scheduled send time (in a closed loop, the moment
it is sent), so a stalled server cannot hide its queue. The load runs ``--warmup`` seconds that
are not counted, then the measured window of ``--duration`` seconds: rates, latencies, replies
and CPU cover the window only. Afterwards it waits for late acks and fills while they keep
coming (until none came for ``--grace`` seconds, at most ``--drain-max``), asks the exchange
which orders still rest, runs ``manage.py check_invariants`` while the stack is up, and stops
everything.

It prints and writes JSON (benchmarks/results/load-<mode>-<backend>.json): accepted and offered
orders/s, replies by status, REST latency (all, accepted, refused with 429/503/504),
submit→new_order_ack and submit→execution_report (taker and maker) percentiles, the slowest
reply, acks and fills still missing once they stopped coming (over every order of the run,
warm-up included), seq gaps, duplicates and disconnects of the WebSockets, the CPU seconds of
the web process, the matching worker, Redis (the embedded one, or a local server found by its
port), the PostgreSQL server when used, and the load generator itself, each also in ms per
accepted order, and the result of the invariants check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import REFUSED_STATUSES, backend_of, percentiles  # noqa: E402

decode: Callable[[bytes | str], Any]
try:
    import orjson

    decode, JSON_LIBRARY = orjson.loads, "orjson"
except ImportError:  # the standard library does the same, only slower
    decode, JSON_LIBRARY = json.loads, "json"

ROLE = "market_maker"
LIMIT = 1_000_000_000  # position and portfolio limits high enough never to bind
INSTRUMENT = "SPX_4500_CALL"
PRICE = 100.0


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost the server's cores little.

    A connection idle for longer than ``IDLE_MAX_S`` is replaced before use rather than reused:
    the server closes idle keep-alive connections (uvicorn after 5 s), and a request written into
    one it is closing would fail for a reason that has nothing to do with the load.
    """

    IDLE_MAX_S = 3.0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is not None and (
            time.perf_counter() - self.last_used > self.IDLE_MAX_S or self.reader is None or self.reader.at_eof()
        ):
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        reader = self.reader
        assert reader is not None
        status_line = await reader.readline()
        if not status_line:
            self.close()
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        if not chunked:
            data = await reader.readexactly(length)
        else:
            data = b""
            while (size := int((await reader.readline()).strip(), 16)) > 0:
                data += await reader.readexactly(size)
                await reader.readline()
            await reader.readline()
        self.last_used = time.perf_counter()
        if close:
            self.close()
        return status, data


@dataclass
class Team:
    name: str
    key: str
    side: str
    frames: int = 0
    last_seq: int = 0
    gaps: int = 0
    duplicates: int = 0
    connections: int = 0
    disconnects: Counter[str] = field(default_factory=Counter)


@dataclass
class Tally:
    """What the load produced. Times are ``time.perf_counter()`` values."""

    window_start: float = 0.0
    window_end: float = 0.0
    # Every reply: (scheduled send time, latency, HTTP status or 0 for none, accepted).
    replies: list[tuple[float, float, int, bool]] = field(default_factory=list)
    reply_kinds: Counter[str] = field(default_factory=Counter)  # the window's replies by status and code
    warmup_kinds: Counter[str] = field(default_factory=Counter)
    send_lag: list[float] = field(default_factory=list)  # open loop, window: scheduled → the generator got to it
    sent_at: dict[str, float] = field(default_factory=dict)  # accepted order id -> scheduled send time
    sides: dict[str, str] = field(default_factory=dict)  # accepted order id -> side
    other_ids: set[str] = field(default_factory=set)  # order ids of replies that did not accept
    acked_at: dict[str, float] = field(default_factory=dict)  # order id -> when its ack arrived
    reports: list[tuple[str, str, str, float]] = field(default_factory=list)  # trade, order, liquidity, when
    frame_types: Counter[str] = field(default_factory=Counter)
    disconnected_at: list[float] = field(default_factory=list)  # when a WebSocket was closed or failed

    def in_window(self, moment: float) -> bool:
        return self.window_start <= moment < self.window_end

    @property
    def accepted_in_window(self) -> int:
        return sum(1 for scheduled in self.sent_at.values() if self.in_window(scheduled))

    def latencies(self) -> dict[str, dict[str, Any]]:
        """Percentiles of the window's orders. An accepted order never acked counts as infinitely
        slow; acks and reports may arrive before the REST reply, so this is done at the end."""
        window = {order: at for order, at in self.sent_at.items() if self.in_window(at)}
        acks = [self.acked_at[order] - at for order, at in window.items() if order in self.acked_at]
        takers = {trade: window.get(order) for trade, order, liquidity, _ in self.reports if liquidity == "taker"}
        taker: list[float] = []
        maker: list[float] = []
        for trade, _, liquidity, at in self.reports:
            start = takers.get(trade)
            if start is not None:
                (taker if liquidity == "taker" else maker).append(at - start)
        replies = [r for r in self.replies if self.in_window(r[0])]
        return {
            "rest_submit": percentiles([r[1] for r in replies]),
            "rest_accepted": percentiles([r[1] for r in replies if r[3]]),
            "rest_refused": percentiles([r[1] for r in replies if r[2] in REFUSED_STATUSES]),
            "submit_to_ack": percentiles(acks, missing=len(window) - len(acks)),
            "submit_to_taker_report": percentiles(taker),
            "submit_to_maker_report": percentiles(maker),
            "send_lag": percentiles(self.send_lag),
        }


async def listen(team: Team, ws_url: str, tally: Tally, ready: asyncio.Event) -> None:
    """Read one team's frames until cancelled; reconnect (and count it) when the server closes."""
    import websockets

    while True:
        try:
            async with websockets.connect(
                f"{ws_url}?api_key={team.key}", max_queue=None, ping_interval=None, close_timeout=1, open_timeout=10
            ) as ws:
                team.connections += 1
                team.last_seq = 0  # seq starts again on every connection
                while True:
                    raw = await ws.recv(decode=False)
                    now = time.perf_counter()
                    frame = decode(raw)
                    team.frames += 1
                    seq = frame["seq"]
                    if seq != team.last_seq + 1:
                        team.gaps += seq > team.last_seq + 1
                        team.duplicates += seq <= team.last_seq
                    team.last_seq = max(team.last_seq, seq)
                    kind, data = frame["type"], frame["data"]
                    tally.frame_types[kind] += 1
                    if kind == "new_order_ack":
                        tally.acked_at.setdefault(data["order_id"], now)
                    elif kind == "execution_report":
                        tally.reports.append((data["trade_id"], data["order_id"], data["liquidity_type"], now))
                    elif kind == "position_snapshot":
                        ready.set()  # sent once the connection has joined its groups
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else closed.sent.code if closed.sent else 1006
            team.disconnects[str(code)] += 1
            tally.disconnected_at.append(time.perf_counter())
        except (OSError, TimeoutError, websockets.InvalidHandshake, ValueError, KeyError) as failure:
            team.disconnects[type(failure).__name__] += 1
            tally.disconnected_at.append(time.perf_counter())
        await asyncio.sleep(0.2)


async def send_order(conn: HttpConnection, team: Team, tally: Tally, scheduled: float, timeout: float) -> int:
    """POST one order; returns the HTTP status (0: no reply within ``timeout`` of ``scheduled``,
    or the connection failed)."""
    body = b'{"instrument_id": "%s", "order_type": "limit", "side": "%s", "quantity": 1, "price": %s}' % (
        INSTRUMENT.encode(),
        team.side.encode(),
        repr(PRICE).encode(),
    )
    window = tally.in_window(scheduled)
    status, kind, reply = 0, "", {}
    try:
        async with asyncio.timeout(max(0.0, scheduled + timeout - time.perf_counter())):
            status, raw = await conn.request(
                "POST", "/orders", {"X-API-Key": team.key, "Content-Type": "application/json"}, body
            )
    except TimeoutError:
        conn.close()
        kind = "no reply (timeout)"
    except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
        conn.close()
        kind = f"no reply ({type(error).__name__})"
    now = time.perf_counter()
    if status:
        with contextlib.suppress(ValueError, TypeError):
            parsed = decode(raw)
            reply = parsed if isinstance(parsed, dict) else {}
        kind = f"{status} {reply.get('status', '-')}" + (f" {reply['error_code']}" if reply.get("error_code") else "")
    accepted = 200 <= status < 300 and reply.get("status") == "accepted"
    tally.replies.append((scheduled, now - scheduled, status, accepted))
    (tally.reply_kinds if window else tally.warmup_kinds)[kind] += 1
    order_id = reply.get("order_id")
    if accepted and isinstance(order_id, str):
        tally.sent_at[order_id] = scheduled
        tally.sides[order_id] = team.side
    elif isinstance(order_id, str):
        tally.other_ids.add(order_id)
    return status


class Progress:
    def __init__(self, tally: Tally, warmup: float, duration: float) -> None:
        self.tally, self.warmup, self.duration = tally, warmup, duration
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0
        self.last_text = ""

    def show(self, final: bool = False) -> None:
        now = time.perf_counter()
        if not self.tty and not final and now - self.last_line < 5:
            return
        self.last_line = now
        tally = self.tally
        if now < tally.window_start:
            phase, done = f"warm-up {tally.window_start - now:4.1f} s", 0.0
        elif now >= tally.window_end:
            phase, done = f"draining {now - tally.window_end:4.0f} s", 1.0
        else:
            phase, done = "measuring  ", min(1.0, (now - tally.window_start) / self.duration)
        bar = "#" * int(done * 30)
        line = (
            f"[{bar:<30}] {done:4.0%} {phase}  accepted {len(tally.sent_at):>7}  acks {len(tally.acked_at):>7}"
            f"  fills {len(tally.reports):>7}  replies {len(tally.replies):>7}"
        )
        if line == self.last_text and not self.tty:
            return
        self.last_text = line
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        if final and self.tty:
            sys.stderr.write("\n")
        sys.stderr.flush()


@dataclass
class Meter:
    """CPU seconds of the measured processes at the start and the end of the window."""

    pids: Callable[[], dict[str, list[int]]]
    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)
    machine: list[tuple[float, float]] = field(default_factory=list)  # (busy, total) CPU seconds of the machine

    def snapshot(self) -> dict[str, float]:
        import psutil

        seconds = cpu_seconds(self.pids())
        seconds["load generator"] = time.process_time()
        times = psutil.cpu_times()._asdict()
        total = sum(times.values()) - times.get("guest", 0.0) - times.get("guest_nice", 0.0)  # already in user
        self.machine.append((total - times["idle"] - times.get("iowait", 0.0), total))
        return seconds

    def used(self) -> dict[str, float]:
        return {name: round(self.end[name] - self.start.get(name, 0.0), 3) for name in self.end if name in self.start}

    def machine_busy_pct(self) -> float | None:
        if len(self.machine) < 2:
            return None
        (busy0, total0), (busy1, total1) = self.machine[0], self.machine[-1]
        return round(100 * (busy1 - busy0) / (total1 - total0), 1) if total1 > total0 else None

    def others_pct(self) -> float | None:
        """The share of the machine's CPU that went to processes not measured here (other work
        on the same cores makes every number of the run worse)."""
        if len(self.machine) < 2:
            return None
        (busy0, total0), (busy1, total1) = self.machine[0], self.machine[-1]
        if total1 <= total0:
            return None
        others = (busy1 - busy0) - sum(self.used().values())
        return round(100 * max(0.0, others) / (total1 - total0), 1)


def interrupted(*_: object) -> None:
    raise KeyboardInterrupt


async def run_load(
    args: argparse.Namespace, base_url: str, ws_url: str, teams: list[Team], tally: Tally, meter: Meter
) -> dict[str, Any]:
    host, port = base_url.split("//")[1].split(":")
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    readiness = [asyncio.Event() for _ in teams]
    listeners = [
        asyncio.create_task(listen(team, ws_url, tally, ready)) for team, ready in zip(teams, readiness, strict=True)
    ]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            await asyncio.gather(*(ready.wait() for ready in readiness))
    if not_ready := [team.name for team, ready in zip(teams, readiness, strict=True) if not ready.is_set()]:
        print(f"warning: no position_snapshot within 15 s on the WebSockets of {not_ready}", file=sys.stderr)
    started = time.perf_counter()
    tally.window_start = started + args.warmup
    tally.window_end = deadline = tally.window_start + args.duration
    progress = Progress(tally, args.warmup, args.duration)
    connections: list[HttpConnection] = []

    async def closed_loop(team: Team) -> None:
        conn = HttpConnection(host, int(port))
        connections.append(conn)
        while (now := time.perf_counter()) < deadline:
            if not await send_order(conn, team, tally, now, args.reply_timeout):
                await asyncio.sleep(0.05)  # a refused connection must not spin

    async def open_loop() -> None:
        idle: list[HttpConnection] = []
        freed = asyncio.Condition()
        pending: set[asyncio.Task[None]] = set()
        interval = 1.0 / args.rate

        async def one(team: Team, scheduled: float) -> None:
            if tally.in_window(scheduled):  # how late the generator itself is, before any connection wait
                tally.send_lag.append(time.perf_counter() - scheduled)
            conn: HttpConnection | None = None
            try:
                async with asyncio.timeout(max(0.0, scheduled + args.reply_timeout - time.perf_counter())):
                    async with freed:
                        while not idle and len(connections) >= args.connections:
                            await freed.wait()
                        if idle:
                            conn = idle.pop()
                        else:
                            conn = HttpConnection(host, int(port))
                            connections.append(conn)
            except TimeoutError:  # no connection free in time: as good as no reply
                tally.replies.append((scheduled, time.perf_counter() - scheduled, 0, False))
                (tally.reply_kinds if tally.in_window(scheduled) else tally.warmup_kinds)["no reply (timeout)"] += 1
                return
            assert conn is not None
            try:
                await send_order(conn, team, tally, scheduled, args.reply_timeout)
            finally:
                idle.append(conn)
                async with freed:
                    freed.notify()

        n = 0
        while (scheduled := started + n * interval) < deadline:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(teams[n % len(teams)], scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)

    async def watch() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(max(0.0, tally.window_start - time.perf_counter()))
            meter.start = meter.snapshot()
            while time.perf_counter() < deadline:
                progress.show()
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.perf_counter())))
            meter.end = meter.snapshot()

    async def show_warmup() -> None:
        while time.perf_counter() < tally.window_start:
            progress.show()
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    warmup_ticker = asyncio.create_task(show_warmup())
    if args.mode == "closed":
        await asyncio.gather(*(closed_loop(team) for team in teams))
    else:
        await open_loop()
    await watcher
    warmup_ticker.cancel()
    sent_until = time.perf_counter()
    # Late acks and fills: wait while they keep coming, until every accepted order is acked or
    # nothing arrived for --grace seconds (a backlog still draining is slow, not lost), at most --drain-max.
    give_up = sent_until + args.drain_max
    progress_at, seen = sent_until, (-1, -1)
    while (now := time.perf_counter()) < give_up:
        acked = len(tally.acked_at.keys() & tally.sent_at.keys())
        if acked == len(tally.sent_at) and seen[1] == len(tally.reports):
            break  # all acked, and no fill arrived in the last 0.1 s
        if (acked, len(tally.reports)) != seen:
            progress_at, seen = now, (acked, len(tally.reports))
        elif now - progress_at > args.grace:
            break
        progress.show()
        await asyncio.sleep(0.1)
    progress.show(final=True)
    drained_after = time.perf_counter() - sent_until
    resting = await resting_orders(host, int(port), teams)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    for conn in connections:
        conn.close()
    return {"drain_s": round(drained_after, 2), "resting": resting, "http_connections": len(connections)}


async def resting_orders(host: str, port: int, teams: list[Team]) -> dict[str, str] | None:
    """Order id -> status of every open order of the teams, as the exchange reports it (None if
    it cannot tell): what may rightly lack a fill at the end."""
    conn = HttpConnection(host, port)
    found: dict[str, str] = {}
    try:
        for team in teams:
            async with asyncio.timeout(30):
                status, raw = await conn.request("GET", "/orders", {"X-API-Key": team.key})
            if status != 200:
                return None
            for order in decode(raw).get("orders", []):
                found[order["order_id"]] = order["status"]
    except (OSError, ConnectionError, TimeoutError, ValueError, KeyError, asyncio.IncompleteReadError):
        return None
    finally:
        conn.close()
    return found


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    seconds = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        seconds[name] = total
    return seconds


def local_server_pids(redis_url: str, backend: str) -> dict[str, list[int]]:
    """The pids of a local Redis serving ``redis_url`` and of the PostgreSQL server, if they can
    be seen. Both are shared with whatever else uses them, so their CPU is only context."""
    import psutil

    found: dict[str, list[int]] = {}
    port = redis_url.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[-1] if redis_url else ""
    for process in psutil.process_iter(["name", "cmdline"]):
        name = process.info["name"] or ""
        cmdline = " ".join(process.info["cmdline"] or [])
        if port and name.startswith("redis-server") and f":{port}" in cmdline:
            found.setdefault("redis", []).append(process.pid)
        elif backend == "postgresql" and (name == "postgres" or cmdline.startswith("postgres")):
            found.setdefault("postgresql", []).append(process.pid)
    return found


def prepare_database(env: dict[str, str]) -> bool:
    """Migrate and list the instruments; True when ``manage.py set_role`` exists."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradinggame.settings")
    import django

    django.setup()
    from io import StringIO

    from django.core.management import call_command, get_commands

    call_command("migrate", verbosity=0)
    call_command("seed_demo", stdout=StringIO())
    return "set_role" in get_commands()


def recreate_postgres(url: str) -> None:
    """A fresh PostgreSQL database for the run, like the SQLite file: dropped and created again.
    Only a database named for benchmarks, so a mistyped DATABASE_URL never empties real data."""
    from urllib.parse import urlparse

    import psycopg

    name = urlparse(url).path.lstrip("/")
    if "bench" not in name:
        sys.exit(
            f"the benchmark drops and recreates its database: name it for benchmarks (e.g. itg_bench), not {name!r}"
        )
    with psycopg.connect(urlparse(url)._replace(path="/postgres").geturl(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def lift_limits_directly() -> None:
    """The fallback when ``set_role`` does not exist: write the role policy in the database."""
    from django.db import connections

    from exchange.models import RolePolicy
    from exchange.policies import role_policies

    role_policies()
    RolePolicy.objects.filter(role=ROLE).update(orders_per_second=0, position_limit=LIMIT, portfolio_limit=LIMIT)
    connections.close_all()


def set_role(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The operator command, as an operator would run it against the running stack."""
    command = [
        sys.executable,
        "manage.py",
        "set_role",
        ROLE,
        "--orders-per-second",
        "0",
        "--position-limit",
        str(LIMIT),
        "--portfolio-limit",
        str(LIMIT),
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def check_invariants(env: dict[str, str]) -> tuple[bool, bool | None, list[str]]:
    """``manage.py check_invariants`` against the running stack: (invariants 1–4 hold, the
    worker's books equal the database or None if unknown, the command's output)."""
    try:
        done = subprocess.run(
            [sys.executable, "manage.py", "check_invariants", "--timeout", "30"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return False, None, ["check_invariants did not finish within 300 s"]
    lines = (done.stdout + done.stderr).splitlines()
    verdicts = [line.split(None, 2) for line in lines if line.startswith(("ok ", "FAIL "))]
    database = [v for v in verdicts if len(v) > 1 and not v[1].startswith("5")]
    books = [v for v in verdicts if len(v) > 1 and v[1].startswith("5")]
    database_ok = bool(database) and all(v[0] == "ok" for v in database)
    books_ok = all(v[0] == "ok" for v in books) if books else None
    return database_ok, books_ok, lines[-40:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--rate", type=float, default=800.0, help="open loop: orders per second in total")
    parser.add_argument("--connections", type=int, default=512, help="open loop: at most this many HTTP connections")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the measured window")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the measured window")
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="after the load, stop waiting for late acks and fills once none came for this long",
    )
    parser.add_argument("--drain-max", type=float, default=120.0, help="after the load, wait at most this long")
    parser.add_argument(
        "--reply-timeout", type=float, default=10.0, help="seconds after which a request counts as unanswered"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quiet", action="store_true", help="print a one-line summary instead of the JSON")
    args = parser.parse_args()
    # SIGTERM (from a driver giving up on this run) unwinds like Ctrl-C, so the stack is stopped.
    signal.signal(signal.SIGTERM, interrupted)

    backend = backend_of(os.environ.get("DATABASE_URL", ""))
    redis_kind = "local" if os.environ.get("REDIS_URL") else "embedded"
    var = ROOT / "var" / "bench"
    var.mkdir(parents=True, exist_ok=True)
    # Production settings: DEBUG off (no query log, no debug pages), a throwaway secret.
    # Its own channel-layer prefix: Redis pub/sub channels span every database of a server, so a
    # shared Redis would otherwise mix in the frames of other stacks' groups of the same names.
    env = {
        "ITG_VAR_DIR": str(var),
        "ITG_INSTANCE": "bench",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
        "ITG_CHANNEL_PREFIX": f"itgbench{os.getpid()}",
    }
    if backend == "sqlite":
        db_file = var / "bench.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        env["DATABASE_URL"] = f"sqlite:///{db_file}"
    elif backend == "postgresql":
        recreate_postgres(os.environ["DATABASE_URL"])
    has_set_role = prepare_database(env)
    if not has_set_role:
        print(
            "warning: manage.py set_role does not exist; lifting the role's limits in the database before the "
            "stack starts",
            file=sys.stderr,
        )
        lift_limits_directly()
    from django.conf import settings
    from django.db import connections

    from tradinggame.procfile import ProcfileStack

    connections.close_all()
    stack = ProcfileStack(Path(tempfile.mkdtemp(prefix="itg-bench-")), dict(env, REDIS_URL=settings.REDIS_URL))
    print(
        f"backend: {backend} + {redis_kind} redis ({settings.REDIS_URL}); server logs in {stack.log_dir}",
        file=sys.stderr,
    )
    limits_via = "manage.py set_role" if has_set_role else "direct RolePolicy update (set_role missing)"
    teams: list[Team] = []
    tally = Tally()
    extra: dict[str, Any] = {}
    servers: dict[str, list[int]] = {}
    stack.start()
    try:
        stack.wait_healthy()
        if has_set_role:
            done = set_role(stack.env)
            if done.returncode != 0 and "Unknown command" in done.stdout + done.stderr:
                print(
                    "warning: manage.py set_role is unknown to the stack; lifting the limits in the database",
                    file=sys.stderr,
                )
                lift_limits_directly()
                limits_via = "direct RolePolicy update after start (set_role unknown)"
            elif done.returncode == 0:
                time.sleep(1.5)  # the web processes pick up rate limits within a second
            else:  # the limits may still bind: the replies will show it (429 and position rejects)
                print(
                    f"warning: manage.py set_role failed; the role's limits may not be lifted:\n{done.stdout}"
                    f"{done.stderr}",
                    file=sys.stderr,
                )
                limits_via = f"NOT LIFTED: set_role failed ({done.stderr.strip()[-300:]})"
        stamp = int(time.time())
        teams = [
            Team(f"bench {stamp} {n}", stack.register(f"bench {stamp} {n}", ROLE), "buy" if n % 2 == 0 else "sell")
            for n in range(2 * args.pairs)
        ]
        servers = local_server_pids(settings.REDIS_URL if redis_kind == "local" else "", backend)
        if settings.EMBEDDED_REDIS_DIR:
            with contextlib.suppress(OSError, ValueError, KeyError):
                state = json.loads((Path(settings.EMBEDDED_REDIS_DIR) / "redis.json").read_text())
                servers["redis"] = [int(state["pid"])]
        meter = Meter(lambda: {**stack.pids(), **servers})
        own_loop = asyncio.new_event_loop
        with contextlib.suppress(ImportError):
            import uvloop

            own_loop = uvloop.new_event_loop
        # The generator's own collector stays off while it loads: a full collection of what it
        # has recorded (hundreds of thousands of replies and frames) would stall it for tens of
        # milliseconds, and every order in flight would look that much slower.
        gc.collect()
        gc.disable()
        try:
            with asyncio.Runner(loop_factory=own_loop) as runner:
                extra = runner.run(run_load(args, stack.base_url, stack.ws_url, teams, tally, meter))
                loop_kind = type(runner.get_loop()).__module__.split(".")[0]
        finally:
            gc.enable()
        signal.signal(signal.SIGTERM, interrupted)  # the loop's own handler is gone with it
        invariants_ok, books_ok, invariants = check_invariants(stack.env)
    finally:
        pids = stack.pids()
        stack.stop()
        if settings.EMBEDDED_REDIS_DIR:  # the benchmark started it; nothing else uses it
            from infra import embedded_redis

            embedded_redis.stop(Path(settings.EMBEDDED_REDIS_DIR))

    window = tally.window_end - tally.window_start
    accepted = tally.accepted_in_window
    replies_in_window = [r for r in tally.replies if tally.in_window(r[0])]
    refused = sum(1 for r in replies_in_window if r[2] in REFUSED_STATUSES)
    no_reply = sum(1 for r in replies_in_window if r[2] == 0)
    cpu = meter.used()
    all_accepted = tally.sent_at.keys()
    resting = extra.get("resting")
    reported = {order for _, order, _, _ in tally.reports}
    if resting is not None:
        # An order the exchange shows acked and resting has rightly no fill; anything else accepted should.
        unfilled_ok = {order for order, status in resting.items() if status == "new"}
        missing_fills = len(all_accepted - unfilled_ok - reported)
        fills_basis = "accepted orders − those the exchange shows resting (new) − those with an execution_report"
    else:
        bought = sum(1 for side in tally.sides.values() if side == "buy")
        missing_fills = 2 * min(bought, len(all_accepted) - bought) - len(reported & all_accepted)
        fills_basis = "2 × min(buys, sells) − orders with an execution_report (open orders unavailable)"
    result = {
        "command": " ".join(sys.argv),
        "backend": f"{backend} + {redis_kind} redis",
        "mode": args.mode,
        "pairs": args.pairs,
        "teams": len(teams),
        "target_rate": args.rate if args.mode == "open" else None,
        "warmup_s": args.warmup,
        "duration_s": round(window, 2),
        "limits_lifted_by": limits_via,
        "offered_orders_per_s": round(len(replies_in_window) / window, 1) if window else None,
        "accepted_orders_per_s": round(accepted / window, 1) if window else None,
        "fills_per_s": round(
            sum(1 for _, o, _, _ in tally.reports if tally.in_window(tally.sent_at.get(o, -1.0))) / window, 1
        )
        if window
        else None,
        "replies": dict(tally.reply_kinds),
        "warmup_replies": dict(tally.warmup_kinds),
        "refused": {
            "count": refused,
            "share": round(refused / len(replies_in_window), 4) if replies_in_window else None,
        },
        "no_reply": no_reply,
        "other_failures": sum(1 for r in replies_in_window if not r[3] and r[2] not in REFUSED_STATUSES),
        "max_reply_ms": round(max(r[1] for r in replies_in_window) * 1000, 3) if replies_in_window else None,
        "latency_ms": tally.latencies(),
        "accepted_total": len(all_accepted),
        "missing_after_grace": {
            "acks": len(all_accepted - tally.acked_at.keys()),
            "acks_in_window": sum(
                1 for o, at in tally.sent_at.items() if tally.in_window(at) and o not in tally.acked_at
            ),
            "fills": max(0, missing_fills),
            "fills_basis": fills_basis,
        },
        # Acks of orders no reply of this run named: another client's frames, or a server bug.
        "acks_of_unknown_orders": len(tally.acked_at.keys() - all_accepted - tally.other_ids),
        "drain_s": extra.get("drain_s"),
        "resting_at_end": len(resting) if resting is not None else None,
        "frames": dict(tally.frame_types),
        "seq_gaps": sum(t.gaps for t in teams),
        "seq_duplicates": sum(t.duplicates for t in teams),
        "ws_disconnects": dict(sum((t.disconnects for t in teams), Counter())),
        "ws_connections": sum(t.connections for t in teams),
        # Seconds from the window's start (negative: during the warm-up).
        "ws_disconnected_at_s": [round(at - tally.window_start, 2) for at in sorted(tally.disconnected_at)][:50],
        "cpu_s": cpu,
        "cpu_ms_per_order": {name: round(1000 * s / accepted, 3) if accepted else None for name, s in cpu.items()},
        "cpu_note": "redis and postgresql are whole servers"
        if redis_kind == "local" or backend == "postgresql"
        else "",
        "machine_cpu_busy_pct": meter.machine_busy_pct(),
        "machine_cpu_others_pct": meter.others_pct(),
        "http_connections": extra.get("http_connections"),
        "generator": {"json": JSON_LIBRARY, "event_loop": loop_kind},
        "invariants_ok": invariants_ok,
        "books_ok": books_ok,
        "invariants": invariants,
        "pids": {**pids, **servers},
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"load-{args.mode}-{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    if args.quiet:
        print(summary(result))
    else:
        print(
            json.dumps({k: v for k, v in result.items() if k not in ("pids", "command")}, indent=2, ensure_ascii=False)
        )
    print(f"written to {out}")


def summary(result: dict[str, Any]) -> str:
    latency = result["latency_ms"]
    cpu = result["cpu_ms_per_order"]
    parts = [
        f"{result['accepted_orders_per_s']}/s accepted of {result['offered_orders_per_s']}/s",
        f"REST p99 {latency['rest_submit']['p99']} ms",
        f"ack p99 {latency['submit_to_ack']['p99']} ms",
        f"missing acks {result['missing_after_grace']['acks']} fills {result['missing_after_grace']['fills']}",
        f"gaps {result['seq_gaps']}",
        "WebSocket closes " + (", ".join(f"{n}× {code}" for code, n in result["ws_disconnects"].items()) or "none"),
        "CPU ms/order " + " ".join(f"{name} {value}" for name, value in cpu.items()),
        f"invariants {'ok' if result['invariants_ok'] else 'FAIL'}",
    ]
    return "  |  ".join(parts)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the stack was stopped", file=sys.stderr)
        sys.exit(130)
