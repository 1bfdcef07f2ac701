"""The OpenAPI schema at /schema/ and the docs at /docs/: served without a key, valid OpenAPI 3,
every operation of API.md with its statuses and error codes, the WebSocket protocol described,
and real replies of this server matching what the schema says of them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from drf_spectacular.validation import validate_schema

from exchange.api.schema import COMPONENTS, ENGINE_ONLY
from exchange.codes import RejectCode
from exchange.matching import loop, queue
from exchange.services.operator import game_set_phase, role_set
from infra.redis_clients import sync_client

AUTH_401 = {"NOT_AUTHENTICATED", "INVALID_API_KEY"}
DISABLED_403 = {"TEAM_DISABLED"}

# (method, path) -> {status: error codes of the envelope, or None for another documented shape}
ENVELOPE_ERRORS: dict[tuple[str, str], dict[int, set[str] | None]] = {
    ("get", "/"): {200: None, 503: None},
    ("post", "/auth/register"): {
        201: None,
        400: {"INVALID_JSON", "UNKNOWN_FIELD", "INVALID_REQUEST"},
        403: {"REGISTRATION_CLOSED"},
        409: {"TEAM_NAME_TAKEN"},
        415: {"UNSUPPORTED_MEDIA_TYPE"},
    },
    ("post", "/orders"): {s: None for s in (200, 400, 413, 415, 429, 503, 504)} | {401: AUTH_401, 403: DISABLED_403},
    ("get", "/orders"): {200: None, 400: {"INVALID_REQUEST"}, 401: AUTH_401, 403: DISABLED_403},
    ("delete", "/orders"): {
        200: None,
        400: {"INVALID_FILTER"},
        401: AUTH_401,
        403: DISABLED_403,
        409: {"MARKET_CLOSED"},
        503: {"MATCHING_UNAVAILABLE"},
        504: {"TIMEOUT"},
    },
    ("get", "/orders/{order_id}"): {200: None, 401: AUTH_401, 403: DISABLED_403, 404: {"ORDER_NOT_FOUND"}},
    ("delete", "/orders/{order_id}"): {200: None, 401: AUTH_401, 403: DISABLED_403, 404: None, 503: None, 504: None},
    ("get", "/positions"): {200: None, 401: AUTH_401, 403: DISABLED_403},
    ("get", "/positions/{team_id}"): {200: None, 401: AUTH_401, 403: {"FORBIDDEN", "TEAM_DISABLED"}},
    ("get", "/fills"): {200: None, 400: {"INVALID_TRADE_ID", "INVALID_REQUEST"}, 401: AUTH_401, 403: DISABLED_403},
    ("get", "/account"): {200: None, 401: AUTH_401, 403: DISABLED_403},
    ("get", "/instruments"): {200: None, 401: AUTH_401, 403: DISABLED_403},
    ("get", "/orderbook/{instrument_id}"): {
        200: None,
        400: {"INVALID_REQUEST"},
        401: AUTH_401,
        403: DISABLED_403,
        404: {"INVALID_INSTRUMENT"},
    },
    ("get", "/game"): {200: None, 401: AUTH_401, 403: DISABLED_403},
}
OPEN = {("get", "/"), ("post", "/auth/register")}

# Fields of each reply, exact names from API.md.
ORDER_REPLY = {
    "order_id", "client_order_id", "status", "timestamp", "filled_quantity", "average_price", "fees",
    "liquidity_type", "error_code", "error_message", "details", "request_id",
}  # fmt: skip
CANCEL_REPLY = {
    "order_id", "client_order_id", "status", "cancelled_quantity", "filled_quantity", "error_code",
    "error_message", "timestamp",
}  # fmt: skip
ORDER_OBJECT = {
    "order_id", "client_order_id", "instrument_id", "side", "order_type", "time_in_force", "price", "quantity",
    "filled_quantity", "remaining_quantity", "cancelled_quantity", "average_price", "fees", "status",
    "error_code", "created_at", "updated_at",
}  # fmt: skip
FILL_OBJECT = {
    "trade_id", "order_id", "client_order_id", "instrument_id", "side", "quantity", "price", "liquidity_type",
    "fees", "position", "timestamp",
}  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    response = Client().get("/schema/", {"format": "json"})
    assert response.status_code == 200, response.content[:500]
    return response.json()


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, name = node["$ref"].split("/")
        node = spec["components"]["schemas"][name]
    return node


def body_schema(spec: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    response = spec["paths"][path][method]["responses"][str(status)]
    return resolve(spec, response["content"]["application/json"]["schema"])


def properties(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    return {name: resolve(spec, prop) for name, prop in resolve(spec, schema)["properties"].items()}


def test_schema_is_served_without_a_key_as_valid_openapi_3(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.")
    validate_schema(spec)
    assert Client().get("/schema/", HTTP_X_API_KEY="itg_not_a_key").status_code == 200
    yaml = Client().get("/schema/")
    assert yaml.status_code == 200 and b"openapi:" in yaml.content


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(spec):
        prefix, _, name = ref.rpartition("/")
        assert prefix == "#/components/schemas" and name in spec["components"]["schemas"], ref


def test_every_body_but_the_registration_form_is_made_from_a_wire_shape(spec: dict[str, Any]) -> None:
    assert set(spec["components"]["schemas"]) == set(COMPONENTS.schemas) | {"RegisterInput"}


def test_every_operation_of_the_contract_is_documented(spec: dict[str, Any]) -> None:
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops if m != "parameters"}
    assert documented == set(ENVELOPE_ERRORS)
    operation_ids = [spec["paths"][p][m]["operationId"] for m, p in documented]
    assert len(set(operation_ids)) == len(operation_ids)


@pytest.mark.parametrize(("method", "path"), sorted(ENVELOPE_ERRORS))
def test_statuses_and_error_codes(spec: dict[str, Any], method: str, path: str) -> None:
    expected = ENVELOPE_ERRORS[method, path]
    responses = spec["paths"][path][method]["responses"]
    assert {int(s) for s in responses} == set(expected)
    for status, codes in expected.items():
        schema = body_schema(spec, method, path, status)
        if codes is None:
            assert "error" not in schema.get("properties", {}), (status, schema)
            continue
        error = schema["properties"]["error"]
        assert error["required"] == ["code", "message", "details"]
        assert set(error["properties"]["code"]["enum"]) == codes, status


def test_the_key_header_is_the_security_of_every_call_but_the_open_ones(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": spec["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
    }
    for method, path in ENVELOPE_ERRORS:
        security = spec["paths"][path][method].get("security", [{}])
        if (method, path) in OPEN:
            assert security in ([{}], []), (method, path)
        else:
            assert security == [{"ApiKeyAuth": []}], (method, path)


def test_order_replies_have_the_contract_fields_and_split_the_codes_by_status(spec: dict[str, Any]) -> None:
    codes_by_status = {}
    for status in (200, 400, 413, 415, 429, 503, 504):
        schema = body_schema(spec, "post", "/orders", status)
        assert set(schema["properties"]) == ORDER_REPLY == set(schema["required"])
        codes_by_status[status] = set(schema["properties"]["error_code"]["enum"]) - {None}
        if status != 200:
            assert schema["properties"]["status"]["enum"] == ["pending_new" if status == 504 else "rejected"]
            assert schema["properties"]["order_id"]["nullable"] is True
    assert body_schema(spec, "post", "/orders", 200)["properties"]["status"]["enum"] == ["accepted", "rejected"]
    assert not body_schema(spec, "post", "/orders", 200)["properties"]["order_id"].get("nullable", False)
    assert codes_by_status[400] >= {"INVALID_JSON", "MISSING_FIELD", "UNKNOWN_FIELD", "MISSING_PRICE", "INVALID_FIELD"}
    assert "INVALID_CLIENT_ORDER_ID" not in codes_by_status[400]
    assert codes_by_status[200] >= {"POSITION_LIMIT_EXCEEDED", "MARKET_CLOSED", "DUPLICATE_CLIENT_ORDER_ID"}
    assert codes_by_status[413] == {"PAYLOAD_TOO_LARGE"}
    assert codes_by_status[415] == {"UNSUPPORTED_MEDIA_TYPE"}
    assert codes_by_status[429] == {"RATE_LIMIT_EXCEEDED"}
    assert codes_by_status[503] == {"MATCHING_UNAVAILABLE"}
    assert codes_by_status[504] == {"TIMEOUT"}
    for status in ("429", "503"):
        retry_after = spec["paths"]["/orders"]["post"]["responses"][status]["headers"]["Retry-After"]
        assert retry_after["schema"]["type"] == "integer"
    # every rejection code is documented somewhere: the replies of POST /orders or of the cancels
    cancel_codes: set[str] = set()
    for status in (200, 404, 503, 504):
        schema = body_schema(spec, "delete", "/orders/{order_id}", status)
        assert set(schema["properties"]) == CANCEL_REPLY
        cancel_codes |= set(schema["properties"]["error_code"]["enum"]) - {None}
    assert cancel_codes == {
        "ORDER_ALREADY_FILLED", "ORDER_ALREADY_CANCELLED", "MARKET_CLOSED", "ORDER_NOT_FOUND", "MATCHING_UNAVAILABLE",
        "TIMEOUT",
    }  # fmt: skip
    assert set(RejectCode) - ENGINE_ONLY <= set().union(*codes_by_status.values(), cancel_codes)
    assert not ENGINE_ONLY & codes_by_status[200]


def test_request_bodies(spec: dict[str, Any]) -> None:
    order = resolve(spec, spec["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert set(order["properties"]) == {
        "instrument_id", "order_type", "side", "quantity", "price", "client_order_id", "time_in_force", "request_id",
    }  # fmt: skip
    assert set(order["required"]) == {"instrument_id", "order_type", "side", "quantity"}
    assert order["additionalProperties"] is False
    assert order["properties"]["price"]["type"] == "number"
    assert order["properties"]["price"]["exclusiveMinimum"] is True
    assert order["properties"]["quantity"]["type"] == "integer" and order["properties"]["quantity"]["minimum"] == 1
    assert order["properties"]["time_in_force"]["enum"] == ["gtc", "day", "ioc", "fok"]
    assert order["properties"]["client_order_id"]["maxLength"] == 64
    register = resolve(
        spec, spec["paths"]["/auth/register"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    assert register["additionalProperties"] is False
    assert (register["properties"]["team_name"]["minLength"], register["properties"]["team_name"]["maxLength"]) == (
        3,
        50,
    )
    assert set(register["properties"]["role"]["enum"]) == {"market_maker", "hedge_fund", "arbitrage", "retail"}


def test_query_reply_shapes(spec: dict[str, Any]) -> None:
    assert set(body_schema(spec, "delete", "/orders/{order_id}", 200)["properties"]) == CANCEL_REPLY
    pending = body_schema(spec, "delete", "/orders/{order_id}", 504)["properties"]
    assert (pending["status"]["enum"], pending["error_code"]["enum"]) == (["pending_cancel"], ["TIMEOUT"])
    assert body_schema(spec, "delete", "/orders/{order_id}", 404)["properties"]["error_code"]["enum"] == [
        "ORDER_NOT_FOUND"
    ]
    results = resolve(spec, properties(spec, body_schema(spec, "delete", "/orders", 200))["results"]["items"])
    assert set(results["properties"]) == CANCEL_REPLY and results["properties"]["status"]["enum"] == ["cancelled"]
    for path in ("/orders", "/orders/{order_id}"):
        assert (
            spec["paths"][path]["delete"]["responses"]["503"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
        )
    orders = properties(spec, body_schema(spec, "get", "/orders", 200))["orders"]
    assert set(resolve(spec, orders["items"])["properties"]) == ORDER_OBJECT
    statuses = resolve(spec, orders["items"])["properties"]["status"]["enum"]
    assert set(statuses) == {"new", "partially_filled", "filled", "cancelled", "rejected"}  # never pending_new
    detail = body_schema(spec, "get", "/orders/{order_id}", 200)
    assert set(detail["properties"]) == ORDER_OBJECT | {"fills"}
    assert set(resolve(spec, detail["properties"]["fills"]["items"])["properties"]) == FILL_OBJECT
    positions = body_schema(spec, "get", "/positions", 200)
    assert positions["properties"]["positions"]["additionalProperties"]["type"] == "integer"
    account = body_schema(spec, "get", "/account", 200)
    assert set(account["properties"]) == {
        "team_id", "role", "cash", "fees_paid", "realized_pnl", "unrealized_pnl", "total_pnl", "positions",
        "portfolio_limit", "portfolio_used",
    }  # fmt: skip
    instrument = resolve(spec, body_schema(spec, "get", "/instruments", 200)["properties"]["instruments"]["items"])
    assert set(instrument["properties"]) == {
        "instrument_id", "underlying", "option_type", "strike", "expiry", "tick_size", "multiplier",
        "max_order_size", "status",
    }  # fmt: skip
    book = body_schema(spec, "get", "/orderbook/{instrument_id}", 200)
    assert set(book["properties"]) == {"instrument_id", "bids", "asks", "last_trade", "timestamp"}
    assert set(body_schema(spec, "get", "/game", 200)["properties"]) == {
        "phase", "next_phase", "next_phase_at", "schedule", "server_time",
    }  # fmt: skip
    health = body_schema(spec, "get", "/", 503)
    assert health["properties"]["status"]["enum"] == ["ok", "degraded"]


def test_prices_and_money_are_numbers(spec: dict[str, Any]) -> None:
    money = {"price", "average_price", "fees", "cash", "fees_paid", "realized_pnl", "unrealized_pnl", "total_pnl",
             "mark_price", "strike", "tick_size"}  # fmt: skip
    seen = set()
    for name, schema in spec["components"]["schemas"].items():
        for prop, value in schema.get("properties", {}).items():
            if prop in money:
                seen.add(prop)
                assert value["type"] == "number", (name, prop)
    assert seen == money


def test_the_description_covers_conventions_codes_and_the_websocket(spec: dict[str, Any]) -> None:
    text = spec["info"]["description"]
    for code in RejectCode:
        assert f"`{code}`" in text
    for needle in (
        "ws://host:port/ws?api_key=KEY",
        "1008",
        "4008",
        "too many connections",
        '"seq"',
        "position_snapshot",
        "last_trade_id",
        '{"action": "ping"}',
        '{"action": "subscribe"',
        "pong",
        "subscribed",
        "UNKNOWN_ACTION",
        '{"error": {"code": "UPPER_SNAKE", "message": "human text", "details": {}}}',
        "Retry-After",
        "`instrument_id, bid, bid_size, ask, ask_size, last, last_size, volume`",
        "409 `MARKET_CLOSED`",
        "`pending_new` / `pending_cancel`",
        "`TOO_MANY_FAILED_AUTH`",
    ):
        assert needle in text, needle
    for frame in (
        "new_order_ack", "new_order_reject", "execution_report", "cancel_ack", "cancel_reject", "signal",
        "market_data", "trade", "underlying", "event",
    ):  # fmt: skip
        assert f"| `{frame}` |" in text, frame
    for reason in (
        "user_requested",
        "ioc_remainder",
        "fok_unfilled",
        "self_trade_prevented",
        "session_end",
        "operator",
    ):
        assert f"`{reason}`" in text


def test_swagger_ui_is_served_from_local_static_files() -> None:
    from django.contrib.staticfiles import finders

    response = Client().get("/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    # Every asset the page loads is this server's own; the page also holds a random token, so
    # "cdn" is looked for in what it loads, not in the whole text.
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert sources and all(source.startswith("/") and not source.startswith("//") for source in sources), sources
    assert not any("cdn" in source.lower() for source in sources)
    assert "https://" not in html and "http://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        url = f"/static/drf_spectacular_sidecar/swagger-ui-dist/{asset}"
        assert url in html
        assert finders.find(url.removeprefix("/static/")), asset
    assert "/schema/" in html


# --- real replies against the schema ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_real_replies_match_the_schema(
    documented: Any, make_team: Any, instruments: list[str], matching: Any, settings: Any
) -> None:
    """A sample of each reply shape, produced by this server, validated against the schema."""
    settings.EXCHANGE_VERDICT_TIMEOUT_S = 10  # a busy machine must not turn the verdicts sampled into 504s
    team, key = make_team("market_maker")
    anonymous, keyed = Client(), Client(HTTP_X_API_KEY=key)
    statuses: list[int] = []

    def check(method: str, template: str, response: Any) -> Any:
        documented(method, template, response)
        statuses.append(response.status_code)
        return response

    def post(client: Client, path: str, body: Any, content_type: str = "application/json") -> Any:
        return check("post", path, client.post(path, body, content_type))

    def delete(path: str, template: str) -> Any:
        return check("delete", template, keyed.delete(path))

    check("get", "/", anonymous.get("/"))
    team_body = {"team_name": "Schema Team", "role": "retail"}
    post(anonymous, "/auth/register", team_body)
    post(anonymous, "/auth/register", team_body)
    post(anonymous, "/auth/register", {"team_name": "x", "role": "retail", "typo": 1})
    post(anonymous, "/auth/register", "team_name=x", "text/plain")
    order = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 1, "price": 10.0}
    order_id = post(keyed, "/orders", order).json()["order_id"]
    resting = post(keyed, "/orders", dict(order, price=9.0)).json()["order_id"]
    post(keyed, "/orders", dict(order, instrument_id="NOPE"))
    post(keyed, "/orders", dict(order, price=None))
    post(keyed, "/orders", dict(order, client_order_id=""))
    post(keyed, "/orders", "x" * (64 * 1024 + 1))
    post(keyed, "/orders", "side=buy", "text/plain")
    post(anonymous, "/orders", order)
    check("get", "/orders", keyed.get("/orders", {"status": "all"}))
    check("get", "/orders", keyed.get("/orders", {"since": "x"}))
    check("get", "/orders/{order_id}", keyed.get(f"/orders/{order_id}"))
    check("get", "/orders/{order_id}", keyed.get("/orders/ORD_0"))
    delete("/orders/ORD_0", "/orders/{order_id}")
    delete(f"/orders/{order_id}", "/orders/{order_id}")
    delete(f"/orders/{order_id}", "/orders/{order_id}")
    delete("/orders?instrument_id=NOPE", "/orders")
    delete(f"/orders?instrument_id={'X' * 65}", "/orders")
    check("get", "/positions", keyed.get("/positions"))
    check("get", "/positions/{team_id}", keyed.get(f"/positions/{team.team_id}"))
    check("get", "/positions/{team_id}", keyed.get("/positions/TEAM_0"))
    check("get", "/fills", keyed.get("/fills"))
    check("get", "/fills", keyed.get("/fills", {"since_trade_id": "x"}))
    check("get", "/account", keyed.get("/account"))
    check("get", "/instruments", keyed.get("/instruments"))
    check("get", "/orderbook/{instrument_id}", keyed.get("/orderbook/SPX_4500_CALL"))
    check("get", "/orderbook/{instrument_id}", keyed.get("/orderbook/NOPE"))
    check("get", "/orderbook/{instrument_id}", keyed.get("/orderbook/X", {"depth": "0"}))
    check("get", "/game", keyed.get("/game", HTTP_X_API_KEY="itg_unknown"))
    check("get", "/game", keyed.get("/game"))
    assert statuses == [
        200, 201, 409, 400, 415, 200, 200, 200, 400, 400, 413, 415, 401, 200, 400, 200, 404, 404, 200, 200, 200, 400,
        200, 200, 403, 200, 400, 200, 200, 200, 404, 400, 401, 200,
    ]  # fmt: skip

    # A closed market: cancels refused, in the cancel shape and (cancel all) the envelope.
    game_set_phase("closed")
    assert post(keyed, "/orders", order).json()["error_code"] == "MARKET_CLOSED"
    assert delete(f"/orders/{resting}", "/orders/{order_id}").json()["error_code"] == "MARKET_CLOSED"
    assert delete("/orders", "/orders").status_code == 409
    game_set_phase("continuous")
    assert delete("/orders", "/orders").json()["results"][0]["order_id"] == resting

    # Over the role's rate.
    role_set("market_maker", "schema test", orders_per_second=1)
    replies = [post(keyed, "/orders", dict(order, price=8.0)) for _ in range(2)]
    assert replies[-1].status_code == 429
    role_set("market_maker", "schema test", orders_per_second=0)

    # A worker that takes commands but gives no verdict in time: 504.
    loop.stop()
    sync_client().eval(queue.MARK, 2, queue.DECIDED, queue.SEQ, queue.DECIDED_TTL_S)
    settings.EXCHANGE_VERDICT_TIMEOUT_S = 0.2
    assert post(keyed, "/orders", dict(order, price=7.0, client_order_id="late")).status_code == 504
    assert delete(f"/orders/{resting}", "/orders/{order_id}").status_code == 504
    assert delete("/orders", "/orders").status_code == 504

    # No worker at all: 503, nothing queued.
    sync_client().delete(queue.DECIDED)
    queued = sync_client().llen(queue.QUEUE)
    assert post(keyed, "/orders", order).status_code == 503
    assert delete(f"/orders/{resting}", "/orders/{order_id}").status_code == 503
    assert delete("/orders", "/orders").status_code == 503
    assert sync_client().llen(queue.QUEUE) == queued
    assert statuses[34:38] == [200, 200, 409, 200]
    assert statuses[-7:] == [429, 504, 504, 504, 503, 503, 503]
