"""A matching worker that is alive but does not decide: its "deciding" mark stays fresh, so web
processes keep queueing, while commands wait in the queue until the test lets it go on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import TracebackType

import pytest
import redis
from django.test import override_settings

from exchange.matching import loop, queue
from infra.redis_clients import sync_client


class PausedWorker:
    """``with paused:`` stops the matching loop and keeps its mark fresh; leaving the block starts
    the loop again, which decides what was queued meanwhile, in queue order."""

    def __init__(self) -> None:
        self.client: redis.Redis = sync_client()
        self._stop = threading.Event()
        self._marker: threading.Thread | None = None

    def mark(self) -> None:
        self.client.eval(queue.MARK, 2, queue.DECIDED, queue.SEQ, queue.DECIDED_TTL_S)

    def _keep_marking(self) -> None:
        while not self._stop.wait(0.2):
            self.mark()

    def __enter__(self) -> PausedWorker:
        loop.stop()
        self.mark()
        self._stop.clear()
        self._marker = threading.Thread(target=self._keep_marking, name="mark", daemon=True)
        self._marker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop_marking()
        running = loop.start_in_thread()
        assert running.started.wait(15), "the matching loop did not start again"

    def stop_marking(self) -> None:
        self._stop.set()
        if self._marker is not None:
            self._marker.join(5)

    def queued(self) -> int:
        return int(self.client.llen(queue.QUEUE))

    def wait_queued(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until ``count`` commands wait in the queue."""
        deadline = time.monotonic() + timeout_s
        while self.queued() < count:
            assert time.monotonic() < deadline, f"{self.queued()} command(s) queued, expected {count}"
            time.sleep(0.01)


@pytest.fixture(autouse=True)
def _patient_verdicts() -> Iterator[None]:
    """Wait longer than the production default for verdicts: these tests prove what the worker
    decides, and a busy test machine must not turn a verdict into a 504 (the tests about 504
    set a short wait of their own, through the ``settings`` fixture, on top of this one)."""
    with override_settings(EXCHANGE_VERDICT_TIMEOUT_S=10):
        yield


@pytest.fixture
def paused(matching: object) -> Iterator[PausedWorker]:
    pause = PausedWorker()
    yield pause
    pause.stop_marking()
