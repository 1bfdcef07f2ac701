"""The exchange's records: the game, role policies and their audit log, instruments, orders, the
matching worker's journal, trades and their fills, positions and cash.

Prices and money are ``Decimal``; the matching engine sees integer ticks (``exchange.prices``).
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from accounts.models import Role, Team

PRICE = {"max_digits": 14, "decimal_places": 4}
MONEY = {"max_digits": 20, "decimal_places": 4}


class Phase(models.TextChoices):
    CLOSED = "closed"
    PRE_OPEN = "pre_open"
    OPENING_AUCTION = "opening_auction"
    CONTINUOUS = "continuous"


class Game(models.Model):
    """The one running game (a singleton row, pk=1)."""

    name = models.CharField(max_length=100, default="Intern Trading Game")
    phase = models.CharField(max_length=20, choices=Phase.choices, default=Phase.CONTINUOUS)
    registration_open = models.BooleanField(default=True)
    trading_halted = models.BooleanField(default=False, help_text="Halts the whole exchange.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.phase})"


class RolePolicy(models.Model):
    """Limits and fees of one role; operators edit them in the admin."""

    role = models.CharField(max_length=20, choices=Role.choices, unique=True)
    position_limit = models.PositiveIntegerField(help_text="Per instrument, either side.")
    portfolio_limit = models.PositiveIntegerField(help_text="Sum of |position| over instruments.")
    max_order_size = models.PositiveIntegerField()
    orders_per_second = models.PositiveIntegerField()
    maker_fee = models.DecimalField(**PRICE, help_text="Per contract; negative is a rebate.")
    taker_fee = models.DecimalField(**PRICE, help_text="Per contract; negative is a rebate.")
    market_orders_allowed = models.BooleanField(default=True)

    class Meta:
        verbose_name_plural = "role policies"

    def __str__(self) -> str:
        return self.role


class Instrument(models.Model):
    class OptionType(models.TextChoices):
        CALL = "call"
        PUT = "put"

    symbol = models.CharField(max_length=40, primary_key=True)
    underlying = models.CharField(max_length=10)
    option_type = models.CharField(max_length=4, choices=OptionType.choices)
    strike = models.DecimalField(**PRICE)
    expiry = models.DateField(null=True, blank=True)
    tick_size = models.DecimalField(**PRICE, default=Decimal("0.01"))
    multiplier = models.PositiveIntegerField(default=100)
    max_order_size = models.PositiveIntegerField(default=1000)
    listed = models.BooleanField(default=True)
    halted = models.BooleanField(default=False)

    class Meta:
        ordering = ["underlying", "strike", "option_type"]

    def __str__(self) -> str:
        return self.symbol


class Side(models.TextChoices):
    BUY = "buy"
    SELL = "sell"


class OrderType(models.TextChoices):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(models.TextChoices):
    GTC = "gtc"
    DAY = "day"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(models.TextChoices):
    PENDING_NEW = "pending_new"
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


OPEN_STATUSES = (OrderStatus.PENDING_NEW, OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class Order(models.Model):
    # Indexes cost every batch the worker writes: each is only here for a read that needs it.
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="orders", db_index=False)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, null=True, related_name="orders")
    instrument_symbol = models.CharField(max_length=64, help_text="As sent, also for unknown instruments.")
    side = models.CharField(max_length=4, choices=Side.choices)
    order_type = models.CharField(max_length=6, choices=OrderType.choices)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices)
    price = models.DecimalField(**PRICE, null=True, blank=True)
    quantity = models.PositiveIntegerField()
    filled_quantity = models.PositiveIntegerField(default=0)
    remaining_quantity = models.PositiveIntegerField(default=0)
    cancelled_quantity = models.PositiveIntegerField(default=0)
    filled_notional = models.DecimalField(**MONEY, default=Decimal(0), help_text="Σ price × quantity of fills.")
    fees = models.DecimalField(**MONEY, default=Decimal(0))
    status = models.CharField(max_length=16, choices=OrderStatus.choices)
    client_order_id = models.CharField(max_length=64, null=True, blank=True)
    error_code = models.CharField(max_length=40, null=True, blank=True)
    error_message = models.CharField(max_length=200, null=True, blank=True)
    cancel_reason = models.CharField(max_length=24, null=True, blank=True)
    accepted_seq = models.BigIntegerField(
        null=True, blank=True, help_text="Journal position at which the engine took it: book priority."
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["team", "status"])]

    def __str__(self) -> str:
        return self.order_id

    @property
    def order_id(self) -> str:
        return f"ORD_{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class JournalEntry(models.Model):
    """The matching worker's record of every command it decided, in its order.

    ``id`` is the command id the queue assigned (arrival order); ``command`` is the command as it
    arrived (JSON), ``result`` what the worker decided and the ids it assigned (JSON). Written in
    the same transaction as the command's effects, so a command seen again is decided once.
    """

    # Always given (the command id); an auto field only so SQLite keeps it as the rowid, no extra index.
    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, null=True, blank=True, db_constraint=False, db_index=False)
    command = models.TextField()
    result = models.TextField(blank=True, default="")
    decided_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "journal entries"

    def __str__(self) -> str:
        return f"#{self.id} {self.kind}"


class RoleChange(models.Model):
    """The audit log of role policy changes (``manage.py set_role`` and the admin)."""

    role = models.CharField(max_length=20, choices=Role.choices)
    field = models.CharField(max_length=32)
    old = models.CharField(max_length=32)
    new = models.CharField(max_length=32)
    changed_by = models.CharField(max_length=150)
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.role}.{self.field}: {self.old} -> {self.new}"


class Trade(models.Model):
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="trades")
    price = models.DecimalField(**PRICE)
    quantity = models.PositiveIntegerField()
    aggressor_side = models.CharField(max_length=4, choices=Side.choices, null=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    @property
    def trade_id(self) -> str:
        return f"TRD_{self.pk}"


class Fill(models.Model):
    """One side of a trade, as its team sees it."""

    class Liquidity(models.TextChoices):
        MAKER = "maker"
        TAKER = "taker"

    trade = models.ForeignKey(Trade, on_delete=models.PROTECT, related_name="fills", db_index=False)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="fills", db_index=False)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, db_index=False)
    side = models.CharField(max_length=4, choices=Side.choices)
    quantity = models.PositiveIntegerField()
    price = models.DecimalField(**PRICE)
    liquidity_type = models.CharField(max_length=5, choices=Liquidity.choices)
    fees = models.DecimalField(**MONEY)
    cash_delta = models.DecimalField(**MONEY)
    position_after = models.IntegerField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["trade", "id"]
        constraints = [models.UniqueConstraint(fields=["trade", "order"], name="one_fill_per_trade_side")]
        indexes = [models.Index(fields=["team", "trade"])]


class Position(models.Model):
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="positions", db_index=False)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT)
    quantity = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "instrument"], name="one_position_per_instrument")]


class Account(models.Model):
    """A team's cash ledger totals; the fills are the ledger's lines."""

    team = models.OneToOneField(Team, on_delete=models.PROTECT, related_name="account")
    cash = models.DecimalField(**MONEY, default=Decimal(0))
    fees_paid = models.DecimalField(**MONEY, default=Decimal(0))
