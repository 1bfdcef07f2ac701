"""How steady the machine's CPU is, with nothing of ours running.

    python benchmarks/machine_probe.py [--seconds 10]

It runs one fixed piece of pure-Python work (about 2 ms of CPU) over and over and times each
round by the thread's own CPU clock. On a steady machine every round costs about the same; a
round that costs 5× the median or more ran on a CPU that was slowed down under it (another
tenant of the host, the hypervisor), which no scheduling inside this machine explains: the
thread's CPU clock counts only time it ran. Such moments stall every process at once and show
in the top percentiles of any latency measured here. The suite (``benchmarks/suite.py``) runs
it before its loads and reports it next to them.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

SLOW_FACTOR = 5.0


def _work() -> int:
    total = 0
    for i in range(20_000):
        total += i
    return total


def steadiness(seconds: float = 10.0) -> dict[str, Any]:
    """Rounds of fixed work for ``seconds``; the rounds that cost ``SLOW_FACTOR``× the median."""
    rounds: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.thread_time()
        _work()
        rounds.append(time.thread_time() - started)
    ordered = sorted(rounds)
    median = ordered[len(ordered) // 2]
    slow = [r for r in rounds if r >= SLOW_FACTOR * median]
    return {
        "seconds": seconds,
        "round_ms_median": round(1000 * median, 3),
        "rounds": len(rounds),
        "slow_rounds": len(slow),
        "slow_ms_total": round(1000 * sum(slow), 1),
        "slowest_round_ms": round(1000 * ordered[-1], 1),
        "slow_share": round(sum(slow) / max(sum(rounds), 1e-9), 4),
    }


def describe(probe: dict[str, Any]) -> str:
    return (
        f"{probe['slow_rounds']} of {probe['rounds']} rounds of a {probe['round_ms_median']:.1f} ms task ran "
        f"{SLOW_FACTOR:g}× slower or worse in {probe['seconds']:g} s ({probe['slow_ms_total']:,.0f} ms in all, "
        f"slowest {probe['slowest_round_ms']:.0f} ms; {100 * probe['slow_share']:.1f} % of the CPU time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    probe = steadiness(args.seconds)
    print(json.dumps(probe, indent=2) if args.json else describe(probe))


if __name__ == "__main__":
    main()
