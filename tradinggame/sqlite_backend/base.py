"""Django's SQLite backend, with writers handed the database through a file lock.

SQLite lets one writer in at a time; a second one waits in SQLite's busy handler, which sleeps
in steps of up to 100 ms. The web process and the matching worker write constantly, so those
sleeps became the exchange's latency. Here every transaction first takes an exclusive
``flock`` on a file next to the database: the kernel wakes the next writer the moment the
previous one commits. Reads need no lock (WAL).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    _lock_fd: int | None = None

    _in_memory_of: tuple[str, bool] | None = None

    def _in_memory(self) -> bool:
        """``is_in_memory_db()``, asked again only when the database's name changes (the test
        runner renames it to the test database's)."""
        name = str(self.settings_dict["NAME"])
        if self._in_memory_of is None or self._in_memory_of[0] != name:
            self._in_memory_of = (name, self.is_in_memory_db())
        return self._in_memory_of[1]

    def _writer_lock_path(self) -> str:
        return f"{self.settings_dict['NAME']}.writer-lock"

    def _take_writer_lock(self) -> None:
        if not self._in_memory():
            if self._lock_fd is None:
                self._lock_fd = os.open(self._writer_lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """The lock alone, for a transaction run on the driver's connection itself (the matching
        worker's batches)."""
        self._take_writer_lock()
        try:
            yield
        finally:
            self._release_writer_lock()

    def _start_transaction_under_autocommit(self) -> None:
        self._take_writer_lock()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer_lock()
            raise

    def _release_writer_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _commit(self) -> Any:
        try:
            return super()._commit()
        finally:
            self._release_writer_lock()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()
        finally:
            self._release_writer_lock()

    def _close(self) -> Any:
        try:
            return super()._close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor also releases the lock
                self._lock_fd = None
