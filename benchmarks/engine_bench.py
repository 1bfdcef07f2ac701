"""Matching-engine benchmark: throughput, per-command latency and memory on one core.

    .venv/bin/python benchmarks/engine_bench.py [--commands N | --quick] [--out PATH]

A seeded stream is generated first (about 60% passive limit orders a few ticks around a moving
mid, 10% marketable orders - ioc and market, crossing gtc limits, fok - and 30% cancels of live
orders; 8 instruments, 20 teams), then replayed on a fresh engine with
``time.perf_counter_ns`` around every call, then replayed once more without per-command timers
for the raw throughput. Memory is measured in a separate process that rests 1,000,000
non-crossing orders and reports its peak resident set size.

The cyclic garbage collector stays on (``--disable-gc`` turns it off to show what it costs);
only the benchmark's own command list is frozen out of its reach with ``gc.freeze()``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange.engine import (  # noqa: E402
    CancelOrder,
    Fill,
    MatchingEngine,
    NewOrder,
    OrderCancelled,
    OrderRejected,
    OrderStatus,
    OrderType,
    Phase,
    Side,
    TimeInForce,
)

INSTRUMENTS = [f"SPX_{4300 + 50 * i}_CALL" for i in range(8)]
TEAMS = 20
START_MID = 10_000
PASSIVE, MARKETABLE, CANCEL = 0, 1, 2
KIND_NAMES = {PASSIVE: "passive_limit", MARKETABLE: "marketable", CANCEL: "cancel"}
Command = NewOrder | CancelOrder


def _counter() -> Callable[[], int]:
    return itertools.count(1).__next__


def _progress(label: str, done: int, total: int) -> None:
    step = max(total // 10, 1)
    if done % step == 0:
        print(f"  {label} {100 * done // total}%", file=sys.stderr, flush=True)


def generate(commands: int, seed: int) -> tuple[list[Command], list[int], int]:
    """The command stream, each command's kind and the number of fills it makes, built against
    a live engine so that cancels name orders that are still resting."""
    rng = random.Random(seed)
    engine = MatchingEngine(next_trade_id=_counter(), phase=Phase.CONTINUOUS)
    mids = dict.fromkeys(INSTRUMENTS, START_MID)
    live: list[tuple[int, int]] = []  # (order_id, team_id) of resting orders
    position: dict[int, int] = {}  # order_id -> index in live
    next_order_id = 1
    stream: list[Command] = []
    kinds: list[int] = []
    fills = 0

    def forget(order_id: int) -> None:
        i = position.pop(order_id, None)
        if i is None:
            return
        last = live.pop()
        if last[0] != order_id:
            live[i] = last
            position[last[0]] = i

    for n in range(1, commands + 1):
        _progress("generating", n, commands)
        roll = rng.random()
        if roll < 0.30 and live:
            order_id, team_id = live[rng.randrange(len(live))]
            cancel = CancelOrder(order_id, team_id)
            stream.append(cancel)
            kinds.append(CANCEL)
            for event in engine.cancel(cancel):
                if isinstance(event, OrderCancelled):
                    forget(event.order_id)
            continue

        instrument = rng.choice(INSTRUMENTS)
        if rng.random() < 0.1:
            mids[instrument] += rng.choice((-1, 1))
        mid = mids[instrument]
        top = engine.top_of_book(instrument)
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        team_id = rng.randrange(1, TEAMS + 1)
        order_id = next_order_id
        next_order_id += 1
        price: int | None
        if roll < 0.90:  # passive limit order a few ticks from the mid, never crossing
            offset = 1 + min(int(rng.expovariate(1 / 6)), 120)
            quantity = rng.randint(1, 50)
            if side is Side.BUY:
                price = mid - offset
                if top.ask is not None:
                    price = min(price, top.ask - 1)
            else:
                price = mid + offset
                if top.bid is not None:
                    price = max(price, top.bid + 1)
            price = max(price, 1)
            order_type = OrderType.LIMIT
            time_in_force = TimeInForce.DAY if rng.random() < 0.2 else TimeInForce.GTC
            kinds.append(PASSIVE)
        else:  # marketable: limit ioc, market, crossing gtc limit, fok
            quantity = rng.randint(1, 120)
            far = top.ask if side is Side.BUY else top.bid
            if far is None:
                far = mid
            through = rng.randint(0, 3)
            price = far + through if side is Side.BUY else max(far - through, 1)
            kind = rng.random()
            if kind < 0.4:
                order_type, time_in_force = OrderType.LIMIT, TimeInForce.IOC
            elif kind < 0.7:
                order_type, time_in_force, price = OrderType.MARKET, TimeInForce.IOC, None
            elif kind < 0.9:
                order_type, time_in_force = OrderType.LIMIT, TimeInForce.GTC
            else:
                order_type, time_in_force = OrderType.LIMIT, TimeInForce.FOK
            kinds.append(MARKETABLE)
        new = NewOrder(order_id, team_id, instrument, side, order_type, time_in_force, price, quantity, f"c{order_id}")
        stream.append(new)
        finished = False
        for event in engine.submit(new):
            if isinstance(event, Fill):
                fills += 1
                if event.maker.status is OrderStatus.FILLED:
                    forget(event.maker.order_id)
                if event.taker.status is OrderStatus.FILLED:
                    finished = True
            elif isinstance(event, OrderCancelled | OrderRejected):
                finished = True
        if not finished:
            position[order_id] = len(live)
            live.append((order_id, team_id))
    return stream, kinds, fills


def replay_timed(stream: list[Command]) -> tuple[MatchingEngine, list[int], int, int]:
    """Replay with a timer around each call: (engine, latencies in ns, wall ns, events)."""
    engine = MatchingEngine(next_trade_id=_counter(), phase=Phase.CONTINUOUS)
    submit = engine.submit
    cancel = engine.cancel
    clock = time.perf_counter_ns
    total = len(stream)
    marks = {total * k // 10 for k in range(1, 11)}
    latencies = [0] * total
    events = 0
    started = clock()
    for i, command in enumerate(stream):
        if type(command) is NewOrder:
            t0 = clock()
            out = submit(command)
            t1 = clock()
        else:
            t0 = clock()
            out = cancel(command)
            t1 = clock()
        latencies[i] = t1 - t0
        events += len(out)
        if i + 1 in marks:
            print(f"  timed replay {100 * (i + 1) // total}%", file=sys.stderr, flush=True)
    return engine, latencies, clock() - started, events


def replay_untimed(stream: list[Command]) -> int:
    """Replay as fast as possible; return the wall time in ns."""
    engine = MatchingEngine(next_trade_id=_counter(), phase=Phase.CONTINUOUS)
    submit = engine.submit
    cancel = engine.cancel
    clock = time.perf_counter_ns
    started = clock()
    for command in stream:
        if type(command) is NewOrder:
            submit(command)
        else:
            cancel(command)
    return clock() - started


def percentiles_us(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000

    return {
        "p50": at(0.50),
        "p99": at(0.99),
        "p99.9": at(0.999),
        "max": ordered[-1] / 1000,
        "mean": round(sum(ordered) / len(ordered) / 1000, 3),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB.

    ``VmHWM`` belongs to the process image, so unlike ``ru_maxrss`` (which Linux carries over
    from the parent across fork and exec) it does not count the parent's memory.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(orders: int) -> None:
    """Rest ``orders`` non-crossing orders; print RSS figures (MB) as JSON."""
    baseline = peak_rss_mb()
    engine = MatchingEngine(next_trade_id=_counter(), phase=Phase.CONTINUOUS)
    submit = engine.submit
    for i in range(1, orders + 1):
        distance = 1 + (i * 7919) % 400
        side, price = (Side.BUY, START_MID - distance) if i % 2 else (Side.SELL, START_MID + distance)
        submit(
            NewOrder(
                i,
                1 + i % TEAMS,
                INSTRUMENTS[i % len(INSTRUMENTS)],
                side,
                OrderType.LIMIT,
                TimeInForce.GTC,
                price,
                1 + i % 50,
                f"c{i}",
            )
        )
    peak = peak_rss_mb()
    print(
        json.dumps(
            {
                "resting_orders": engine.resting_order_count(),
                "baseline_rss_mb": round(baseline, 1),
                "peak_rss_mb": round(peak, 1),
                "engine_mb": round(peak - baseline, 1),
            }
        )
    )


def measure_memory(orders: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(orders)], check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 commands and 100,000 resting orders")
    parser.add_argument("--seed", type=int, default=20240315)
    parser.add_argument("--memory-orders", type=int, default=1_000_000)
    parser.add_argument("--disable-gc", action="store_true", help="turn the cyclic garbage collector off")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/engine.json"))
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    commands = 100_000 if args.quick else args.commands
    memory_orders = 100_000 if args.quick else args.memory_orders

    print(f"generating {commands:,} commands (seed {args.seed})", file=sys.stderr, flush=True)
    stream, kinds, fills = generate(commands, args.seed)
    # The stream is the benchmark's data, not the engine's: keep the collector from walking it.
    gc.collect()
    gc.freeze()
    if args.disable_gc:
        gc.disable()

    engine, latencies, wall_timed, events = replay_timed(stream)
    engine.check_invariants()
    resting_at_end = engine.resting_order_count()
    del engine
    gc.collect()

    print("untimed replay", file=sys.stderr, flush=True)
    wall_untimed = replay_untimed(stream)

    print(f"memory: {memory_orders:,} resting orders in a fresh process", file=sys.stderr, flush=True)
    memory = measure_memory(memory_orders)

    by_kind = {
        name: percentiles_us([latency for latency, k in zip(latencies, kinds, strict=True) if k == kind])
        for kind, name in KIND_NAMES.items()
        if kind in kinds
    }
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commands": commands,
        "seed": args.seed,
        "mix": {name: kinds.count(kind) for kind, name in KIND_NAMES.items()},
        "events": events,
        "fills": fills,
        "resting_orders_at_end": resting_at_end,
        "gc": "disabled" if args.disable_gc else "enabled",
        "commands_per_s": round(commands / (wall_untimed / 1e9)),
        "commands_per_s_with_timers": round(commands / (wall_timed / 1e9)),
        "latency_us": percentiles_us(latencies),
        "latency_us_by_kind": by_kind,
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_us"]
    print(
        f"{commands:,} commands: {result['commands_per_s']:,} commands/s "
        f"({result['commands_per_s_with_timers']:,}/s with per-command timers)\n"
        f"latency per command: p50 {lat['p50']:.1f} us, p99 {lat['p99']:.1f} us, "
        f"p99.9 {lat['p99.9']:.1f} us, max {lat['max']:.0f} us\n"
        f"memory with {memory['resting_orders']:,} resting orders: peak RSS {memory['peak_rss_mb']} MB "
        f"({memory['engine_mb']} MB above the bare interpreter)\n"
        f"written to {args.out}"
    )


if __name__ == "__main__":
    main()
