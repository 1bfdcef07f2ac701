"""Celery entry points of the ``matching`` queue's worker.

The Celery worker is the matching worker's process: when it is ready it starts the matching loop
(exchange.matching.loop) in a thread, and stops it at shutdown. Orders, cancels and operator
commands reach the loop through the matching queue in Redis, not as Celery messages: one Celery
message per order was measured too slow (docs/performance.md). Celery stays the carrier of
scheduled and control tasks.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from exchange.matching import loop


@worker_ready.connect
def _start_matching(sender: object = None, **kwargs: Any) -> None:
    loop.start_in_thread(tune_gc=True)


@worker_shutdown.connect
def _stop_matching(sender: object = None, **kwargs: Any) -> None:
    loop.stop()


@shared_task(name="exchange.tasks.ensure_matching", ignore_result=True)
def ensure_matching() -> bool:
    """Start the matching loop in this worker if it is not running (a control task)."""
    return loop.start_in_thread().started.is_set()
