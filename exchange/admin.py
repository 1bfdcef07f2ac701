"""Operator pages: the game (phases, exchange halt, registration), role policies, instruments
and teams (halts), and read-only trading records. Every action calls a service in
``exchange.services.operator``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from accounts import admin as accounts_admin
from accounts.models import Team
from exchange.models import (
    Account,
    Fill,
    Game,
    Instrument,
    JournalEntry,
    Order,
    Phase,
    Position,
    RoleChange,
    RolePolicy,
    Trade,
)
from exchange.selectors import game_state
from exchange.services.operator import (
    ROLE_SETTINGS,
    HaltChange,
    OperatorError,
    game_set_phase,
    halt,
    registration_set,
    resume,
    role_set,
)

AdminAction = Callable[[admin.ModelAdmin, HttpRequest, QuerySet[Any]], None]


def report(modeladmin: admin.ModelAdmin, request: HttpRequest, lines: list[str]) -> None:
    modeladmin.message_user(request, " ".join(lines), messages.SUCCESS)


def report_halts(modeladmin: admin.ModelAdmin, request: HttpRequest, changes: list[HaltChange]) -> None:
    for change in changes:
        report(modeladmin, request, change.summary())


class HaltActions:
    """Halt and resume actions for the objects of one admin page; ``halts`` names the keyword the
    operator services take such an object by (``instrument`` or ``team``)."""

    ACTIONS = ["halt_cancel_resting", "halt_keep_resting", "resume_trading"]
    halts: str

    @admin.action(description="Halt (cancel resting orders)", permissions=["change"])
    def halt_cancel_resting(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        report_halts(self, request, [halt(**{self.halts: o}, cancel_resting=True) for o in queryset])

    @admin.action(description="Halt (keep resting orders)", permissions=["change"])
    def halt_keep_resting(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        report_halts(self, request, [halt(**{self.halts: o}, cancel_resting=False) for o in queryset])

    @admin.action(description="Resume", permissions=["change"])
    def resume_trading(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        report_halts(self, request, [resume(**{self.halts: o}) for o in queryset])



def _set_phase_action(phase: Phase) -> AdminAction:
    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        report(modeladmin, request, game_set_phase(phase).summary())

    action.__name__ = f"set_phase_{phase.value}"
    return admin.action(description=f"Set phase: {phase.value}", permissions=["change"])(action)


@admin.register(Game)
class GameAdmin(admin.ModelAdmin):
    list_display = ("name", "phase", "registration_open", "trading_halted", "updated_at")
    # These change only through the actions (services), so the books follow in order and bots hear of it.
    readonly_fields = ("phase", "registration_open", "trading_halted")
    actions = [
        *(_set_phase_action(phase) for phase in Phase),
        "halt_cancel_resting",
        "halt_keep_resting",
        "resume_trading",
        "open_registration",
        "close_registration",
    ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        game_state()  # the singleton row exists, so there is always a game to run actions on
        return super().changelist_view(request, extra_context)

    @admin.action(description="Halt the exchange (cancel resting orders)", permissions=["change"])
    def halt_cancel_resting(self, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        report_halts(self, request, [halt(exchange=True, cancel_resting=True)])

    @admin.action(description="Halt the exchange (keep resting orders)", permissions=["change"])
    def halt_keep_resting(self, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        report_halts(self, request, [halt(exchange=True, cancel_resting=False)])

    @admin.action(description="Resume the exchange", permissions=["change"])
    def resume_trading(self, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        report_halts(self, request, [resume(exchange=True)])

    @admin.action(description="Open registration", permissions=["change"])
    def open_registration(self, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        changed = registration_set(True)
        report(self, request, ["Registration opened." if changed else "Registration was already open."])

    @admin.action(
        description="Close registration (POST /auth/register answers 403 REGISTRATION_CLOSED)", permissions=["change"]
    )
    def close_registration(self, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        changed = registration_set(False)
        report(self, request, ["Registration closed." if changed else "Registration was already closed."])


@admin.register(RolePolicy)
class RolePolicyAdmin(admin.ModelAdmin):
    list_display = (
        "role",
        "position_limit",
        "portfolio_limit",
        "max_order_size",
        "orders_per_second",
        "maker_fee",
        "taker_fee",
    )
    readonly_fields = ("role",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one row per role, created with the defaults

    def save_model(self, request: HttpRequest, obj: RolePolicy, form: Any, change: bool) -> None:
        """The same path as ``manage.py set_role``: through the matching worker, into the audit log.

        Sent once the admin's own transaction is over: the worker writes the change in its batch
        transaction, which must not wait on this request's (on SQLite it holds the write lock)."""
        values = {name: form.cleaned_data[name] for name in form.changed_data if name in ROLE_SETTINGS}
        if values:
            transaction.on_commit(lambda: self._role_set(request, obj.role, values))

    def _role_set(self, request: HttpRequest, role: str, values: dict[str, Any]) -> None:
        try:
            update = role_set(role, f"admin ({request.user})", **values)
        except OperatorError as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        report(self, request, update.summary())


@admin.register(Instrument)
class InstrumentAdmin(HaltActions, admin.ModelAdmin):
    list_display = (
        "symbol",
        "underlying",
        "option_type",
        "strike",
        "expiry",
        "tick_size",
        "multiplier",
        "listed",
        "halted",
    )
    list_filter = ("underlying", "option_type", "listed", "halted")
    search_fields = ("symbol",)
    readonly_fields = ("halted",)  # halts go through the actions, so bots hear of them
    actions = HaltActions.ACTIONS
    halts = "instrument"


# The team pages are the accounts app's; halting a team is the exchange's, so its actions are added here.
admin.site.unregister(Team)


@admin.register(Team)
class TeamAdmin(HaltActions, accounts_admin.TeamAdmin):
    actions = [*accounts_admin.TeamAdmin.actions, *HaltActions.ACTIONS]
    halts = "team"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Trading records are written only by the exchange itself."""

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = (
        "order_id",
        "team",
        "instrument_symbol",
        "side",
        "order_type",
        "price",
        "quantity",
        "filled_quantity",
        "status",
        "created_at",
    )
    list_filter = ("status", "side", "order_type", "instrument_symbol")
    search_fields = ("client_order_id",)


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ("trade_id", "instrument", "price", "quantity", "aggressor_side", "created_at")
    list_filter = ("instrument",)


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = (
        "trade",
        "team",
        "instrument",
        "side",
        "quantity",
        "price",
        "liquidity_type",
        "fees",
        "position_after",
    )
    list_filter = ("team", "instrument", "liquidity_type")


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ("team", "instrument", "quantity")
    list_filter = ("team", "instrument")


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("team", "cash", "fees_paid")


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "team", "decided_at", "result")
    list_filter = ("kind",)


@admin.register(RoleChange)
class RoleChangeAdmin(ReadOnlyAdmin):
    """The audit log of role policy changes: who, when, old, new."""

    list_display = ("changed_at", "role", "field", "old", "new", "changed_by")
    list_filter = ("role", "field")
