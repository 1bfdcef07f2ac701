"""Cancel requests: journalled behind everything the team sent before, so a cancel never
overtakes an order; the matching worker gives the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from accounts.models import Team
from exchange import clock
from exchange.codes import RejectCode
from exchange.models import OPEN_STATUSES, Command, Order, OrderStatus, Phase
from exchange.selectors import game_state
from exchange.services.orders import lock_team


@dataclass
class CancelRequest:
    """One order's cancel: either already decided (``verdict``) or waiting on ``command_id``."""

    order: Order
    command_id: int | None = None
    verdict: dict[str, Any] | None = None


def _decided(order: Order) -> dict[str, Any] | None:
    """The verdict when the order is already finished: no need to ask the engine."""
    if order.status == OrderStatus.FILLED:
        return {
            "status": "rejected",
            "error_code": RejectCode.ORDER_ALREADY_FILLED,
            "error_message": "the order is filled",
        }
    if order.status == OrderStatus.CANCELLED:
        return {
            "status": "rejected",
            "error_code": RejectCode.ORDER_ALREADY_CANCELLED,
            "error_message": "the order is already cancelled",
        }
    if order.status == OrderStatus.REJECTED:
        return {
            "status": "rejected",
            "error_code": RejectCode.ORDER_NOT_FOUND,
            "error_message": "the order was rejected",
        }
    return None


def order_cancel_request(
    team: Team, order_ids: list[int] | None = None, instrument: str | None = None
) -> list[CancelRequest]:
    """Journal cancels for the given orders of the team (None: all its open orders, optionally
    of one instrument). Orders of other teams are simply not found."""
    from exchange.tasks import wake_matching

    now = clock.now()
    requests: list[CancelRequest] = []
    with transaction.atomic():
        lock_team(team)
        orders = Order.objects.filter(team=team)
        if order_ids is None:
            orders = orders.filter(status__in=OPEN_STATUSES)
            if instrument:
                orders = orders.filter(instrument_symbol=instrument)
        else:
            orders = orders.filter(pk__in=order_ids)
        phase = game_state().phase
        closed = phase in (Phase.CLOSED, Phase.OPENING_AUCTION)
        commands = []
        for order in orders.order_by("id"):
            verdict = _decided(order)
            if verdict is None and closed:
                verdict = {
                    "status": "rejected",
                    "error_code": RejectCode.MARKET_CLOSED,
                    "error_message": f"cancels are not taken in phase {phase}",
                }
            if verdict is not None:
                requests.append(CancelRequest(order, verdict=verdict))
                continue
            command = Command(kind=Command.Kind.CANCEL, team=team, order=order, created_at=now)
            commands.append(command)
            requests.append(CancelRequest(order))
        if commands:
            for command in commands:
                command.save()
            for request, command in zip((r for r in requests if r.verdict is None), commands, strict=True):
                request.command_id = command.pk
            transaction.on_commit(wake_matching)
    return requests


def cancel_verdicts_from_journal(command_ids: list[int]) -> dict[int, dict[str, Any]]:
    return {
        pk: result
        for pk, result in Command.objects.filter(pk__in=command_ids, result__isnull=False).values_list("pk", "result")
    }
