"""Operator pages: the game, role policies, instruments, and read-only trading records."""

from __future__ import annotations

from django.contrib import admin

from exchange.models import Account, Command, Fill, Game, Instrument, Order, Position, RolePolicy, Trade


@admin.register(Game)
class GameAdmin(admin.ModelAdmin):
    list_display = ("name", "phase", "registration_open", "trading_halted", "updated_at")
    readonly_fields = ("phase",)  # phases change through set_phase, so the books follow in order


@admin.register(RolePolicy)
class RolePolicyAdmin(admin.ModelAdmin):
    list_display = (
        "role", "position_limit", "portfolio_limit", "max_order_size", "orders_per_second", "maker_fee", "taker_fee",
    )


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ("symbol", "underlying", "option_type", "strike", "expiry", "tick_size", "multiplier", "listed", "halted")
    list_filter = ("underlying", "option_type", "listed", "halted")
    search_fields = ("symbol",)


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
        "order_id", "team", "instrument_symbol", "side", "order_type", "price", "quantity", "filled_quantity", "status",
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
    list_display = ("trade", "team", "instrument", "side", "quantity", "price", "liquidity_type", "fees", "position_after")
    list_filter = ("team", "instrument", "liquidity_type")


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ("team", "instrument", "quantity")
    list_filter = ("team", "instrument")


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("team", "cash", "fees_paid")


@admin.register(Command)
class CommandAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "team", "order", "argument", "created_at", "processed_at")
    list_filter = ("kind",)
