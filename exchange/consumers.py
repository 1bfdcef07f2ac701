"""The ``/ws`` consumer: authenticate, join the team's group, number and forward frames.

It never writes to the database. Every frame carries ``seq``, rising by one per frame on this
connection; the first is always the team's ``position_snapshot``.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from accounts.models import Team
from exchange import clock
from exchange.publisher import MARKET_GROUP, team_group
from exchange.selectors import position_snapshot

POLICY_VIOLATION = 1008


class TeamConsumer(AsyncWebsocketConsumer):
    seq = 0
    team: Team | None = None
    groups_joined: tuple[str, ...] = ()
    instruments: set[str] | None = None  # None: all public market data

    async def connect(self) -> None:
        team = self.scope.get("team")
        await self.accept()
        if team is None:
            await self.close(code=POLICY_VIOLATION, reason="invalid or missing API key")
            return
        if not team.active:
            await self.close(code=POLICY_VIOLATION, reason="team disabled")
            return
        self.team = team
        self.groups_joined = (team_group(team.pk), MARKET_GROUP)
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        # Joined before the snapshot is read, so nothing that happens after it can be missed.
        snapshot = await database_sync_to_async(position_snapshot)(team)
        await self.send_frame("position_snapshot", snapshot)

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def send_frame(self, msg_type: str, data: dict[str, Any], timestamp: str | None = None) -> None:
        self.seq += 1
        frame = {"seq": self.seq, "type": msg_type, "timestamp": timestamp or clock.iso(clock.now()), "data": data}
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data if text_data is not None else (bytes_data or b""))
        except ValueError:
            await self.send_frame("error", {"code": "INVALID_JSON", "message": "frames must be JSON objects"})
            return
        action = message.get("action") if isinstance(message, dict) else None
        if action == "ping":
            await self.send_frame("pong", {})
        elif action == "subscribe" and isinstance(message.get("instruments"), list):
            instruments = message["instruments"]
            self.instruments = {str(i) for i in instruments} if instruments else None
            await self.send_frame("subscribed", {"instruments": sorted(self.instruments or [])})
        else:
            await self.send_frame(
                "error",
                {"code": "UNKNOWN_ACTION", "message": "send {'action': 'ping'} or {'action': 'subscribe', 'instruments': [...]}"},
            )

    # --- channel-layer handlers ---------------------------------------------------------------
    async def team_messages(self, event: dict[str, Any]) -> None:
        for message in event["messages"]:
            await self.send_frame(message["type"], message["data"], message["timestamp"])

    async def market_messages(self, event: dict[str, Any]) -> None:
        for message in event["messages"]:
            if self.instruments is None or message["data"].get("instrument_id") in self.instruments:
                await self.send_frame(message["type"], message["data"], message["timestamp"])
