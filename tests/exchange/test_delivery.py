"""The delivery rules of one connection, without Channels, Redis or a database."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.delivery import (
    MARKET_GROUP,
    MAX_CLIENT_FRAME_BYTES,
    SLOW_CONSUMER,
    ClientError,
    Close,
    ConnectionDelivery,
    GroupOrder,
    Ping,
    Subscribe,
    group_channel,
    nesting_exceeds,
    read_client_frame,
    team_group,
)

STAMP = "2024-01-15T10:00:00.000000Z"
TEAM = team_group(7)


def message(
    epoch: str, number: int, *frames: tuple[str, str, str | None], sent_at: float | None = None
) -> dict[str, Any]:
    """A layer message; each frame is (type, data JSON text, instrument)."""
    return {
        "type": "market.messages",
        "epoch": epoch,
        "group_seq": number,
        "sent_at": time.time() if sent_at is None else sent_at,
        "frames": [[frame_type, STAMP, data, instrument] for frame_type, data, instrument in frames],
    }


def signal(n: int) -> tuple[str, str, None]:
    return ("signal", f'{{"signal_type":"test","n":{n}}}', None)


def drain(delivery: ConnectionDelivery) -> list[dict[str, Any]]:
    frames = []
    while (text := delivery.next_text(time.time())) is not None:
        frames.append(json.loads(text))
    return frames


def test_frames_are_numbered_from_one_and_data_is_sent_as_published() -> None:
    delivery = ConnectionDelivery(max_backlog=100, max_lag_s=10)
    delivery.local_frame("position_snapshot", {"positions": {}, "open_orders": [], "last_trade_id": None}, STAMP)
    delivery.group_message(TEAM, message("e1", 1, ("execution_report", '{"price":100.50,"fees":-0.20}', "X")), False)
    delivery.local_frame("pong", {}, STAMP)
    texts = [delivery.next_text(time.time()) for _ in range(3)]
    assert texts[1] == (
        '{"seq":2,"type":"execution_report","timestamp":"2024-01-15T10:00:00.000000Z",'
        '"data":{"price":100.50,"fees":-0.20}}'
    )
    frames = [json.loads(text) for text in texts]
    assert [(f["seq"], f["type"]) for f in frames] == [(1, "position_snapshot"), (2, "execution_report"), (3, "pong")]
    assert frames[0]["data"] == {"positions": {}, "open_orders": [], "last_trade_id": None}
    assert delivery.next_text(time.time()) is None and delivery.close is None


def test_a_gap_within_an_epoch_closes_with_4008_and_drops_what_waits() -> None:
    delivery = ConnectionDelivery(max_backlog=100, max_lag_s=10)
    delivery.group_message(TEAM, message("e1", 41, signal(1)), False)  # the first number heard is the baseline
    delivery.group_message(TEAM, message("e1", 42, signal(2)), False)
    assert [f["data"]["n"] for f in drain(delivery)] == [1, 2]
    delivery.group_message(TEAM, message("e1", 43, signal(3)), False)
    delivery.group_message(TEAM, message("e1", 45, signal(5)), False)  # 44 was lost
    assert delivery.close == SLOW_CONSUMER == Close(4008, "slow consumer")
    assert delivery.next_text(time.time()) is None  # 43 is not sent either: nothing after the decision
    delivery.group_message(TEAM, message("e1", 46, signal(6)), False)
    assert not delivery.pending


@pytest.mark.parametrize("numbers", [(5, 5), (5, 4), (5, 7)])
def test_a_repeat_or_a_step_back_or_a_skip_is_a_break(numbers: tuple[int, int]) -> None:
    order = GroupOrder()
    assert order.in_order(TEAM, "e1", numbers[0])
    assert not order.in_order(TEAM, "e1", numbers[1])


def test_a_new_epoch_starts_a_new_baseline_and_groups_are_numbered_apart() -> None:
    order = GroupOrder()
    assert order.in_order(TEAM, "old", 900)
    assert order.in_order(MARKET_GROUP, "old", 3)
    assert order.in_order(TEAM, "new", 1)  # the worker restarted
    assert order.in_order(TEAM, "new", 2)
    assert order.in_order(MARKET_GROUP, "old", 4)
    # A worker handing over to its successor: each epoch is checked against its own numbers.
    assert order.in_order(TEAM, "old", 901)
    assert order.in_order(TEAM, "new", 3)
    assert not order.in_order(TEAM, "old", 903)


def test_a_full_backlog_closes_with_4008_and_taking_frames_makes_room() -> None:
    delivery = ConnectionDelivery(max_backlog=3, max_lag_s=10)
    delivery.group_message(TEAM, message("e1", 1, signal(1), signal(2), signal(3)), False)
    assert delivery.next_text(time.time()) is not None  # the socket took one
    delivery.group_message(TEAM, message("e1", 2, signal(4)), False)
    assert delivery.close is None and len(delivery.pending) == 3
    delivery.local_frame("pong", {}, STAMP)
    assert delivery.close == SLOW_CONSUMER and not delivery.pending


def test_a_message_larger_than_the_backlog_keeps_nothing_of_itself() -> None:
    delivery = ConnectionDelivery(max_backlog=3, max_lag_s=10)
    delivery.group_message(TEAM, message("e1", 1, *(signal(n) for n in range(10))), False)
    assert delivery.close == SLOW_CONSUMER and not delivery.pending


def test_a_frame_older_than_the_lag_limit_closes_with_4008() -> None:
    delivery = ConnectionDelivery(max_backlog=100, max_lag_s=1.0)
    delivery.group_message(TEAM, message("e1", 1, signal(1), sent_at=time.time() - 0.5), False)
    delivery.group_message(TEAM, message("e1", 2, signal(2), sent_at=time.time() - 5), False)
    assert [f["data"]["n"] for f in drain(delivery)] == [1]
    assert delivery.close == SLOW_CONSUMER


def test_subscribe_narrows_public_instrument_frames_only() -> None:
    delivery = ConnectionDelivery(max_backlog=100, max_lag_s=10)
    delivery.subscribe(frozenset({"SPX_4400_PUT"}))
    public = message(
        "e1",
        1,
        ("market_data", '{"instrument_id":"SPX_4500_CALL"}', "SPX_4500_CALL"),
        ("trade", '{"instrument_id":"SPX_4500_CALL"}', "SPX_4500_CALL"),
        ("trade", '{"instrument_id":"SPX_4400_PUT"}', "SPX_4400_PUT"),
        ("event", '{"event_type":"halt","instrument_id":"SPX_4500_CALL"}', "SPX_4500_CALL"),
        ("underlying", '{"symbol":"SPX","price":4412.25}', None),
    )
    delivery.group_message(MARKET_GROUP, public, True)
    private = message("e1", 1, ("execution_report", '{"instrument_id":"SPX_4500_CALL"}', "SPX_4500_CALL"))
    delivery.group_message(TEAM, private, False)
    assert [(f["seq"], f["type"]) for f in drain(delivery)] == [
        (1, "trade"),
        (2, "event"),
        (3, "underlying"),
        (4, "execution_report"),
    ]
    delivery.subscribe(None)
    delivery.group_message(MARKET_GROUP, message("e1", 2, ("trade", "{}", "SPX_4500_CALL")), True)
    assert [f["type"] for f in drain(delivery)] == ["trade"]


@pytest.mark.parametrize(
    "broken",
    [
        {"type": "team.messages", "messages": [], "group_seq": 1, "sent_at": 0.0},  # the old format
        {"type": "team.messages", "epoch": "e1", "group_seq": 1, "sent_at": 0.0, "frames": [["signal", STAMP]]},
        {"type": "team.messages", "epoch": "e1", "group_seq": None, "sent_at": 0.0, "frames": None},
    ],
)
def test_an_unreadable_layer_message_closes_with_4008_instead_of_raising(broken: dict[str, Any]) -> None:
    delivery = ConnectionDelivery(max_backlog=100, max_lag_s=10)
    delivery.group_message(TEAM, message("e1", 1, signal(1)), False)
    delivery.group_message(TEAM, broken, False)
    assert delivery.close == SLOW_CONSUMER and not delivery.pending


def test_the_first_reason_to_close_wins_and_the_writer_is_woken() -> None:
    woken: list[bool] = []
    delivery = ConnectionDelivery(max_backlog=100, max_lag_s=10, on_ready=lambda: woken.append(True))
    delivery.local_frame("pong", {}, STAMP)
    assert woken == [True]
    delivery.fail(Close(1008, "key revoked"))
    delivery.fail(SLOW_CONSUMER)
    assert delivery.close == Close(1008, "key revoked") and len(woken) == 2
    delivery.local_frame("pong", {}, STAMP)
    assert not delivery.pending


def test_group_channel_is_the_pub_sub_layers_name_for_a_group() -> None:
    assert group_channel("itg", team_group(7)) == "itg__group__team.7"
    assert group_channel("itg", MARKET_GROUP) == "itg__group__market"


# --- client frames ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"action":"ping"}', Ping()),
        ('  {"action": "ping", "id": 3}  ', Ping()),
        ('{"action":"subscribe","instruments":["A","B"]}', Subscribe(frozenset({"A", "B"}))),
        ('{"action":"subscribe","instruments":[]}', Subscribe(None)),
        ('{"action":"ping","note":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', Ping()),  # brackets in a string
        ('{"action":"ping","note":"\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', Ping()),  # after an escaped quote
    ],
)
def test_frames_that_are_read(text: str, expected: object) -> None:
    assert read_client_frame(text, None) == expected


@pytest.mark.parametrize(
    ("text", "binary", "code"),
    [
        (None, b'{"action":"ping"}', "INVALID_JSON"),  # binary frames are not read
        (None, None, "INVALID_JSON"),
        ("", None, "INVALID_JSON"),
        ("{broken", None, "INVALID_JSON"),
        ("\ud800", None, "INVALID_JSON"),
        ("[" * 50_000, None, "INVALID_JSON"),
        ("[" * 33 + "]" * 33, None, "INVALID_JSON"),
        ('{"a":' * 33 + "1" + "}" * 33, None, "INVALID_JSON"),
        (" " * (MAX_CLIENT_FRAME_BYTES + 1), None, "PAYLOAD_TOO_LARGE"),
        ('{"action":"ping","pad":"' + "é" * 40_000 + '"}', None, "PAYLOAD_TOO_LARGE"),  # 80 KB, 40 K characters
        ("null", None, "UNKNOWN_ACTION"),
        ("[]", None, "UNKNOWN_ACTION"),
        ('"ping"', None, "UNKNOWN_ACTION"),
        ("{}", None, "UNKNOWN_ACTION"),
        ('{"action":1}', None, "UNKNOWN_ACTION"),
        ('{"action":["ping"]}', None, "UNKNOWN_ACTION"),
        ('{"action":"trade_for_me"}', None, "UNKNOWN_ACTION"),
        ('{"action":"subscribe"}', None, "INVALID_REQUEST"),
        ('{"action":"subscribe","instruments":"SPX_4500_CALL"}', None, "INVALID_REQUEST"),
        ('{"action":"subscribe","instruments":[1,2]}', None, "INVALID_REQUEST"),
        ('{"action":"subscribe","instruments":{"a":1}}', None, "INVALID_REQUEST"),
    ],
)
def test_frames_that_get_an_error(text: str | None, binary: bytes | None, code: str) -> None:
    answer = read_client_frame(text, binary)
    assert isinstance(answer, ClientError) and answer.code == code and answer.message


def test_nesting_up_to_the_limit_is_read() -> None:
    assert read_client_frame('{"action":"ping","x":' + "[" * 31 + "]" * 31 + "}", None) == Ping()
    assert not nesting_exceeds("[" * 32 + "]" * 32, 32)
    assert nesting_exceeds("[" * 33, 32)
    assert not nesting_exceeds("[]" * 30_000, 32)  # wide is fine, only deep is not


def test_a_frame_exactly_at_the_size_limit_is_read() -> None:
    text = '{"action":"ping"}'
    assert read_client_frame(text + " " * (MAX_CLIENT_FRAME_BYTES - len(text)), None) == Ping()


@pytest.mark.parametrize(
    "text",
    [
        '"\\"' * 21_000,  # strings that never close, one after another
        '"' + "\\" * 65_000,
        "[" * 65_000,
        '["' * 32_000,
    ],
)
def test_the_nesting_scan_stays_linear_on_hostile_text(text: str) -> None:
    started = time.perf_counter()
    assert isinstance(read_client_frame(text, None), ClientError)
    assert time.perf_counter() - started < 0.5


@given(st.one_of(st.text(max_size=300), st.from_regex(r"[\[\]{}\"\\:,a0 ]{0,300}", fullmatch=True)))
def test_reading_any_text_answers_and_never_raises(text: str) -> None:
    assert isinstance(read_client_frame(text, None), Ping | Subscribe | ClientError)


@given(st.binary(max_size=300))
def test_binary_frames_always_get_an_error(data: bytes) -> None:
    assert isinstance(read_client_frame(None, data), ClientError)


def test_a_lost_notice_from_a_restarted_worker_closes_with_4008() -> None:
    """A worker that died between a batch's commit and its publish: the next one says so once on
    the market group, and every connection resyncs instead of waiting for frames that are gone."""
    delivery = ConnectionDelivery(max_backlog=100, max_lag_s=10)
    delivery.group_message(MARKET_GROUP, message("e1", 7, signal(1)), True)
    notice = {
        "type": "market.messages",
        "epoch": "e2",
        "group_seq": 0,
        "sent_at": time.time(),
        "frames": [],
        "lost": True,
    }
    delivery.group_message(MARKET_GROUP, notice, True)
    assert delivery.close == SLOW_CONSUMER
