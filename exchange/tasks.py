"""Celery entry points of the ``matching`` queue's worker.

The Celery worker is the matching worker's process: when it is ready it starts the matching loop
(exchange.matching.loop) in a thread, and stops it at shutdown. Orders, cancels and operator
commands reach the loop through the matching queue in Redis, not as Celery messages: one Celery
message per order was measured too slow (docs/performance.md). Celery runs the process, its
start and its shutdown.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from exchange.matching import loop


@worker_ready.connect
def _start_matching(sender: object = None, **kwargs: Any) -> None:
    loop.start_in_thread(tune_gc=True)


@worker_shutdown.connect
def _stop_matching(sender: object = None, **kwargs: Any) -> None:
    loop.stop()

