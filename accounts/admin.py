"""Operator pages for teams: list, disable, and rotate a key (shown once). The exchange's admin
adds the trading halts to these pages (``exchange.admin.TeamAdmin``)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiKey, Team
from accounts.services import key_rotate


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
    readonly_fields = ("trading_halted",)  # halts go through the exchange's actions, so the team hears of them
    actions = ["rotate_key"]

    @admin.action(description="Rotate API key (revokes the old ones at once)", permissions=["change"])
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        for team in queryset:
            key = key_rotate(team)
            self.message_user(request, f"{team.team_id} {team.name}: new key {key} (shown only now)", messages.WARNING)
