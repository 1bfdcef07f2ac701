"""`underlying` and `signal` frames: sent by the operator commands through the matching worker's
queue, received through the real consumer with their exact fields."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import CommandError, call_command

from accounts.models import Team
from exchange.matching import loop, queue
from infra.redis_clients import sync_client
from tradinggame.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
MakeTeam = Callable[..., tuple[Team, str]]


async def connected(key: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws?api_key={key}")
    assert (await communicator.connect(timeout=5))[0]
    assert (await communicator.receive_json_from(timeout=5))["type"] == "position_snapshot"
    return communicator


async def test_underlying_reaches_every_connection(make_team: MakeTeam, matching: object) -> None:
    _, first = await sync_to_async(make_team)("hedge_fund")
    _, second = await sync_to_async(make_team)("retail")
    sockets = [await connected(first), await connected(second)]
    await sync_to_async(call_command)("publish_underlying", "spx", "4412.25", stdout=None)
    for ws in sockets:
        frame = await ws.receive_json_from(timeout=5)
        assert (frame["seq"], frame["type"], frame["data"]) == (2, "underlying", {"symbol": "SPX", "price": 4412.25})
        await ws.disconnect()


async def test_signals_go_to_the_role_only(make_team: MakeTeam, matching: object) -> None:
    hedge_team, hedge = await sync_to_async(make_team)("hedge_fund")
    _, maker = await sync_to_async(make_team)("market_maker")
    hedge_ws, maker_ws = await connected(hedge), await connected(maker)
    await sync_to_async(call_command)(
        "send_signal", "volatility_forecast", "--role", "hedge_fund", "--data", '{"regime": "high", "in_ticks": 3}'
    )
    frame = await hedge_ws.receive_json_from(timeout=5)
    assert frame["type"] == "signal"
    assert frame["data"] == {"signal_type": "volatility_forecast", "regime": "high", "in_ticks": 3}
    assert await maker_ws.receive_nothing(timeout=0.3)
    await sync_to_async(call_command)(
        "send_signal", "tracking_error", "--team", hedge_team.team_id, "--data", '{"value": 0.0015}'
    )
    frame = await hedge_ws.receive_json_from(timeout=5)
    assert frame["data"] == {"signal_type": "tracking_error", "value": 0.0015}
    for ws in (hedge_ws, maker_ws):
        await ws.disconnect()


def test_bad_operator_input_is_refused(db: None) -> None:
    with pytest.raises(CommandError):
        call_command("publish_underlying", "SPX", "-1")
    with pytest.raises(CommandError):
        call_command("publish_underlying", "SPX", "abc")
    with pytest.raises(CommandError):
        call_command("send_signal", "x", "--team", "nobody")
    with pytest.raises(CommandError):
        call_command("send_signal", "x", "--role", "retail", "--data", "[1]")


@pytest.fixture
def no_worker(transactional_db: None) -> Iterator[None]:
    loop.stop()
    sync_client().delete(queue.DECIDED)
    yield
    queue.forget(sync_client())


def test_without_the_worker_nothing_can_be_sent(no_worker: None) -> None:
    with pytest.raises(CommandError, match="matching worker"):
        call_command("publish_underlying", "SPX", "4400")
    with pytest.raises(CommandError, match="matching worker"):
        call_command("send_signal", "volatility_forecast", "--role", "hedge_fund")
