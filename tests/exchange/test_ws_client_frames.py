"""Whatever a client sends on /ws gets a frame back and the connection stays open: random
bytes and text, huge and deeply nested frames, wrong types, binary frames."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import Team
from tradinggame.asgi import application

MakeTeam = Callable[..., tuple[Team, str]]

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_TYPES = {"market_data", "trade", "underlying", "event"}

HOSTILE_TEXT = [
    "",
    " ",
    "{broken",
    "[" * 50_000,
    "{" * 50_000,
    '{"a":' * 50_000,
    "[" * 33 + "]" * 33,
    '"' + "\\" * 65_000,
    '"\\"' * 21_000,
    " " * 70_000,
    '{"action":"ping","pad":"' + "x" * 1_000_000 + '"}',
    '{"action":"ping","pad":"' + "\U0001f600" * 20_000 + '"}',  # 80 KB in 20 K characters
    "\ud800",
    "\x00\x01\x02",
    "null",
    "true",
    "1e999999",
    "-",
    '"ping"',
    "[]",
    "{}",
    '{"action":null}',
    '{"action":1}',
    '{"action":["ping"]}',
    '{"action":{"ping":1}}',
    '{"action":"PING"}',
    '{"action":"trade_for_me"}',
    '{"action":"subscribe"}',
    '{"action":"subscribe","instruments":"SPX_4500_CALL"}',
    '{"action":"subscribe","instruments":[1,2]}',
    '{"action":"subscribe","instruments":[null]}',
    '{"action":"subscribe","instruments":[["SPX_4500_CALL"]]}',
    '{"action":"subscribe","instruments":{"SPX_4500_CALL":true}}',
    '{"action":"ping"}{"action":"ping"}',
]

HOSTILE_BYTES = [b"", b'{"action":"ping"}', b"\xff\xfe\x00", b"[" * 50_000, bytes(range(256)) * 300]


def random_frames(rng: random.Random, count: int) -> list[tuple[str | None, bytes | None]]:
    frames: list[tuple[str | None, bytes | None]] = []
    alphabet = '[]{}",:\\ 0123456789.-eEtrufalsn' + "aé\U0001f600"
    for _ in range(count):
        kind = rng.randrange(4)
        size = rng.choice((1, 10, 100, 1_000, 70_000))
        if kind == 0:
            frames.append((None, rng.randbytes(size)))
        elif kind == 1:
            frames.append(("".join(rng.choice(alphabet) for _ in range(size)), None))
        elif kind == 2:
            frames.append(("".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(size)), None))
        else:
            depth = rng.randrange(0, 200)
            frames.append(("[" * depth + json.dumps({"action": rng.choice(["subscribe", "x", 3])}) + "]" * depth, None))
    return frames


async def test_any_client_frame_gets_an_answer_and_never_a_disconnect(
    make_team: MakeTeam, caplog: pytest.LogCaptureFixture
) -> None:
    _, key = await sync_to_async(make_team)()
    ws = WebsocketCommunicator(application, f"/ws?api_key={key}")
    assert (await ws.connect(timeout=5))[0]
    assert (await ws.receive_json_from(timeout=5))["seq"] == 1
    frames: list[tuple[str | None, bytes | None]] = [(text, None) for text in HOSTILE_TEXT]
    frames += [(None, data) for data in HOSTILE_BYTES]
    frames += random_frames(random.Random(20240115), 200)
    caplog.set_level(logging.ERROR)
    seq = 1

    async def answer() -> dict[str, Any]:
        """The next frame that is not public market traffic (another test's publisher may still
        be sending); every frame, that traffic included, keeps ``seq`` without a gap."""
        nonlocal seq
        while True:
            output = await ws.receive_output(timeout=5)
            assert output["type"] == "websocket.send", output
            frame = json.loads(output["text"])
            seq += 1
            assert frame["seq"] == seq
            if frame["type"] not in PUBLIC_TYPES:
                return frame

    for text, data in frames:
        # send_input, not send_to: empty frames are frames too
        await ws.send_input(
            {"type": "websocket.receive", "text": text}
            if data is None
            else {"type": "websocket.receive", "bytes": data}
        )
        error = await answer()
        assert error["type"] == "error", (error, (text or "")[:80], (data or b"")[:80])
        assert set(error["data"]) == {"code", "message"}
        assert error["data"]["code"] in ("INVALID_JSON", "PAYLOAD_TOO_LARGE", "UNKNOWN_ACTION", "INVALID_REQUEST")
    await ws.send_json_to({"action": "ping"})
    pong = await answer()
    assert (pong["type"], pong["data"]) == ("pong", {})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await ws.disconnect()
