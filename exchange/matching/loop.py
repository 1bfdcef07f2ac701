"""The matching worker's life: start from the database, then take batches off the queue, decide,
commit, publish, for as long as the process lives.

The Celery worker on the ``matching`` queue starts it (``exchange.tasks``) in a thread of its own
and stops it at shutdown. The loop never waits on a timer while commands are queued: it takes up
to ``EXCHANGE_MATCHING_BATCH`` commands at once, and blocks on the queue only when it is empty.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
import redis
from django.conf import settings
from django.db import close_old_connections

from accounts.keycache import publish_all
from exchange import clock
from exchange.invariants import books_differences
from exchange.matching import queue
from exchange.matching.commit import write_batch
from exchange.matching.publish import ROLE_RATES, Publisher
from exchange.matching.worker import Batch, MatchingWorker
from exchange.models import Account, JournalEntry
from infra import collector
from infra.redis_clients import sync_client

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5  # the longest block on an empty queue: the "deciding" mark is renewed this often
RETRY_S = 0.5


class MatchingLoop:
    def __init__(self, tune_gc: bool = False) -> None:
        self.tune_gc = tune_gc
        self.client: redis.Redis = sync_client(timeout_s=5)
        self.link = queue.WorkerLink(self.client)
        self.stop_requested = threading.Event()
        self.worker = MatchingWorker()
        self.publisher = Publisher(self.link, self.worker.epoch)
        self.stored_accounts: set[int] = set()
        self.started = threading.Event()
        self.next_items: list[bytes] = []
        self.queue_was_empty = False  # the last round trip found the queue empty
        self.marked_at = 0.0
        self.stats = Stats()

    # --- start -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.client.ping()  # no state rebuilt for nothing while Redis is away
        self.link.load_scripts()
        self.next_items, self.queue_was_empty = [], False
        worker = MatchingWorker()
        worker.load()
        self.worker = worker
        self.publisher = Publisher(self.link, worker.epoch)
        self.stored_accounts = set(Account.objects.values_list("team_id", flat=True))
        self.seed()
        leftovers = self.client.lrange(queue.INFLIGHT, 0, -1)
        if leftovers:
            log.info("%d commands were in flight at the last stop; deciding those not yet decided", len(leftovers))
            if any(queue.decode(item)[0] <= self.worker.last_decided for item in leftovers):
                # Committed, then the last worker died before publishing: their replies and frames
                # are gone. The clients got 504 and learn the verdicts by resending; connections
                # are told to resync.
                self.publisher.frames_lost()
            self.process(leftovers)
        if self.tune_gc:
            collector.tune()  # the state is large and lives as long as the process
        self.started.set()

    def seed(self) -> None:
        """Command ids continue after the journal's; keys and rate limits for the web processes."""
        self.client.eval(queue.SEED, 1, queue.SEQ, self.worker.last_decided)
        keys = publish_all(self.client)
        rates = {role: p.orders_per_second for role, p in self.worker.policies.items()}
        self.client.hset(ROLE_RATES, mapping=rates)  # type: ignore[arg-type]
        self.mark()
        log.info("queue seeded after command %d; %d keys in the directory", self.worker.last_decided, keys)

    def mark(self) -> None:
        self.marked_at = time.monotonic()
        if not self.link.call(*self.link.script(queue.MARK, [queue.DECIDED, queue.SEQ], [queue.DECIDED_TTL_S])):
            log.warning("the command counter was gone (Redis lost its data); seeding it again")
            self.seed()

    # --- run -------------------------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stop_requested.is_set():
            try:
                if not self.started.is_set():
                    self.start()
                self.step()
            except (redis.RedisError, OSError):
                # What a lost reply took into the in-flight list is found again by a fresh start.
                # The traceback once per outage (the first failure after a good start), not per retry.
                log.warning(
                    "Redis is unavailable to the matching worker; starting again", exc_info=self.started.is_set()
                )
                self.started.clear()
                time.sleep(RETRY_S)
            except Exception:
                log.exception("the matching worker failed; rebuilding its state from the database")
                self.started.clear()
                close_old_connections()
                time.sleep(RETRY_S)

    def step(self) -> None:
        size = settings.EXCHANGE_MATCHING_BATCH
        if self.next_items or self.queue_was_empty:
            # The last batch's round trip already took what was queued: nothing to ask again.
            items, self.next_items, self.queue_was_empty = self.next_items, [], False
        else:
            items = self.link.call(*self.link.script(queue.TAKE, [queue.QUEUE, queue.INFLIGHT], [size]))
        if not items:
            due = self.worker.next_market_due()
            now = time.monotonic()
            if due is not None and due <= now:
                self.finish(self.worker.market_data_only(), inflight=False)
                return
            if now - self.marked_at >= IDLE_WAIT_S:
                self.mark()
            wait = IDLE_WAIT_S if due is None else max(0.001, min(IDLE_WAIT_S, due - now))
            # Block for the first command; what arrived with it (a web process sends the commands
            # of one event-loop turn together) comes in the same round trip, not a batch of one.
            first, rest = self.link.calls(
                ("BLMOVE", queue.QUEUE, queue.INFLIGHT, "LEFT", "RIGHT", wait),
                self.link.script(queue.TAKE, [queue.QUEUE, queue.INFLIGHT], [size - 1]),
            )
            items = rest if first is None else [first, *rest]
            if not items:
                return
        self.process(items)

    def process(self, items: list[bytes]) -> None:
        commands = [queue.decode(item) for item in items]
        try:
            started = time.thread_time()
            batch = self.worker.decide(commands)
            decided = time.thread_time()
            write_batch(batch, self.worker.teams, self.worker.stored_positions, self.stored_accounts)
            self.stats.spent("decide", decided - started)
            self.stats.spent("commit", time.thread_time() - decided)
        except Exception:
            log.exception("a batch of %d commands failed; deciding them one at a time", len(commands))
            self.one_at_a_time(commands)
            return
        self.finish(batch, inflight=True)

    def finish(self, batch: Batch, inflight: bool) -> None:
        """Publish, and in the same round trip take the next batch (steady load: one round trip
        per batch besides the commit)."""
        started = time.thread_time()
        self.next_items = self.publisher.send(
            batch, finished_inflight=inflight, take_next=settings.EXCHANGE_MATCHING_BATCH
        )
        self.queue_was_empty = not self.next_items
        self.marked_at = time.monotonic()
        self.stats.spent("publish", time.thread_time() - started)
        if self.publisher.counter_lost:
            log.warning("the command counter was gone (Redis lost its data); seeding it again")
            self.seed()
        self.stats.add(len(batch))
        for reply_to in batch.books_check:
            self.publisher.reply(reply_to, {"differences": books_differences(self.worker.engine.resting_orders())})

    def one_at_a_time(self, commands: list[tuple[int, dict[str, Any]]]) -> None:
        """After a failed batch: a fresh state from the database, then each command alone; one that
        fails alone is journalled as refused so it cannot block the queue (its client gets 504)."""
        for command_id, command in commands:
            self.start_fresh()
            try:
                batch = self.worker.decide([(command_id, command)])
                write_batch(batch, self.worker.teams, self.worker.stored_positions, self.stored_accounts)
            except Exception:
                log.exception("command %d failed on its own; set aside", command_id)
                self.start_fresh()
                JournalEntry.objects.create(
                    id=command_id,
                    kind=str(command.get("k"))[:16],
                    team_id=command.get("t"),
                    command=orjson.dumps(command).decode(),
                    result=orjson.dumps({"error": "ENGINE_ERROR"}).decode(),
                    decided_at=clock.now(),
                )
                self.worker.last_decided = command_id
                continue
            self.publisher.send(batch, finished_inflight=False)
        self.client.delete(queue.INFLIGHT)

    def start_fresh(self) -> None:
        close_old_connections()
        worker = MatchingWorker()
        worker.load()
        worker.epoch = self.worker.epoch  # same publisher numbering: consumers see no false gap
        self.worker = worker
        self.stored_accounts = set(Account.objects.values_list("team_id", flat=True))


class Stats:
    """Commands and batches decided, and the matching thread's CPU (in all, and in deciding,
    committing and publishing), logged every ``EVERY_S`` while busy."""

    EVERY_S = 10.0

    def __init__(self) -> None:
        self.commands = self.batches = 0
        self.since = time.monotonic()
        self.cpu: float | None = None  # read on the matching thread, where it is counted
        self.parts: dict[str, float] = {}

    def spent(self, part: str, seconds: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds

    def add(self, commands: int) -> None:
        if self.cpu is None:
            self.cpu = time.thread_time()
        self.commands += commands
        self.batches += 1
        now = time.monotonic()
        if now - self.since >= self.EVERY_S:
            if self.commands:
                per_command = {k: f"{1000 * v / self.commands:.3f}" for k, v in self.parts.items()}
                log.info(
                    "%d commands in %d batches (%.1f per batch) in %.0f s; ms of CPU per command: %.3f (%s)",
                    self.commands,
                    self.batches,
                    self.commands / self.batches,
                    now - self.since,
                    1000 * (time.thread_time() - self.cpu) / self.commands,
                    ", ".join(f"{k} {v}" for k, v in per_command.items()),
                )
            self.commands = self.batches = 0
            self.since, self.cpu, self.parts = now, time.thread_time(), {}


_loop: MatchingLoop | None = None
_thread: threading.Thread | None = None


def start_in_thread(tune_gc: bool = False) -> MatchingLoop:
    """Start this process's matching loop (once); the Celery worker calls it when ready, with
    ``tune_gc`` since the process is the worker's own."""
    global _loop, _thread
    if _loop is None:
        _loop = MatchingLoop(tune_gc)
        _thread = threading.Thread(target=_loop.run, name="matching", daemon=True)
        _thread.start()
    return _loop


def stop(timeout_s: float = 10.0) -> None:
    global _loop, _thread
    if _loop is not None:
        _loop.stop_requested.set()
    if _thread is not None:
        _thread.join(timeout_s)
    _loop, _thread = None, None
