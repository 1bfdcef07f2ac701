"""The ``/ws`` consumer: authenticate, hold a team connection slot, number and forward frames.

It never writes to the database. Every frame carries ``seq``, rising by one per frame on this
connection; the first is always the team's ``position_snapshot``. Frames never skip a number: when
this connection cannot be given everything (the channel layer dropped a message, or the client
does not read fast enough), it is closed with 4008 ``slow consumer`` and the client resyncs from
the snapshot of its next connection and the REST queries.

One task per connection writes to the socket, so a client that stops reading stalls only its own
writer; the layer handlers only queue frames and never wait on the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from accounts.middleware import watch_key
from accounts.models import Team
from exchange import clock
from exchange.connections import ConnectionRegistry
from exchange.publisher import MARKET_GROUP, team_group
from exchange.selectors import position_snapshot
from tradinggame.redis_breaker import redis_on_request_path

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
JOIN_TIMEOUT_S = 2.0
SLOW_CONSUMER = 4008
GROUP_REFRESH_S = 3600.0  # channels_redis forgets group members after a day without group_add


@dataclass(frozen=True, slots=True)
class Frame:
    type: str
    data: dict[str, Any]
    timestamp: str | None = None
    sent_at: float | None = None  # when the publisher sent it (epoch seconds); None: made here


@dataclass(frozen=True, slots=True)
class Limits:
    send_timeout_s: float
    max_lag_s: float
    close_timeout_s: float
    gap_grace_s: float
    max_backlog: int
    market_data_interval_s: float
    max_connections: int
    registry_ttl_s: float

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            send_timeout_s=float(getattr(settings, "EXCHANGE_WS_SEND_TIMEOUT_S", 5.0)),
            max_lag_s=float(getattr(settings, "EXCHANGE_WS_MAX_LAG_S", 10.0)),
            close_timeout_s=float(getattr(settings, "EXCHANGE_WS_CLOSE_TIMEOUT_S", 5.0)),
            gap_grace_s=float(getattr(settings, "EXCHANGE_WS_GAP_GRACE_S", 2.0)),
            max_backlog=int(getattr(settings, "EXCHANGE_WS_MAX_BACKLOG", 10_000)),
            market_data_interval_s=float(getattr(settings, "EXCHANGE_WS_MARKET_DATA_INTERVAL_S", 0.1)),
            max_connections=int(getattr(settings, "EXCHANGE_MAX_CONNECTIONS_PER_TEAM", 5)),
            registry_ttl_s=float(getattr(settings, "EXCHANGE_WS_REGISTRY_TTL_S", 30.0)),
        )


class GroupOrder:
    """Puts one group's layer messages back in ``group_seq`` order and notices missing ones.

    The first number seen is the baseline. Two publishers may take numbers n and n+1 and reach the
    layer in the opposite order, so a message ahead of a gap is held for ``grace_s``; if no missing
    message turns up in that time, one was lost and ``on_lost`` is called.
    """

    def __init__(self, grace_s: float, deliver: Callable[[dict[str, Any]], None], on_lost: Callable[[], None]) -> None:
        self.grace_s = grace_s
        self.deliver = deliver
        self.on_lost = on_lost
        self.last: int | None = None
        self.held: dict[int, dict[str, Any]] = {}
        self.timer: asyncio.TimerHandle | None = None

    def receive(self, message: dict[str, Any]) -> None:
        number = message.get("group_seq")
        if number is None or self.last is None or number <= self.last:
            # Unnumbered, the baseline, or taken before the baseline but delivered after it.
            if number is not None and (self.last is None or number > self.last):
                self.last = number
            self.deliver(message)
            return
        self.held[number] = message
        progressed = self.last + 1 in self.held
        while self.last + 1 in self.held:
            self.last += 1
            self.deliver(self.held.pop(self.last))
        if progressed or not self.held:
            self.cancel()
        if self.held and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.grace_s, self._expired)

    def _expired(self) -> None:
        self.timer = None
        if self.held:
            self.held.clear()
            self.on_lost()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class MarketDataConflator:
    """At most one ``market_data`` frame per instrument per interval; the newest state wins.

    The first update after a quiet interval goes out at once; updates inside the interval replace
    one pending frame, which goes out when the interval ends.
    """

    def __init__(self, interval_s: float, emit: Callable[[Frame], None]) -> None:
        self.interval_s = interval_s
        self.emit = emit
        self.last_emit: dict[str, float] = {}
        self.pending: dict[str, Frame] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}

    def offer(self, instrument: str, frame: Frame) -> None:
        if instrument in self.pending:
            self.pending[instrument] = frame
            return
        loop = asyncio.get_running_loop()
        due = self.last_emit.get(instrument, float("-inf")) + self.interval_s
        if loop.time() >= due:
            self.last_emit[instrument] = loop.time()
            self.emit(frame)
            return
        self.pending[instrument] = frame
        self.timers[instrument] = loop.call_at(due, self._flush, instrument)

    def _flush(self, instrument: str) -> None:
        self.timers.pop(instrument, None)
        frame = self.pending.pop(instrument, None)
        if frame is not None:
            self.last_emit[instrument] = asyncio.get_running_loop().time()
            self.emit(frame)

    def cancel(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        self.pending.clear()


def server_transport(send: Any) -> Any:
    """The ASGI server's transport behind ``send``, where the server exposes it (uvicorn does).

    ASGI has no way to drop a connection whose peer stopped reading: the close frame queues
    behind the full write buffer and a graceful close waits for that buffer to drain, forever if
    the peer keeps its TCP window shut. Reaching the transport is the only way to reset it.
    (uvloop's transports are not ``asyncio.Transport`` subclasses, hence the duck typing.)
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "abort", None)) else None


def reset_connection(transport: Any) -> None:
    """Abort with a TCP reset, so the kernel frees the unread bytes too (a no-op once closed)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: uvloop, socket already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class TeamConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seq = 0
        self.team: Team | None = None
        self.private_group = ""
        self.groups_joined: tuple[str, ...] = ()
        self.instruments: set[str] | None = None  # None: all public market data
        self.limits = Limits.from_settings()
        self.registry: ConnectionRegistry | None = None
        self.outgoing: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.group_order: dict[str, GroupOrder] = {}
        self.conflator = MarketDataConflator(self.limits.market_data_interval_s, self.queue_public)
        self.tasks: list[asyncio.Task[None]] = []
        self.closing = False
        self.close_with = (SLOW_CONSUMER, "slow consumer")
        self.unwatch_key: Callable[[], None] | None = None

    # --- connection lifecycle -------------------------------------------------------------------
    async def connect(self) -> None:
        team = self.scope.get("team")
        await self.accept()
        if team is None:
            await self.close(code=POLICY_VIOLATION, reason=self.scope.get("auth_refusal") or "invalid or missing API key")
            return
        if not team.active:
            await self.close(code=POLICY_VIOLATION, reason="team disabled")
            return
        registry = ConnectionRegistry(self.channel_layer, team.pk, self.limits.max_connections, self.limits.registry_ttl_s)
        try:
            if not redis_on_request_path.allows():
                raise RedisError("Redis failed a moment ago")
            # Bounded: a Redis that stops answering must not leave the handshake hanging.
            joined = await asyncio.wait_for(self.join(team, registry), JOIN_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            redis_on_request_path.trip()
            log.warning("channel layer unavailable: %r", exc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.leave(), JOIN_TIMEOUT_S)
            await self.close(code=TRY_AGAIN_LATER, reason="service unavailable, try again")
            return
        if not joined:
            await self.close(code=POLICY_VIOLATION, reason="too many connections")
            return
        # Joined before the snapshot is read, so nothing that happens after it can be missed.
        try:
            snapshot = await database_sync_to_async(position_snapshot)(team)
        except BaseException:  # no disconnect handler runs after a failed connect
            await self.leave()
            raise
        self.queue_frame(Frame("position_snapshot", snapshot))
        self.tasks = [asyncio.create_task(self.write_frames()), asyncio.create_task(self.keep_alive())]
        if self.scope.get("api_key_digest"):  # a revoked key or a disabled team: 1008 within seconds
            self.unwatch_key = watch_key(self.scope["api_key_digest"], lambda reason: self.fail_slow(POLICY_VIOLATION, reason))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' loop, plus an orderly end when the channel layer's Redis goes away: the
        client gets a close frame (1013, try again later) instead of a dropped socket, and the
        connection's tasks and slot are cleaned up."""
        try:
            await super().__call__(scope, receive, send)
        except (RedisError, OSError) as exc:
            log.warning("channel layer lost for %s: %s", getattr(self, "channel_name", "?"), exc)
            await self.disconnect(TRY_AGAIN_LATER)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": "service unavailable, try again"})

    async def join(self, team: Team, registry: ConnectionRegistry) -> bool:
        """Claim a connection slot and join the team's and the market's groups."""
        if not await registry.claim(self.channel_name):
            return False
        self.team, self.registry = team, registry
        self.private_group = team_group(team.pk)
        self.groups_joined = (self.private_group, MARKET_GROUP)
        for group in self.groups_joined:
            self.group_order[group] = GroupOrder(self.limits.gap_grace_s, self.deliver, self.fail_slow)
            await self.channel_layer.group_add(group, self.channel_name)
        return True

    async def disconnect(self, code: int) -> None:
        for task in self.tasks:
            task.cancel()
        await self.leave()

    async def leave(self) -> None:
        """Stop receiving and give the slot back (idempotent; Redis errors are only logged)."""
        groups, self.groups_joined = self.groups_joined, ()
        registry, self.registry = self.registry, None
        unwatch_key, self.unwatch_key = self.unwatch_key, None
        if unwatch_key is not None:
            unwatch_key()
        for order in self.group_order.values():
            order.cancel()
        self.conflator.cancel()
        try:
            for group in groups:
                await self.channel_layer.group_discard(group, self.channel_name)
            if registry is not None:
                await registry.release(self.channel_name)
        except Exception:
            log.warning("could not leave the groups of %s cleanly", self.channel_name, exc_info=True)

    async def keep_alive(self) -> None:
        """Refresh the registry entry (and, rarely, group membership) while the connection lives.

        An entry found missing means Redis lost its data (a restart) or this process stalled for a
        whole TTL: either way group messages may have been lost unseen, so the client must resync.
        """
        loop = asyncio.get_running_loop()
        groups_refreshed = loop.time()
        while True:
            await asyncio.sleep(self.limits.registry_ttl_s / 3)
            try:
                if self.registry is not None and not await self.registry.refresh(self.channel_name):
                    log.warning("connection %s had lost its registration; closing it", self.channel_name)
                    self.fail_slow()
                    return
                if loop.time() - groups_refreshed > GROUP_REFRESH_S:
                    for group in self.groups_joined:
                        await self.channel_layer.group_add(group, self.channel_name)
                    groups_refreshed = loop.time()
            except Exception:
                log.warning("could not refresh connection %s", self.channel_name, exc_info=True)

    # Handlers only reach the database through database_sync_to_async, which tidies connections
    # itself; channels' default dispatch adds a thread hop per message for that, on every frame.
    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    # --- writing ----------------------------------------------------------------------------------
    def queue_frame(self, frame: Frame) -> None:
        if self.closing:
            return
        if self.outgoing.qsize() >= self.limits.max_backlog:
            self.fail_slow()
            return
        self.outgoing.put_nowait(frame)

    def fail_slow(self, code: int = SLOW_CONSUMER, reason: str = "slow consumer") -> None:
        """Close with 4008 (or the code given) once the frames already handed to the socket are
        out; send nothing more."""
        if self.closing:
            return
        self.closing = True
        self.close_with = (code, reason)
        while not self.outgoing.empty():
            self.outgoing.get_nowait()
        self.outgoing.put_nowait(None)

    async def write_frames(self) -> None:
        try:
            while (frame := await self.outgoing.get()) is not None:
                if frame.sent_at is not None and time.time() - frame.sent_at > self.limits.max_lag_s:
                    break
                self.seq += 1
                text = json.dumps(
                    {"seq": self.seq, "type": frame.type, "timestamp": frame.timestamp or clock.iso(clock.now()), "data": frame.data},
                    separators=(",", ":"),
                )
                try:
                    async with asyncio.timeout(self.limits.send_timeout_s):
                        await self.send(text_data=text)
                except TimeoutError:
                    break
            await self.close_slow()
        except OSError:  # the client went away; the disconnect handler cleans up
            pass
        except Exception:  # a writer that died quietly would leave a connection that hears nothing
            log.exception("writing to %s failed", self.channel_name)
            self.closing = True
            with contextlib.suppress(Exception):
                await self.close(code=INTERNAL_ERROR, reason="internal error")

    async def close_slow(self) -> None:
        self.closing = True
        await self.leave()
        transport = server_transport(self.base_send)
        if transport is not None:
            # A client that reads again within the timeout still gets every frame and the 4008.
            asyncio.get_running_loop().call_later(self.limits.close_timeout_s, reset_connection, transport)
        try:
            async with asyncio.timeout(self.limits.close_timeout_s):
                await self.close(code=self.close_with[0], reason=self.close_with[1])
        except TimeoutError:
            if transport is not None:
                reset_connection(transport)

    # --- client frames ----------------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data if text_data is not None else (bytes_data or b""))
        except ValueError:
            self.queue_frame(Frame("error", {"code": "INVALID_JSON", "message": "frames must be JSON objects"}))
            return
        action = message.get("action") if isinstance(message, dict) else None
        if action == "ping":
            self.queue_frame(Frame("pong", {}))
        elif action == "subscribe" and isinstance(message.get("instruments"), list):
            instruments = message["instruments"]
            self.instruments = {str(i) for i in instruments} if instruments else None
            self.queue_frame(Frame("subscribed", {"instruments": sorted(self.instruments or [])}))
        else:
            self.queue_frame(
                Frame(
                    "error",
                    {"code": "UNKNOWN_ACTION", "message": "send {'action': 'ping'} or {'action': 'subscribe', 'instruments': [...]}"},
                )
            )

    # --- channel-layer messages -------------------------------------------------------------------
    async def team_messages(self, event: dict[str, Any]) -> None:
        self.receive_group(self.private_group, event)

    async def market_messages(self, event: dict[str, Any]) -> None:
        self.receive_group(MARKET_GROUP, event)

    def receive_group(self, group: str, event: dict[str, Any]) -> None:
        order = self.group_order.get(group)
        if order is not None and not self.closing:
            order.receive(event)

    def deliver(self, event: dict[str, Any]) -> None:
        """One layer message, in group order: private frames as they are, public ones filtered."""
        sent_at = event.get("sent_at")
        public = event["type"] == "market.messages"
        for message in event["messages"]:
            frame = Frame(message["type"], message["data"], message["timestamp"], sent_at)
            if not public:
                self.queue_frame(frame)
            elif frame.type == "market_data" and frame.data.get("instrument_id") is not None:
                if self.wants(frame):
                    self.conflator.offer(frame.data["instrument_id"], frame)
            else:
                self.queue_public(frame)

    def queue_public(self, frame: Frame) -> None:
        if self.wants(frame):
            self.queue_frame(frame)

    def wants(self, frame: Frame) -> bool:
        """``subscribe`` narrows instrument frames; events and untagged frames reach everyone."""
        instrument = frame.data.get("instrument_id")
        return self.instruments is None or frame.type == "event" or instrument is None or instrument in self.instruments
