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
import redis
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
    def __init__(self, client: redis.Redis, epoch: str) -> None:
        self.client = client
        self.epoch = epoch
        self.layer = get_channel_layer()
        self.numbers: dict[str, int] = defaultdict(int)
        self.finish = client.register_script(queue.FINISH)
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
        if batch.replies or batch.role_rates:  # operator answers: rare, in the same round trip
            pipe = self.client.pipeline(transaction=False)
            for reply_to, result in batch.replies:
                pipe.rpush(queue.REPLY + reply_to, orjson.dumps(result))
                pipe.expire(queue.REPLY + reply_to, REPLY_KEEP_S)
            if batch.role_rates:
                pipe.hset(ROLE_RATES, mapping=batch.role_rates)  # type: ignore[arg-type]
            self.finish(keys=keys, args=args, client=pipe)
            counter, taken = pipe.execute()[-1]
        else:
            counter, taken = self.finish(keys=keys, args=args)
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
        self.client.publish(layer_channel(MARKET_GROUP), self.layer.serialize(message))  # type: ignore[union-attr]

    def reply(self, reply_to: str, result: Any) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(queue.REPLY + reply_to, orjson.dumps(result))
        pipe.expire(queue.REPLY + reply_to, REPLY_KEEP_S)
        pipe.execute()
