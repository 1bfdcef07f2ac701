"""Operator services, commands and admin actions: phases, halts and role changes go through the
matching worker's queue behind every order sent before them; what they change in the database,
journal, announce, and what the next order sees."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Team
from exchange.delivery import MARKET_GROUP, team_group
from exchange.matching import loop, queue
from exchange.matching.publish import layer_channel
from exchange.models import Game, Instrument, JournalEntry, Order, Phase, RoleChange, RolePolicy
from exchange.services import operator
from exchange.services.operator import OperatorError, game_set_phase, halt, registration_set, resume, role_set
from infra.redis_clients import sync_client

pytestmark = pytest.mark.django_db(transaction=True)
MakeTeam = Callable[..., tuple[Team, str]]
Api = Callable[..., APIClient]
ORDER = {"instrument_id": "SPX_4500_CALL", "order_type": "limit", "side": "buy", "quantity": 10, "price": 100.0}


class Frames:
    """What the worker publishes to one group (a team's, or the public tape), read off Redis."""

    def __init__(self, group: str) -> None:
        self.layer = get_channel_layer()
        self.pubsub = sync_client().pubsub()
        self.pubsub.subscribe(layer_channel(group))
        confirmation = self.pubsub.get_message(timeout=2)
        assert confirmation is not None and confirmation["type"] == "subscribe"

    def read(self, quiet_s: float = 0.3) -> list[tuple[str, str, dict[str, Any]]]:
        found = []
        while (message := self.pubsub.get_message(timeout=quiet_s)) is not None:
            if message["type"] == "message":
                for kind, stamp, data, _ in self.layer.deserialize(message["data"])["frames"]:  # type: ignore[union-attr]
                    found.append((kind, stamp, json.loads(data)))
        return found

    def events(self) -> list[dict[str, Any]]:
        return [data for kind, _, data in self.read() if kind == "event"]


@pytest.fixture
def listen() -> Iterator[Callable[[str], Frames]]:
    opened: list[Frames] = []

    def subscribe(group: str) -> Frames:
        opened.append(Frames(group))
        return opened[-1]

    yield subscribe
    for frames in opened:
        frames.pubsub.close()


@pytest.fixture
def no_worker(transactional_db: None) -> Iterator[None]:
    loop.stop()
    sync_client().delete(queue.DECIDED)
    yield
    queue.forget(sync_client())


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def post(api: Any, key: str, **fields: Any) -> dict[str, Any]:
    return api(key).post("/orders", {**ORDER, **fields}, format="json").json()


# --- phases -----------------------------------------------------------------------------------------
def test_set_phase_goes_through_the_queue_and_announces(
    db: None, matching: object, listen: Callable[[str], Frames]
) -> None:
    tape = listen(MARKET_GROUP)
    change = game_set_phase("closed")
    assert (change.previous, change.phase, change.changed) == ("continuous", "closed", True)
    assert Game.objects.get(pk=1).phase == "closed"
    entry = JournalEntry.objects.get(pk=change.command_id)
    assert entry.kind == "phase" and json.loads(entry.command)["phase"] == "closed"
    [(kind, stamp, data)] = [frame for frame in tape.read() if frame[0] == "event"]
    assert data == {"event_type": "phase_change", "phase": "closed", "previous_phase": "continuous"}
    assert stamp.endswith("Z") and len(stamp) == 27


def test_setting_the_current_phase_changes_nothing(db: None, matching: object, listen: Callable[[str], Frames]) -> None:
    game_set_phase("pre_open")
    tape = listen(MARKET_GROUP)
    change = game_set_phase("pre_open")
    assert not change.changed and change.command_id is None
    assert tape.events() == []
    assert change.summary() == ["The phase is already pre_open: nothing changed."]


def test_an_unknown_phase_is_refused(db: None) -> None:
    with pytest.raises(ValueError):
        game_set_phase("lunch")
    with pytest.raises(CommandError):
        run("set_phase", "lunch")


def test_set_phase_command_says_what_changed(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, key = make_team()
    day_order = post(api, key, time_in_force="day")["order_id"]
    out = run("set_phase", "closed")
    assert "Phase: continuous -> closed" in out
    assert "MARKET_CLOSED" in out and "1 open day order(s) will be cancelled with reason session_end" in out
    order = Order.objects.get(pk=int(day_order[4:]))
    assert (order.status, order.cancel_reason) == ("cancelled", "session_end")
    assert post(api, key)["error_code"] == "MARKET_CLOSED"  # the next order sees the new phase
    assert "already closed" in run("set_phase", "closed")
    run("set_phase", "pre_open")
    assert "opening auction uncrosses every book" in run("set_phase", "continuous")


def test_the_opening_uncrosses_orders_taken_before_the_open(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, buyer = make_team()
    _, seller = make_team()
    game_set_phase("pre_open")
    buy = post(api, buyer, price=101.0)
    sell = post(api, seller, side="sell", price=100.0, quantity=4)
    assert buy["status"] == sell["status"] == "accepted" and buy["filled_quantity"] == 0
    game_set_phase("continuous")
    assert Order.objects.get(pk=int(sell["order_id"][4:])).status == "filled"
    assert Order.objects.get(pk=int(buy["order_id"][4:])).filled_quantity == 4


@pytest.mark.parametrize(
    "command",
    [
        ("set_phase", "closed"),
        ("halt", "--exchange"),
        ("resume", "--exchange"),
        ("set_role", "retail", "--max-order-size", "5"),
    ],
)
def test_operator_commands_need_the_worker(no_worker: None, command: tuple[str, ...]) -> None:
    with pytest.raises(CommandError, match="matching worker"):
        run(*command)


def test_operator_services_need_the_worker(no_worker: None) -> None:
    with pytest.raises(OperatorError, match="matching worker"):
        game_set_phase("closed")
    assert Game.objects.get_or_create(pk=1)[0].phase == "continuous"  # nothing changed behind its back


# --- halts ------------------------------------------------------------------------------------------
def test_an_instrument_halt_with_cancel(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object, listen: Callable[[str], Frames]
) -> None:
    team, key = make_team()
    resting = post(api, key, client_order_id="rest")
    tape, own = listen(MARKET_GROUP), listen(team_group(team.pk))
    instrument = Instrument.objects.get(symbol="SPX_4500_CALL")
    change = halt(instrument=instrument, cancel_resting=True)
    assert (change.scope, change.target, change.halted, change.changed) == ("instrument", "SPX_4500_CALL", True, True)
    assert change.open_orders == 1 and JournalEntry.objects.get(pk=change.command_id).kind == "halt"
    assert Instrument.objects.get(pk="SPX_4500_CALL").halted
    order = Order.objects.get(pk=int(resting["order_id"][4:]))
    assert (order.status, order.cancel_reason) == ("cancelled", "operator")
    assert tape.events() == [
        {"event_type": "halt", "scope": "instrument", "instrument_id": "SPX_4500_CALL", "cancel_resting": True}
    ]
    assert [(kind, data["reason"]) for kind, _, data in own.read()] == [("cancel_ack", "operator")]
    assert post(api, key)["error_code"] == "INSTRUMENT_HALTED"
    assert post(api, key, instrument_id="SPX_4500_PUT")["status"] == "accepted"


def test_a_team_halt_without_cancel_tells_only_that_team(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object, listen: Callable[[str], Frames]
) -> None:
    team, key = make_team()
    other, other_key = make_team()
    resting = post(api, key)
    tape, own, theirs = listen(MARKET_GROUP), listen(team_group(team.pk)), listen(team_group(other.pk))
    change = halt(team=team)
    assert change.changed and change.command_id is None and change.open_orders == 1
    assert Team.objects.get(pk=team.pk).trading_halted and not Team.objects.get(pk=other.pk).trading_halted
    assert tape.events() == [] and theirs.read() == []
    assert own.events() == [{"event_type": "halt", "scope": "team", "team_id": team.team_id, "cancel_resting": False}]
    assert Order.objects.get(pk=int(resting["order_id"][4:])).status == "new"
    assert post(api, key, price=99.0)["error_code"] == "TRADING_DISABLED"
    assert post(api, other_key, price=99.0)["status"] == "accepted"
    # a halted team can still cancel
    cancelled = api(key).delete(f"/orders/{resting['order_id']}").json()
    assert cancelled["status"] == "cancelled"


def test_an_exchange_halt_sweeps_everything_and_resume_lifts_it(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object, listen: Callable[[str], Frames]
) -> None:
    _, key = make_team()
    resting = post(api, key)
    tape = listen(MARKET_GROUP)
    change = halt(exchange=True, cancel_resting=True)
    assert Game.objects.get(pk=1).trading_halted and change.scope == "exchange"
    assert Order.objects.get(pk=int(resting["order_id"][4:])).cancel_reason == "operator"
    assert post(api, key)["error_code"] == "TRADING_DISABLED"
    resumed = resume(exchange=True)
    assert not Game.objects.get(pk=1).trading_halted and resumed.changed and not resumed.halted
    assert resumed.command_id is None
    assert tape.events() == [
        {"event_type": "halt", "scope": "exchange", "cancel_resting": True},
        {"event_type": "resume", "scope": "exchange"},
    ]
    assert post(api, key)["status"] == "accepted"


def test_halting_twice_announces_once_but_can_still_sweep(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object, listen: Callable[[str], Frames]
) -> None:
    team, key = make_team()
    own = listen(team_group(team.pk))
    halt(team=team)
    post(api, key)  # refused: nothing rests
    operator.resume(team=team)
    resting = post(api, key, price=99.0)
    halt(team=team)
    own.read()
    again = halt(team=team, cancel_resting=True)
    assert not again.changed and again.command_id is not None and again.open_orders == 1
    assert [kind for kind, _, _ in own.read()] == ["cancel_ack"]  # no second halt event
    assert Order.objects.get(pk=int(resting["order_id"][4:])).status == "cancelled"
    spy = Instrument.objects.create(symbol="SPY_440_PUT", underlying="SPY", option_type="put", strike=440)
    assert not resume(instrument=spy).changed


@pytest.mark.parametrize("scope", [{}, {"exchange": True, "team": "x"}])
def test_exactly_one_scope(db: None, scope: dict[str, Any]) -> None:
    if "team" in scope:
        scope["team"] = Team.objects.create(name="Somebody", role="retail")
    with pytest.raises(OperatorError):
        halt(**scope)


def test_halt_and_resume_commands(make_team: MakeTeam, instruments: list[str], api: Api, matching: object) -> None:
    team, key = make_team(name="Alpha Desk")
    assert post(api, key)["status"] == "accepted"

    out = run("halt", "--team", "alpha desk", "--cancel-resting")
    assert f"Team {team.team_id} halted: new orders are refused with TRADING_DISABLED." in out
    assert "1 open order(s) will be cancelled with reason operator" in out
    assert "that team's connections" in out
    assert "already halted" in run("halt", "--team", team.team_id)
    assert "resumed" in run("resume", "--team", team.team_id)

    out = run("halt", "--instrument", "spx_4500_call")
    assert "Instrument SPX_4500_CALL halted: new orders are refused with INSTRUMENT_HALTED." in out
    assert "open order(s) stay on the book" in out
    assert "resumed" in run("resume", "--instrument", "SPX_4500_CALL")

    assert "The exchange halted" in run("halt", "--exchange")
    assert "The exchange resumed" in run("resume", "--exchange")
    assert not Game.objects.get(pk=1).trading_halted


@pytest.mark.parametrize("args", [("--team", "Nobody"), ("--instrument", "NOPE"), ("--team", "TEAM_999999")])
def test_the_halt_command_refuses_unknown_targets(db: None, args: tuple[str, str]) -> None:
    with pytest.raises(CommandError):
        run("halt", *args)


def test_the_halt_command_needs_exactly_one_scope(db: None) -> None:
    with pytest.raises(CommandError):
        run("halt")
    with pytest.raises(CommandError):
        run("halt", "--exchange", "--instrument", "SPX_4500_CALL")


# --- roles ------------------------------------------------------------------------------------------
def test_set_role_prints_old_and_new_audits_and_binds_the_next_order(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, key = make_team("retail")
    out = run("set_role", "retail", "--max-order-size", "5", "--taker-fee", "0.05")
    assert out.splitlines() == ["retail.max_order_size: 100 -> 5", "retail.taker_fee: 0.03 -> 0.05"]
    policy = RolePolicy.objects.get(role="retail")
    assert (policy.max_order_size, str(policy.taker_fee)) == (5, "0.0500")
    audit = list(RoleChange.objects.order_by("field").values_list("role", "field", "old", "new", "changed_by"))
    assert [row[:4] for row in audit] == [
        ("retail", "max_order_size", "100", "5"),
        ("retail", "taker_fee", "0.03", "0.05"),
    ]
    assert all(row[4].startswith("manage.py set_role") for row in audit)
    reply = post(api, key, quantity=6)
    assert reply["error_code"] == "ORDER_SIZE_LIMIT_EXCEEDED" and reply["details"] == {"quantity": 6, "limit": 5}


def test_set_role_fees_apply_to_the_next_fill(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, maker = make_team("market_maker")
    _, taker = make_team("hedge_fund")
    run("set_role", "hedge_fund", "--taker-fee", "0.07")
    post(api, maker, side="sell", quantity=2)
    assert post(api, taker, quantity=2)["fees"] == pytest.approx(0.14)


def test_set_role_with_the_current_values_changes_nothing(db: None, matching: object) -> None:
    assert run("set_role", "retail", "--max-order-size", "100").splitlines() == ["retail: nothing changed."]
    assert not RoleChange.objects.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("retail",),
        ("retail", "--max-order-size", "-1"),
        ("retail", "--maker-fee", "abc"),
        ("retail", "--maker-fee", "1e9"),
        ("banker", "--max-order-size", "5"),
    ],
)
def test_set_role_refuses_bad_input(db: None, args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        run("set_role", *args)
    assert not RoleChange.objects.exists()


def test_role_set_names_who_changed_it(db: None, matching: object) -> None:
    update = role_set("arbitrage", "ops desk", position_limit=120)
    assert update.changes == {"position_limit": ("100", "120")}
    assert RoleChange.objects.get().changed_by == "ops desk"


# --- edits made outside the queue reach the worker ------------------------------------------------------
def test_orm_saves_reach_the_worker_before_the_next_order(
    make_team: MakeTeam, instruments: list[str], api: Api, no_rate_limit: None, matching: object
) -> None:
    team, key = make_team("retail")
    policy = RolePolicy.objects.get(role="retail")
    policy.max_order_size = 3
    policy.save()
    assert post(api, key, quantity=4)["error_code"] == "ORDER_SIZE_LIMIT_EXCEEDED"
    team.trading_halted = True
    team.save()
    assert post(api, key, quantity=1)["error_code"] == "TRADING_DISABLED"


def test_a_game_row_saved_by_hand_reaches_the_worker(
    make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    _, key = make_team()
    game = Game.objects.get(pk=1)
    game.phase = Phase.CLOSED
    game.save()
    assert post(api, key)["error_code"] == "MARKET_CLOSED"


# --- registration ---------------------------------------------------------------------------------
def test_registration_can_be_closed_and_opened(db: None, api: Api) -> None:
    assert registration_set(False) and not registration_set(False)
    response = api().post("/auth/register", {"team_name": "Late Team", "role": "retail"}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "REGISTRATION_CLOSED")
    assert registration_set(True)
    assert api().post("/auth/register", {"team_name": "Late Team", "role": "retail"}, format="json").status_code == 201


# --- admin actions --------------------------------------------------------------------------------
def admin_action(admin_client: Any, model: str, action: str, pks: list[object]) -> Any:
    return admin_client.post(
        f"/admin/{model}/", {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_admin_team_actions(
    admin_client: Client, make_team: MakeTeam, instruments: list[str], api: Api, matching: object
) -> None:
    team, key = make_team()
    resting = post(api, key)
    response = admin_action(admin_client, "accounts/team", "halt_cancel_resting", [team.pk])
    assert response.status_code == 200 and any("halted" in m for m in messages_of(response))
    assert Team.objects.get(pk=team.pk).trading_halted
    assert Order.objects.get(pk=int(resting["order_id"][4:])).cancel_reason == "operator"
    admin_action(admin_client, "accounts/team", "resume_trading", [team.pk])
    assert not Team.objects.get(pk=team.pk).trading_halted
    kept = post(api, key, price=99.0)
    admin_action(admin_client, "accounts/team", "halt_keep_resting", [team.pk])
    assert Team.objects.get(pk=team.pk).trading_halted
    assert Order.objects.get(pk=int(kept["order_id"][4:])).status == "new"


def test_admin_instrument_actions(admin_client: Client, instruments: list[str], matching: object) -> None:
    symbols = ["SPX_4500_CALL", "SPX_4500_PUT"]
    admin_action(admin_client, "exchange/instrument", "halt_keep_resting", symbols)
    assert set(Instrument.objects.filter(halted=True).values_list("symbol", flat=True)) == set(symbols)
    admin_action(admin_client, "exchange/instrument", "halt_cancel_resting", ["SPX_4400_CALL"])
    assert Instrument.objects.get(pk="SPX_4400_CALL").halted
    admin_action(admin_client, "exchange/instrument", "resume_trading", [*symbols, "SPX_4400_CALL"])
    assert not Instrument.objects.filter(halted=True).exists()


def test_admin_game_actions(admin_client: Client, matching: object) -> None:
    assert admin_client.get("/admin/exchange/game/").status_code == 200  # creates the game row
    for phase in ("closed", "pre_open", "opening_auction", "continuous"):
        response = admin_action(admin_client, "exchange/game", f"set_phase_{phase}", [1])
        assert Game.objects.get(pk=1).phase == phase
    assert any("opening auction" in m for m in messages_of(response))
    phases = [json.loads(e.command)["phase"] for e in JournalEntry.objects.filter(kind="phase")]
    assert phases == ["closed", "pre_open", "opening_auction", "continuous"]
    admin_action(admin_client, "exchange/game", "halt_cancel_resting", [1])
    assert Game.objects.get(pk=1).trading_halted
    admin_action(admin_client, "exchange/game", "resume_trading", [1])
    assert not Game.objects.get(pk=1).trading_halted
    admin_action(admin_client, "exchange/game", "close_registration", [1])
    assert not Game.objects.get(pk=1).registration_open
    admin_action(admin_client, "exchange/game", "open_registration", [1])
    assert Game.objects.get(pk=1).registration_open


def test_admin_role_policy_edits_go_through_the_worker(admin_client: Client, matching: object) -> None:
    policy = RolePolicy.objects.get(role="retail")  # the worker created the defaults at its start
    form = {name: getattr(policy, name) for name in operator.ROLE_SETTINGS}
    form.update(max_order_size=9, market_orders_allowed="on")
    response = admin_client.post(f"/admin/exchange/rolepolicy/{policy.pk}/change/", form, follow=True)
    assert response.status_code == 200, response.content
    assert any("retail.max_order_size: 100 -> 9" in m for m in messages_of(response)), messages_of(response)
    change = RoleChange.objects.get()
    assert (change.field, change.old, change.new) == ("max_order_size", "100", "9")
    assert change.changed_by.startswith("admin (")
    assert RolePolicy.objects.get(role="retail").max_order_size == 9


def test_halt_flags_are_read_only_in_the_admin_forms() -> None:
    from django.contrib import admin

    assert "trading_halted" in admin.site._registry[Team].readonly_fields
    assert "halted" in admin.site._registry[Instrument].readonly_fields
    assert {"phase", "trading_halted"} <= set(admin.site._registry[Game].readonly_fields)


def test_lookups(make_team: MakeTeam) -> None:
    team, _ = make_team(name="Beta Desk")
    assert operator.team_lookup(team.team_id) == team
    assert operator.team_lookup("BETA desk") == team
    with pytest.raises(OperatorError):
        operator.instrument_lookup("NOPE")
