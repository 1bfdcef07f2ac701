"""Thin Celery tasks of the ``matching`` queue: each wakes the worker to drain the journal.

A task carries no order: the journal in the database is the queue of record, so a lost,
duplicated or redelivered task can neither lose nor repeat anything.
"""

from __future__ import annotations

import logging

import redis
from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

log = logging.getLogger(__name__)


@shared_task(name="exchange.tasks.process_commands", acks_late=True, ignore_result=True)
def process_commands() -> int:
    from exchange.services.matching import matching_worker

    _redis().delete(WAKE_FLAG)  # from here on, a new order needs a new wake-up
    return matching_worker().drain()


WAKE_FLAG = "itg:matching:wake-pending"
WAKE_FLAG_TTL_MS = 1000
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return _client


def wake_matching() -> None:
    """Queue a wake-up for the matching worker (called on commit), unless one is already queued.

    One queued wake-up drains everything committed before the worker takes it, so a burst of
    orders needs only one: the flag (cleared by the worker when it starts draining, and expiring
    on its own) keeps the queue from filling with wake-ups that would find nothing to do.
    """
    try:
        if _redis().set(WAKE_FLAG, "1", nx=True, px=WAKE_FLAG_TTL_MS):
            process_commands.apply_async(queue="matching")
    except Exception:  # broker down: the order is safe in the journal; the worker's sweep drains it
        log.exception("could not queue a matching wake-up")


@worker_ready.connect
def _recover_at_start(sender: object = None, **kwargs: object) -> None:
    """At start, drain what was accepted but never matched, without waiting for redelivery."""
    process_commands.apply_async(queue="matching")


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


@worker_shutdown.connect
def _stop_at_shutdown(sender: object = None, **kwargs: object) -> None:
    from exchange.services.matching import matching_worker_stop

    matching_worker_stop()
