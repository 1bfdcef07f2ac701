"""Messages to the channel layer, sent only after the facts they announce have committed.

Private messages go to the group ``team.<pk>`` (every connection of that team); public ones to
``market``. Messages are batched per group: one layer call carries many frames.

Every layer message also carries ``group_seq``, a per-group number from a Redis counter, and
``sent_at`` (epoch seconds). ``channels_redis`` drops messages silently when a channel is full or
a message is too old; the consumer uses ``group_seq`` to see such a gap and ``sent_at`` to see a
connection falling behind, and closes the connection (4008) rather than skip frames.

Usage::

    outbox = Outbox()
    outbox.to_team(team.pk, "new_order_ack", data, timestamp)
    outbox.to_market("trade", data, timestamp)
    outbox.to_market("event", {"event_type": "news", "headline": "..."}, timestamp)
    outbox.send_on_commit()

``publish_event`` sends a single public ``event`` frame (phase changes, halts) right away.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from exchange import clock
from exchange.connections import redis_for

log = logging.getLogger(__name__)

class _Publisher:
    """One long-lived event loop per process that sends outboxes one after another.

    The loop keeps the channel layer's Redis connections open between batches, and a queue
    keeps outboxes in the order they were handed over while the caller (the matching worker)
    goes on with its next batch instead of waiting for Redis.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[Outbox] = asyncio.Queue()
        threading.Thread(target=self._run, name="publisher", daemon=True).start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        while True:
            outbox = await self.queue.get()
            try:
                await outbox._send_all()
            except Exception:  # the database is the record; clients resync from it
                log.exception("publishing to the channel layer failed")

    def submit(self, outbox: Outbox) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, outbox)


_publisher: _Publisher | None = None
_publisher_lock = threading.Lock()


def _publishing() -> _Publisher:
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            _publisher = _Publisher()
        return _publisher


MARKET_GROUP = "market"


def team_group(team_pk: int) -> str:
    return f"team.{team_pk}"


def group_seq_key(layer: Any, group: str) -> str:
    return f"{layer.prefix}:ws:group_seq:{group}"


async def next_group_numbers(layer: Any, groups: list[str]) -> dict[str, int]:
    """One ``INCR`` per group, pipelined: one round trip per Redis host (one host normally)."""
    if not hasattr(layer, "consistent_hash"):  # a layer without Redis: no numbering, no gap checks
        return {}
    by_host: dict[int, list[str]] = defaultdict(list)
    for group in groups:
        by_host[layer.consistent_hash(group)].append(group)
    numbers: dict[str, int] = {}
    for names in by_host.values():
        pipe = redis_for(layer, names[0]).pipeline(transaction=False)
        for name in names:
            pipe.incr(group_seq_key(layer, name))
        numbers.update(zip(names, await pipe.execute(), strict=True))
    return numbers


class Outbox:
    """Frames collected during a transaction, grouped by destination."""

    def __init__(self) -> None:
        self.private: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.public: list[dict[str, Any]] = []

    def to_team(self, team_pk: int, msg_type: str, data: dict[str, Any], timestamp: str) -> None:
        self.private[team_pk].append({"type": msg_type, "data": data, "timestamp": timestamp})

    def to_market(self, msg_type: str, data: dict[str, Any], timestamp: str) -> None:
        self.public.append({"type": msg_type, "data": data, "timestamp": timestamp})

    def __bool__(self) -> bool:
        return bool(self.private or self.public)

    def send_on_commit(self) -> None:
        if self:
            transaction.on_commit(self.send)

    def send(self) -> None:
        """Publish from synchronous code (the matching worker, a view's on-commit hook), in the
        background and in order (see ``_Publisher``)."""
        if self:
            _publishing().submit(self)

    async def _send_all(self) -> None:
        layer = get_channel_layer()
        if layer is None or not self:
            return
        groups = [team_group(team_pk) for team_pk in self.private]
        if self.public:
            groups.append(MARKET_GROUP)
        numbers = await next_group_numbers(layer, groups)
        sent_at = time.time()

        def message(kind: str, group: str, frames: list[dict[str, Any]]) -> dict[str, Any]:
            return {"type": kind, "messages": frames, "group_seq": numbers.get(group), "sent_at": sent_at}

        await asyncio.gather(
            *(
                layer.group_send(team_group(pk), message("team.messages", team_group(pk), frames))
                for pk, frames in self.private.items()
            )
        )
        # Public frames after the private ones: a team hears of its own fill before the tape does.
        if self.public:
            await layer.group_send(MARKET_GROUP, message("market.messages", MARKET_GROUP, self.public))


def publish_event(event_type: str, data: dict[str, Any]) -> None:
    """Send an ``event`` frame (``{"event_type": ..., **data}``) to every connection.

    Immediately when called outside a transaction, after commit inside one, so an event never
    announces a change that was rolled back.
    """
    outbox = Outbox()
    outbox.to_market("event", {"event_type": event_type, **data}, clock.iso(clock.now()))
    transaction.on_commit(outbox.send)
