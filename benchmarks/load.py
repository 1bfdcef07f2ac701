"""End-to-end load benchmark: teams in pairs trade crossing orders through the public API.

    python benchmarks/load.py [--pairs 8] [--mode closed|open] [--rate 1000] [--duration 20]

It starts the processes of the Procfile (exactly what ``make run`` starts) on a fresh database
(a SQLite file in var/bench unless DATABASE_URL is set, the embedded Redis unless REDIS_URL is
set), registers 2 × pairs teams, opens one WebSocket per team, and sends 1-lot limit orders at
one price: the first team of each pair only buys, the second only sells, so every order fills.

closed loop: every team sends its next order as soon as the previous REST reply arrives.
open loop:   orders leave on a fixed timetable (``--rate`` per second in total); latencies are
             measured from the scheduled send time, so a stalled server cannot hide its queue.

It prints and writes JSON (benchmarks/results/load-<mode>-<backend>.json): accepted orders/s,
fills/s, REST latency, submit→ack and submit→execution_report (taker and maker) percentiles,
rejects, acks or fills missing after a grace period, seq gaps and duplicates, CPU seconds of
each server process, and the result of ``check_invariants`` on the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"count": len(ordered), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1] * 1000, 3)}


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost the server's cores little."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        assert self.reader is not None
        status_line = await self.reader.readline()
        if not status_line:
            self.writer = None
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        data = b""
        while (size := int((await self.reader.readline()).strip(), 16)) > 0:
            data += await self.reader.readexactly(size)
            await self.reader.readline()
        await self.reader.readline()
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


@dataclass
class Tally:
    sent_at: dict[str, float] = field(default_factory=dict)  # order id -> (scheduled) send time
    rest_latency: list[float] = field(default_factory=list)
    acked_at: dict[str, float] = field(default_factory=dict)  # order id -> when its ack arrived
    reports: list[tuple[str, str, str, float]] = field(default_factory=list)  # trade, order, liquidity, when
    statuses: Counter[str] = field(default_factory=Counter)
    sides: dict[str, str] = field(default_factory=dict)  # order id -> side

    @property
    def fills_seen(self) -> int:
        return len(self.reports)

    def latencies(self) -> dict[str, list[float]]:
        """Submit → ack per order; submit of the taker → each side's report per trade (an ack or
        report may arrive before the REST reply that tells us the order id, so this is done last)."""
        ack = [at - self.sent_at[o] for o, at in self.acked_at.items() if o in self.sent_at]
        takers = {trade: self.sent_at.get(order) for trade, order, liquidity, _ in self.reports if liquidity == "taker"}
        taker, maker = [], []
        for trade, _, liquidity, at in self.reports:
            start = takers.get(trade)
            if start is not None:
                (taker if liquidity == "taker" else maker).append(at - start)
        return {"submit_to_ack": ack, "submit_to_taker_report": taker, "submit_to_maker_report": maker}


async def listen(team: Team, ws_url: str, tally: Tally, ready: asyncio.Event, stop: asyncio.Event) -> None:
    import websockets

    async with websockets.connect(f"{ws_url}?api_key={team.key}", max_queue=None) as ws:
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                continue
            now = time.perf_counter()
            frame = json.loads(raw)
            team.frames += 1
            if frame["seq"] != team.last_seq + 1:
                team.gaps += frame["seq"] > team.last_seq + 1
                team.duplicates += frame["seq"] <= team.last_seq
            team.last_seq = max(team.last_seq, frame["seq"])
            kind, data = frame["type"], frame["data"]
            if kind == "new_order_ack":
                tally.acked_at[data["order_id"]] = now
            elif kind == "execution_report":
                tally.reports.append((data["trade_id"], data["order_id"], data["liquidity_type"], now))


async def send_order(conn: HttpConnection, team: Team, tally: Tally, scheduled: float, instrument: str) -> None:
    body = json.dumps({"instrument_id": instrument, "order_type": "limit", "side": team.side, "quantity": 1,
                       "price": 100.0}).encode()
    status, raw = await conn.request("POST", "/orders", {"X-API-Key": team.key, "Content-Type": "application/json"}, body)
    now = time.perf_counter()
    tally.rest_latency.append(now - scheduled)
    reply = json.loads(raw)
    tally.statuses[f"{status} {reply.get('status')}" + (f" {reply['error_code']}" if reply.get("error_code") else "")] += 1
    if reply.get("status") == "accepted":
        tally.sent_at[reply["order_id"]] = scheduled
        tally.sides[reply["order_id"]] = team.side


class Progress:
    def __init__(self, duration: float) -> None:
        self.duration, self.start = duration, time.perf_counter()

    def show(self, tally: Tally) -> None:
        done = min(1.0, (time.perf_counter() - self.start) / self.duration)
        bar = "#" * int(done * 30)
        sys.stderr.write(f"\r[{bar:<30}] {done:4.0%}  accepted {len(tally.sent_at):>7}  fills {tally.fills_seen:>7}")
        sys.stderr.flush()


async def run_load(args: argparse.Namespace, base_url: str, ws_url: str, teams: list[Team], tally: Tally) -> float:
    host, port = base_url.split("//")[1].split(":")
    stop = asyncio.Event()
    listeners = []
    for team in teams:
        ready = asyncio.Event()
        listeners.append(asyncio.create_task(listen(team, ws_url, tally, ready, stop)))
        await ready.wait()
    progress = Progress(args.duration)
    started = time.perf_counter()
    deadline = started + args.duration
    instrument = "SPX_4500_CALL"

    async def closed_loop(team: Team) -> None:
        conn = HttpConnection(host, int(port))
        while time.perf_counter() < deadline:
            await send_order(conn, team, tally, time.perf_counter(), instrument)

    async def open_loop() -> None:
        pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for _ in range(args.connections):
            pool.put_nowait(HttpConnection(host, int(port)))
        pending = set()
        interval = 1.0 / args.rate
        n = 0
        while (scheduled := started + n * interval) < deadline:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            team = teams[n % len(teams)]

            async def one(team: Team = team, scheduled: float = scheduled) -> None:
                conn = await pool.get()
                try:
                    await send_order(conn, team, tally, scheduled, instrument)
                finally:
                    pool.put_nowait(conn)

            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)

    async def show_progress() -> None:
        while time.perf_counter() < deadline:
            progress.show(tally)
            await asyncio.sleep(0.5)

    ticker = asyncio.create_task(show_progress())
    if args.mode == "closed":
        await asyncio.gather(*(closed_loop(team) for team in teams))
    else:
        await open_loop()
    elapsed = time.perf_counter() - started
    ticker.cancel()
    progress.show(tally)
    sys.stderr.write("\n")
    grace_end = time.perf_counter() + args.grace
    while time.perf_counter() < grace_end and len(tally.acked_at.keys() & tally.sent_at.keys()) < len(tally.sent_at):
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*listeners, return_exceptions=True)
    return elapsed


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    import psutil

    seconds = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        seconds[name] = total
    return seconds


def prepare_database(env: dict[str, str]) -> None:
    """Migrate, list the instruments, and lift the limits the benchmark would otherwise hit."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradinggame.settings")
    import django

    django.setup()
    from io import StringIO

    from django.core.management import call_command

    from exchange.models import RolePolicy
    from exchange.policies import role_policies

    call_command("migrate", verbosity=0)
    call_command("seed_demo", stdout=StringIO())
    role_policies()
    RolePolicy.objects.filter(role="market_maker").update(
        orders_per_second=0, position_limit=10**9, portfolio_limit=10**9
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--rate", type=float, default=1000.0, help="open loop: orders per second in total")
    parser.add_argument("--connections", type=int, default=64, help="open loop: HTTP connections")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to wait for late acks and fills")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    backend = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    redis_kind = "local redis" if os.environ.get("REDIS_URL") else "embedded redis"
    var = ROOT / "var" / "bench"
    var.mkdir(parents=True, exist_ok=True)
    # Production settings: DEBUG off (no query log, no debug pages), a throwaway secret.
    env = {"ITG_VAR_DIR": str(var), "ITG_INSTANCE": "bench", "LOG_LEVEL": "WARNING", "DEBUG": "0",
           "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48)}
    if backend == "sqlite":
        db_file = var / "bench.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        env["DATABASE_URL"] = f"sqlite:///{db_file}"
    prepare_database(env)
    from django.conf import settings

    from tradinggame.procfile import ProcfileStack

    stack = ProcfileStack(Path(tempfile.mkdtemp(prefix="itg-bench-")), dict(env, REDIS_URL=settings.REDIS_URL))
    print(f"backend: {backend} + {redis_kind} ({settings.REDIS_URL}); server logs in {stack.log_dir}")
    stack.start()
    try:
        stack.wait_healthy()
        stamp = int(time.time())
        teams = [
            Team(f"bench {stamp} {n}", stack.register(f"bench {stamp} {n}", "market_maker"), "buy" if n % 2 == 0 else "sell")
            for n in range(2 * args.pairs)
        ]
        before = cpu_seconds(stack.pids())
        own_before = time.process_time()
        tally = Tally()
        elapsed = asyncio.run(run_load(args, stack.base_url, stack.ws_url, teams, tally))
        after = cpu_seconds(stack.pids())
        after["load generator"] = time.process_time() - own_before
        before["load generator"] = 0.0
    finally:
        pids = stack.pids()
        stack.stop()
        if settings.EMBEDDED_REDIS_DIR:  # the benchmark started it; nothing else uses it
            from tradinggame import embedded_redis

            embedded_redis.stop(Path(settings.EMBEDDED_REDIS_DIR))
    from io import StringIO

    from django.core.management import call_command

    invariants = StringIO()
    try:
        call_command("check_invariants", "--no-books", stdout=invariants)
        invariants_ok = True
    except Exception as failure:  # reported, not raised: the numbers are still worth printing
        invariants_ok = False
        invariants.write(str(failure))

    accepted = len(tally.sent_at)
    bought = sum(1 for side in tally.sides.values() if side == "buy")
    expected_fills = 2 * min(bought, accepted - bought)
    result = {
        "command": " ".join(sys.argv),
        "backend": f"{backend} + {redis_kind}",
        "mode": args.mode,
        "pairs": args.pairs,
        "target_rate": args.rate if args.mode == "open" else None,
        "duration_s": round(elapsed, 2),
        "accepted_orders_per_s": round(accepted / elapsed, 1),
        "fills_per_s": round(tally.fills_seen / elapsed, 1),
        "replies": dict(tally.statuses),
        "latency_ms": {
            "rest_submit": percentiles(tally.rest_latency),
            **{name: percentiles(values) for name, values in tally.latencies().items()},
        },
        "missing_after_grace": {
            "acks": accepted - len(tally.acked_at.keys() & tally.sent_at.keys()),
            # buys and sells need not pair up exactly: what rests unfilled at the end is not missing
            "fills": expected_fills - len({order for _, order, _, _ in tally.reports} & tally.sent_at.keys()),
        },
        "seq_gaps": sum(t.gaps for t in teams),
        "seq_duplicates": sum(t.duplicates for t in teams),
        "server_cpu_s": {name: round(after.get(name, 0) - before.get(name, 0), 2) for name in before},
        "invariants_ok": invariants_ok,
        "invariants": invariants.getvalue().splitlines(),
        "pids": pids,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"load-{args.mode}-{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("pids", "command")}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
