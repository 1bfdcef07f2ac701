"""What one WebSocket connection is sent and read, without Channels: the layer message format,
group order, the subscription filter, the bounded backlog, seq numbering, the lag limit, and
how client frames are read.

The matching worker is the one publisher. For each group (``team.<pk>``, ``market``) it numbers its
messages 1, 2, 3... under an ``epoch``, a random id of that worker's life, and publishes them to the
pub/sub layer's group channel (``group_channel``). A web process hears every group over one
subscription connection, which hands messages over in the order Redis received them, so within
one epoch the next number is always the previous one plus one. Anything else means a message was
lost (the subscription dropped, a publish failed), and the connection is closed with 4008 rather
than skip frames: a client that sees no gap in ``seq`` has seen everything since it connected.
Every connection hears ``market``, where something is published many times a second while trading,
so a process whose subscription dropped closes its connections at the next public message.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypedDict

import orjson

log = logging.getLogger(__name__)

MARKET_GROUP = "market"
TEAM_MESSAGES = "team.messages"  # handled by the consumer's ``team_messages``
MARKET_MESSAGES = "market.messages"  # handled by the consumer's ``market_messages``

# One frame inside a layer message: type, ISO timestamp, ``data`` already as compact JSON text, and
# the instrument it is about (None: about no single instrument). msgpack hands these back as lists.
FrameEntry = tuple[str, str, str, str | None]


class GroupMessage(TypedDict):
    """One layer message: what the publisher sends to a group, serialized by the layer (msgpack)."""

    type: Literal["team.messages", "market.messages"]
    epoch: str  # random id of the publishing worker's life; a new one starts a new numbering
    group_seq: int  # 1, 2, 3... per group per epoch
    sent_at: float  # epoch seconds when it was published
    frames: list[FrameEntry]


def team_group(team_pk: int) -> str:
    return f"team.{team_pk}"


def group_channel(prefix: str, group: str) -> str:
    """The Redis channel ``RedisPubSubChannelLayer`` (configured with ``prefix``) uses for ``group``:
    a raw ``PUBLISH`` there of ``channel_layer.serialize(message)`` equals ``group_send``."""
    return f"{prefix}__group__{group}"


class Close(NamedTuple):
    code: int
    reason: str


SLOW_CONSUMER = Close(4008, "slow consumer")
MAX_EPOCHS_REMEMBERED = 4


class GroupOrder:
    """Checks that each group's messages come numbered without a gap or a repeat.

    The first number heard of an epoch is its baseline (a connection joins mid-stream). A few
    recent epochs are remembered per group, so two publishers alive at once (a worker handing over
    to its successor) are each checked against their own numbering instead of resetting each other.
    """

    def __init__(self) -> None:
        self.last: dict[str, dict[str, int]] = {}

    def in_order(self, group: str, epoch: str, number: int) -> bool:
        epochs = self.last.setdefault(group, {})
        last = epochs.pop(epoch, None)
        if last is not None and number != last + 1:
            return False
        epochs[epoch] = number  # re-inserted: the dict's order is least recently heard first
        if len(epochs) > MAX_EPOCHS_REMEMBERED:
            del epochs[next(iter(epochs))]
        return True


class Pending(NamedTuple):
    type: str
    timestamp: str
    data: str  # compact JSON text
    sent_at: float | None  # when its publisher sent it; None: made by this connection


class ConnectionDelivery:
    """The frames waiting for one connection's socket, and the rules for taking them in.

    ``close`` is set once the connection must end (with the frames still waiting dropped): the
    socket writer sends what it took already, then closes with that code. ``on_ready`` is called
    whenever there is something new for the writer: a frame or a close.
    """

    def __init__(self, max_backlog: int, max_lag_s: float, on_ready: Callable[[], None] = lambda: None) -> None:
        self.max_backlog = max_backlog
        self.max_lag_s = max_lag_s
        self.on_ready = on_ready
        self.seq = 0
        self.pending: deque[Pending] = deque()
        self.order = GroupOrder()
        self.instruments: frozenset[str] | None = None  # None: every instrument
        self.close: Close | None = None

    def group_message(self, group: str, message: Mapping[str, Any], public: bool) -> None:
        """Take in one layer message of ``group``; frames of a public group pass the subscription."""
        if self.close is not None:
            return
        if message.get("lost"):
            # A worker that died between a commit and its publish: frames of facts in the
            # database never went out. Every connection resyncs from a fresh snapshot.
            log.warning("group %s: the matching worker lost frames it had committed; resync", group)
            self.fail(SLOW_CONSUMER)
            return
        try:
            if not self.order.in_order(group, message["epoch"], message["group_seq"]):
                log.warning(
                    "group %s: message %s of epoch %s out of sequence", group, message["group_seq"], message["epoch"]
                )
                self.fail(SLOW_CONSUMER)
                return
            sent_at = message["sent_at"]
            wanted = self.instruments if public else None
            for frame_type, timestamp, data, instrument in message["frames"]:
                if wanted is None or instrument is None or instrument in wanted or frame_type == "event":
                    self.push(Pending(frame_type, timestamp, data, sent_at))
        except (KeyError, TypeError, ValueError):
            # A message this module cannot read may have carried frames the client needed.
            log.exception("unreadable layer message for group %s", group)
            self.fail(SLOW_CONSUMER)

    def local_frame(self, frame_type: str, data: Any, timestamp: str) -> None:
        """A frame made by the connection itself (snapshot, pong, error, subscribed)."""
        if self.close is None:
            self.push(Pending(frame_type, timestamp, orjson.dumps(data).decode(), None))

    def subscribe(self, instruments: frozenset[str] | None) -> None:
        self.instruments = instruments

    def push(self, frame: Pending) -> None:
        if self.close is not None:
            return
        if len(self.pending) >= self.max_backlog:
            self.fail(SLOW_CONSUMER)
            return
        self.pending.append(frame)
        self.on_ready()

    def fail(self, close: Close) -> None:
        """End the connection with ``close``; nothing more is sent, the first reason given wins."""
        if self.close is None:
            self.close = close
            self.pending.clear()
            self.on_ready()

    def next_text(self, now: float) -> str | None:
        """The next frame as WebSocket text with its ``seq``, or None when nothing is to be sent.

        A frame that waited longer than the lag limit since it was published ends the connection
        (4008): the client is too far behind for its frames to be worth anything.
        """
        if self.close is not None or not self.pending:
            return None
        frame_type, timestamp, data, sent_at = self.pending.popleft()
        if sent_at is not None and now - sent_at > self.max_lag_s:
            self.fail(SLOW_CONSUMER)
            return None
        self.seq += 1
        return f'{{"seq":{self.seq},"type":"{frame_type}","timestamp":"{timestamp}","data":{data}}}'


# --- client frames ------------------------------------------------------------------------------

MAX_CLIENT_FRAME_BYTES = 64 * 1024
MAX_CLIENT_NESTING = 32

# A JSON string, escapes included; an unterminated one runs to the end of the text. The unrolled
# form keeps the match linear in the text's length whatever the text.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Subscribe:
    instruments: frozenset[str] | None  # None: every instrument again


@dataclass(frozen=True, slots=True)
class ClientError:
    code: str
    message: str


ClientFrame = Ping | Subscribe | ClientError

USAGE = 'send {"action": "ping"} or {"action": "subscribe", "instruments": [...]}'


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether ``text`` nests arrays and objects deeper than ``limit``, brackets inside strings
    not counted; a loop, not recursion, and it stops at the first level too deep."""
    depth = 0
    for bracket in _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def read_client_frame(text: str | None, binary: bytes | None) -> ClientFrame:
    """What a client frame asks for, or the error to answer it with. Never raises."""
    if text is None:
        return ClientError("INVALID_JSON", "binary frames are not read; send JSON in a text frame")
    if len(text) > MAX_CLIENT_FRAME_BYTES or (
        len(text) * 4 > MAX_CLIENT_FRAME_BYTES and len(text.encode("utf-8", "surrogatepass")) > MAX_CLIENT_FRAME_BYTES
    ):
        return ClientError("PAYLOAD_TOO_LARGE", f"frames are read up to {MAX_CLIENT_FRAME_BYTES} bytes")
    if nesting_exceeds(text, MAX_CLIENT_NESTING):
        return ClientError("INVALID_JSON", f"JSON is read nested up to {MAX_CLIENT_NESTING} levels")
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ClientError("INVALID_JSON", "frames must be JSON objects")
    action = message.get("action") if isinstance(message, dict) else None
    if action == "ping":
        return Ping()
    if action != "subscribe":
        return ClientError("UNKNOWN_ACTION", USAGE)
    instruments = message.get("instruments")
    if not isinstance(instruments, list) or not all(isinstance(i, str) for i in instruments):
        return ClientError("INVALID_REQUEST", '"instruments" must be a list of instrument ids (empty: all)')
    return Subscribe(frozenset(instruments) or None)
