"""``MatchingWorker.decide`` on a state set up by hand: verdicts, frames, journal rows and state
changes of one batch, without Redis or the database."""

from __future__ import annotations

import itertools
import json
import time
from decimal import Decimal
from typing import Any

import pytest

from exchange.engine import MatchingEngine, Phase
from exchange.matching.state import GameState, InstrumentState, Policy, TeamState
from exchange.matching.worker import Batch, MatchingWorker
from exchange.policies import DEFAULTS

SYMBOL = "SPX_4500_CALL"
OTHER = "SPX_4500_PUT"
MAKER, HEDGE, RETAIL = 1, 2, 3  # team pks
WEB = "web-1"


class Desk:
    """A worker with two instruments and three teams (market maker, hedge fund, retail), fed
    commands with ids in arrival order, as the queue numbers them."""

    def __init__(self, phase: str = "continuous") -> None:
        self.worker = worker = MatchingWorker()
        worker.game = GameState(phase=phase)
        worker.engine = MatchingEngine(next_trade_id=worker._trade_id, phase=Phase(phase))
        worker.policies = {
            str(role): Policy(role=str(role), market_orders_allowed=True, **values)  # type: ignore[arg-type]
            for role, values in DEFAULTS.items()
        }
        worker.teams = {
            MAKER: TeamState(MAKER, "market_maker", True, False),
            HEDGE: TeamState(HEDGE, "hedge_fund", True, False),
            RETAIL: TeamState(RETAIL, "retail", True, False),
        }
        worker.instruments = {
            symbol: InstrumentState(symbol, Decimal("0.01"), 100, 1000, True, False) for symbol in (SYMBOL, OTHER)
        }
        self.ids = itertools.count(1)
        self.last_ids: list[int] = []

    def run(self, *commands: dict[str, Any]) -> Batch:
        numbered = [(next(self.ids), command) for command in commands]
        self.last_ids = [command_id for command_id, _ in numbered]
        return self.worker.decide(numbered)


def submit(team: int, **fields: Any) -> dict[str, Any]:
    command = {"k": "s", "t": team, "r": WEB, "i": SYMBOL, "s": "buy", "y": "limit", "f": "gtc", "p": "100.00", "q": 10}
    command.update(fields)
    return command


def cancel(team: int, order_pk: int) -> dict[str, Any]:
    return {"k": "c", "t": team, "r": WEB, "o": order_pk}


def verdicts(batch: Batch, web: str = WEB) -> list[Any]:
    return [reply for _, reply in batch.verdicts.get(web, [])]


def only_verdict(batch: Batch) -> Any:
    [reply] = verdicts(batch)
    return reply


def frames(items: list[list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, json.loads(data)) for kind, _, data, _ in items]


def private(batch: Batch, team: int) -> list[tuple[str, dict[str, Any]]]:
    return frames(batch.private.get(team, []))


def kinds(batch: Batch, team: int) -> list[str]:
    return [kind for kind, _ in private(batch, team)]


def order_pk(reply: dict[str, Any]) -> int:
    return int(reply["order_id"][4:])


# --- submit --------------------------------------------------------------------------------------
def test_an_accepted_order_has_its_verdict_frame_row_and_journal_entry() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, c="MY_ORDER_001", rq="r-1"))
    reply = only_verdict(batch)
    assert reply == {
        "order_id": "ORD_1",
        "client_order_id": "MY_ORDER_001",
        "status": "accepted",
        "timestamp": batch.stamp,
        "filled_quantity": 0,
        "average_price": None,
        "fees": 0.0,
        "liquidity_type": None,
        "error_code": None,
        "error_message": None,
        "details": None,
        "request_id": "r-1",
    }
    [order] = batch.new_orders
    assert (order.pk, order.status, order.remaining, order.accepted_seq) == (1, "new", 10, 1)
    assert private(batch, MAKER) == [
        (
            "new_order_ack",
            {
                "order_id": "ORD_1",
                "client_order_id": "MY_ORDER_001",
                "instrument_id": SYMBOL,
                "side": "buy",
                "quantity": 10,
                "order_type": "limit",
                "price": 100.0,
                "time_in_force": "gtc",
                "status": "new",
            },
        )
    ]
    [(command_id, kind, team, command, result, decided_at)] = batch.journal
    assert (command_id, kind, team, decided_at) == (1, "s", MAKER, batch.now)
    assert json.loads(command)["c"] == "MY_ORDER_001"
    assert json.loads(result) == {"order_id": 1, "status": "new"}
    assert [kind for kind, _ in frames(batch.public)] == ["market_data"]
    assert desk.worker.teams[MAKER].open_buy[SYMBOL] == 10
    assert desk.worker.teams[MAKER].open_coids == {"MY_ORDER_001": 1}


def test_verdicts_go_to_the_web_process_that_asked() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, r="web-a"), submit(MAKER, r="web-b", p="99.00"), submit(MAKER, r=None, p="98.00"))
    assert [(command_id, reply["order_id"]) for command_id, reply in batch.verdicts["web-a"]] == [(1, "ORD_1")]
    assert [(command_id, reply["order_id"]) for command_id, reply in batch.verdicts["web-b"]] == [(2, "ORD_2")]
    assert set(batch.verdicts) == {"web-a", "web-b"}  # a command nobody waits for gets no verdict
    assert len(batch.new_orders) == 3


def test_a_business_rejection_is_stored_pushed_and_answered() -> None:
    desk = Desk()
    desk.worker.instruments[SYMBOL].halted = True
    batch = desk.run(submit(MAKER, c="h"))
    reply = only_verdict(batch)
    assert (reply["status"], reply["order_id"], reply["error_code"]) == ("rejected", "ORD_1", "INSTRUMENT_HALTED")
    assert reply["details"] == {"instrument_id": SYMBOL}
    [order] = batch.new_orders
    assert (order.status, order.remaining, order.accepted_seq, order.error_code) == (
        "rejected",
        0,
        None,
        "INSTRUMENT_HALTED",
    )
    assert private(batch, MAKER) == [
        (
            "new_order_reject",
            {
                "order_id": "ORD_1",
                "client_order_id": "h",
                "instrument_id": SYMBOL,
                "status": "rejected",
                "error_code": "INSTRUMENT_HALTED",
                "reason": reply["error_message"],
            },
        )
    ]
    assert desk.worker.teams[MAKER].open_coids == {} and not desk.worker.open_orders


@pytest.mark.django_db
def test_an_unknown_instrument_is_a_business_rejection() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, i="SPX_9999_CALL"))
    reply = only_verdict(batch)
    assert (reply["status"], reply["order_id"], reply["error_code"]) == ("rejected", "ORD_1", "INVALID_INSTRUMENT")
    [order] = batch.new_orders
    assert order.instrument_known is False and order.symbol == "SPX_9999_CALL"
    assert kinds(batch, MAKER) == ["new_order_reject"]


def test_an_off_grid_price_is_rejected_and_kept_to_the_columns_scale() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, p="100.005"))
    reply = only_verdict(batch)
    assert reply["error_code"] == "INVALID_PRICE" and reply["details"] == {"price": 100.005, "tick_size": 0.01}
    assert batch.new_orders[0].price == Decimal("100.0050")


def test_orders_in_one_batch_count_each_other_for_the_position_limit() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, q=30), submit(MAKER, q=30, p="99.00"), submit(MAKER, q=20, p="98.00"))
    first, second, third = verdicts(batch)
    assert first["status"] == "accepted" and third["status"] == "accepted"
    assert second["error_code"] == "POSITION_LIMIT_EXCEEDED"
    assert second["details"] == {"current_position": 0, "open_buy_quantity": 30, "order_quantity": 30, "limit": 50}


def test_a_taker_fill_shows_in_its_reply() -> None:
    desk = Desk()
    desk.run(submit(MAKER, s="sell", q=4, p="100.00"), submit(MAKER, s="sell", q=6, p="100.50"))
    batch = desk.run(submit(RETAIL, q=8, p="101.00"))
    reply = only_verdict(batch)
    assert (reply["status"], reply["filled_quantity"], reply["liquidity_type"]) == ("accepted", 8, "taker")
    assert reply["average_price"] == pytest.approx((4 * 100 + 4 * 100.5) / 8)
    assert reply["fees"] == pytest.approx(8 * 0.03)  # retail taker fee
    assert kinds(batch, RETAIL) == ["new_order_ack", "execution_report", "execution_report"]
    assert kinds(batch, MAKER) == ["execution_report", "execution_report"]
    assert [kind for kind, _ in frames(batch.public) if kind == "trade"] == ["trade", "trade"]
    assert len(batch.trades) == 2 and len(batch.fills) == 4


def test_a_market_order_on_an_empty_book_is_acked_then_cancelled() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, y="market", f="ioc", p=None))
    assert only_verdict(batch)["status"] == "accepted"
    assert kinds(batch, MAKER) == ["new_order_ack", "cancel_ack"]
    assert private(batch, MAKER)[1][1]["reason"] == "ioc_remainder"
    [order] = batch.new_orders
    assert (order.status, order.cancelled, order.remaining) == ("cancelled", 10, 0)


def test_commands_decided_before_are_skipped() -> None:
    desk = Desk()
    first = desk.worker.decide([(1, submit(MAKER))])
    assert len(first) == 1
    again = desk.worker.decide([(1, submit(MAKER)), (2, submit(MAKER, p="99.00"))])
    assert [row[0] for row in again.journal] == [2]
    assert [order.pk for order in again.new_orders] == [2]
    assert [command_id for command_id, _ in again.verdicts[WEB]] == [2]


# --- resends (API.md, "Resends") -----------------------------------------------------------------
def test_a_resend_gets_the_same_verdict_and_nothing_new() -> None:
    desk = Desk()
    first = only_verdict(desk.run(submit(MAKER, c="A", rq="r-1")))
    batch = desk.run(submit(MAKER, c="A", rq="r-2"))
    again = only_verdict(batch)
    assert again["order_id"] == first["order_id"] and again["status"] == "accepted"
    assert again["request_id"] == "r-2"  # the resend's own request id
    assert batch.new_orders == [] and dict(batch.private) == {} and not batch.trades
    assert json.loads(batch.journal[0][4]) == {"resend_of": order_pk(first)}
    assert desk.worker.teams[MAKER].open_buy[SYMBOL] == 10  # counted once


def test_a_resend_in_the_same_batch_is_recognised() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, c="A"), submit(MAKER, c="A"))
    first, second = verdicts(batch)
    assert first["order_id"] == second["order_id"] == "ORD_1"
    assert len(batch.new_orders) == 1 and kinds(batch, MAKER) == ["new_order_ack"]


def test_a_resend_shows_the_orders_state_now() -> None:
    desk = Desk()
    desk.run(submit(MAKER, c="A", q=10))
    desk.run(submit(RETAIL, s="sell", q=4, p="100.00"))
    batch = desk.run(submit(MAKER, c="A", q=10))
    reply = only_verdict(batch)
    assert (reply["order_id"], reply["status"], reply["filled_quantity"], reply["average_price"]) == (
        "ORD_1",
        "accepted",
        4,
        100.0,
    )
    assert reply["liquidity_type"] == "maker" and dict(batch.private) == {}


def test_a_resend_of_a_rejected_order_is_rejected_again_under_the_same_id() -> None:
    desk = Desk()
    first = only_verdict(desk.run(submit(MAKER, c="big", q=51)))
    assert first["error_code"] == "POSITION_LIMIT_EXCEEDED"
    batch = desk.run(submit(MAKER, c="big", q=51))
    again = only_verdict(batch)
    assert (again["order_id"], again["status"], again["error_code"], again["error_message"]) == (
        first["order_id"],
        "rejected",
        "POSITION_LIMIT_EXCEEDED",
        first["error_message"],
    )
    assert batch.new_orders == [] and dict(batch.private) == {}


@pytest.mark.parametrize(
    "change",
    [
        {"p": "99.00"},
        {"q": 11},
        {"s": "sell", "p": "101.00"},
        {"f": "day"},
        {"i": OTHER},
        {"y": "market", "f": "ioc", "p": None},
    ],
)
def test_a_different_order_reusing_an_open_id_is_a_duplicate(change: dict[str, Any]) -> None:
    desk = Desk()
    desk.run(submit(MAKER, c="A"))
    batch = desk.run(submit(MAKER, c="A", **change))
    reply = only_verdict(batch)
    assert (reply["status"], reply["order_id"], reply["error_code"]) == (
        "rejected",
        "ORD_2",
        "DUPLICATE_CLIENT_ORDER_ID",
    )
    assert reply["details"] == {"client_order_id": "A"}
    assert kinds(batch, MAKER) == ["new_order_reject"]
    assert desk.worker.teams[MAKER].open_coids == {"A": 1}  # the open order keeps its id


def test_a_finished_orders_id_is_free_again() -> None:
    desk = Desk()
    desk.run(submit(MAKER, c="A"))
    assert only_verdict(desk.run(cancel(MAKER, 1)))["status"] == "cancelled"
    resent = only_verdict(desk.run(submit(MAKER, c="A")))  # identical: the cancelled order's verdict
    assert resent["order_id"] == "ORD_1"
    batch = desk.run(submit(MAKER, c="A", p="99.00"))  # a different order: taken under the freed id
    reply = only_verdict(batch)
    assert (reply["status"], reply["order_id"]) == ("accepted", "ORD_2")
    assert desk.worker.teams[MAKER].open_coids == {"A": 2}


def test_an_id_freed_by_a_fill_is_free_again() -> None:
    desk = Desk()
    desk.run(submit(MAKER, c="A"))
    desk.run(submit(RETAIL, s="sell", q=10, p="100.00"))
    reply = only_verdict(desk.run(submit(MAKER, c="A", q=5)))
    assert (reply["status"], reply["order_id"]) == ("accepted", "ORD_3")


def test_orders_without_a_client_id_are_never_deduplicated() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, q=1), submit(MAKER, q=1))
    assert [reply["order_id"] for reply in verdicts(batch)] == ["ORD_1", "ORD_2"]
    assert kinds(batch, MAKER) == ["new_order_ack", "new_order_ack"]


def test_client_ids_belong_to_one_team() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, c="A"), submit(HEDGE, c="A"))
    assert [(reply["status"], reply["order_id"]) for reply in verdicts(batch)] == [
        ("accepted", "ORD_1"),
        ("accepted", "ORD_2"),
    ]


# --- cancels -------------------------------------------------------------------------------------
def test_cancel_takes_the_remainder_off() -> None:
    desk = Desk()
    desk.run(submit(MAKER, c="A", q=10))
    desk.run(submit(RETAIL, s="sell", q=3, p="100.00"))
    batch = desk.run(cancel(MAKER, 1))
    reply = only_verdict(batch)
    assert (reply["status"], reply["cancelled_quantity"], reply["filled_quantity"], reply["client_order_id"]) == (
        "cancelled",
        7,
        3,
        "A",
    )
    assert private(batch, MAKER) == [
        (
            "cancel_ack",
            {
                "order_id": "ORD_1",
                "client_order_id": "A",
                "status": "cancelled",
                "cancelled_quantity": 7,
                "reason": "user_requested",
            },
        )
    ]
    assert desk.worker.teams[MAKER].open_buy[SYMBOL] == 0 and 1 not in desk.worker.open_orders


def test_a_cancel_that_arrives_too_late_gets_a_cancel_reject() -> None:
    desk = Desk()
    batch = desk.run(submit(MAKER, c="late"), submit(RETAIL, s="sell", q=10, p="100.00"), cancel(MAKER, 1))
    assert kinds(batch, MAKER) == ["new_order_ack", "execution_report", "cancel_reject"]
    reject = private(batch, MAKER)[-1][1]
    assert reject == {
        "order_id": "ORD_1",
        "client_order_id": "late",
        "status": "cancel_rejected",
        "error_code": "ORDER_ALREADY_FILLED",
        "reason": reject["reason"],
    }
    reply = verdicts(batch)[-1]
    assert (reply["status"], reply["error_code"], reply["filled_quantity"]) == ("rejected", "ORDER_ALREADY_FILLED", 10)
    assert json.loads(batch.journal[-1][4]) == {"status": "rejected", "error_code": "ORDER_ALREADY_FILLED"}


def test_cancelling_twice() -> None:
    desk = Desk()
    desk.run(submit(MAKER))
    desk.run(cancel(MAKER, 1))
    batch = desk.run(cancel(MAKER, 1))
    assert only_verdict(batch)["error_code"] == "ORDER_ALREADY_CANCELLED"
    assert kinds(batch, MAKER) == ["cancel_reject"]


@pytest.mark.django_db  # an id the worker no longer holds is looked up in the database
@pytest.mark.parametrize("who, pk", [(HEDGE, 1), (MAKER, 99), (MAKER, 2)], ids=["foreign", "unknown", "rejected"])
def test_unknown_foreign_and_rejected_orders_are_not_found_without_a_frame(who: int, pk: int) -> None:
    desk = Desk()
    desk.run(submit(MAKER), submit(MAKER, q=10_000))  # ORD_2 is rejected
    batch = desk.run(cancel(who, pk))
    reply = only_verdict(batch)
    assert (reply["status"], reply["error_code"], reply["order_id"]) == ("rejected", "ORDER_NOT_FOUND", f"ORD_{pk}")
    assert dict(batch.private) == {}
    assert desk.worker.open_orders[1].status == "new"


def test_cancels_in_a_closed_phase_are_refused_with_a_cancel_reject() -> None:
    desk = Desk()
    desk.run(submit(MAKER))
    desk.run({"k": "phase", "phase": "closed"})
    batch = desk.run(cancel(MAKER, 1), {"k": "ca", "t": MAKER, "r": WEB, "i": None})
    one, everything = verdicts(batch)
    assert (one["status"], one["error_code"]) == ("rejected", "MARKET_CLOSED")
    assert everything == {"error": "MARKET_CLOSED", "phase": "closed"}
    assert kinds(batch, MAKER) == ["cancel_reject"]
    assert desk.worker.open_orders[1].status == "new"


def test_cancel_all_takes_the_teams_open_orders_of_one_instrument_or_all() -> None:
    desk = Desk()
    desk.run(submit(MAKER, c="a"), submit(MAKER, i=OTHER, c="b"), submit(HEDGE, p="99.00"))
    batch = desk.run({"k": "ca", "t": MAKER, "r": WEB, "i": OTHER})
    assert [(r["order_id"], r["client_order_id"], r["cancelled_quantity"]) for r in only_verdict(batch)["results"]] == [
        ("ORD_2", "b", 10)
    ]
    batch = desk.run({"k": "ca", "t": MAKER, "r": WEB, "i": None})
    assert [r["order_id"] for r in only_verdict(batch)["results"]] == ["ORD_1"]
    assert only_verdict(desk.run({"k": "ca", "t": MAKER, "r": WEB, "i": None})) == {"results": []}
    assert list(desk.worker.open_orders) == [3]  # the other team's order stays


# --- operator commands, in queue order with the orders ---------------------------------------------
def test_an_order_sent_before_a_phase_change_is_decided_under_the_old_phase() -> None:
    desk = Desk()
    batch = desk.run(
        submit(MAKER, f="day", c="d"),
        {"k": "phase", "phase": "closed", "reply": "op-1"},
        submit(MAKER, p="99.00"),
    )
    accepted, closed = verdicts(batch)
    assert accepted["status"] == "accepted" and closed["error_code"] == "MARKET_CLOSED"
    assert batch.replies == [
        ("op-1", {"previous": "continuous", "phase": "closed", "changed": True, "open_day_orders": 1})
    ]
    assert [data for kind, data in frames(batch.public) if kind == "event"] == [
        {"event_type": "phase_change", "phase": "closed", "previous_phase": "continuous"}
    ]
    assert kinds(batch, MAKER) == ["new_order_ack", "cancel_ack", "new_order_reject"]
    assert private(batch, MAKER)[1][1]["reason"] == "session_end"
    assert len(batch.operator_writes) == 1 and desk.worker.game.phase == "closed"


def test_setting_the_current_phase_changes_nothing() -> None:
    desk = Desk()
    batch = desk.run({"k": "phase", "phase": "continuous", "reply": "op-1"})
    assert batch.replies == [
        ("op-1", {"previous": "continuous", "phase": "continuous", "changed": False, "open_day_orders": 0})
    ]
    assert batch.public == [] and batch.operator_writes == []


def test_pre_open_takes_resting_orders_that_the_open_uncrosses() -> None:
    desk = Desk(phase="pre_open")
    batch = desk.run(submit(MAKER, p="101.00"), submit(RETAIL, s="sell", q=5, p="100.00"), submit(HEDGE, f="ioc"))
    assert [r["status"] for r in verdicts(batch)] == ["accepted", "accepted", "rejected"]
    assert verdicts(batch)[2]["error_code"] == "ORDER_TYPE_NOT_ALLOWED" and not batch.trades
    batch = desk.run({"k": "phase", "phase": "continuous"})
    assert [kind for kind, _ in frames(batch.public)][:2] == ["event", "trade"]
    assert len(batch.trades) == 1


def test_an_instrument_halt_with_cancel() -> None:
    desk = Desk()
    desk.run(submit(MAKER), submit(HEDGE, i=OTHER))
    batch = desk.run(
        {"k": "halt", "scope": "instrument", "target": SYMBOL, "halted": True, "cancel": True, "reply": "op"},
        submit(RETAIL, q=1),
        submit(RETAIL, q=1, i=OTHER),
    )
    assert batch.replies == [("op", {"changed": True, "open_orders": 1, "cancelled": 1})]
    assert [data for kind, data in frames(batch.public) if kind == "event"] == [
        {"event_type": "halt", "scope": "instrument", "instrument_id": SYMBOL, "cancel_resting": True}
    ]
    assert private(batch, MAKER)[0] == (
        "cancel_ack",
        {
            "order_id": "ORD_1",
            "client_order_id": None,
            "status": "cancelled",
            "cancelled_quantity": 10,
            "reason": "operator",
        },
    )
    halted, elsewhere = verdicts(batch)
    assert halted["error_code"] == "INSTRUMENT_HALTED" and elsewhere["status"] == "accepted"
    assert 2 in desk.worker.open_orders  # another instrument's order stays
    resumed = desk.run({"k": "halt", "scope": "instrument", "target": SYMBOL, "halted": False, "reply": "op"})
    assert [data for kind, data in frames(resumed.public) if kind == "event"] == [
        {"event_type": "resume", "scope": "instrument", "instrument_id": SYMBOL}
    ]
    assert only_verdict(desk.run(submit(RETAIL, q=1, p="90.00")))["status"] == "accepted"


def test_a_team_halt_tells_only_that_team_and_keeps_its_orders() -> None:
    desk = Desk()
    desk.run(submit(MAKER))
    batch = desk.run(
        {"k": "halt", "scope": "team", "target": MAKER, "halted": True, "reply": "op"},
        submit(MAKER, p="99.00"),
        submit(HEDGE, p="99.00"),
    )
    assert batch.replies == [("op", {"changed": True, "open_orders": 1, "cancelled": 0})]
    assert "event" not in [kind for kind, _ in frames(batch.public)]
    assert private(batch, MAKER)[0] == (
        "event",
        {"event_type": "halt", "scope": "team", "team_id": f"TEAM_{MAKER}", "cancel_resting": False},
    )
    mine, theirs = verdicts(batch)
    assert mine["error_code"] == "TRADING_DISABLED" and mine["details"] == {"scope": "team"}
    assert theirs["status"] == "accepted"
    assert 1 in desk.worker.open_orders
    again = desk.run({"k": "halt", "scope": "team", "target": MAKER, "halted": True, "reply": "op"})
    assert again.replies == [("op", {"changed": False, "open_orders": 1, "cancelled": 0})] and dict(again.private) == {}


def test_an_exchange_halt_and_resume() -> None:
    desk = Desk()
    desk.run(submit(MAKER), submit(HEDGE, i=OTHER))
    batch = desk.run({"k": "halt", "scope": "exchange", "halted": True, "cancel": True}, submit(RETAIL, q=1))
    assert [data for kind, data in frames(batch.public) if kind == "event"] == [
        {"event_type": "halt", "scope": "exchange", "cancel_resting": True}
    ]
    assert only_verdict(batch)["details"] == {"scope": "exchange"}
    assert desk.worker.open_orders == {}
    batch = desk.run({"k": "halt", "scope": "exchange", "halted": False}, submit(RETAIL, q=1))
    assert only_verdict(batch)["status"] == "accepted"


def test_a_role_change_binds_the_next_order() -> None:
    desk = Desk()
    batch = desk.run(
        submit(RETAIL, q=6),
        {
            "k": "role",
            "role": "retail",
            "changes": {"max_order_size": "5", "orders_per_second": "3"},
            "by": "ops",
            "reply": "op",
        },
        submit(RETAIL, q=6, p="99.00"),
    )
    before, after = verdicts(batch)
    assert before["status"] == "accepted"
    assert after["error_code"] == "ORDER_SIZE_LIMIT_EXCEEDED" and after["details"] == {"quantity": 6, "limit": 5}
    assert batch.replies == [
        ("op", {"role": "retail", "changes": {"max_order_size": ["100", "5"], "orders_per_second": ["1", "3"]}})
    ]
    assert batch.role_rates == {"retail": 3}  # the web processes' rate limits follow
    assert len(batch.operator_writes) == 1


def test_a_fee_change_applies_to_the_next_fill() -> None:
    desk = Desk()
    desk.run(submit(MAKER, s="sell", q=2))
    batch = desk.run(
        {"k": "role", "role": "retail", "changes": {"taker_fee": "0.05"}, "reply": "op"},
        submit(RETAIL, q=1),
    )
    assert batch.replies[0][1]["changes"] == {"taker_fee": ["0.03", "0.05"]}
    assert only_verdict(batch)["fees"] == 0.05


def test_a_role_change_to_the_same_values_writes_nothing() -> None:
    desk = Desk()
    batch = desk.run({"k": "role", "role": "retail", "changes": {"max_order_size": "100"}, "reply": "op"})
    assert batch.replies == [("op", {"role": "retail", "changes": {}})]
    assert batch.operator_writes == [] and batch.role_rates == {}
    batch = desk.run({"k": "role", "role": "retail", "changes": {"colour": "blue"}, "reply": "op"})
    assert batch.replies == [("op", {"error": "unknown setting colour"})]


def test_an_unknown_command_is_journalled_as_an_error() -> None:
    desk = Desk()
    batch = desk.run({"k": "nonsense"})
    [(command_id, kind, _, _, result, _)] = batch.journal
    assert (command_id, kind, json.loads(result)) == (1, "nonsense", {"error": "unknown command 'nonsense'"})


def test_frames_commands_reach_a_team_a_role_or_everyone() -> None:
    desk = Desk()
    batch = desk.run(
        {"k": "frames", "frames": [["underlying", {"symbol": "SPX", "price": 4412.25}]]},
        {"k": "frames", "role": "hedge_fund", "frames": [["signal", {"signal_type": "volatility_forecast"}]]},
        {"k": "frames", "team": RETAIL, "frames": [["signal", {"signal_type": "tracking_error"}]]},
    )
    assert frames(batch.public) == [("underlying", {"symbol": "SPX", "price": 4412.25})]
    assert private(batch, HEDGE) == [("signal", {"signal_type": "volatility_forecast"})]
    assert private(batch, RETAIL) == [("signal", {"signal_type": "tracking_error"})]
    assert MAKER not in batch.private


# --- market data ----------------------------------------------------------------------------------
def test_market_data_is_conflated_to_the_latest_state() -> None:
    desk = Desk()
    first = desk.run(submit(MAKER, q=1))
    assert [data["bid_size"] for kind, data in frames(first.public) if kind == "market_data"] == [1]
    second = desk.run(submit(MAKER, q=2))  # within the interval: held back
    assert [kind for kind, _ in frames(second.public)] == [] and desk.worker.next_market_due() is not None
    third = desk.run(submit(RETAIL, s="sell", q=1, p="100.00"))
    assert [kind for kind, _ in frames(third.public)] == ["trade"]
    time.sleep(0.12)
    due = desk.worker.market_data_only()
    assert frames(due.public) == [
        (
            "market_data",
            {
                "instrument_id": SYMBOL,
                "bid": 100.0,
                "bid_size": 2,
                "ask": None,
                "ask_size": 0,
                "last": 100.0,
                "last_size": 1,
                "volume": 1,
            },
        )
    ]
    assert desk.worker.next_market_due() is None
