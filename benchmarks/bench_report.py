"""Pure helpers of the end-to-end benchmarks: percentiles, medians, the issue's targets and how a
set of runs is judged against them (``benchmarks/load.py`` and ``benchmarks/suite.py`` use them).

A target is met when the median of its runs meets it. Load results are the dictionaries
``load.py`` writes; nothing here starts a process or touches the network.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

REFUSED_STATUSES = (429, 503, 504)  # how an overloaded exchange may say no

# The targets (orders/s, milliseconds, ratios).
WEB_CPU_MS_PER_ORDER = 1.0
WORKER_CPU_MS_PER_ORDER = 0.3
CLOSED_SQLITE_ORDERS_PER_S = 1200.0
CLOSED_POSTGRESQL_ORDERS_PER_S = 900.0
OPEN_RATE = 800.0
OPEN_P99_MS = 20.0
OVERLOAD_FACTOR = 2.0
REFUSED_P99_MS = 50.0
SLOWEST_REPLY_MS = 5000.0
OVERLOAD_P99_RATIO = 3.0


def backend_of(database_url: str) -> str:
    """``postgresql`` when DATABASE_URL points at PostgreSQL, else ``sqlite`` (the default)."""
    return "postgresql" if database_url.startswith(("postgres://", "postgresql://", "pgsql://")) else "sqlite"


def percentiles(values: Sequence[float], missing: int = 0) -> dict[str, Any]:
    """Nearest-rank p50/p90/p99 and max, in milliseconds, of durations in seconds.

    ``missing`` samples never arrived: they count as infinitely slow, so a percentile that falls
    on one is None (unknown, hence not met) instead of looking better than the truth.
    """
    total = len(values) + missing
    if total == 0:
        return {"count": 0, "missing": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float | None:
        index = max(0, math.ceil(q * total) - 1)
        return round(ordered[index] * 1000, 3) if index < len(ordered) else None

    return {
        "count": len(ordered),
        "missing": missing,
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1] * 1000, 3) if ordered and not missing else None,
    }


def median(values: Sequence[float | None]) -> float | None:
    """The median of the runs that produced a value; None when none did."""
    known = [v for v in values if v is not None]
    return float(statistics.median(known)) if known else None


def worst_case_median(values: Sequence[float | None], op: str) -> float | None:
    """The median when a run without a value (crashed, or its percentile fell on a message that
    never came) counts as the worst possible; None when the median is such a run."""
    worst = math.inf if op == "<=" else -math.inf
    if not values:
        return None
    middle = float(statistics.median([worst if v is None else v for v in values]))
    return None if math.isinf(middle) or math.isnan(middle) else middle


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


@dataclass
class Row:
    """One line of the verdict: a measure over its runs, judged by the median."""

    measure: str
    runs: list[float | None]
    unit: str  # "/s", "ms", "ms/order", "count", "share", "ratio", "ok"
    op: str | None = None  # "<=", ">=", or None for a measure shown without a target
    threshold: float | None = None
    ran: bool = True  # False: this configuration was not part of the suite
    note: str = ""
    median: float | None = field(init=False, default=None)
    met: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.median = median(self.runs) if self.op is None else worst_case_median(self.runs, self.op)
        if not self.ran:
            self.met = "not run"
        elif self.op is None:
            self.met = "-"
        elif not self.runs:
            self.met = "not run"
        elif self.median is None:
            self.met = "no"  # no run produced the measure: nothing shows it was met
        elif self.op == "<=":
            self.met = "yes" if self.median <= (self.threshold or 0.0) + 1e-9 else "no"
        elif self.op == ">=":
            self.met = "yes" if self.median >= (self.threshold or 0.0) - 1e-9 else "no"
        else:
            raise ValueError(f"unknown comparison {self.op!r}")

    @property
    def target(self) -> str:
        if self.op is None or self.threshold is None:
            return "-"
        if self.unit == "ok":
            return "ok"
        return f"{'≤' if self.op == '<=' else '≥'} {fmt(self.threshold, self.unit)}"

    def as_dict(self) -> dict[str, Any]:
        return dict(asdict(self), target=self.target)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "ms/order":
        return f"{value:.2f} ms"
    if unit == "share":
        return f"{value * 100:.1f} %"
    if unit == "ratio":
        return f"{value:.2f}×"
    if unit == "ok":
        return "ok" if value >= 1 else "FAIL"
    return f"{value:,.0f}"


def get(result: dict[str, Any] | None, *path: str) -> Any:
    """``result[a][b]...`` or None when any step is missing (a crashed run has no numbers)."""
    value: Any = result
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _each(results: Sequence[dict[str, Any] | None], pick: Callable[[dict[str, Any]], Any]) -> list[float | None]:
    values: list[float | None] = []
    for result in results:
        try:
            value = pick(result) if result is not None else None
        except (KeyError, TypeError, ZeroDivisionError):
            value = None
        values.append(None if value is None else float(value))
    return values


def rows_for_suite(
    backend: str,
    redis_kind: str,
    closed: Sequence[dict[str, Any] | None],
    open_runs: Sequence[dict[str, Any] | None],
    overload: Sequence[dict[str, Any] | None],
    open_rate: float = OPEN_RATE,
    overload_rate: float | None = None,
) -> list[Row]:
    """The verdict table: every target of the issue, plus measures shown for context."""
    on_pg = backend == "postgresql"
    rows = [
        Row("web CPU per accepted order (closed loop)", _each(closed, lambda r: get(r, "cpu_ms_per_order", "web")),
            "ms/order", "<=", WEB_CPU_MS_PER_ORDER),
        Row("worker CPU per accepted order (closed loop)",
            _each(closed, lambda r: get(r, "cpu_ms_per_order", "worker")), "ms/order", "<=", WORKER_CPU_MS_PER_ORDER),
        Row("redis CPU per accepted order (closed loop)", _each(closed, lambda r: get(r, "cpu_ms_per_order", "redis")),
            "ms/order", note="" if redis_kind == "embedded" else "whole shared server"),
        Row("load generator CPU per accepted order (closed loop)",
            _each(closed, lambda r: get(r, "cpu_ms_per_order", "load generator")), "ms/order"),
    ]
    if on_pg:
        rows.append(Row("postgresql CPU per accepted order (closed loop)",
                        _each(closed, lambda r: get(r, "cpu_ms_per_order", "postgresql")), "ms/order",
                        note="whole shared server"))
    rows.append(Row("machine CPU busy (closed loop)", _each(closed, lambda r: r["machine_cpu_busy_pct"] / 100), "share"))
    rows.append(Row("machine CPU used by other processes (closed loop)",
                    _each(closed, lambda r: r["machine_cpu_others_pct"] / 100), "share", note="should be near 0"))
    closed_rate = _each(closed, lambda r: r["accepted_orders_per_s"])
    rows += [
        Row("closed loop orders/s, SQLite + embedded Redis", [] if on_pg else closed_rate, "/s", ">=",
            CLOSED_SQLITE_ORDERS_PER_S, ran=not on_pg, note="" if on_pg or redis_kind == "embedded" else "ran on local Redis"),
        Row("closed loop orders/s, PostgreSQL + local Redis", closed_rate if on_pg else [], "/s", ">=",
            CLOSED_POSTGRESQL_ORDERS_PER_S, ran=on_pg, note="" if not on_pg or redis_kind == "local" else "ran on embedded Redis"),
        Row("closed loop: accepted orders never acked", _each(closed, lambda r: r["missing_after_grace"]["acks"]),
            "count", "<=", 0),
        Row("closed loop: fills not delivered", _each(closed, lambda r: r["missing_after_grace"]["fills"]), "count",
            "<=", 0),
        Row("closed loop: seq gaps", _each(closed, lambda r: r["seq_gaps"]), "count", "<=", 0),
        Row("closed loop: WebSocket disconnects", _each(closed, lambda r: sum(r["ws_disconnects"].values())), "count"),
    ]
    label = f"open loop {open_rate:,.0f}/s"
    rows += [
        Row(f"{label}: p99 submit → new_order_ack", _each(open_runs, lambda r: r["latency_ms"]["submit_to_ack"]["p99"]),
            "ms", "<=", OPEN_P99_MS),
        Row(f"{label}: p99 REST reply", _each(open_runs, lambda r: r["latency_ms"]["rest_submit"]["p99"]), "ms", "<=",
            OPEN_P99_MS),
        Row(f"{label}: accepted orders/s", _each(open_runs, lambda r: r["accepted_orders_per_s"]), "/s"),
        Row(f"{label}: accepted orders never acked", _each(open_runs, lambda r: r["missing_after_grace"]["acks"]),
            "count"),
        Row(f"{label}: WebSocket disconnects", _each(open_runs, lambda r: sum(r["ws_disconnects"].values())), "count"),
        Row(f"{label}: load generator send lag p99", _each(open_runs, lambda r: r["latency_ms"]["send_lag"]["p99"]),
            "ms"),
    ]
    reference_rest = median(_each(open_runs, lambda r: r["latency_ms"]["rest_accepted"]["p99"]))
    reference_ack = median(_each(open_runs, lambda r: r["latency_ms"]["submit_to_ack"]["p99"]))
    label = f"overload {overload_rate:,.0f}/s" if overload_rate else "overload (2× closed loop)"
    ran = bool(overload_rate)
    below = "below the open-loop rate" if overload_rate and overload_rate < open_rate else ""
    # With nothing refused there was no excess to answer: its p99 counts as 0.
    refused_row = Row(f"{label}: p99 of 429/503/504 replies",
                      _each(overload, lambda r: r["latency_ms"]["rest_refused"]["p99"] if r["refused"]["count"] else 0.0),
                      "ms", "<=", REFUSED_P99_MS, ran=ran, note="0 when nothing was refused")
    rows += [
        Row(f"{label}: offered orders/s", _each(overload, lambda r: r["offered_orders_per_s"]), "/s", ran=ran,
            note=below),
        Row(f"{label}: load generator send lag p99", _each(overload, lambda r: r["latency_ms"]["send_lag"]["p99"]),
            "ms", ran=ran),
        Row(f"{label}: share answered 429/503/504", _each(overload, lambda r: r["refused"]["share"]), "share", ran=ran),
        refused_row,
        Row(f"{label}: replies neither accepted nor 429/503/504", _each(overload, lambda r: r["other_failures"]),
            "count", "<=", 0, ran=ran),
        Row(f"{label}: slowest reply", _each(overload, lambda r: r["max_reply_ms"]), "ms", "<=", SLOWEST_REPLY_MS,
            ran=ran),
        Row(f"{label}: accepted p99 REST reply ÷ same at {open_rate:,.0f}/s",
            _each(overload, lambda r: ratio(r["latency_ms"]["rest_accepted"]["p99"], reference_rest)), "ratio", "<=",
            OVERLOAD_P99_RATIO, ran=ran),
        Row(f"{label}: accepted p99 submit → ack ÷ same at {open_rate:,.0f}/s",
            _each(overload, lambda r: ratio(r["latency_ms"]["submit_to_ack"]["p99"], reference_ack)), "ratio", "<=",
            OVERLOAD_P99_RATIO, ran=ran),
        Row(f"{label}: accepted orders never acked", _each(overload, lambda r: r["missing_after_grace"]["acks"]),
            "count", "<=", 0, ran=ran),
        Row(f"{label}: WebSocket disconnects", _each(overload, lambda r: sum(r["ws_disconnects"].values())), "count",
            ran=ran),
        Row(f"{label}: invariants at the end", _each(overload, lambda r: 1.0 if r["invariants_ok"] else 0.0), "ok",
            ">=", 1, ran=ran),
    ]
    everything = [*closed, *open_runs, *overload]
    rows.append(Row("invariants at the end of every run", _each(everything, lambda r: 1.0 if r["invariants_ok"] else 0.0),
                    "ok", note="shown per run; judged above for the overload run"))
    return rows


def caveats(
    closed: Sequence[dict[str, Any] | None],
    open_runs: Sequence[dict[str, Any] | None],
    overload: Sequence[dict[str, Any] | None],
    open_rate: float = OPEN_RATE,
    overload_rate: float | None = None,
    machine: dict[str, Any] | None = None,
) -> list[str]:
    """What makes the verdict less trustworthy than it looks, in plain words."""
    notes = []
    if machine and machine["slow_share"] > 0.01:
        notes.append(f"with nothing else running, the machine's CPU was unsteady: {machine['slow_rounds']} times in "
                     f"{machine['seconds']:g} s a fixed {machine['round_ms_median']:.1f} ms task took 5× as long or more "
                     f"(slowest {machine['slowest_round_ms']:.0f} ms); every process stalls in such moments, and the "
                     "top percentiles of latency show them")
    everything = [r for r in (*closed, *open_runs, *overload) if r is not None]
    others = [v for v in _each(everything, lambda r: r["machine_cpu_others_pct"]) if v is not None]
    if others and max(others) > 10:
        typical = median(others) or 0.0
        notes.append(f"other processes used up to {max(others):.0f} % of the machine's CPU during the runs "
                     f"(median {typical:.0f} %): every number here is worse for it")
    unlifted = sum(1 for r in everything if str(r.get("limits_lifted_by", "")).startswith("NOT LIFTED"))
    if unlifted:
        notes.append(f"in {unlifted} run(s) manage.py set_role failed, so the role's limits may have applied")
    failed = sum(1 for r in (*closed, *open_runs, *overload) if r is None)
    if failed:
        notes.append(f"{failed} run(s) produced no numbers (they count as the worst value)")
    if overload_rate is not None and overload_rate < open_rate:
        notes.append(f"2× the closed loop ({overload_rate:,.0f}/s) is below the open-loop rate ({open_rate:,.0f}/s): "
                     "the open-loop runs were themselves overloaded, so the overload comparisons against them say little")
    lag = [v for v in _each([*open_runs, *overload], lambda r: r["latency_ms"]["send_lag"]["p99"]) if v is not None]
    if lag and max(lag) > 50:
        notes.append(f"the load generator fell up to {max(lag):,.0f} ms (p99) behind its timetable: "
                     "it was short of CPU too")
    return notes


def plain_table(rows: Sequence[Row]) -> str:
    """The verdict as fixed-width text (when rich is not available or output is not a terminal)."""
    header = ("measure", "runs", "median", "target", "met")
    lines = [
        (
            row.measure + (f" ({row.note})" if row.note else ""),
            ", ".join(fmt(v, row.unit) for v in row.runs) if row.runs else "-",
            fmt(row.median, row.unit) if row.runs else "-",
            row.target,
            row.met,
        )
        for row in rows
    ]
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    out.append("  ".join("-" * width for width in widths))
    out += ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) for cells in lines]
    return "\n".join(line.rstrip() for line in out)
