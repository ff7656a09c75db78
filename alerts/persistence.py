"""Alert rows to PostgreSQL in the background: the alert path never waits for the database.

`AlertWriter.put` appends a change to an in-memory queue and returns (any thread). One
thread of its own takes what has queued, appends it to the journal (fsync'ed, see
`alerts.journal`), and writes it to PostgreSQL in batches, in order. While the database
is unreachable the changes stay in memory and in the journal and the writer retries
every `retry_s`; when the database returns they are written in the order they happened.
A row PostgreSQL refuses for what it is (not for being unreachable) is written alone,
and given up with an error and a metric if it still fails, so one bad row cannot stall
every later one.

The thread must not end: an unexpected error in a round is logged, counted
(`trygg_alerts_writer_errors`) and the round tried again after `retry_s`, the changes kept
in memory meanwhile; the thread is watched (trygg/watchdog.py), so if it ends anyway the
process exits and its supervisor restarts it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

import psycopg

from alerts import metrics
from alerts.journal import Item, Journal
from alerts.model import Change
from storage.alerts_store import AlertStore
from storage.errors import DatabaseUnavailable
from trygg.logging import get_logger
from trygg.watchdog import WatchedThread

log = get_logger(__name__)


def item_of(change: Change) -> Item:
    """What the journal and the database keep of a change."""
    return change.alert, change.transitions


class AlertWriter:
    def __init__(
        self,
        store: AlertStore,
        journal: Journal | None = None,
        *,
        retry_s: float = 2.0,
        batch_max: int = 500,
        unwritten: Sequence[Item] = (),
    ) -> None:
        self._store = store
        self._journal = journal
        self._retry_s = retry_s
        self._batch_max = batch_max
        self._queue: deque[Item] = deque()
        #: taken from the queue (and journaled) but not yet committed; writer thread only
        self._unwritten: list[Item] = list(unwritten)  # e.g. read back from the journal
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = WatchedThread(self._run, "trygg-alerts-writer", lambda: self._stopping)
        self._next_try = 0.0
        self.database_ok = True
        self.idle = threading.Event()

    @property
    def backlog(self) -> int:
        return len(self._queue) + len(self._unwritten)

    def put(self, item: Item) -> None:
        """Queue one change for storage; never blocks on the database."""
        with self._cond:
            self._queue.append(item)
            self.idle.clear()
            self._cond.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> int:
        """Write what is queued if the database answers, then end; returns the changes
        left uncommitted (they are in the journal for the next start)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._store.close()
        if self._journal is not None:
            self._journal.close()
        return self.backlog

    def wait_idle(self, timeout: float) -> bool:
        """True once everything put so far is committed (tests, shutdown)."""
        return self.idle.wait(timeout)

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        while True:
            try:
                if self._round():
                    return
            except Exception:  # this thread must not end: the changes stay in memory
                metrics.WRITER_ERRORS.inc()
                log.exception("alert_writer_unexpected_error", backlog=self.backlog)
                with self._cond:
                    if self._stopping:
                        return
                    self._cond.wait(self._retry_s)

    def _round(self) -> bool:
        """Journal what was queued and write what is unwritten; True when stopped."""
        with self._cond:
            while not self._queue and not self._stopping:
                if self._unwritten:
                    wait = self._next_try - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                else:
                    self.idle.set()
                    self._cond.wait()
            new = list(self._queue)
            self._queue.clear()
            stopping = self._stopping
        if new:
            self._unwritten.extend(new)  # first: a failing journal loses nothing of them
            self._journal_append(new)
        metrics.PERSIST_BACKLOG.set(self.backlog)
        if self._unwritten and (time.monotonic() >= self._next_try or (stopping and self.database_ok)):
            self._next_try = 0.0 if self._write_unwritten() else time.monotonic() + self._retry_s
        if not self._unwritten and not self._queue:
            self.idle.set()
        return stopping

    def _journal_append(self, items: list[Item]) -> None:
        if self._journal is None:
            return
        try:
            self._journal.append(items)
        except Exception as exc:
            metrics.DELIVERIES_FAILED.labels("journal").inc()
            log.error("cannot_append_to_alert_journal", error=str(exc), changes=len(items))

    def _write_unwritten(self) -> bool:
        """Write everything unwritten in batches; False when the database is away."""
        while self._unwritten:
            batch = self._unwritten[: self._batch_max]
            try:
                self._write(batch)
            except DatabaseUnavailable as exc:
                if self.database_ok:
                    log.warning("database_unavailable_alert_rows_kept",
                                error=str(exc), backlog=self.backlog)
                self.database_ok = False
                metrics.DATABASE_UP.set(0)
                return False
            del self._unwritten[: len(batch)]
        if not self.database_ok:
            log.info("database_back_alert_rows_written")
        self.database_ok = True
        metrics.DATABASE_UP.set(1)
        metrics.PERSIST_BACKLOG.set(self.backlog)
        if self._journal is not None:
            try:
                self._journal.clear()
            except Exception as exc:  # read again at the next start: written once more, harmlessly
                log.error("cannot_clear_alert_journal", error=str(exc))
        return True

    def _write(self, batch: list[Item]) -> None:
        try:
            self._store.write([a for a, _ in batch], [t for _, steps in batch for t in steps])
        except DatabaseUnavailable:
            raise
        except (psycopg.Error, ValueError, TypeError):  # refused for what it holds (text PostgreSQL cannot store)
            if len(batch) == 1:
                self._give_up(batch[0])
                return
            for item in batch:  # find the row PostgreSQL refuses; write the others
                self._write([item])

    def _give_up(self, item: Item) -> None:
        metrics.DELIVERIES_FAILED.labels("database").inc()
        log.exception("alert_row_refused_given_up", alert_id=item[0].alert_id)


__all__ = ["AlertWriter", "item_of"]
