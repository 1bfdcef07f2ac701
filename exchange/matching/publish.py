"""After commit: the batch's frames, the replies the web processes wait for, and the queue's
bookkeeping, in one Redis pipeline (one round trip per batch).

Frames go to the channel layer's group channels as the pub/sub layer itself would publish them:
one ``PUBLISH`` per team that has frames and one for the public tape, whatever the number of
connections; each web process subscribed to a group hands the message to its connections.
Every message carries the worker's ``epoch`` and a per-group ``group_seq`` so a consumer sees a
lost message (exchange.delivery). Private frames go before public ones: a team hears of its own
fill before the tape does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import orjson
from channels.layers import get_channel_layer
from django.conf import settings

from exchange.delivery import MARKET_GROUP, MARKET_MESSAGES, TEAM_MESSAGES, group_channel, team_group
from exchange.matching import queue
from exchange.matching.worker import Batch, Frame

ROLE_RATES = "itg:role-rates"
REPLY_KEEP_S = 60


def layer_channel(group: str) -> str:
    return group_channel(settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"], group)


class Publisher:
    def __init__(self, link: queue.WorkerLink, epoch: str) -> None:
        self.link = link
        self.epoch = epoch
        self.layer = get_channel_layer()
        self.numbers: dict[str, int] = defaultdict(int)
        self.counter_lost = False  # Redis lost its data: the loop seeds the queue again

    def _message(self, kind: str, group: str, frames: list[Frame], sent_at: float) -> bytes:
        self.numbers[group] += 1
        message = {
            "type": kind,
            "epoch": self.epoch,
            "group_seq": self.numbers[group],
            "sent_at": sent_at,
            "frames": frames,
        }
        return self.layer.serialize(message)  # type: ignore[union-attr]

    def send(self, batch: Batch, finished_inflight: bool, take_next: int = 0) -> list[bytes]:
        """Publish the batch; with ``take_next``, the same round trip also takes up to that many
        commands for the next batch (after the in-flight list is dropped) and returns them."""
        sent_at = time.time()
        publishes: list[bytes | str] = []
        for team_pk, frames in batch.private.items():
            group = team_group(team_pk)
            publishes += [layer_channel(group), self._message(TEAM_MESSAGES, group, frames, sent_at)]
        if batch.public:
            message = self._message(MARKET_MESSAGES, MARKET_GROUP, batch.public, sent_at)
            publishes += [layer_channel(MARKET_GROUP), message]
        for web, verdicts in batch.verdicts.items():
            publishes += [queue.VERDICTS + web, orjson.dumps(verdicts)]
        keys = [queue.INFLIGHT, queue.DECIDED, queue.SEQ, queue.QUEUE]
        args = [int(finished_inflight), queue.DECIDED_TTL_S, take_next, *publishes]
        # Operator answers and new role rates are rare; they ride in the same round trip.
        commands = [command for reply_to, result in batch.replies for command in self._reply(reply_to, result)]
        if batch.role_rates:
            commands.append(("HSET", ROLE_RATES, *(x for pair in batch.role_rates.items() for x in pair)))
        counter, taken = self.link.calls(*commands, self.link.script(queue.FINISH, keys, args))[-1]
        self.counter_lost = not counter
        return list(taken)

    def frames_lost(self) -> None:
        """Tell every connection that frames of committed facts were never published (a worker
        died between a batch's commit and its publish): each closes with 4008 and resyncs, rather
        than wait for an ack that will not come. Every connection is in the market group."""
        message = {
            "type": MARKET_MESSAGES,
            "epoch": self.epoch,
            "group_seq": 0,
            "sent_at": time.time(),
            "frames": [],
            "lost": True,
        }
        self.link.call("PUBLISH", layer_channel(MARKET_GROUP), self.layer.serialize(message))  # type: ignore[union-attr]

    def reply(self, reply_to: str, result: Any) -> None:
        self.link.calls(*self._reply(reply_to, result))

    @staticmethod
    def _reply(reply_to: str, result: Any) -> list[tuple[Any, ...]]:
        return [
            ("RPUSH", queue.REPLY + reply_to, orjson.dumps(result)),
            ("EXPIRE", queue.REPLY + reply_to, REPLY_KEEP_S),
        ]
