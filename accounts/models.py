"""Teams, their roles, and their API keys (stored only as digests)."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    MARKET_MAKER = "market_maker", "Market maker"
    HEDGE_FUND = "hedge_fund", "Hedge fund"
    ARBITRAGE = "arbitrage", "Arbitrage"
    RETAIL = "retail", "Retail"


class Team(models.Model):
    name = models.CharField(max_length=50, unique=True)
    role = models.CharField(max_length=20, choices=Role.choices)
    active = models.BooleanField(default=True, help_text="Inactive teams are refused with 403.")
    trading_halted = models.BooleanField(default=False, help_text="Orders refused with TRADING_DISABLED.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.team_id} {self.name}"

    # Lets DRF treat an authenticated team as request.user.
    is_authenticated = True
    is_anonymous = False

    @property
    def team_id(self) -> str:
        return f"TEAM_{self.pk}"


class ApiKey(models.Model):
    """One key of a team. The secret itself is never stored: only its SHA-256 digest."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="The first characters, to tell keys apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({'revoked' if self.revoked_at else 'active'})"
