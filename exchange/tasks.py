"""Thin Celery tasks of the ``matching`` queue: each wakes the worker to drain the journal.

A task carries no order: the journal in the database is the queue of record, so a lost,
duplicated or redelivered task can neither lose nor repeat anything.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import redis
from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

log = logging.getLogger(__name__)


@shared_task(name="exchange.tasks.process_commands", acks_late=True, ignore_result=True)
def process_commands() -> int:
    from exchange.services.matching import matching_worker

    with contextlib.suppress(redis.RedisError):
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
    """Ask for a wake-up of the matching worker (called on commit); returns at once.

    The wake-up is sent from a background thread, so no request ever waits on the broker (a
    frozen Redis would otherwise hold the web process's one thread for sync views). Losing one is
    safe: the journal holds the order and the worker's sweep sends another.
    """
    _waker().poke()


def _send_wake_up() -> None:
    """Queue a wake-up unless one is already queued: one wake-up drains everything committed
    before the worker takes it, so the flag (cleared when the worker starts draining, expiring
    on its own) keeps a burst of orders from filling the queue with wake-ups."""
    if _redis().set(WAKE_FLAG, "1", nx=True, px=WAKE_FLAG_TTL_MS):
        process_commands.apply_async(queue="matching")


class _Waker:
    def __init__(self) -> None:
        self._wanted = threading.Event()
        threading.Thread(target=self._run, name="matching-waker", daemon=True).start()

    def poke(self) -> None:
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                _send_wake_up()
            except Exception:  # broker down: the order is safe in the journal; the worker's sweep drains it
                log.warning("could not queue a matching wake-up", exc_info=True)


_waker_instance: _Waker | None = None
_waker_lock = threading.Lock()


def _waker() -> _Waker:
    global _waker_instance
    with _waker_lock:
        if _waker_instance is None:
            _waker_instance = _Waker()
        return _waker_instance


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
