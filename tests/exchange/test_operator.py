"""Operator services, the set_phase / halt / resume commands and the admin actions: what they
change, what they journal for the matching worker, and what they announce."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Team
from exchange.models import Command, Game, Instrument, Order, Phase
from exchange.publisher import Outbox
from exchange.services import operator
from exchange.services.operator import OperatorError, game_set_phase, halt, registration_set, resume


@pytest.fixture
def published(monkeypatch) -> list[Outbox]:
    """Every outbox sent after commit, captured instead of sent."""
    outboxes: list[Outbox] = []
    monkeypatch.setattr(Outbox, "send", lambda self: outboxes.append(self))
    return outboxes


@pytest.fixture
def committed(django_capture_on_commit_callbacks, monkeypatch):
    """Run a block and its on-commit callbacks; count its worker wake-ups instead of queueing them."""
    wakes: list[None] = []
    monkeypatch.setattr("exchange.tasks.wake_matching", lambda: wakes.append(None))

    def run(block):
        before = len(wakes)
        with django_capture_on_commit_callbacks(execute=True):
            result = block()
        return result, len(wakes) - before

    return run


def public_frames(outboxes: list[Outbox]) -> list[tuple[str, dict]]:
    return [(m["type"], m["data"]) for box in outboxes for m in box.public]


def private_frames(outboxes: list[Outbox]) -> dict[int, list[tuple[str, dict]]]:
    frames: dict[int, list[tuple[str, dict]]] = {}
    for box in outboxes:
        for team_pk, messages in box.private.items():
            frames.setdefault(team_pk, []).extend((m["type"], m["data"]) for m in messages)
    return frames


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


# --- phases -----------------------------------------------------------------------------------------
def test_set_phase_journals_wakes_and_announces(db, published, committed) -> None:
    Game.objects.update_or_create(pk=1, defaults={"phase": Phase.CONTINUOUS})
    change, wakes = committed(lambda: game_set_phase("closed"))
    assert (change.previous, change.phase, change.changed) == ("continuous", "closed", True)
    assert Game.objects.get(pk=1).phase == "closed"
    command = Command.objects.get(pk=change.command_id)
    assert (command.kind, command.argument, command.processed_at) == ("set_phase", "closed", None)
    assert wakes == 1
    assert public_frames(published) == [
        ("event", {"event_type": "phase_change", "phase": "closed", "previous_phase": "continuous"})
    ]
    frame = published[0].public[0]
    assert frame["timestamp"].endswith("Z") and len(frame["timestamp"]) == 27


def test_setting_the_current_phase_changes_nothing(db, published, committed) -> None:
    Game.objects.update_or_create(pk=1, defaults={"phase": Phase.PRE_OPEN})
    change, wakes = committed(lambda: game_set_phase("pre_open"))
    assert not change.changed and change.command_id is None
    assert not Command.objects.exists() and wakes == 0 and published == []


def test_an_unknown_phase_is_refused(db) -> None:
    with pytest.raises(ValueError):
        game_set_phase("lunch")
    with pytest.raises(CommandError):
        run("set_phase", "lunch")


def test_set_phase_command_says_what_changed(make_team, instruments, api, order_body) -> None:
    _, key = make_team()
    api(key).post("/orders", order_body(time_in_force="day"), format="json")
    out = run("set_phase", "closed")
    assert "Phase: continuous -> closed" in out
    assert "MARKET_CLOSED" in out and "1 open day order(s) will be cancelled with reason session_end" in out
    assert "already closed" in run("set_phase", "closed")
    assert "opening auction uncrosses every book" in run("set_phase", "continuous")


# --- halts ------------------------------------------------------------------------------------------
def test_instrument_halt_with_cancel_journals_an_operator_sweep(make_team, instruments, published, committed) -> None:
    instrument = Instrument.objects.get(symbol="SPX_4500_CALL")
    change, wakes = committed(lambda: halt(instrument=instrument, cancel_resting=True))
    assert Instrument.objects.get(pk="SPX_4500_CALL").halted and instrument.halted
    assert (change.scope, change.target, change.halted, change.changed) == ("instrument", "SPX_4500_CALL", True, True)
    command = Command.objects.get(pk=change.command_id)
    assert (command.kind, command.argument, command.team_id, command.instrument_id) == (
        "cancel_all", "operator", None, "SPX_4500_CALL",
    )
    assert wakes == 1
    assert public_frames(published) == [
        ("event", {"event_type": "halt", "scope": "instrument", "instrument_id": "SPX_4500_CALL", "cancel_resting": True})
    ]


def test_team_halt_without_cancel_tells_only_that_team(make_team, published, committed) -> None:
    team, _ = make_team()
    other, _ = make_team()
    change, wakes = committed(lambda: halt(team=team))
    assert Team.objects.get(pk=team.pk).trading_halted and not Team.objects.get(pk=other.pk).trading_halted
    assert change.command_id is None and wakes == 0 and not Command.objects.exists()
    assert public_frames(published) == []
    assert private_frames(published) == {
        team.pk: [("event", {"event_type": "halt", "scope": "team", "team_id": team.team_id, "cancel_resting": False})]
    }


def test_exchange_halt_sweeps_everything_and_resume_lifts_it(db, published, committed) -> None:
    change, _ = committed(lambda: halt(exchange=True, cancel_resting=True))
    assert Game.objects.get(pk=1).trading_halted and change.scope == "exchange"
    command = Command.objects.get(pk=change.command_id)
    assert (command.kind, command.argument, command.team_id, command.instrument_id) == (
        "cancel_all", "operator", None, None,
    )
    resumed, wakes = committed(lambda: resume(exchange=True))
    assert not Game.objects.get(pk=1).trading_halted and resumed.changed and not resumed.halted
    assert wakes == 0 and Command.objects.count() == 1
    assert [data for _, data in public_frames(published)] == [
        {"event_type": "halt", "scope": "exchange", "cancel_resting": True},
        {"event_type": "resume", "scope": "exchange"},
    ]


def test_halting_twice_announces_once_but_can_still_sweep(make_team, published, committed) -> None:
    team, _ = make_team()
    committed(lambda: halt(team=team))
    again, wakes = committed(lambda: halt(team=team, cancel_resting=True))
    assert not again.changed and again.command_id is not None and wakes == 1
    assert len(private_frames(published)[team.pk]) == 1
    assert not committed(lambda: resume(instrument=Instrument.objects.create(
        symbol="SPY_440_PUT", underlying="SPY", option_type="put", strike=440)))[0].changed


@pytest.mark.parametrize("scope", [{}, {"exchange": True, "team": "x"}])
def test_exactly_one_scope(db, scope) -> None:
    if "team" in scope:
        scope["team"] = Team.objects.create(name="Somebody", role="retail")
    with pytest.raises(OperatorError):
        halt(**scope)


def test_halt_and_resume_commands(make_team, instruments, api, order_body) -> None:
    team, key = make_team(name="Alpha Desk")
    assert api(key).post("/orders", order_body(), format="json").json()["status"] == "accepted"

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


@pytest.mark.parametrize(
    "args",
    [("--team", "Nobody"), ("--instrument", "NOPE"), ("--team", "TEAM_999999")],
)
def test_halt_command_refuses_unknown_targets(db, args) -> None:
    with pytest.raises(CommandError):
        run("halt", *args)


def test_halt_command_needs_exactly_one_scope(db) -> None:
    with pytest.raises(CommandError):
        run("halt")
    with pytest.raises(CommandError):
        run("halt", "--exchange", "--instrument", "SPX_4500_CALL")


# --- registration ---------------------------------------------------------------------------------
def test_registration_can_be_closed_and_opened(db, api) -> None:
    assert registration_set(False) and not registration_set(False)
    response = api().post("/auth/register", {"team_name": "Late Team", "role": "retail"}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "REGISTRATION_CLOSED")
    assert registration_set(True)
    assert api().post("/auth/register", {"team_name": "Late Team", "role": "retail"}, format="json").status_code == 201


# --- admin actions --------------------------------------------------------------------------------
def admin_action(admin_client, model: str, action: str, pks: list[object]):
    return admin_client.post(
        f"/admin/{model}/", {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_admin_team_actions(admin_client, make_team, instruments, api, order_body) -> None:
    team, key = make_team()
    api(key).post("/orders", order_body(), format="json")
    response = admin_action(admin_client, "accounts/team", "halt_cancel_resting", [team.pk])
    assert response.status_code == 200
    assert Team.objects.get(pk=team.pk).trading_halted
    assert Command.objects.filter(kind="cancel_all", team=team, argument="operator").count() == 1
    assert any("halted" in m for m in messages_of(response))
    admin_action(admin_client, "accounts/team", "resume_trading", [team.pk])
    assert not Team.objects.get(pk=team.pk).trading_halted
    admin_action(admin_client, "accounts/team", "halt_keep_resting", [team.pk])
    assert Team.objects.get(pk=team.pk).trading_halted
    assert Command.objects.filter(kind="cancel_all").count() == 1
    assert Order.objects.get().status == "pending_new"


def test_admin_instrument_actions(admin_client, instruments) -> None:
    symbols = ["SPX_4500_CALL", "SPX_4500_PUT"]
    admin_action(admin_client, "exchange/instrument", "halt_keep_resting", symbols)
    assert set(Instrument.objects.filter(halted=True).values_list("symbol", flat=True)) == set(symbols)
    assert not Command.objects.exists()
    admin_action(admin_client, "exchange/instrument", "halt_cancel_resting", ["SPX_4400_CALL"])
    assert Command.objects.get().instrument_id == "SPX_4400_CALL"
    admin_action(admin_client, "exchange/instrument", "resume_trading", [*symbols, "SPX_4400_CALL"])
    assert not Instrument.objects.filter(halted=True).exists()


def test_admin_game_actions(admin_client, db) -> None:
    assert admin_client.get("/admin/exchange/game/").status_code == 200  # creates the game row
    for phase in ("closed", "pre_open", "opening_auction", "continuous"):
        response = admin_action(admin_client, "exchange/game", f"set_phase_{phase}", [1])
        assert Game.objects.get(pk=1).phase == phase
    assert any("opening auction" in m for m in messages_of(response))
    assert list(Command.objects.values_list("argument", flat=True)) == [
        "closed", "pre_open", "opening_auction", "continuous",
    ]
    admin_action(admin_client, "exchange/game", "halt_cancel_resting", [1])
    assert Game.objects.get(pk=1).trading_halted
    admin_action(admin_client, "exchange/game", "resume_trading", [1])
    assert not Game.objects.get(pk=1).trading_halted
    admin_action(admin_client, "exchange/game", "close_registration", [1])
    assert not Game.objects.get(pk=1).registration_open
    admin_action(admin_client, "exchange/game", "open_registration", [1])
    assert Game.objects.get(pk=1).registration_open


def test_halt_flags_are_read_only_in_the_admin_forms() -> None:
    from django.contrib import admin

    assert "trading_halted" in admin.site._registry[Team].readonly_fields
    assert "halted" in admin.site._registry[Instrument].readonly_fields
    assert {"phase", "trading_halted"} <= set(admin.site._registry[Game].readonly_fields)


def test_lookups(make_team) -> None:
    team, _ = make_team(name="Beta Desk")
    assert operator.team_lookup(team.team_id) == team
    assert operator.team_lookup("BETA desk") == team
    with pytest.raises(OperatorError):
        operator.instrument_lookup("NOPE")
