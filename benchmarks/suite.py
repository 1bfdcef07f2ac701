"""The end-to-end benchmark suite (``make bench``): every load the issue's targets ask for, each run
on a fresh stack, judged by the median of its runs.

    python benchmarks/suite.py [--runs 3] [--pairs 4] [--warmup 3] [--duration 15] [--rate 800]
                               [--overload-runs 3] [--time-budget 25] [--quick]

1. closed loop, ``--runs`` times: orders/s, CPU per accepted order of each process, delivery;
2. open loop at ``--rate`` (800/s), ``--runs`` times: p99 submit → new_order_ack and REST reply;
3. open loop at 2× the closed loop's median rate, up to ``--overload-runs`` times while the
   ``--time-budget`` (minutes, whole suite) allows, at least once: how the excess is refused,
   the slowest reply, accepted p99 against step 2, nothing lost.

Each run is ``benchmarks/load.py`` in a child process (its JSON goes to var/bench/suite/). The
verdict is printed as a table and written, with every run's numbers, to
``benchmarks/results/suite-<backend>.json`` (backend: sqlite, or postgresql when DATABASE_URL
points at PostgreSQL). The PostgreSQL throughput target is judged only on PostgreSQL, the SQLite
one only on SQLite; the other prints "not run". ``--quick``: one run of each, 5 s windows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_report import (  # noqa: E402
    OPEN_RATE,
    OVERLOAD_FACTOR,
    Row,
    backend_of,
    caveats,
    fmt,
    median,
    plain_table,
    rows_for_suite,
)
from machine_probe import describe, steadiness  # noqa: E402

STARTUP_GUESS_S = 25.0  # migrate, start, register, invariants, stop: the part of a run around the load


def clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Plan:
    """Which runs are left and how long they will take, from the runs done so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.durations: list[float] = []
        self.done = 0

    def estimate(self) -> float:
        if self.durations:
            return sum(self.durations) / len(self.durations)
        args = self.args
        return args.warmup + args.duration + STARTUP_GUESS_S

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fits(self, budget_s: float) -> bool:
        return self.elapsed() + self.estimate() <= budget_s


def run_load(args: argparse.Namespace, plan: Plan, label: str, mode: str, out: Path, rate: float | None,
             left_after: int) -> dict[str, Any] | None:
    """One ``load.py`` run; its result, or a record of how it failed."""
    command = [sys.executable, str(HERE / "load.py"), "--mode", mode, "--pairs", str(args.pairs),
               "--warmup", str(args.warmup), "--duration", str(args.duration), "--grace", str(args.grace),
               "--out", str(out), "--quiet"]
    if rate is not None:
        command += ["--rate", f"{rate:.1f}"]
    plan.done += 1
    left = (left_after + 1) * plan.estimate()
    banner = (f"\n=== run {plan.done}: {label} | elapsed {clock(plan.elapsed())}, "
              f"about {clock(left)} left ({left_after} more run{'s' if left_after != 1 else ''} after this) ===")
    print(banner, flush=True)
    out.unlink(missing_ok=True)
    started = time.monotonic()
    limit = args.warmup + args.duration + args.grace + 600
    process = subprocess.Popen(command, cwd=ROOT)
    try:
        code = process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # load.py stops its stack on SIGTERM
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        print(f"run {plan.done} ({label}) took more than {limit:.0f} s and was stopped", flush=True)
    except KeyboardInterrupt:
        process.wait(timeout=120)  # the child got the same Ctrl-C and stops its stack
        raise
    plan.durations.append(time.monotonic() - started)
    if code == 0 and out.exists():
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    print(f"run {plan.done} ({label}) failed (exit status {code}); it counts as producing no numbers", flush=True)
    return {"failed": True, "exit_status": code, "label": label}


def usable(results: Sequence[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
    """A failed run stays in the list (as None) so the table shows it produced nothing."""
    return [None if (r is None or r.get("failed")) else r for r in results]


def print_table(rows: Sequence[Row], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        print(plain_table(rows))
        return
    console = Console()
    if not console.is_terminal:
        print(title)
        print(plain_table(rows))
        return
    table = Table(title=title, show_lines=False)
    for name, justify in (("measure", "left"), ("runs", "right"), ("median", "right"), ("target", "right"),
                          ("met", "center")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    colour = {"yes": "green", "no": "bold red", "not run": "dim", "-": "dim"}
    for row in rows:
        measure = row.measure + (f" [dim]({row.note})[/dim]" if row.note else "")
        runs = ", ".join(fmt(v, row.unit) for v in row.runs) if row.runs else "-"
        value = fmt(row.median, row.unit) if row.runs else "-"
        table.add_row(measure, runs, value, row.target, f"[{colour.get(row.met, '')}]{row.met}[/]")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of the closed loop and of the open loop at --rate")
    parser.add_argument("--pairs", type=int, default=4, help="buyer/seller pairs (2 teams, 2 WebSockets each)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measured window")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of each measured window")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="each run stops waiting for late acks and fills once none came for this long")
    parser.add_argument("--rate", type=float, default=OPEN_RATE, help="orders/s of the open-loop runs")
    parser.add_argument("--overload-runs", type=int, default=3, help="at most this many runs at 2× the closed loop")
    parser.add_argument("--time-budget", type=float, default=25.0,
                        help="minutes: overload runs after the first only start if the suite fits in this")
    parser.add_argument("--quick", action="store_true", help="a smoke test: one run of each, 5 s windows")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/suite-<backend>.json")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.overload_runs, args.duration = 1, 1, 5.0
    backend = backend_of(os.environ.get("DATABASE_URL", ""))
    redis_kind = "local" if os.environ.get("REDIS_URL") else "embedded"
    runs_dir = ROOT / "var" / "bench" / "suite"
    runs_dir.mkdir(parents=True, exist_ok=True)
    out = args.out or HERE / "results" / f"suite-{backend}.json"
    started_at = datetime.now(UTC)
    plan = Plan(args)
    print(f"benchmark suite: {backend} + {redis_kind} Redis, {args.pairs} pairs ({2 * args.pairs} teams), "
          f"{args.warmup:g} s warm-up + {args.duration:g} s per run; {args.runs} closed loop, {args.runs} open loop "
          f"at {args.rate:,.0f}/s, up to {args.overload_runs} at 2× the closed loop", flush=True)

    print("\nthe machine alone, 10 s: ", end="", flush=True)
    machine_probe = steadiness(10.0)
    print(describe(machine_probe), flush=True)

    closed: list[dict[str, Any] | None] = []
    for i in range(args.runs):
        closed.append(run_load(args, plan, f"closed loop {i + 1}/{args.runs}", "closed",
                               runs_dir / f"{backend}-closed-{i + 1}.json", None,
                               args.runs - i - 1 + args.runs + args.overload_runs))
    open_runs: list[dict[str, Any] | None] = []
    for i in range(args.runs):
        open_runs.append(run_load(args, plan, f"open loop {args.rate:,.0f}/s {i + 1}/{args.runs}", "open",
                                  runs_dir / f"{backend}-open-{i + 1}.json", args.rate,
                                  args.runs - i - 1 + args.overload_runs))
    closed_median = median([r["accepted_orders_per_s"] if r else None for r in usable(closed)])
    overload_rate = OVERLOAD_FACTOR * closed_median if closed_median else None
    overload: list[dict[str, Any] | None] = []
    skipped = ""
    if overload_rate is None:
        skipped = "no closed-loop rate to double"
        print("\nno closed-loop rate was measured: the overload runs are skipped", flush=True)
    else:
        for i in range(args.overload_runs):
            if i > 0 and not plan.fits(args.time_budget * 60):
                skipped = f"{args.overload_runs - i} overload run(s) left out to stay within {args.time_budget:g} min"
                print(f"\n{skipped}", flush=True)
                break
            overload.append(run_load(args, plan, f"overload {overload_rate:,.0f}/s {i + 1}/{args.overload_runs}",
                                     "open", runs_dir / f"{backend}-overload-{i + 1}.json", overload_rate,
                                     args.overload_runs - i - 1))

    rows = rows_for_suite(backend, redis_kind, usable(closed), usable(open_runs), usable(overload),
                          open_rate=args.rate, overload_rate=overload_rate)
    title = (f"{backend} + {redis_kind} Redis, {args.pairs} pairs, {args.duration:g} s windows "
             f"(median of the runs; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    print()
    print_table(rows, title)
    judged = [row for row in rows if row.met in ("yes", "no")]
    met = sum(row.met == "yes" for row in judged)
    notes = caveats(usable(closed), usable(open_runs), usable(overload), args.rate, overload_rate, machine_probe)
    for note in notes:
        print(f"note: {note}")
    print(f"\n{met} of {len(judged)} targets met; whole suite took {clock(plan.elapsed())}"
          + (f"; {skipped}" if skipped else ""))
    suite = {
        "backend": backend,
        "redis": redis_kind,
        "database_url_set": bool(os.environ.get("DATABASE_URL")),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "steadiness": machine_probe},
        "started": started_at.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"runs": args.runs, "pairs": args.pairs, "warmup_s": args.warmup, "duration_s": args.duration,
                     "grace_s": args.grace, "open_rate": args.rate, "overload_runs": len(overload),
                     "quick": args.quick},
        "closed_loop_median_orders_per_s": closed_median,
        "overload_rate": overload_rate,
        "overload_note": skipped,
        "targets_met": met,
        "targets_judged": len(judged),
        "caveats": notes,
        "table": [row.as_dict() for row in rows],
        "runs": {"closed": closed, "open": open_runs, "overload": overload},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(suite, indent=2, ensure_ascii=False))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
