"""The worked examples of continuous matching, end to end over REST and WebSocket on the real
processes, checking every execution_report field on both sides, fees and positions."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field

import pytest
import requests
import websockets

from exchange.models import Instrument

pytestmark = pytest.mark.e2e

MAKER_FEE, TAKER_FEE = -0.02, 0.02  # market makers rest, a hedge fund takes
_names = itertools.count(1)


@dataclass
class Desk:
    """A team with a WebSocket that records every frame (and checks seq has no gap)."""

    stack: object
    key: str
    ws: object = None
    frames: list[dict] = field(default_factory=list)
    reader: asyncio.Task | None = None

    @classmethod
    async def open(cls, stack, role: str) -> Desk:
        key = await asyncio.to_thread(stack.register, f"{role} desk {next(_names)}", role)
        desk = cls(stack, key)
        desk.ws = await websockets.connect(f"{stack.ws_url}?api_key={key}")
        desk.reader = asyncio.create_task(desk._read())
        await desk.wait(lambda f: f["type"] == "position_snapshot")
        return desk

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            assert frame["seq"] == len(self.frames) + 1, "seq must rise by exactly one"
            self.frames.append(frame)

    async def wait(self, predicate, count: int = 1, timeout: float = 15) -> list[dict]:
        async def enough() -> list[dict]:
            while len(matching := [f for f in self.frames if predicate(f)]) < count:
                await asyncio.sleep(0.02)
            return matching

        return await asyncio.wait_for(enough(), timeout)

    def about(self, order_id: str, kind: str):
        return lambda f: f["type"] == kind and f["data"].get("order_id") == order_id

    async def submit(self, **order) -> str:
        def post():
            return requests.post(
                self.stack.base_url + "/orders", headers={"X-API-Key": self.key}, json=order, timeout=10
            )

        reply = (await asyncio.to_thread(post)).json()
        assert reply["status"] == "accepted", reply
        await self.wait(self.about(reply["order_id"], "new_order_ack"))
        return reply["order_id"]

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


def listed(symbol: str) -> str:
    underlying, strike, kind = symbol.split("_")
    Instrument.objects.get_or_create(
        symbol=symbol, defaults={"underlying": underlying, "option_type": kind.lower(), "strike": int(strike)}
    )
    return symbol


async def run(
    stack,
    symbol: str,
    book: list[tuple[str, float, int]],
    incoming: dict,
    expected: list[tuple[int, int, float]],
    leftover: str | None = None,
) -> None:
    """Rest ``book`` (side, price, quantity; one team each), send ``incoming`` from a hedge fund,
    and check the fills: (index of the resting order, quantity, price), in order."""
    await asyncio.to_thread(listed, symbol)
    makers = [await Desk.open(stack, "market_maker") for _ in book]
    resting = [
        await desk.submit(
            instrument_id=symbol,
            order_type="limit",
            side=side,
            price=price,
            quantity=quantity,
            client_order_id=f"rest-{n}",
        )
        for n, (desk, (side, price, quantity)) in enumerate(zip(makers, book, strict=True))
    ]
    taker = await Desk.open(stack, "hedge_fund")
    order = {"instrument_id": symbol, "client_order_id": "incoming", **incoming}
    taker_order = await taker.submit(**order)
    reports = await taker.wait(taker.about(taker_order, "execution_report"), len(expected))
    side = incoming["side"]
    sign = 1 if side == "buy" else -1
    left = incoming["quantity"]
    position = 0
    maker_filled = [0] * len(book)
    for report, (index, quantity, price) in zip(reports, expected, strict=True):
        left -= quantity
        position += sign * quantity
        data = report["data"]
        assert data == {
            "order_id": taker_order,
            "client_order_id": "incoming",
            "trade_id": data["trade_id"],
            "instrument_id": symbol,
            "side": side,
            "executed_quantity": quantity,
            "executed_price": price,
            "remaining_quantity": left,
            "order_status": "filled" if left == 0 else "partially_filled",
            "liquidity_type": "taker",
            "fees": pytest.approx(TAKER_FEE * quantity),
            "position": position,
        }
        desk, (maker_side, _, maker_quantity) = makers[index], book[index]
        maker_filled[index] += quantity
        [maker_report] = await desk.wait(
            lambda f, t=data["trade_id"]: f["type"] == "execution_report" and f["data"]["trade_id"] == t
        )
        remaining = maker_quantity - maker_filled[index]
        assert maker_report["data"] == {
            "order_id": resting[index],
            "client_order_id": f"rest-{index}",
            "trade_id": data["trade_id"],
            "instrument_id": symbol,
            "side": maker_side,
            "executed_quantity": quantity,
            "executed_price": price,
            "remaining_quantity": remaining,
            "order_status": "filled" if remaining == 0 else "partially_filled",
            "liquidity_type": "maker",
            "fees": pytest.approx(MAKER_FEE * quantity),
            "position": -sign * maker_filled[index],
        }
    if leftover == "cancelled":
        [cancel] = await taker.wait(taker.about(taker_order, "cancel_ack"))
        assert cancel["data"]["cancelled_quantity"] == left and cancel["data"]["reason"] == "ioc_remainder"
    final = await asyncio.to_thread(
        lambda: requests.get(
            f"{stack.base_url}/orders/{taker_order}", headers={"X-API-Key": taker.key}, timeout=10
        ).json()
    )
    assert final["filled_quantity"] == incoming["quantity"] - left
    assert final["remaining_quantity"] == (left if leftover == "rests" else 0)
    positions = await asyncio.to_thread(
        lambda: requests.get(f"{stack.base_url}/positions", headers={"X-API-Key": taker.key}, timeout=10).json()
    )
    assert positions["positions"].get(symbol, 0) == position
    for desk in (*makers, taker):
        await desk.close()


BOOK = [
    ("sell", 100.00, 20),
    ("sell", 100.50, 15),
    ("sell", 101.00, 10),
    ("buy", 99.50, 15),
    ("buy", 99.00, 20),
    ("buy", 98.50, 10),
]


async def test_market_buy_15(stack) -> None:
    await run(stack, "SPX_4100_CALL", BOOK, {"order_type": "market", "side": "buy", "quantity": 15}, [(0, 15, 100.0)])


async def test_market_sell_10(stack) -> None:
    await run(stack, "SPX_4150_CALL", BOOK, {"order_type": "market", "side": "sell", "quantity": 10}, [(3, 10, 99.5)])


async def test_limit_buy_30_at_100_50_sweeps_two_levels(stack) -> None:
    await run(
        stack,
        "SPX_4200_CALL",
        BOOK,
        {"order_type": "limit", "side": "buy", "quantity": 30, "price": 100.5},
        [(0, 20, 100.0), (1, 10, 100.5)],
    )


async def test_limit_buy_5_at_99_75_rests_inside_the_spread(stack) -> None:
    await run(
        stack,
        "SPX_4250_CALL",
        BOOK,
        {"order_type": "limit", "side": "buy", "quantity": 5, "price": 99.75},
        [],
        leftover="rests",
    )
    book = requests.get(
        stack.base_url + "/orderbook/SPX_4250_CALL?depth=1",
        timeout=10,
        headers={"X-API-Key": stack.register("Reader", "retail")},
    ).json()
    assert book["bids"] == [{"price": 99.75, "quantity": 5}] and book["asks"] == [{"price": 100.0, "quantity": 20}]


async def test_limit_buy_25_at_101_50_gets_price_improvement(stack) -> None:
    asks = [("sell", 100.0, 10), ("sell", 101.0, 10), ("sell", 102.0, 10)]
    await run(
        stack,
        "SPX_4300_CALL",
        asks,
        {"order_type": "limit", "side": "buy", "quantity": 25, "price": 101.5},
        [(0, 10, 100.0), (1, 10, 101.0)],
        leftover="rests",
    )


async def test_three_equal_asks_fill_in_arrival_order(stack) -> None:
    asks = [("sell", 100.0, 10)] * 3
    await run(
        stack,
        "SPX_4350_CALL",
        asks,
        {"order_type": "market", "side": "buy", "quantity": 25},
        [(0, 10, 100.0), (1, 10, 100.0), (2, 5, 100.0)],
    )


async def test_market_order_larger_than_the_book_cancels_its_remainder(stack) -> None:
    asks = [("sell", 100.0, 5)]
    await run(
        stack,
        "SPX_4050_CALL",
        asks,
        {"order_type": "market", "side": "buy", "quantity": 8},
        [(0, 5, 100.0)],
        leftover="cancelled",
    )
