"""Thin Celery tasks of the ``matching`` queue: each wakes the worker to drain the journal.

A task carries no order: the journal in the database is the queue of record, so a lost,
duplicated or redelivered task can neither lose nor repeat anything.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

log = logging.getLogger(__name__)


@shared_task(name="exchange.tasks.process_commands", acks_late=True, ignore_result=True)
def process_commands() -> int:
    from exchange.services.matching import matching_worker

    return matching_worker().drain()


def wake_matching() -> None:
    """Queue a wake-up for the matching worker (called on commit)."""
    try:
        process_commands.apply_async(queue="matching")
    except Exception:  # broker down: the order is safe in the journal; the next wake-up drains it
        log.exception("could not queue a matching wake-up")


@worker_ready.connect
def _recover_at_start(sender: object = None, **kwargs: object) -> None:
    """At start, drain what was accepted but never matched, without waiting for redelivery."""
    wake_matching()


@shared_task(name="exchange.tasks.check_books", acks_late=True, ignore_result=True)
def check_books(token: str) -> None:
    """Drain the journal, compare the books with the database, post the differences to Redis."""
    import json

    from exchange.services.matching import matching_worker

    worker = matching_worker()
    worker.drain()
    differences = worker.books_differences()
    client = worker._redis_client()
    client.rpush(f"itg:books-check:{token}", json.dumps(differences))
    client.expire(f"itg:books-check:{token}", 60)
