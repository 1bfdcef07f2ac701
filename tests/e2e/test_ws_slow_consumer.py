"""A client that stops reading, against the real web server: it is closed with 4008 (or reset if
it never reads again) while a teammate's connection gets every frame, on time and without a gap.

The flood is published from this process with the matching worker's own ``Publisher`` to the
stack's Redis: one layer message per batch, numbered in the publisher's epoch.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections import deque
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from accounts.models import Team
from exchange import clock
from exchange.matching.publish import Publisher
from exchange.matching.queue import WorkerLink
from exchange.matching.worker import Batch, frame
from infra.redis_clients import sync_client

pytestmark = pytest.mark.e2e

SEND_TIMEOUT_S = 1.0
CLOSE_TIMEOUT_S = 8.0
FRAMES = 4000
PER_BATCH = 100
AHEAD = 500  # frames published and not yet read by the reader, at most
PAD = "x" * 2000  # 8 MB in all: more than the kernel buffers between server and client
STAMP = "2024-01-15T10:00:00.000000Z"


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read by the web process the stack starts (the stack copies this environment)."""
    monkeypatch.setenv("EXCHANGE_WS_SEND_TIMEOUT_S", str(SEND_TIMEOUT_S))
    monkeypatch.setenv("EXCHANGE_WS_CLOSE_TIMEOUT_S", str(CLOSE_TIMEOUT_S))


class RawClient:
    """A WebSocket client on a plain socket, so the test alone decides when bytes are read."""

    def __init__(self, url: str, receive_buffer: int | None = None) -> None:
        uri = parse_uri(url)
        self.sock = socket.socket()
        if receive_buffer:  # set before connecting, so the TCP window stays this small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect((uri.host, uri.port))
        self.protocol = ClientProtocol(uri, max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self.frames: deque[dict[str, Any]] = deque()
        self.close: tuple[int, str] | None = None
        self.flush()

    def flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def next_frame(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON frame, or None once the server has closed the connection."""
        self.sock.settimeout(timeout)
        while not self.frames and self.close is None:
            data = self.sock.recv(1 << 16)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.flush()  # answers pings and the closing handshake
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101
                elif event.opcode == Opcode.TEXT:
                    self.frames.append(json.loads(event.data))
                elif event.opcode == Opcode.CLOSE:
                    rcvd = self.protocol.close_rcvd
                    self.close = (rcvd.code, rcvd.reason) if rcvd else (1005, "")
            if not data and self.close is None:
                self.close = (1006, "")
        return self.frames.popleft() if self.frames else None

    def reset_by_peer(self) -> bool:
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET


class Flood:
    """Signals for one team, ``count`` frames per layer message, as the worker publishes a batch."""

    def __init__(self, team_pk: int) -> None:
        self.team_pk = team_pk
        self.publisher = Publisher(WorkerLink(sync_client()), "slow-consumer-test")

    def publish(self, first: int, count: int) -> None:
        batch = Batch(now=clock.now(), stamp=STAMP)
        batch.private[self.team_pk] = [
            frame("signal", STAMP, {"signal_type": "load", "n": n, "pad": PAD}) for n in range(first, first + count)
        ]
        self.publisher.send(batch, finished_inflight=False)


def test_a_client_that_stops_reading_is_closed_while_its_teammate_gets_everything(stack) -> None:
    key = stack.register("Slowpokes", "market_maker")
    flood = Flood(Team.objects.get(name="Slowpokes").pk)
    url = f"{stack.ws_url}?api_key={key}"
    reader, slow, stuck = RawClient(url), RawClient(url, receive_buffer=4096), RawClient(url, receive_buffer=4096)
    for client in (reader, slow, stuck):
        first = client.next_frame(10)
        assert first is not None and (first["seq"], first["type"]) == (1, "position_snapshot")

    received: list[dict[str, Any]] = []

    def read_flood() -> None:
        while (frame := reader.next_frame(30)) is not None:
            received.append(frame)
            if frame["data"]["n"] == FRAMES - 1:
                return

    # From here on `slow` and `stuck` read nothing. The reader keeps up: the flood is published no
    # further ahead of it than half a connection's backlog (EXCHANGE_WS_MAX_BACKLOG, 1,000 frames).
    thread = threading.Thread(target=read_flood)
    thread.start()
    started = time.monotonic()
    for first_n in range(0, FRAMES, PER_BATCH):
        deadline = time.monotonic() + 30
        while first_n - len(received) > AHEAD:
            assert thread.is_alive() and time.monotonic() < deadline, f"the reader stopped at {len(received)}"
            time.sleep(0.005)
        flood.publish(first_n, PER_BATCH)
    thread.join(60)
    flood_s = time.monotonic() - started
    assert [f["seq"] for f in received] == list(range(2, FRAMES + 2)), "the reader must see every frame, in order"
    assert [f["data"]["n"] for f in received] == list(range(FRAMES))

    # The stalled connections cost the reader no latency.
    for n in range(FRAMES, FRAMES + 5):
        sent = time.monotonic()
        flood.publish(n, 1)
        frame = reader.next_frame(5)
        assert frame is not None and frame["data"]["n"] == n
        assert time.monotonic() - sent < 0.5

    # `slow` reads again while the server waits to hand over its close: every frame it gets is in
    # order from seq 2, nothing is skipped, and the last thing is the 4008.
    time.sleep(SEND_TIMEOUT_S + 0.5)
    frames = []
    while (frame := slow.next_frame(10)) is not None:
        frames.append(frame)
    assert slow.close == (4008, "slow consumer"), (slow.close, len(frames), flood_s)
    assert [f["seq"] for f in frames] == list(range(2, len(frames) + 2))
    assert [f["data"]["n"] for f in frames] == list(range(len(frames)))
    assert len(frames) < FRAMES

    # `stuck` never reads: the server drops it with a reset instead of holding it open.
    deadline = time.monotonic() + SEND_TIMEOUT_S + CLOSE_TIMEOUT_S + 10
    while not stuck.reset_by_peer():
        assert time.monotonic() < deadline, "the server never dropped the stuck connection"
        time.sleep(0.2)
    assert time.monotonic() - started > SEND_TIMEOUT_S

    # The team's slots were given back: five new connections fit again.
    reader.sock.close()
    time.sleep(0.5)
    fresh = [RawClient(url) for _ in range(5)]
    for client in fresh:
        frame = client.next_frame(10)
        assert frame is not None and frame["type"] == "position_snapshot", client.close
        client.sock.close()
    assert "Exception in ASGI application" not in stack.logs("web")
