"""The seed's order flow against the real processes: REST in, WebSocket out, both sides."""

from __future__ import annotations

import asyncio
import json
import threading
import time  # the seed guide's bot uses time without importing it

import pytest
import requests
import websockets

pytestmark = pytest.mark.e2e


async def next_private(ws, last_seq: int) -> tuple[dict, int]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=15))
        assert frame["seq"] == last_seq + 1, "seq must rise by exactly one"
        last_seq = frame["seq"]
        if frame["type"] not in ("market_data", "trade"):
            return frame, last_seq


async def test_resting_buy_and_crossing_sell(stack) -> None:
    maker_key = stack.register("Makers", "market_maker")
    taker_key = stack.register("Takers", "hedge_fund")
    async with (
        websockets.connect(f"{stack.ws_url}?api_key={maker_key}") as maker_ws,
        websockets.connect(f"{stack.ws_url}?api_key={taker_key}") as taker_ws,
    ):
        snapshots = [json.loads(await ws.recv()) for ws in (maker_ws, taker_ws)]
        assert [(s["seq"], s["type"]) for s in snapshots] == [(1, "position_snapshot")] * 2
        order = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "quantity": 10, "price": 100.0}
        buy = requests.post(
            stack.base_url + "/orders",
            headers={"X-API-Key": maker_key},
            json=dict(order, side="buy", client_order_id="MY_ORDER_001"),
            timeout=10,
        ).json()
        assert buy["status"] == "accepted"
        ack, maker_seq = await next_private(maker_ws, 1)
        assert ack["type"] == "new_order_ack", str(ack["data"])
        assert (ack["seq"], ack["type"], ack["data"]["order_id"]) == (2, "new_order_ack", buy["order_id"])

        sell = requests.post(
            stack.base_url + "/orders", headers={"X-API-Key": taker_key}, json=dict(order, side="sell"), timeout=10
        ).json()
        assert sell["status"] == "accepted"
        taker_ack, taker_seq = await next_private(taker_ws, 1)
        # the taker saw the maker's quote on the public tape first, so its ack comes after that
        assert taker_ack["type"] == "new_order_ack" and taker_ack["data"]["order_id"] == sell["order_id"]
        taker_fill, _ = await next_private(taker_ws, taker_seq)
        maker_fill, _ = await next_private(maker_ws, maker_seq)

    assert maker_fill["type"] == taker_fill["type"] == "execution_report"
    assert maker_fill["data"]["trade_id"] == taker_fill["data"]["trade_id"]
    assert maker_fill["data"] | {"trade_id": None} == {
        "order_id": buy["order_id"],
        "client_order_id": "MY_ORDER_001",
        "trade_id": None,
        "instrument_id": "SPX_4500_CALL",
        "side": "buy",
        "executed_quantity": 10,
        "executed_price": 100.0,
        "remaining_quantity": 0,
        "order_status": "filled",
        "liquidity_type": "maker",
        "fees": -0.2,
        "position": 10,
    }
    assert (taker_fill["data"]["liquidity_type"], taker_fill["data"]["fees"], taker_fill["data"]["position"]) == (
        "taker",
        0.2,
        -10,
    )
    fills = requests.get(stack.base_url + "/fills", headers={"X-API-Key": maker_key}, timeout=10).json()["fills"]
    assert [(f["trade_id"], f["quantity"], f["position"]) for f in fills] == [(maker_fill["data"]["trade_id"], 10, 10)]


# --- the seed guide's example bot, as users have it (host and port pointed at the test server) ---


# fmt: off
class TradingBot:
    def __init__(self, api_key):
        self.api_key = api_key
        self.base_url = "http://localhost:8000"
        self.ws_uri = f"ws://localhost:8000/ws?api_key={api_key}"
        self.pending_orders = {}

    async def run(self):
        # Connect WebSocket for notifications
        async with websockets.connect(self.ws_uri) as websocket:
            # Handle messages in background
            ws_task = asyncio.create_task(self.handle_websocket(websocket))  # noqa: F841

            # Submit order via REST
            order_id = self.submit_order()

            # Wait for execution via WebSocket
            await self.wait_for_fill(order_id)

    def submit_order(self):
        """Submit order via REST API."""
        response = requests.post(
            f"{self.base_url}/orders",
            headers={"X-API-Key": self.api_key},
            json={
                "instrument_id": "SPX_4500_CALL",
                "order_type": "limit",
                "side": "buy",
                "quantity": 10,
                "price": 100.0,
                "client_order_id": f"BOT_{time.time()}"
            }
        )
        data = response.json()
        self.pending_orders[data["order_id"]] = "submitted"
        return data["order_id"]

    async def handle_websocket(self, websocket):
        """Process WebSocket messages."""
        async for message in websocket:
            msg = json.loads(message)

            if msg["type"] == "new_order_ack":
                order_id = msg["data"]["order_id"]
                if order_id in self.pending_orders:
                    self.pending_orders[order_id] = "acknowledged"
                    print(f"Order {order_id} acknowledged by exchange")

            elif msg["type"] == "execution_report":
                order_id = msg["data"]["order_id"]
                if order_id in self.pending_orders:
                    self.pending_orders[order_id] = "filled"
                    print(f"Order {order_id} filled: {msg['data']['executed_quantity']} @ {msg['data']['executed_price']}")

    async def wait_for_fill(self, order_id):
        """Wait for order to be filled."""
        while self.pending_orders.get(order_id) != "filled":
            await asyncio.sleep(0.1)
# fmt: on


async def test_the_seed_guides_bot_gets_its_ack_and_fill(stack, capsys) -> None:
    bot = TradingBot(stack.register("Guide Bot", "hedge_fund"))
    bot.base_url = stack.base_url
    bot.ws_uri = f"{stack.ws_url}?api_key={bot.api_key}"
    counterparty = stack.register("Counterparty", "market_maker")

    def cross_when_acknowledged() -> None:
        deadline = time.monotonic() + 20
        while "acknowledged" not in bot.pending_orders.values() and time.monotonic() < deadline:
            time.sleep(0.05)
        requests.post(
            stack.base_url + "/orders",
            headers={"X-API-Key": counterparty},
            timeout=10,
            json={
                "instrument_id": "SPX_4500_CALL",
                "order_type": "limit",
                "side": "sell",
                "quantity": 10,
                "price": 100.0,
            },
        )

    crosser = threading.Thread(target=cross_when_acknowledged)
    crosser.start()
    await asyncio.wait_for(bot.run(), timeout=30)
    crosser.join()
    [order_id] = bot.pending_orders
    out = capsys.readouterr().out
    assert f"Order {order_id} acknowledged by exchange" in out
    assert f"Order {order_id} filled: 10 @ 100.0" in out
