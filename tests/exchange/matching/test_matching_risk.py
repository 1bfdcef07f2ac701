"""The business rules of ``POST /orders`` (exchange.matching.risk), checked against in-memory
state alone: each rule on its own, and API.md's order when several fail at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from exchange.matching.risk import Rejection, check_order, exposure, portfolio_used
from exchange.matching.state import GameState, InstrumentState, Policy, TeamState

SYMBOL = "SPX_4500_CALL"


def hedge_fund_policy(**changes: object) -> Policy:
    values: dict[str, object] = {
        "role": "hedge_fund",
        "position_limit": 150,
        "portfolio_limit": 500,
        "max_order_size": 500,
        "orders_per_second": 5,
        "maker_fee": Decimal("-0.01"),
        "taker_fee": Decimal("0.02"),
        "market_orders_allowed": True,
    }
    values.update(changes)
    return Policy(**values)  # type: ignore[arg-type]


@dataclass
class Case:
    """One order and everything it is checked against; a test changes what it needs."""

    team: TeamState = field(default_factory=lambda: TeamState(1, "hedge_fund", True, False))
    instrument: InstrumentState | None = field(
        default_factory=lambda: InstrumentState(SYMBOL, Decimal("0.01"), 100, 1000, True, False)
    )
    game: GameState = field(default_factory=lambda: GameState(phase="continuous", halted=False))
    policy: Policy = field(default_factory=hedge_fund_policy)
    side: str = "buy"
    order_type: str = "limit"
    time_in_force: str = "gtc"
    price: Decimal | None = Decimal("100.00")
    quantity: int = 10
    coid: str | None = "A"

    def check(self) -> Rejection | None:
        return check_order(
            self.team,
            self.instrument,
            SYMBOL,
            self.game,
            self.policy,
            self.side,
            self.order_type,
            self.time_in_force,
            self.price,
            self.quantity,
            self.coid,
        )

    def code(self) -> str | None:
        rejection = self.check()
        return None if rejection is None else str(rejection.code)


def test_a_plain_order_passes_every_rule() -> None:
    assert Case().check() is None


# --- API.md's order: each fault is set up so that every fault listed after it still fails --------
def unknown_instrument(case: Case) -> None:
    case.instrument = None


def halted_instrument(case: Case) -> None:
    assert case.instrument is not None
    case.instrument.halted = True


def halted_team_and_exchange(case: Case) -> None:
    case.team.halted = True
    case.game.halted = True


def closed_market(case: Case) -> None:
    case.game.phase = "closed"


def ioc_before_the_open(case: Case) -> None:
    case.game.phase = "pre_open"
    case.time_in_force = "ioc"


def off_the_tick_grid(case: Case) -> None:
    case.price = Decimal("100.005")


def too_large(case: Case) -> None:
    case.quantity = 501  # the hedge fund's maximum is 500


def open_client_order_id(case: Case) -> None:
    case.team.open_coids["A"] = 99


def resting_on_the_other_side(case: Case) -> None:
    case.team.open_sell[SYMBOL] = 5


def past_the_position_limit(case: Case) -> None:
    case.team.positions[SYMBOL] = 145


def past_the_portfolio_limit(case: Case) -> None:
    case.team.positions["SPX_4400_PUT"] = -495


RULES: list[tuple[str, Callable[[Case], None]]] = [
    ("INVALID_INSTRUMENT", unknown_instrument),
    ("INSTRUMENT_HALTED", halted_instrument),
    ("TRADING_DISABLED", halted_team_and_exchange),
    ("MARKET_CLOSED", closed_market),
    ("ORDER_TYPE_NOT_ALLOWED", ioc_before_the_open),
    ("INVALID_PRICE", off_the_tick_grid),
    ("ORDER_SIZE_LIMIT_EXCEEDED", too_large),
    ("DUPLICATE_CLIENT_ORDER_ID", open_client_order_id),
    ("TWO_SIDED_QUOTE_NOT_ALLOWED", resting_on_the_other_side),
    ("POSITION_LIMIT_EXCEEDED", past_the_position_limit),
    ("PORTFOLIO_LIMIT_EXCEEDED", past_the_portfolio_limit),
]


@pytest.mark.parametrize("index", range(len(RULES)), ids=[code for code, _ in RULES])
def test_each_rule_alone(index: int) -> None:
    code, fault = RULES[index]
    case = Case()
    fault(case)
    assert case.code() == code


@pytest.mark.parametrize("index", range(len(RULES)), ids=[code for code, _ in RULES])
def test_the_first_failing_rule_in_the_documented_order_wins(index: int) -> None:
    code, _ = RULES[index]
    case = Case()
    # Later faults first, so an earlier fault that shares a setting (the phase) has the last word.
    for _, fault in reversed(RULES[index:]):
        fault(case)
    assert case.code() == code


def test_instrument_halt_is_checked_before_a_team_halt() -> None:
    case = Case()
    halted_instrument(case)
    case.team.halted = True
    assert case.code() == "INSTRUMENT_HALTED"


@pytest.mark.parametrize(
    "team_halted, exchange_halted, scope", [(True, False, "team"), (False, True, "exchange"), (True, True, "exchange")]
)
def test_trading_disabled_names_its_scope(team_halted: bool, exchange_halted: bool, scope: str) -> None:
    case = Case()
    case.team.halted, case.game.halted = team_halted, exchange_halted
    rejection = case.check()
    assert rejection is not None and rejection.code == "TRADING_DISABLED" and rejection.details == {"scope": scope}


def test_an_unlisted_instrument_is_unknown() -> None:
    case = Case()
    assert case.instrument is not None
    case.instrument.listed = False
    rejection = case.check()
    assert rejection is not None
    assert (rejection.code, rejection.details) == ("INVALID_INSTRUMENT", {"instrument_id": SYMBOL})


@pytest.mark.parametrize("phase", ["closed", "opening_auction"])
def test_phases_without_orders(phase: str) -> None:
    case = Case()
    case.game.phase = phase
    rejection = case.check()
    assert rejection is not None and (rejection.code, rejection.details) == ("MARKET_CLOSED", {"phase": phase})


@pytest.mark.parametrize(
    "order_type, time_in_force, price, allowed",
    [
        ("limit", "gtc", Decimal("100"), True),
        ("limit", "day", Decimal("100"), True),
        ("limit", "ioc", Decimal("100"), False),
        ("limit", "fok", Decimal("100"), False),
        ("market", "ioc", None, False),
        ("market", "fok", None, False),
    ],
)
def test_pre_open_takes_only_resting_limit_orders(
    order_type: str, time_in_force: str, price: Decimal | None, allowed: bool
) -> None:
    case = Case(order_type=order_type, time_in_force=time_in_force, price=price)
    case.game.phase = "pre_open"
    assert case.code() == (None if allowed else "ORDER_TYPE_NOT_ALLOWED")
    case.game.phase = "continuous"
    assert case.code() is None


def test_a_role_without_market_orders() -> None:
    case = Case(
        order_type="market", time_in_force="ioc", price=None, policy=hedge_fund_policy(market_orders_allowed=False)
    )
    rejection = case.check()
    assert rejection is not None and rejection.code == "ORDER_TYPE_NOT_ALLOWED"
    assert rejection.details == {"role": "hedge_fund", "order_type": "market"}


@pytest.mark.parametrize(
    "tick, price, on_grid", [("0.01", "100.01", True), ("0.05", "100.05", True), ("0.05", "100.01", False)]
)
def test_the_tick_grid_is_the_instruments(tick: str, price: str, on_grid: bool) -> None:
    case = Case(price=Decimal(price))
    assert case.instrument is not None
    case.instrument.tick = Decimal(tick)
    rejection = case.check()
    if on_grid:
        assert rejection is None
    else:
        assert rejection is not None and rejection.code == "INVALID_PRICE"
        assert rejection.details == {"price": float(price), "tick_size": float(tick)}


@pytest.mark.parametrize("role_max, instrument_max, limit", [(500, 1000, 500), (500, 20, 20)])
def test_order_size_is_the_smaller_maximum(role_max: int, instrument_max: int, limit: int) -> None:
    policy = hedge_fund_policy(max_order_size=role_max, position_limit=10_000, portfolio_limit=10_000)
    case = Case(policy=policy, quantity=limit)
    assert case.instrument is not None
    case.instrument.max_order_size = instrument_max
    assert case.check() is None
    case.quantity = limit + 1
    rejection = case.check()
    assert rejection is not None and rejection.code == "ORDER_SIZE_LIMIT_EXCEEDED"
    assert rejection.details == {"quantity": limit + 1, "limit": limit}


def test_only_open_client_order_ids_are_taken() -> None:
    case = Case(coid="B")
    case.team.open_coids["A"] = 7
    assert case.check() is None
    case.coid = None
    assert case.check() is None
    case.coid = "A"
    rejection = case.check()
    assert rejection is not None and rejection.details == {"client_order_id": "A"}


@pytest.mark.parametrize(
    "role, order_type, time_in_force, price, refused",
    [
        ("hedge_fund", "limit", "gtc", Decimal("100"), True),
        ("hedge_fund", "limit", "day", Decimal("100"), True),
        ("hedge_fund", "limit", "ioc", Decimal("100"), False),
        ("hedge_fund", "limit", "fok", Decimal("100"), False),
        ("hedge_fund", "market", "ioc", None, False),
        ("market_maker", "limit", "gtc", Decimal("100"), False),
    ],
)
def test_the_two_sided_rule_binds_resting_hedge_fund_orders(
    role: str, order_type: str, time_in_force: str, price: Decimal | None, refused: bool
) -> None:
    case = Case(order_type=order_type, time_in_force=time_in_force, price=price)
    case.team.role = role
    case.team.open_sell[SYMBOL] = 5
    rejection = case.check()
    if refused:
        assert rejection is not None and rejection.code == "TWO_SIDED_QUOTE_NOT_ALLOWED"
        assert rejection.details == {"instrument_id": SYMBOL, "resting_side": "sell"}
    else:
        assert rejection is None
    case.team.open_sell[SYMBOL] = 0  # nothing rests on the other side any more
    assert case.check() is None


def test_the_two_sided_rule_mirrors_for_sells() -> None:
    case = Case(side="sell")
    case.team.open_buy[SYMBOL] = 1
    rejection = case.check()
    assert rejection is not None and rejection.details == {"instrument_id": SYMBOL, "resting_side": "buy"}
    case.team.open_buy[SYMBOL] = 0
    case.team.open_sell[SYMBOL] = 1  # the same side may rest more
    assert case.check() is None


def test_the_position_limit_counts_open_orders() -> None:
    case = Case(quantity=6, coid=None)
    case.team.role = "market_maker"
    case.policy = hedge_fund_policy(role="market_maker", position_limit=50)
    case.team.positions[SYMBOL] = 20
    case.team.open_buy[SYMBOL] = 25
    rejection = case.check()
    assert rejection is not None and rejection.code == "POSITION_LIMIT_EXCEEDED"
    assert rejection.details == {"current_position": 20, "open_buy_quantity": 25, "order_quantity": 6, "limit": 50}
    case.quantity = 5  # exactly at the limit
    assert case.check() is None


def test_the_position_limit_mirrors_for_sells() -> None:
    case = Case(side="sell", quantity=1, coid=None)
    case.team.positions[SYMBOL] = 20
    case.team.open_sell[SYMBOL] = 170  # 20 - 170 = -150: at the limit already
    rejection = case.check()
    assert rejection is not None and rejection.code == "POSITION_LIMIT_EXCEEDED"
    assert rejection.details == {"current_position": 20, "open_sell_quantity": 170, "order_quantity": 1, "limit": 150}
    case.team.open_sell[SYMBOL] = 169
    assert case.check() is None


def test_exposure_is_the_worse_side() -> None:
    assert exposure(0, 0, 0) == 0
    assert exposure(10, 5, 0) == 15
    assert exposure(10, 0, 30) == 20  # 10 - 30 = -20
    assert exposure(-10, 5, 5) == 15
    team = TeamState(1, "retail", True, False)
    team.positions.update({"A": 10, "B": -5})
    team.open_buy.update({"A": 5, "C": 3})
    team.open_sell.update({"B": 10})
    assert portfolio_used(team) == 15 + 15 + 3


def test_the_portfolio_limit_adds_the_order_to_its_side() -> None:
    case = Case(quantity=11, coid=None)
    case.team.role = "retail"
    case.policy = hedge_fund_policy(role="retail", position_limit=50, portfolio_limit=50)
    case.team.open_buy["SPX_4400_CALL"] = 40
    rejection = case.check()
    assert rejection is not None and rejection.code == "PORTFOLIO_LIMIT_EXCEEDED"
    assert rejection.details == {"portfolio_used": 40, "portfolio_after": 51, "limit": 50}
    case.quantity = 10
    assert case.check() is None
