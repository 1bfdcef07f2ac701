"""POST /orders: the reply shape, malformed requests (400, 413, 415), business rejections in
API.md's order (200 rejected), resends, and the answers when the matching worker is missing,
stalled, over its backlog or slow (503, 504); what is stored, queued and pushed for each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from channels.layers import get_channel_layer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from accounts.models import Team
from exchange.delivery import team_group
from exchange.gateway import Gateway
from exchange.matching import loop, queue
from exchange.matching.publish import layer_channel
from exchange.models import Instrument, JournalEntry, Order
from exchange.services import operator
from exchange.wire import OrderReply
from infra.redis_clients import sync_client

pytestmark = pytest.mark.django_db(transaction=True)
MakeTeam = Callable[..., tuple[Team, str]]
Api = Callable[..., APIClient]

REPLY_FIELDS = set(OrderReply.__required_keys__)  # the reply's one declaration
ORDER = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 10, "price": 100.0}


@pytest.fixture
def trader(make_team: Callable[..., tuple[Team, str]], instruments: list[str]) -> tuple[Team, str]:
    return make_team("market_maker")


def post(api: Any, key: str | None, body: Any) -> Any:
    return api(key).post("/orders", body, format="json")


def post_raw(api: Any, key: str | None, raw: str | bytes, content_type: str = "application/json") -> Any:
    return api(key).generic("POST", "/orders", raw, content_type=content_type)


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    """A reply that made no order: the order-reply shape, ``order_id`` null."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == REPLY_FIELDS
    assert (body["order_id"], body["error_code"]) == (None, code)
    assert body["status"] == ("pending_new" if status == 504 else "rejected")
    assert (body["filled_quantity"], body["fees"], body["average_price"]) == (0, 0.0, None)
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 27
    return body


def order_of(reply: dict[str, Any]) -> Order:
    return Order.objects.get(pk=int(reply["order_id"][4:]))


def submits() -> int:
    return JournalEntry.objects.filter(kind="s").count()


class Frames:
    """What the worker publishes to one team's group, read off Redis as a web process gets it."""

    def __init__(self, team: Team) -> None:
        self.layer = get_channel_layer()
        self.pubsub = sync_client().pubsub()
        self.pubsub.subscribe(layer_channel(team_group(team.pk)))
        confirmation = self.pubsub.get_message(timeout=2)
        assert confirmation is not None and confirmation["type"] == "subscribe"

    def read(self, quiet_s: float = 0.3) -> list[tuple[str, dict[str, Any]]]:
        """Every frame until none has come for ``quiet_s``."""
        found = []
        while (message := self.pubsub.get_message(timeout=quiet_s)) is not None:
            if message["type"] == "message":
                for kind, _, data, _ in self.layer.deserialize(message["data"])["frames"]:  # type: ignore[union-attr]
                    found.append((kind, json.loads(data)))
        return found

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.read()]


@pytest.fixture
def frames() -> Iterator[Callable[[Team], Frames]]:
    opened: list[Frames] = []

    def listen(team: Team) -> Frames:
        opened.append(Frames(team))
        return opened[-1]

    yield listen
    for listener in opened:
        listener.pubsub.close()


# --- accepted -------------------------------------------------------------------------------------
def test_an_accepted_order_is_stored_journalled_and_acked(
    trader: tuple[Team, str], api: Api, matching: object, frames: Callable[[Team], Frames]
) -> None:
    team, key = trader
    pushed = frames(team)
    response = post(api, key, {**ORDER, "client_order_id": "MY_ORDER_001", "request_id": "r-1"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == REPLY_FIELDS
    assert body["status"] == "accepted" and body["order_id"].startswith("ORD_")
    assert (body["client_order_id"], body["request_id"]) == ("MY_ORDER_001", "r-1")
    assert (body["filled_quantity"], body["average_price"], body["fees"], body["liquidity_type"]) == (
        0,
        None,
        0.0,
        None,
    )
    assert (body["error_code"], body["error_message"], body["details"]) == (None, None, None)
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 27
    order = order_of(body)  # in the database before the reply was sent
    assert (order.status, order.remaining_quantity, str(order.price), order.team_id) == ("new", 10, "100.0000", team.pk)
    entry = JournalEntry.objects.get(pk=order.accepted_seq)
    assert (entry.kind, entry.team_id) == ("s", team.pk)
    assert json.loads(entry.result) == {"order_id": order.pk, "status": "new"}
    [(kind, ack)] = pushed.read()
    assert kind == "new_order_ack"
    assert ack == {
        "order_id": body["order_id"],
        "client_order_id": "MY_ORDER_001",
        "instrument_id": "SPX_4500_CALL",
        "side": "buy",
        "quantity": 10,
        "order_type": "limit",
        "price": 100.0,
        "time_in_force": "gtc",
        "status": "new",
    }


def test_a_market_order_is_ioc_and_a_null_price_is_no_price(
    trader: tuple[Team, str], api: Api, matching: object
) -> None:
    _, key = trader
    for raw in (
        '{"instrument_id": "SPX_4500_CALL", "order_type": "market", "side": "buy", "quantity": 3}',
        '{"instrument_id": "SPX_4500_CALL", "order_type": "market", "side": "buy", "quantity": 3, "price": null}',
    ):
        response = post_raw(api, key, raw)
        assert response.status_code == 200 and response.json()["status"] == "accepted", response.json()
        order = order_of(response.json())
        assert (order.time_in_force, order.status, order.cancel_reason) == ("ioc", "cancelled", "ioc_remainder")


def test_a_market_order_may_be_fok(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    reply = post(api, key, {**ORDER, "order_type": "market", "price": None, "time_in_force": "fok"}).json()
    assert reply["status"] == "accepted"
    order = order_of(reply)
    assert (order.time_in_force, order.status, order.cancel_reason) == ("fok", "cancelled", "fok_unfilled")


# --- malformed: 400, nothing stored, nothing queued ------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "",
        "[1, 2]",
        '"text"',
        "null",
        '{"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 1, "price": NaN}',
        '{"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 1, "price": Infinity}',
        "[" * 5000,
    ],
)
def test_unreadable_bodies_are_invalid_json(trader: tuple[Team, str], api: Api, raw: str) -> None:
    _, key = trader
    refused(post_raw(api, key, raw), 400, "INVALID_JSON")
    assert Order.objects.count() == 0


@pytest.mark.parametrize(
    "fields, code, field",
    [
        ({"instrument_id": None}, "MISSING_FIELD", "instrument_id"),
        ({"side": None}, "MISSING_FIELD", "side"),
        ({"quantity": None}, "MISSING_FIELD", "quantity"),
        ({"order_type": None}, "MISSING_FIELD", "order_type"),
        ({"side": "hold"}, "INVALID_SIDE", "side"),
        ({"order_type": "stop"}, "INVALID_ORDER_TYPE", "order_type"),
        ({"time_in_force": "forever"}, "INVALID_TIME_IN_FORCE", "time_in_force"),
        ({"order_type": "market", "price": None, "time_in_force": "gtc"}, "INVALID_TIME_IN_FORCE", "time_in_force"),
        ({"order_type": "market", "price": None, "time_in_force": "day"}, "INVALID_TIME_IN_FORCE", "time_in_force"),
        ({"quantity": 0}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": -5}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": 1.5}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": 1.0}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": "10"}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": True}, "INVALID_QUANTITY", "quantity"),
        ({"quantity": 2**31}, "INVALID_QUANTITY", "quantity"),
        ({"price": None}, "MISSING_PRICE", "price"),
        ({"order_type": "market"}, "PRICE_NOT_ALLOWED", "price"),
        ({"price": 0}, "INVALID_PRICE", "price"),
        ({"price": -1.0}, "INVALID_PRICE", "price"),
        ({"price": "100"}, "INVALID_PRICE", "price"),
        ({"price": True}, "INVALID_PRICE", "price"),
        ({"price": [100]}, "INVALID_PRICE", "price"),
        ({"price": 1e9}, "INVALID_PRICE", "price"),
        ({"price": 1e300}, "INVALID_PRICE", "price"),
        # wrong JSON types, empty or long strings: INVALID_FIELD naming the field
        ({"instrument_id": 4500}, "INVALID_FIELD", "instrument_id"),
        ({"instrument_id": ["SPX_4500_CALL"]}, "INVALID_FIELD", "instrument_id"),
        ({"instrument_id": ""}, "INVALID_FIELD", "instrument_id"),
        ({"instrument_id": "X" * 65}, "INVALID_FIELD", "instrument_id"),
        ({"side": 1}, "INVALID_FIELD", "side"),
        ({"side": ["buy"]}, "INVALID_FIELD", "side"),
        ({"order_type": True}, "INVALID_FIELD", "order_type"),
        ({"time_in_force": 1}, "INVALID_FIELD", "time_in_force"),
        ({"client_order_id": 7}, "INVALID_FIELD", "client_order_id"),
        ({"client_order_id": ""}, "INVALID_FIELD", "client_order_id"),
        ({"client_order_id": "x" * 65}, "INVALID_FIELD", "client_order_id"),
        ({"client_order_id": {"id": 1}}, "INVALID_FIELD", "client_order_id"),
        ({"request_id": 12}, "INVALID_FIELD", "request_id"),
        ({"request_id": "r" * 65}, "INVALID_FIELD", "request_id"),
    ],
)
def test_malformed_orders_are_400_with_their_code(
    trader: tuple[Team, str], api: Api, fields: dict[str, Any], code: str, field: str
) -> None:
    _, key = trader
    body = {k: v for k, v in {**ORDER, **fields}.items() if v is not None}  # None: the field is left out
    reply = refused(post(api, key, body), 400, code)
    assert reply["details"]["field"] == field
    assert Order.objects.count() == 0


def test_an_unknown_field_names_every_unknown_field(trader: tuple[Team, str], api: Api) -> None:
    _, key = trader
    reply = refused(post(api, key, {**ORDER, "client_order_idd": "typo", "colour": "red"}), 400, "UNKNOWN_FIELD")
    assert reply["details"] == {"fields": ["client_order_idd", "colour"]}


@pytest.mark.parametrize("field", ["instrument_id", "client_order_id", "request_id", "side"])
@pytest.mark.parametrize("character", ["\x00", "\n", "\x1f", "\x7f"])
def test_control_characters_are_an_invalid_field(
    trader: tuple[Team, str], api: Api, field: str, character: str
) -> None:
    _, key = trader
    value = {"side": "buy", "instrument_id": "SPX_4500_CALL"}.get(field, "ID") + character
    reply = refused(post(api, key, {**ORDER, field: value}), 400, "INVALID_FIELD")
    assert reply["details"] == {"field": field}
    assert reply["request_id"] is None  # a request id with control characters is not echoed
    assert Order.objects.count() == 0


def test_a_printable_request_id_is_echoed_on_a_400(trader: tuple[Team, str], api: Api) -> None:
    _, key = trader
    reply = refused(post(api, key, {**ORDER, "side": "hold", "request_id": "trace-7"}), 400, "INVALID_SIDE")
    assert reply["request_id"] == "trace-7"


def test_malformed_orders_never_reach_the_queue_or_the_websocket(
    trader: tuple[Team, str], api: Api, matching: object, frames: Callable[[Team], Frames]
) -> None:
    team, key = trader
    pushed = frames(team)
    for body in ({**ORDER, "side": "hold"}, {**ORDER, "quantity": "1"}, {**ORDER, "client_order_id": "a\x00"}, [1]):
        assert post(api, key, body).status_code == 400
    assert submits() == 0 and Order.objects.count() == 0
    assert post(api, key, ORDER).status_code == 200
    assert submits() == 1 and pushed.kinds() == ["new_order_ack"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "application/xml"])
def test_a_wrong_content_type_is_415_in_the_order_shape(trader: tuple[Team, str], api: Api, content_type: str) -> None:
    _, key = trader
    refused(post_raw(api, key, json.dumps(ORDER), content_type=content_type), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert Order.objects.count() == 0


def test_json_with_a_charset_is_json(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    response = post_raw(api, key, json.dumps(ORDER), content_type="application/json; charset=utf-8")
    assert response.status_code == 200 and response.json()["status"] == "accepted"


def test_a_body_over_64_kib_is_413(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    text = json.dumps(ORDER)
    exactly = text[:-1] + " " * (64 * 1024 - len(text)) + "}"
    assert len(exactly.encode()) == 64 * 1024
    response = post_raw(api, key, exactly)
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    reply = refused(post_raw(api, key, exactly[:-1] + " }"), 413, "PAYLOAD_TOO_LARGE")
    assert reply["details"] == {"max_bytes": 64 * 1024}
    assert Order.objects.count() == 1


def test_a_body_of_megabytes_is_413_too(trader: tuple[Team, str], api: Api) -> None:
    _, key = trader
    reply = refused(post_raw(api, key, '{"x": "' + "a" * 3_000_000 + '"}'), 413, "PAYLOAD_TOO_LARGE")
    assert reply["details"] == {"max_bytes": 64 * 1024}


async def test_the_asgi_fast_path_refuses_a_large_body_without_reading_it_all(db: None) -> None:
    from tradinggame.asgi import application

    chunk = b" " * 16_384
    sent_chunks = 0
    replies: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_chunks
        sent_chunks += 1
        return {"type": "http.request", "body": chunk, "more_body": sent_chunks < 1000}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/orders",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"x-api-key", b"itg_whatever")],
        "client": ("127.0.0.1", 5000),
    }
    await asyncio.wait_for(application(scope, receive, send), 10)
    assert replies[0]["status"] == 413
    body = json.loads(replies[1]["body"])
    assert set(body) == REPLY_FIELDS and (body["error_code"], body["order_id"]) == ("PAYLOAD_TOO_LARGE", None)
    assert body["details"] == {"max_bytes": 64 * 1024}
    assert sent_chunks <= 5  # 64 KiB is four chunks: the fifth tells, the rest is never read


# --- authentication: the error envelope ------------------------------------------------------------
def test_a_missing_key_uses_the_error_envelope(trader: tuple[Team, str], api: Api) -> None:
    response = post(api, None, ORDER)
    assert response.status_code == 401 and response.json()["error"]["code"] == "NOT_AUTHENTICATED"


def test_an_unknown_key_uses_the_error_envelope(trader: tuple[Team, str], api: Api) -> None:
    response = post(api, "itg_not_a_key", ORDER)
    assert response.status_code == 401 and response.json()["error"]["code"] == "INVALID_API_KEY"


def test_a_disabled_team_is_403(trader: tuple[Team, str], api: Api) -> None:
    team, key = trader
    team.active = False
    team.save()
    response = post(api, key, ORDER)
    assert response.status_code == 403 and response.json()["error"]["code"] == "TEAM_DISABLED"


# --- business rejections: 200, stored, pushed --------------------------------------------------------
def rejected(api: Any, key: str, body: dict[str, Any], code: str) -> dict[str, Any]:
    response = post(api, key, body)
    assert response.status_code == 200, response.content
    reply = response.json()
    assert set(reply) == REPLY_FIELDS
    assert (reply["status"], reply["error_code"]) == ("rejected", code), reply
    assert reply["order_id"].startswith("ORD_") and reply["error_message"]
    assert reply["details"], "every business rejection carries its numbers"
    order = order_of(reply)
    assert (order.status, order.error_code, order.remaining_quantity, order.accepted_seq) == ("rejected", code, 0, None)
    return reply


def test_an_unknown_instrument_is_a_business_rejection(
    trader: tuple[Team, str], api: Api, matching: object, frames: Callable[[Team], Frames]
) -> None:
    team, key = trader
    pushed = frames(team)
    reply = rejected(
        api, key, {**ORDER, "instrument_id": "SPX_9999_CALL", "client_order_id": "u"}, "INVALID_INSTRUMENT"
    )
    assert reply["details"] == {"instrument_id": "SPX_9999_CALL"}
    order = order_of(reply)
    assert (order.instrument_id, order.instrument_symbol) == (None, "SPX_9999_CALL")
    assert pushed.read() == [
        (
            "new_order_reject",
            {
                "order_id": reply["order_id"],
                "client_order_id": "u",
                "instrument_id": "SPX_9999_CALL",
                "status": "rejected",
                "error_code": "INVALID_INSTRUMENT",
                "reason": reply["error_message"],
            },
        )
    ]


def test_an_instrument_listed_after_the_start_is_known(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    Instrument.objects.create(symbol="SPY_440_PUT", underlying="SPY", option_type="put", strike=440)
    assert post(api, key, {**ORDER, "instrument_id": "SPY_440_PUT"}).json()["status"] == "accepted"


def test_an_off_grid_price(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    reply = rejected(api, key, {**ORDER, "price": 100.005}, "INVALID_PRICE")
    assert reply["details"] == {"price": 100.005, "tick_size": 0.01}


def test_a_price_too_small_for_the_grid_is_off_the_grid(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    raw = '{"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 1, "price": 0.5e-999999999}'
    response = post_raw(api, key, raw)
    assert response.status_code == 200 and response.json()["error_code"] == "INVALID_PRICE"


def test_halted_instrument_and_team(trader: tuple[Team, str], api: Api, matching: object) -> None:
    team, key = trader
    operator.halt(instrument=Instrument.objects.get(pk="SPX_4500_CALL"))
    assert rejected(api, key, ORDER, "INSTRUMENT_HALTED")["details"] == {"instrument_id": "SPX_4500_CALL"}
    operator.halt(team=team)
    # the instrument halt comes first; elsewhere the team halt tells
    rejected(api, key, ORDER, "INSTRUMENT_HALTED")
    assert rejected(api, key, {**ORDER, "instrument_id": "SPX_4500_PUT"}, "TRADING_DISABLED")["details"] == {
        "scope": "team"
    }
    operator.resume(team=team)
    operator.halt(exchange=True)
    assert rejected(api, key, {**ORDER, "instrument_id": "SPX_4500_PUT"}, "TRADING_DISABLED")["details"] == {
        "scope": "exchange"
    }
    operator.resume(exchange=True)
    assert post(api, key, {**ORDER, "instrument_id": "SPX_4500_PUT"}).json()["status"] == "accepted"


@pytest.mark.parametrize("phase", ["closed", "opening_auction"])
def test_the_market_closed(trader: tuple[Team, str], api: Api, matching: object, phase: str) -> None:
    _, key = trader
    operator.game_set_phase(phase)
    assert rejected(api, key, ORDER, "MARKET_CLOSED")["details"] == {"phase": phase}


def test_pre_open_takes_only_resting_limit_orders(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    operator.game_set_phase("pre_open")
    rejected(api, key, {**ORDER, "time_in_force": "ioc"}, "ORDER_TYPE_NOT_ALLOWED")
    rejected(api, key, {**ORDER, "time_in_force": "fok"}, "ORDER_TYPE_NOT_ALLOWED")
    rejected(api, key, {**ORDER, "order_type": "market", "price": None}, "ORDER_TYPE_NOT_ALLOWED")
    assert post(api, key, {**ORDER, "time_in_force": "day"}).json()["status"] == "accepted"
    assert post(api, key, ORDER).json()["status"] == "accepted"


def test_order_size_limit_is_the_smaller_of_role_and_instrument(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, key = make_team("hedge_fund")  # role maximum 500
    reply = rejected(api, key, {**ORDER, "quantity": 501}, "ORDER_SIZE_LIMIT_EXCEEDED")
    assert reply["details"] == {"quantity": 501, "limit": 500}
    instrument = Instrument.objects.get(pk="SPX_4500_CALL")
    instrument.max_order_size = 20
    instrument.save()  # reaches the worker through its queue
    assert rejected(api, key, {**ORDER, "quantity": 21}, "ORDER_SIZE_LIMIT_EXCEEDED")["details"]["limit"] == 20
    assert post(api, key, {**ORDER, "quantity": 20}).json()["status"] == "accepted"


def test_a_duplicate_open_client_order_id(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    assert post(api, key, {**ORDER, "client_order_id": "A"}).json()["status"] == "accepted"
    reply = rejected(api, key, {**ORDER, "client_order_id": "A", "price": 99.0}, "DUPLICATE_CLIENT_ORDER_ID")
    assert reply["details"] == {"client_order_id": "A"}


def test_a_hedge_fund_may_not_rest_both_sides(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, key = make_team("hedge_fund")
    assert post(api, key, {**ORDER, "price": 99.0}).json()["status"] == "accepted"
    reply = rejected(api, key, {**ORDER, "side": "sell", "price": 101.0}, "TWO_SIDED_QUOTE_NOT_ALLOWED")
    assert reply["details"] == {"instrument_id": "SPX_4500_CALL", "resting_side": "buy"}
    sweep = post(api, key, {**ORDER, "side": "sell", "price": 101.0, "time_in_force": "ioc"}).json()
    assert sweep["status"] == "accepted"  # ioc is exempt


def test_the_position_limit_counts_filled_and_open_orders(
    make_team: MakeTeam, instruments: list[str], api: Api, no_rate_limit: None, matching: object
) -> None:
    _, key = make_team("market_maker")  # ±50 per instrument
    _, other = make_team("market_maker")
    assert post(api, other, {**ORDER, "side": "sell", "quantity": 20}).json()["status"] == "accepted"
    assert post(api, key, {**ORDER, "quantity": 20}).json()["filled_quantity"] == 20  # position +20
    assert post(api, key, {**ORDER, "quantity": 25, "price": 99.0}).json()["status"] == "accepted"
    reply = rejected(api, key, {**ORDER, "quantity": 6, "price": 99.0}, "POSITION_LIMIT_EXCEEDED")
    assert reply["details"] == {"current_position": 20, "open_buy_quantity": 25, "order_quantity": 6, "limit": 50}
    assert post(api, key, {**ORDER, "quantity": 5, "price": 99.0}).json()["status"] == "accepted"
    # selling is measured against the other bound: 20 - 70 = -50
    assert post(api, key, {**ORDER, "side": "sell", "quantity": 70, "price": 101.0}).json()["status"] == "accepted"
    rejected(api, key, {**ORDER, "side": "sell", "quantity": 1, "price": 101.0}, "POSITION_LIMIT_EXCEEDED")


def test_the_portfolio_limit(
    make_team: MakeTeam, instruments: list[str], api: Api, no_rate_limit: None, matching: object
) -> None:
    _, key = make_team("retail")  # ±50 per instrument, 50 in total
    assert post(api, key, {**ORDER, "quantity": 40, "instrument_id": "SPX_4400_CALL"}).json()["status"] == "accepted"
    reply = rejected(api, key, {**ORDER, "quantity": 11}, "PORTFOLIO_LIMIT_EXCEEDED")
    assert reply["details"] == {"portfolio_used": 40, "portfolio_after": 51, "limit": 50}
    assert post(api, key, {**ORDER, "quantity": 10}).json()["status"] == "accepted"


@pytest.mark.parametrize(
    "setup, body, code",
    [
        ("closed", {"instrument_id": "SPX_9999_CALL", "price": 1.001, "quantity": 5000}, "INVALID_INSTRUMENT"),
        ("closed+halt", {"price": 1.001, "quantity": 5000}, "INSTRUMENT_HALTED"),
        ("closed", {"price": 1.001, "quantity": 5000}, "MARKET_CLOSED"),
        ("pre_open", {"price": 1.001, "quantity": 5000, "time_in_force": "ioc"}, "ORDER_TYPE_NOT_ALLOWED"),
        ("open", {"price": 1.001, "quantity": 5000}, "INVALID_PRICE"),
        ("open", {"quantity": 5000, "client_order_id": "A"}, "ORDER_SIZE_LIMIT_EXCEEDED"),
        ("open", {"quantity": 60, "client_order_id": "A"}, "DUPLICATE_CLIENT_ORDER_ID"),
    ],
)
def test_the_first_failing_check_wins(
    trader: tuple[Team, str], api: Api, matching: object, setup: str, body: dict[str, Any], code: str
) -> None:
    _, key = trader
    assert post(api, key, {**ORDER, "client_order_id": "A", "quantity": 1}).json()["status"] == "accepted"
    if "halt" in setup:
        operator.halt(instrument=Instrument.objects.get(pk="SPX_4500_CALL"))
    if setup != "open":
        operator.game_set_phase(setup.split("+")[0])
    rejected(api, key, {**ORDER, **body}, code)


# --- resends (API.md, "Resends") -------------------------------------------------------------------
def test_a_resend_gets_the_same_verdict_and_no_new_frame(
    trader: tuple[Team, str], api: Api, matching: object, frames: Callable[[Team], Frames]
) -> None:
    team, key = trader
    pushed = frames(team)
    first = post(api, key, {**ORDER, "client_order_id": "R1"}).json()
    assert pushed.kinds() == ["new_order_ack"]
    again = post(api, key, {**ORDER, "client_order_id": "R1"})
    assert again.status_code == 200
    assert (again.json()["order_id"], again.json()["status"]) == (first["order_id"], "accepted")
    assert pushed.read() == [] and Order.objects.count() == 1


def test_a_resend_of_a_rejected_order_is_rejected_again(
    trader: tuple[Team, str], api: Api, matching: object, frames: Callable[[Team], Frames]
) -> None:
    team, key = trader
    pushed = frames(team)
    first = rejected(api, key, {**ORDER, "client_order_id": "R2", "price": 100.001}, "INVALID_PRICE")
    assert pushed.kinds() == ["new_order_reject"]
    again = post(api, key, {**ORDER, "client_order_id": "R2", "price": 100.001}).json()
    assert (again["order_id"], again["status"], again["error_code"]) == (first["order_id"], "rejected", "INVALID_PRICE")
    assert pushed.read() == [] and Order.objects.count() == 1


def test_a_resend_shows_the_fills_so_far(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, key = make_team("market_maker")
    _, seller = make_team("market_maker")
    first = post(api, key, {**ORDER, "client_order_id": "R3"}).json()
    post(api, seller, {**ORDER, "side": "sell", "quantity": 4})
    again = post(api, key, {**ORDER, "client_order_id": "R3"}).json()
    assert (again["order_id"], again["filled_quantity"], again["average_price"]) == (first["order_id"], 4, 100.0)


def test_a_different_order_reusing_an_open_id_is_a_duplicate(
    trader: tuple[Team, str], api: Api, matching: object, frames: Callable[[Team], Frames]
) -> None:
    team, key = trader
    pushed = frames(team)
    first = post(api, key, {**ORDER, "client_order_id": "R4"}).json()
    reply = rejected(api, key, {**ORDER, "client_order_id": "R4", "quantity": 11}, "DUPLICATE_CLIENT_ORDER_ID")
    assert reply["order_id"] != first["order_id"]
    assert pushed.kinds() == ["new_order_ack", "new_order_reject"]


def test_a_finished_orders_id_is_free_again(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    first = post(api, key, {**ORDER, "client_order_id": "R5"}).json()
    cancelled = api(key).delete(f"/orders/{first['order_id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    reply = post(api, key, {**ORDER, "client_order_id": "R5", "price": 99.0}).json()
    assert reply["status"] == "accepted" and reply["order_id"] != first["order_id"]
    assert order_of(reply).client_order_id == "R5"


def test_orders_without_a_client_id_are_never_deduplicated(
    trader: tuple[Team, str], api: Api, matching: object
) -> None:
    _, key = trader
    ids = {post(api, key, {**ORDER, "quantity": 1}).json()["order_id"] for _ in range(3)}
    assert len(ids) == 3 and Order.objects.count() == 3


def test_a_resend_after_the_worker_restarts(trader: tuple[Team, str], api: Api, matching: object) -> None:
    _, key = trader
    first = post(api, key, {**ORDER, "client_order_id": "R6"}).json()
    loop.stop()
    assert loop.start_in_thread().started.wait(15)
    again = post(api, key, {**ORDER, "client_order_id": "R6"}).json()
    assert (again["order_id"], again["status"]) == (first["order_id"], "accepted")
    rejected(api, key, {**ORDER, "client_order_id": "R6", "price": 99.0}, "DUPLICATE_CLIENT_ORDER_ID")


# --- the worker missing, stalled, over its backlog, slow ------------------------------------------
def pretend_worker(client: redis.Redis, age_s: float = 0.0) -> None:
    """A "deciding" mark as the worker leaves it, ``age_s`` old, with nobody draining the queue."""
    seconds, micros = client.time()
    client.set(queue.DECIDED, seconds * 1_000_000 + micros - int(age_s * 1_000_000), ex=60)
    client.setnx(queue.SEQ, 0)
    client.delete(queue.QUEUE)


@pytest.fixture
def no_worker(transactional_db: None) -> Iterator[redis.Redis]:
    """No matching worker: whatever is queued stays queued. Keys set by the test go at the end."""
    loop.stop()
    client = sync_client()
    client.delete(queue.QUEUE, queue.INFLIGHT, queue.SEQ, queue.DECIDED)
    yield client
    loop.stop()
    queue.forget(client)


def test_no_worker_is_503_and_nothing_is_stored_or_queued(
    trader: tuple[Team, str], api: Api, no_worker: redis.Redis
) -> None:
    _, key = trader
    response = post(api, key, {**ORDER, "client_order_id": "c-1", "request_id": "r-1"})
    reply = refused(response, 503, "MATCHING_UNAVAILABLE")
    assert (reply["client_order_id"], reply["request_id"]) == ("c-1", "r-1")
    assert reply["details"] == {"component": "matching"} and response["Retry-After"] == "1"
    assert no_worker.llen(queue.QUEUE) == 0 and Order.objects.count() == 0


def test_a_web_process_past_its_capacity_refuses_a_new_order_before_reading_it(
    trader: tuple[Team, str], api: Api, no_worker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Gateway, "shedding", lambda self: True)
    _, key = trader
    response = post(api, key, {**ORDER, "client_order_id": "c-1"})
    reply = refused(response, 503, "MATCHING_UNAVAILABLE")
    assert reply["client_order_id"] is None  # the body was not read
    assert reply["details"] == {"component": "web"} and response["Retry-After"] == "1"
    assert no_worker.llen(queue.QUEUE) == 0 and Order.objects.count() == 0


def test_a_stalled_worker_is_503_once_commands_wait(
    trader: tuple[Team, str], api: Api, no_worker: redis.Redis, settings: Settings
) -> None:
    _, key = trader
    settings.EXCHANGE_WORKER_STALL_S = 0.5
    settings.EXCHANGE_VERDICT_TIMEOUT_S = 0.2
    pretend_worker(no_worker, age_s=1.0)
    refused(post(api, key, ORDER), 504, "TIMEOUT")  # an empty queue: nothing waits on it yet
    response = post(api, key, ORDER)
    reply = refused(response, 503, "MATCHING_UNAVAILABLE")
    assert "decided nothing" in reply["error_message"] and response["Retry-After"] == "1"
    assert no_worker.llen(queue.QUEUE) == 1


def test_a_backlog_over_the_limit_is_503(
    trader: tuple[Team, str], api: Api, no_worker: redis.Redis, settings: Settings
) -> None:
    _, key = trader
    settings.EXCHANGE_MAX_BACKLOG = 3
    settings.EXCHANGE_VERDICT_TIMEOUT_S = 0.2
    pretend_worker(no_worker)
    no_worker.rpush(queue.QUEUE, b"0 {}", b"0 {}")
    refused(post(api, key, ORDER), 504, "TIMEOUT")  # the third fits
    assert no_worker.llen(queue.QUEUE) == 3
    reply = refused(post(api, key, {**ORDER, "client_order_id": "late"}), 503, "MATCHING_UNAVAILABLE")
    assert "full" in reply["error_message"] and reply["client_order_id"] == "late"
    assert no_worker.llen(queue.QUEUE) == 3 and Order.objects.count() == 0


def test_operators_are_not_turned_away_by_the_backlog(
    trader: tuple[Team, str], api: Api, matching: object, settings: Settings
) -> None:
    _, key = trader
    settings.EXCHANGE_MAX_BACKLOG = 0
    refused(post(api, key, ORDER), 503, "MATCHING_UNAVAILABLE")
    assert operator.game_set_phase("closed").changed


@pytest.fixture
def late_worker(no_worker: redis.Redis) -> Callable[[], None]:
    """Starts the matching loop on demand, on the queue as it is (nothing reset)."""

    def start() -> None:
        assert loop.start_in_thread().started.wait(15)

    return start


def test_a_slow_verdict_is_504_pending_new_and_the_order_is_decided_later(
    trader: tuple[Team, str],
    api: Api,
    no_worker: redis.Redis,
    late_worker: Callable[[], None],
    settings: Settings,
    frames: Callable[[Team], Frames],
) -> None:
    team, key = trader
    settings.EXCHANGE_VERDICT_TIMEOUT_S = 0.3
    pretend_worker(no_worker)
    pushed = frames(team)
    reply = refused(post(api, key, {**ORDER, "client_order_id": "slow", "request_id": "r-9"}), 504, "TIMEOUT")
    assert (reply["client_order_id"], reply["request_id"]) == ("slow", "r-9")
    assert Order.objects.count() == 0 and no_worker.llen(queue.QUEUE) == 1

    late_worker()  # the worker comes back and decides what was queued
    [(kind, ack)] = pushed.read(quiet_s=3)
    assert kind == "new_order_ack" and ack["client_order_id"] == "slow"
    order = Order.objects.get(client_order_id="slow")
    assert order.status == "new" and ack["order_id"] == f"ORD_{order.pk}"
    settings.EXCHANGE_VERDICT_TIMEOUT_S = 2
    again = post(api, key, {**ORDER, "client_order_id": "slow"}).json()  # the client retries
    assert (again["status"], again["order_id"]) == ("accepted", ack["order_id"])
    assert Order.objects.count() == 1


# --- no input a client can send makes the server fail ------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
order_like = st.dictionaries(
    st.sampled_from(
        [
            "instrument_id",
            "order_type",
            "side",
            "quantity",
            "price",
            "client_order_id",
            "time_in_force",
            "request_id",
            "extra",
        ]
    ),
    json_values
    | st.sampled_from(["SPX_4500_CALL", "limit", "market", "buy", "sell", "gtc", "ioc", "fok", "day", 1, 100.0]),
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=order_like | json_values)
def test_any_json_gets_a_documented_answer(
    trader: tuple[Team, str], api: Api, relaxed_limits: None, matching: object, body: Any
) -> None:
    _, key = trader
    response = post(api, key, body)
    assert response.status_code in (200, 400), response.content
    reply = response.json()
    assert set(reply) == REPLY_FIELDS
    if response.status_code == 400:
        assert reply["order_id"] is None and reply["error_code"] and reply["status"] == "rejected"
    else:
        assert reply["status"] in ("accepted", "rejected")
        assert order_of(reply).status in ("new", "partially_filled", "filled", "cancelled", "rejected")


# --- other endpoints' malformed input ------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/orders?instrument_id=%00", "/fills?since_trade_id=%00", "/orders?status=%00"])
def test_control_characters_in_queries_are_400(trader: tuple[Team, str], api: Api, path: str) -> None:
    _, key = trader
    response = api(key).get(path)
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_REQUEST"


def test_registration_bodies_use_the_error_envelope(db: None, api: Api) -> None:
    response = api().generic("POST", "/auth/register", "[" * 5000, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_JSON"
    huge = '{"x": "' + "a" * 3_000_000 + '"}'
    response = api().generic("POST", "/auth/register", huge, content_type="application/json")
    assert response.status_code == 413 and response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
