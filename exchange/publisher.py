"""Messages to the channel layer, sent only after the facts they announce have committed.

Private messages go to the group ``team.<pk>`` (every connection of that team); public ones to
``market``. Messages are batched per group: one layer call carries many frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

MARKET_GROUP = "market"


def team_group(team_pk: int) -> str:
    return f"team.{team_pk}"


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
        try:
            async_to_sync(self._send_all)()
        except Exception:  # the database is the record; clients resync from it
            log.exception("publishing to the channel layer failed")

    async def _send_all(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        await asyncio.gather(
            *(
                layer.group_send(team_group(team_pk), {"type": "team.messages", "messages": messages})
                for team_pk, messages in self.private.items()
            )
        )
        # Public frames after the private ones: a team hears of its own fill before the tape does.
        if self.public:
            await layer.group_send(MARKET_GROUP, {"type": "market.messages", "messages": self.public})
