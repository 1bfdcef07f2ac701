"""The benchmark's verdict: percentiles, medians, and how runs are judged against the targets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def load_report() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_report.py"
    spec = importlib.util.spec_from_file_location("bench_report", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_report", module)
    spec.loader.exec_module(module)
    return module


report = load_report()


def test_backend_follows_database_url() -> None:
    assert report.backend_of("postgres://postgres@127.0.0.1:5432/test") == "postgresql"
    assert report.backend_of("postgresql://u@h/db") == "postgresql"
    assert report.backend_of("sqlite:///var/x.sqlite3") == "sqlite"
    assert report.backend_of("") == "sqlite"


def test_percentiles_are_nearest_rank_in_ms() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = report.percentiles(values)
    assert (p["count"], p["p50"], p["p90"], p["p99"], p["max"]) == (100, 50.0, 90.0, 99.0, 100.0)
    assert report.percentiles([])["p99"] is None


def test_missing_samples_count_as_infinitely_slow() -> None:
    values = [0.001] * 98
    assert report.percentiles(values, missing=2)["p99"] is None  # p99 falls on a missing one
    assert report.percentiles(values, missing=2)["p50"] == 1.0
    assert report.percentiles(values, missing=2)["max"] is None
    assert report.percentiles([0.001] * 999, missing=1)["p99"] == 1.0
    assert report.percentiles([], missing=3)["p50"] is None


def test_median_ignores_runs_without_a_value() -> None:
    assert report.median([3.0, None, 1.0, 2.0]) == 2.0
    assert report.median([None, None]) is None
    assert report.median([]) is None


@pytest.mark.parametrize(
    ("runs", "op", "threshold", "met"),
    [
        ([0.9, 1.2, 0.8], "<=", 1.0, "yes"),  # one bad run does not fail a median
        ([1.1, 1.2, 0.8], "<=", 1.0, "no"),
        ([1300.0, 1100.0, 1250.0], ">=", 1200.0, "yes"),
        ([None, None, None], ">=", 1200.0, "no"),  # no numbers: not shown to be met
        ([], ">=", 1200.0, "not run"),
        ([5.0], None, None, "-"),
    ],
)
def test_rows_are_judged_by_the_median(runs: list[float | None], op: str | None, threshold: float | None,
                                       met: str) -> None:
    assert report.Row("m", runs, "ms", op, threshold).met == met


def test_a_configuration_not_run_says_so() -> None:
    row = report.Row("pg", [], "/s", ">=", 900.0, ran=False)
    assert row.met == "not run"
    assert row.target == "≥ 900/s"


def load_result(rate: float, *, ack_p99: float | None = 10.0, rest_p99: float | None = 8.0, refused: int = 0,
                refused_p99: float | None = None, missing_acks: int = 0, invariants: bool = True,
                web_ms: float = 0.9, worker_ms: float = 0.2, max_reply: float = 100.0, other: int = 0) -> dict[str, Any]:
    return {
        "accepted_orders_per_s": rate,
        "offered_orders_per_s": rate,
        "cpu_ms_per_order": {"web": web_ms, "worker": worker_ms, "redis": 0.1, "load generator": 0.5},
        "missing_after_grace": {"acks": missing_acks, "fills": 0},
        "seq_gaps": 0,
        "ws_disconnects": {},
        "latency_ms": {
            "submit_to_ack": {"p99": ack_p99},
            "rest_submit": {"p99": rest_p99},
            "rest_accepted": {"p99": rest_p99},
            "rest_refused": {"p99": refused_p99},
            "send_lag": {"p99": 0.5},
        },
        "refused": {"count": refused, "share": 0.5 if refused else 0.0},
        "other_failures": other,
        "max_reply_ms": max_reply,
        "invariants_ok": invariants,
        "machine_cpu_busy_pct": 97.0,
        "machine_cpu_others_pct": 1.0,
    }


def by_measure(rows: list[Any]) -> dict[str, Any]:
    return {row.measure.split(":")[-1].strip() if ":" in row.measure else row.measure: row for row in rows}


def test_suite_rows_on_sqlite() -> None:
    closed = [load_result(1300), load_result(1250, web_ms=1.5), load_result(1000)]
    open_runs = [load_result(800, ack_p99=12.0, rest_p99=9.0) for _ in range(3)]
    overload = [load_result(1250, ack_p99=30.0, rest_p99=20.0, refused=1000, refused_p99=40.0)]
    rows = report.rows_for_suite("sqlite", "embedded", closed, open_runs, overload, overload_rate=2500.0)
    rows_by = by_measure(rows)
    assert rows_by["web CPU per accepted order (closed loop)"].met == "yes"
    assert rows_by["closed loop orders/s, SQLite + embedded Redis"].median == 1250.0
    assert rows_by["closed loop orders/s, SQLite + embedded Redis"].met == "yes"
    assert rows_by["closed loop orders/s, PostgreSQL + local Redis"].met == "not run"
    assert rows_by["p99 submit → new_order_ack"].met == "yes"
    assert rows_by["p99 of 429/503/504 replies"].met == "yes"
    assert rows_by["accepted p99 REST reply ÷ same at 800/s"].median == pytest.approx(20.0 / 9.0)
    assert rows_by["accepted p99 submit → ack ÷ same at 800/s"].median == pytest.approx(2.5)
    assert rows_by["accepted p99 submit → ack ÷ same at 800/s"].met == "yes"
    assert rows_by["invariants at the end"].met == "yes"
    assert "not run" not in report.plain_table(rows).splitlines()[2]


def test_suite_rows_on_postgresql_judge_the_postgresql_row() -> None:
    closed = [load_result(950)]
    rows_by = by_measure(report.rows_for_suite("postgresql", "local", closed, [], [], overload_rate=None))
    assert rows_by["closed loop orders/s, PostgreSQL + local Redis"].met == "yes"
    assert rows_by["closed loop orders/s, SQLite + embedded Redis"].met == "not run"
    assert rows_by["slowest reply"].met == "not run"  # no overload rate: nothing to judge
    assert rows_by["p99 REST reply"].met == "not run"  # no open-loop runs


def test_overload_failures_are_not_met() -> None:
    open_runs = [load_result(800, ack_p99=10.0)]
    overload = [load_result(900, ack_p99=None, refused=10, refused_p99=80.0, missing_acks=3, invariants=False,
                            max_reply=6000.0, other=4)]
    rows_by = by_measure(report.rows_for_suite("sqlite", "embedded", [load_result(500)], open_runs, overload,
                                               overload_rate=1000.0))
    for measure in ("p99 of 429/503/504 replies", "replies neither accepted nor 429/503/504", "slowest reply",
                    "accepted p99 submit → ack ÷ same at 800/s", "accepted orders never acked",
                    "invariants at the end"):
        assert rows_by[measure].met == "no", measure


def test_an_overload_the_server_absorbs_needs_no_refusals() -> None:
    overload = [load_result(1000, refused=0, refused_p99=None)]
    rows_by = by_measure(report.rows_for_suite("sqlite", "embedded", [load_result(500)], [load_result(800)], overload,
                                               overload_rate=1000.0))
    assert rows_by["p99 of 429/503/504 replies"].met == "yes"


def test_a_run_without_numbers_counts_as_the_worst() -> None:
    row = report.Row("m", [1300.0, None, 1250.0], "/s", ">=", 1200.0)
    assert (row.median, row.met) == (1250.0, "yes")
    row = report.Row("m", [10.0, None, 30.0], "ms", "<=", 20.0)
    assert (row.median, row.met) == (30.0, "no")
    rows_by = by_measure(report.rows_for_suite("sqlite", "embedded", [None, load_result(1300), None], [], []))
    assert rows_by["closed loop orders/s, SQLite + embedded Redis"].runs == [None, 1300.0, None]
    assert rows_by["closed loop orders/s, SQLite + embedded Redis"].median is None
    assert rows_by["closed loop orders/s, SQLite + embedded Redis"].met == "no"


def test_caveats_name_what_spoils_the_numbers() -> None:
    busy = dict(load_result(400), machine_cpu_others_pct=45.0)
    notes = report.caveats([busy, None], [load_result(800)], [load_result(800)], overload_rate=700.0)
    assert any("other processes used up to 45 %" in note for note in notes)
    assert any("1 run(s) produced no numbers" in note for note in notes)
    assert any("below the open-loop rate" in note for note in notes)
    unlifted = dict(load_result(1300), limits_lifted_by="NOT LIFTED: set_role failed (timeout)")
    assert any("set_role failed" in note for note in report.caveats([unlifted], [], []))
    assert report.caveats([load_result(1300)], [load_result(800)], [load_result(2600)], overload_rate=2600.0) == []


def test_an_unsteady_machine_is_named_and_a_steady_one_is_not() -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "machine_probe.py"
    spec = importlib.util.spec_from_file_location("machine_probe", path)
    assert spec is not None and spec.loader is not None
    machine_probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(machine_probe)
    probe = machine_probe.steadiness(0.2)
    assert probe["rounds"] > 10 and probe["round_ms_median"] > 0
    runs = ([load_result(1300)], [load_result(800)], [load_result(2600)])
    unsteady = dict(probe, slow_rounds=20, slow_share=0.05, slowest_round_ms=30.0)
    steady = dict(probe, slow_rounds=0, slow_share=0.0)
    assert any("unsteady" in note for note in report.caveats(*runs, overload_rate=2600.0, machine=unsteady))
    assert report.caveats(*runs, overload_rate=2600.0, machine=steady) == []
