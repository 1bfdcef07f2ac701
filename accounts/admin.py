"""Operator pages for teams: list, disable, halt and resume, and rotate a key (shown once)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiKey, Team
from accounts.services import key_rotate
from exchange.services.operator import HaltChange, halt, resume


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("prefix", "created_at", "revoked_at")
    readonly_fields = fields


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("team_id", "name", "role", "active", "trading_halted", "created_at")
    list_filter = ("role", "active", "trading_halted")
    search_fields = ("name",)
    inlines = [ApiKeyInline]
    readonly_fields = ("trading_halted",)  # halts go through the actions, so the team hears of them
    actions = ["rotate_key", "halt_cancel_resting", "halt_keep_resting", "resume_trading"]

    @admin.action(description="Rotate API key (revokes the old ones at once)", permissions=["change"])
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        for team in queryset:
            key = key_rotate(team)
            self.message_user(request, f"{team.team_id} {team.name}: new key {key} (shown only now)", messages.WARNING)

    @admin.action(description="Halt (cancel resting orders)", permissions=["change"])
    def halt_cancel_resting(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        self._report([halt(team=team, cancel_resting=True) for team in queryset], request)

    @admin.action(description="Halt (keep resting orders)", permissions=["change"])
    def halt_keep_resting(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        self._report([halt(team=team, cancel_resting=False) for team in queryset], request)

    @admin.action(description="Resume", permissions=["change"])
    def resume_trading(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        self._report([resume(team=team) for team in queryset], request)

    def _report(self, changes: list[HaltChange], request: HttpRequest) -> None:
        for change in changes:
            self.message_user(request, " ".join(change.summary()), messages.SUCCESS)
