"""The ``/ws`` consumer: authenticate, hold a team connection slot, join the groups, send the
snapshot, and hand the layer's frames to the socket.

It never writes to the database. The rules for what is sent (group order, subscription, backlog,
``seq``, lag) live in ``exchange.delivery``; this module only connects them to Channels and the
socket. The first frame is always the team's ``position_snapshot``.

One task per connection writes to the socket, so a client that stops reading stalls only its own
writer; the layer handlers only queue frames and never wait on the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from accounts.middleware import watch_key
from accounts.models import Team
from exchange import clock
from exchange.connections import ConnectionRegistry
from exchange.delivery import (
    MARKET_GROUP,
    SLOW_CONSUMER,
    ClientError,
    Close,
    ConnectionDelivery,
    Ping,
    Subscribe,
    read_client_frame,
    team_group,
)
from exchange.selectors import position_snapshot
from exchange.sockets import reset_connection, server_transport
from infra.redis_breaker import redis_on_request_path

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
JOIN_TIMEOUT_S = 2.0
# Below this many unsent bytes the transport is not paused (its high-water mark is 64 KiB), so a
# send cannot block and needs no timeout.
UNBLOCKED_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    send_timeout_s: float
    max_lag_s: float
    close_timeout_s: float
    max_backlog: int
    max_connections: int
    registry_ttl_s: float

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            send_timeout_s=float(getattr(settings, "EXCHANGE_WS_SEND_TIMEOUT_S", 5.0)),
            max_lag_s=float(getattr(settings, "EXCHANGE_WS_MAX_LAG_S", 10.0)),
            close_timeout_s=float(getattr(settings, "EXCHANGE_WS_CLOSE_TIMEOUT_S", 5.0)),
            max_backlog=int(getattr(settings, "EXCHANGE_WS_MAX_BACKLOG", 1000)),
            max_connections=int(getattr(settings, "EXCHANGE_MAX_CONNECTIONS_PER_TEAM", 5)),
            registry_ttl_s=float(getattr(settings, "EXCHANGE_WS_REGISTRY_TTL_S", 30.0)),
        )


def now_iso() -> str:
    return clock.iso(clock.now())


class TeamConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = Limits.from_settings()
        self.team: Team | None = None
        self.private_group = ""
        self.groups_joined: tuple[str, ...] = ()
        self.registry: ConnectionRegistry | None = None
        self.ready = asyncio.Event()
        self.admitted = asyncio.Event()  # connect finished: layer messages may be dispatched
        self.handshake_done = False
        self.delivery: ConnectionDelivery | None = None  # set once the connection is admitted
        self.tasks: list[asyncio.Task[None]] = []
        self.unwatch_key: Callable[[], None] | None = None

    # --- connection lifecycle -------------------------------------------------------------------
    async def connect(self) -> None:
        team = self.scope.get("team")
        await self.accept()
        if team is None:
            await self.close(
                code=POLICY_VIOLATION, reason=self.scope.get("auth_refusal") or "invalid or missing API key"
            )
            return
        if not team.active:
            await self.close(code=POLICY_VIOLATION, reason="team disabled")
            return
        registry = ConnectionRegistry(team.pk, self.limits.max_connections, self.limits.registry_ttl_s)
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
        # Layer messages that come meanwhile wait in the layer until connect returns: seq 1 is this.
        delivery = ConnectionDelivery(self.limits.max_backlog, self.limits.max_lag_s, self.ready.set)
        try:
            snapshot = await database_sync_to_async(position_snapshot)(team)
            delivery.local_frame("position_snapshot", snapshot, now_iso())
        except BaseException:  # no disconnect handler runs after a failed connect
            await self.leave()
            raise
        self.delivery = delivery
        self.tasks = [asyncio.create_task(self.write_frames(delivery)), asyncio.create_task(self.keep_alive())]
        self.admitted.set()
        if self.scope.get("api_key_digest"):  # a revoked key or a disabled team: 1008 within seconds
            self.unwatch_key = watch_key(
                self.scope["api_key_digest"], lambda reason: delivery.fail(Close(POLICY_VIOLATION, reason))
            )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' loop, plus an orderly end when the channel layer's Redis goes away: the
        client gets a close frame (1013, try again later) instead of a dropped socket, and the
        connection's tasks and slot are cleaned up."""
        try:
            await self.serve(scope, receive, send)
        except (RedisError, OSError) as exc:
            log.warning("channel layer lost for %s: %s", getattr(self, "channel_name", "?"), exc)
            await self.disconnect(TRY_AGAIN_LATER)
            with contextlib.suppress(Exception):
                if not self.handshake_done:
                    # The layer failed before the handshake was answered (the pub/sub layer
                    # subscribes the connection's channel first): accept it, so the client sees
                    # 1013 "try again" rather than an HTTP 403 that reads like a bad key.
                    async with asyncio.timeout(JOIN_TIMEOUT_S):
                        await receive()
                    await send({"type": "websocket.accept"})
                await send(
                    {"type": "websocket.close", "code": TRY_AGAIN_LATER, "reason": "service unavailable, try again"}
                )

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``AsyncConsumer.__call__`` with one long-lived reading task per source (the socket, the
        layer). Channels' ``await_many_dispatch`` waits on both with ``asyncio.wait`` and starts a
        new task for every message, which cost more per frame than the frame itself. Layer
        messages are dispatched only once ``connect`` has finished, as Channels' one-at-a-time
        dispatch guaranteed: they wait in the layer until then."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.handshake_done = True  # from here on, connect() answers the handshake itself
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        pumps = [
            asyncio.create_task(self.pump(receive)),
            asyncio.create_task(self.pump(self.channel_receive, self.admitted)),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        except StopConsumer:
            pass
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def pump(self, source: Callable[[], Awaitable[dict[str, Any]]], after: asyncio.Event | None = None) -> None:
        if after is not None:
            await after.wait()
        while True:
            await self.dispatch(await source())

    async def join(self, team: Team, registry: ConnectionRegistry) -> bool:
        """Claim a connection slot and join the team's and the market's groups."""
        if not await registry.claim(self.channel_name):
            return False
        self.team, self.registry = team, registry
        self.private_group = team_group(team.pk)
        self.groups_joined = (self.private_group, MARKET_GROUP)
        for group in self.groups_joined:
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
        try:
            for group in groups:
                await self.channel_layer.group_discard(group, self.channel_name)
            if registry is not None:
                await registry.release(self.channel_name)
        except Exception:
            log.warning("could not leave the groups of %s cleanly", self.channel_name, exc_info=True)

    async def keep_alive(self) -> None:
        """Refresh the registry entry while the connection lives.

        An entry found missing means Redis lost its data (a restart) or this process stalled for a
        whole TTL: either way group messages may have been lost unseen, so the client must resync.
        """
        while True:
            await asyncio.sleep(self.limits.registry_ttl_s / 3)
            try:
                if self.registry is not None and not await self.registry.refresh(self.channel_name):
                    log.warning("connection %s had lost its registration; closing it", self.channel_name)
                    if self.delivery is not None:
                        self.delivery.fail(SLOW_CONSUMER)
                    return
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
    async def write_frames(self, delivery: ConnectionDelivery) -> None:
        """Send frames as they come until the delivery rules end the connection."""
        transport = server_transport(self.base_send)
        try:
            while True:
                text = delivery.next_text(time.time())
                if text is None:
                    if delivery.close is not None:
                        break
                    self.ready.clear()
                    await self.ready.wait()
                    continue
                if transport is not None and transport.get_write_buffer_size() < UNBLOCKED_BYTES:
                    # The socket takes it at once: no timer to arm and cancel for this frame.
                    await self.send(text_data=text)
                    continue
                try:
                    async with asyncio.timeout(self.limits.send_timeout_s):
                        await self.send(text_data=text)
                except TimeoutError:
                    delivery.fail(SLOW_CONSUMER)
                    break
            await self.close_slow(delivery.close or SLOW_CONSUMER)
        except OSError:  # the client went away; the disconnect handler cleans up
            pass
        except Exception:  # a writer that died quietly would leave a connection that hears nothing
            log.exception("writing to %s failed", self.channel_name)
            delivery.fail(Close(INTERNAL_ERROR, "internal error"))
            with contextlib.suppress(Exception):
                await self.leave()
                await self.close(code=INTERNAL_ERROR, reason="internal error")

    async def close_slow(self, close: Close) -> None:
        """Close once the frames already handed to the socket are out; reset a peer that does
        not read them within the close timeout."""
        await self.leave()
        transport = server_transport(self.base_send)
        if transport is not None:
            # A client that reads again within the timeout still gets every frame and the close.
            asyncio.get_running_loop().call_later(self.limits.close_timeout_s, reset_connection, transport)
        try:
            async with asyncio.timeout(self.limits.close_timeout_s):
                await self.close(code=close.code, reason=close.reason)
        except TimeoutError:
            if transport is not None:
                reset_connection(transport)

    # --- client frames ----------------------------------------------------------------------------
    async def websocket_receive(self, message: dict[str, Any]) -> None:
        # Channels' own version raises on a frame that has neither text nor bytes.
        await self.receive(text_data=message.get("text"), bytes_data=message.get("bytes"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        delivery = self.delivery
        if delivery is None:  # refused or closing before it was admitted
            return
        frame = read_client_frame(text_data, bytes_data)
        if isinstance(frame, Ping):
            delivery.local_frame("pong", {}, now_iso())
        elif isinstance(frame, Subscribe):
            delivery.subscribe(frame.instruments)
            delivery.local_frame("subscribed", {"instruments": sorted(frame.instruments or ())}, now_iso())
        elif isinstance(frame, ClientError):
            delivery.local_frame("error", {"code": frame.code, "message": frame.message}, now_iso())

    # --- channel-layer messages -------------------------------------------------------------------
    async def team_messages(self, message: dict[str, Any]) -> None:
        if self.delivery is not None:
            self.delivery.group_message(self.private_group, message, public=False)

    async def market_messages(self, message: dict[str, Any]) -> None:
        if self.delivery is not None:
            self.delivery.group_message(MARKET_GROUP, message, public=True)
