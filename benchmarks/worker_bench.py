"""The matching worker alone: CPU per command at fixed batch sizes, without the web process.

    python benchmarks/worker_bench.py [--batches 1,3,10,50] [--commands 12000] [--out FILE]

It builds a fresh database (a SQLite file in a temporary directory unless DATABASE_URL is set;
the embedded Redis unless REDIS_URL is set), registers 8 market-maker teams with their limits
lifted, and runs the worker's own loop (``exchange.matching.loop.MatchingLoop``) in this
process. For each batch size it queues that many orders through the same Redis script the web
processes use (buyers and sellers alternating at one price, so every order fills, as in
``benchmarks/load.py``), lets the loop take, decide, commit and publish them, and counts the
loop's CPU only: the enqueueing is excluded. It prints ms of CPU per command in all and by part
(decide, commit, publish, take) and writes JSON (default
benchmarks/results/worker-<backend>.json).

The end-to-end benchmark's closed loop runs at about 3 commands per batch; this one shows how
the cost falls as batches grow, on a quiet measurement that the web process and the load
generator do not disturb.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEAMS = 8


def setup() -> tuple[Any, list[int]]:
    """Django on a fresh database; the loop started; returns (loop, team ids)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("ITG_VAR_DIR", tempfile.mkdtemp(prefix="itg-worker-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradinggame.settings")
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", "worker-bench-" + "x" * 40)
    import django

    django.setup()
    from io import StringIO

    from django.core.management import call_command

    from accounts.services import team_register
    from exchange.matching import loop as matching_loop
    from exchange.models import RolePolicy
    from exchange.policies import role_policies

    call_command("migrate", verbosity=0)
    call_command("seed_demo", stdout=StringIO())
    role_policies()
    RolePolicy.objects.filter(role="market_maker").update(
        orders_per_second=0, position_limit=10**9, portfolio_limit=10**9
    )
    stamp = int(time.time())
    teams = [team_register(f"bench_{stamp}_{n}", "market_maker")[0].pk for n in range(TEAMS)]
    worker_loop = matching_loop.MatchingLoop(tune_gc=True)
    worker_loop.stats.EVERY_S = float("inf")  # the parts are read here, never reset by the log
    worker_loop.client.delete("itg:matching:queue", "itg:matching:inflight")
    worker_loop.start()
    return worker_loop, teams


def instrument() -> str:
    from exchange.models import Instrument

    return Instrument.objects.filter(listed=True, halted=False).order_by("symbol").values_list("symbol", flat=True)[0]


def server_cpu_s() -> float:
    """CPU seconds of this connection's PostgreSQL server process so far (0 on SQLite)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bytes_written() -> int:
    """Bytes this process has caused to be written to storage so far (its WAL and database pages
    on SQLite; PostgreSQL writes in its own processes)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def run(
    worker_loop: Any, teams: list[int], symbol: str, batch: int, commands: int, progress: bool = True
) -> dict[str, Any]:
    progress = progress and sys.stderr.isatty()
    from exchange.matching import queue

    client = worker_loop.client
    enqueue = client.register_script(queue.ENQUEUE)
    stats = worker_loop.stats
    rounds = max(1, commands // batch)
    cpu = 0.0
    parts = {"decide": 0.0, "commit": 0.0, "publish": 0.0}
    sent = 0
    server_before = server_cpu_s()
    written_before = bytes_written()
    for round_no in range(rounds):
        for _ in range(batch):
            team = teams[sent % TEAMS]
            side = "buy" if team in teams[::2] else "sell"
            command = {
                "k": "s",
                "i": symbol,
                "s": side,
                "y": "limit",
                "f": "gtc",
                "p": "5.00",
                "q": 1,
                "c": None,
                "rq": None,
                "r": "bench",
                "t": team,
            }
            keys, argv = queue.enqueue_args(queue.encode(command), None, 0)
            enqueue(keys=keys, args=argv)
            sent += 1
        before = dict(stats.parts)
        started = time.thread_time()
        worker_loop.queue_was_empty = False  # the queue was filled behind the loop's back
        worker_loop.step()
        while worker_loop.next_items:
            worker_loop.step()
        cpu += time.thread_time() - started
        for part in parts:
            parts[part] += stats.parts.get(part, 0.0) - before.get(part, 0.0)
        if progress and round_no % max(1, rounds // 20) == 0:
            print(f"\r  batch {batch:>3}: {100 * (round_no + 1) // rounds:>3}%", end="", file=sys.stderr, flush=True)
    if progress:
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr)
    server = server_cpu_s() - server_before
    written = bytes_written() - written_before
    taken = cpu - sum(parts.values())
    per = {part: round(1000 * seconds / sent, 4) for part, seconds in parts.items()}
    return {
        "batch": batch,
        "commands": sent,
        "ms_per_command": round(1000 * cpu / sent, 4),
        **{f"{part}_ms": value for part, value in per.items()},
        "take_ms": round(1000 * taken / sent, 4),
        "database_server_ms": round(1000 * server / sent, 4),
        "bytes_written_per_command": round(written / sent),
    }


def cleanup() -> None:
    """Stop the embedded Redis this run started (a local Redis and PostgreSQL are left as found)."""
    from django.conf import settings

    from infra import embedded_redis

    if not os.environ.get("REDIS_URL"):
        embedded_redis.stop(Path(settings.EMBEDDED_REDIS_DIR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,3,10,50", help="batch sizes, comma-separated")
    parser.add_argument("--commands", type=int, default=12_000, help="commands per batch size")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    worker_loop, teams = setup()
    try:
        measure(args, worker_loop, teams)
    finally:
        cleanup()


def measure(args: argparse.Namespace, worker_loop: Any, teams: list[int]) -> None:
    from django.db import connection

    symbol = instrument()
    backend = connection.vendor
    results = []
    for batch in (int(b) for b in args.batches.split(",")):
        run(worker_loop, teams, symbol, batch, min(args.commands, 600), progress=False)  # warm-up: caches, statements
        result = run(worker_loop, teams, symbol, batch, args.commands)
        results.append(result)
        print(
            f"batch {batch:>3}: {result['ms_per_command']:.3f} ms of CPU per command "
            f"(decide {result['decide_ms']:.3f}, commit {result['commit_ms']:.3f}, "
            f"publish {result['publish_ms']:.3f}, take {result['take_ms']:.3f})"
            + (f"; PostgreSQL server {result['database_server_ms']:.3f}" if backend == "postgresql" else "")
            + (f"; {result['bytes_written_per_command']:,} bytes written per command" if backend == "sqlite" else "")
        )
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"worker-{backend}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"backend": backend, "command": " ".join(sys.argv), "results": results}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
