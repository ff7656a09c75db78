"""The who-accessed-what log (docs/contract.md#7-privacy-and-lawful-care): one row per resident per read, durable before
the response leaves, whether or not PostgreSQL is up.

`AuditLog.record` writes the rows to this dashboard's journal file under
`<data dir>/audit/` (dashboard/audit_journal.py) at once and returns once they are
fsync'ed. Rows written while an fsync is in flight share the next one (group commit).
The fsync runs on a thread of its own, so the event loop — the alert path in `trygg up`
— never waits for the disk. The console's live stream uses `write` without waiting for
the fsync: its audit row is in the file before the alert is sent (a crash of Trygg
cannot lose it) and fsync'ed a moment later (docs/privacy.md).

A background task copies journaled rows into trygg.audit_log over a connection of its
own, in journal order, keeping each row's time and id (`INSERT … ON CONFLICT (row_id)
DO NOTHING`: a replay stores a row once), then empties the journal. While PostgreSQL is
unreachable it retries with jittered exponential backoff; the journal keeps the rows,
also across a restart. `flush` does the same at once (`GET /api/audit` calls it first,
so the log it shows includes the rows just recorded).

If the journal cannot be written, `record` raises `AuditJournalError`: the caller gets
503 instead of the data (and `/healthz` names the audit journal as degraded until a
write succeeds again).

The fsyncs run on a worker thread of the journal's own (`_Worker`), watched like every
thread that must not end (trygg/watchdog.py): a job's error goes to its future, never
ends the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import queue
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from starlette.requests import Request

from dashboard.audit_journal import AuditJournal, adopt_orphans
from dashboard.authz import Principal
from dashboard.errors import AuditJournalError
from storage.audit_store import AuditRow, insert_rows
from trygg.backoff import Backoff
from trygg.logging import get_logger
from trygg.watchdog import WatchedThread

log = get_logger(__name__)

MAX_ACTION: Final = 500
#: Most rows read from the journal per database transaction.
CHUNK_ROWS: Final = 5000
#: How often journals left by dashboards that are gone are looked for.
ORPHAN_SCAN_S: Final = 60.0

AUDIT_ROWS = Counter("trygg_audit_rows", "Audit rows recorded (durable in the journal)", ["method"])
AUDIT_STORED = Counter("trygg_audit_rows_stored", "Audit rows copied from the journal into trygg.audit_log")
AUDIT_APPEND = Histogram("trygg_audit_journal_append_seconds", "One journal write and fsync (a group of rows)",
                         buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0))
AUDIT_PENDING = Gauge("trygg_audit_journal_pending_bytes", "Journal bytes not yet in trygg.audit_log")


class _Worker:
    """One thread that runs the journal's fsyncs in order; an error goes to the job's
    future, so nothing a job does ends the thread."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], concurrent.futures.Future[object]] | None] = (
            queue.SimpleQueue())
        self._stopping = False
        self._thread = WatchedThread(self._run, name, lambda: self._stopping)
        self._thread.start()

    def submit(self, job: Callable[[], object]) -> concurrent.futures.Future[object]:
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # the job's, not the thread's
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Finish the jobs submitted, then end."""
        self._stopping = True
        self._jobs.put(None)
        self._thread.join()


def action_of(request: Request) -> str:
    """`GET /api/residents/r-17/events?since=…`, cut to 500 characters."""
    text = f"{request.method} {request.url.path}"
    if request.url.query:
        text += f"?{request.url.query}"
    return text[:MAX_ACTION]


def _text(value: str, limit: int = MAX_ACTION) -> str:
    """Text PostgreSQL accepts: no NUL, valid UTF-8 (a row it refused would block the
    journal)."""
    return value[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


class AuditLog:
    """The journal and its flusher; one per app, opened by the app's lifespan."""

    def __init__(self, directory: Path, conninfo: str, *, retry_max_s: float = 2.0,
                 connect_timeout_s: float = 5.0) -> None:
        self.directory = directory
        #: where the flusher stores rows; may be changed while running (the next attempt uses it)
        self.conninfo = conninfo
        self.retry_max_s = retry_max_s
        self.connect_timeout_s = connect_timeout_s
        self._journal: AuditJournal | None = None
        self._worker: _Worker | None = None
        self._waiting: list[asyncio.Future[None]] = []  # recorders waiting for the next fsync
        self._syncing = False  # an fsync is in flight on the journal's thread
        self._drained = asyncio.Event()  # set while nothing waits to be fsync'ed
        self._drained.set()
        self._written = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._flushed = 0  # journal bytes already in PostgreSQL
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._conn_for = ""
        self._orphans_at = -math.inf
        self._closing = False

    # --- recording -------------------------------------------------------------------

    def open(self) -> None:
        self._journal = AuditJournal(self.directory)
        self._flushed = self._journal.begin
        self._worker = _Worker("trygg-audit-journal")
        self._written.set()  # the flusher's first round stores what earlier runs left

    @property
    def journal(self) -> AuditJournal:
        if self._journal is None:
            raise AuditJournalError("the audit journal is not open")
        return self._journal

    async def record(self, who: Principal, resident_ids: Iterable[str | None], action: str) -> int:
        """One row per resident (None: an access that concerns no single resident),
        durable when this returns."""
        written, synced = self.write(who, resident_ids, action)
        if synced is not None:
            await synced
        return written

    def write(self, who: Principal, resident_ids: Iterable[str | None], action: str, *,
              wait: bool = True) -> tuple[int, asyncio.Future[None] | None]:
        """Write the rows to the journal now (raises AuditJournalError if it cannot be
        written); returns their count and, with `wait`, a future done once they are
        fsync'ed."""
        at = datetime.now(UTC)
        rows = [AuditRow(uuid4(), at, _text(who.username), who.role.value, rid, _text(action))
                for rid in resident_ids]
        if not rows:
            return 0, None
        if self._closing:
            raise AuditJournalError("the dashboard is stopping")
        self.journal.write(rows)
        method = action.split(" ", 1)[0]
        AUDIT_ROWS.labels(method if method in ("GET", "POST", "PUT") else "other").inc(len(rows))
        synced: asyncio.Future[None] | None = None
        if wait:
            synced = asyncio.get_running_loop().create_future()
            self._waiting.append(synced)
        if not self._syncing:
            self._sync_next()
        return len(rows), synced

    def _sync_next(self) -> None:
        """fsync what was written, on the journal's thread; the recorders waiting for it
        are answered in a callback on the loop, which starts the next fsync if more was
        written meanwhile (no task in between)."""
        journal = self.journal
        if journal.written == journal.size and not self._waiting:
            self._syncing = False
            self._drained.set()
            return
        loop = asyncio.get_running_loop()
        batch, self._waiting = self._waiting, []
        self._syncing = True
        self._drained.clear()
        started = time.perf_counter()
        assert self._worker is not None  # opened with the journal
        future = self._worker.submit(journal.sync)
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._synced, batch, f, started))

    def _synced(self, batch: list[asyncio.Future[None]], future: concurrent.futures.Future[object],
                started: float) -> None:
        exc = future.exception()
        if exc is None:
            journal = self.journal
            AUDIT_APPEND.observe(time.perf_counter() - started)
            AUDIT_PENDING.set(journal.size - self._flushed)
            self._written.set()
        else:
            # Nothing unsynced is kept: the rows written since the last good fsync are cut
            # off, and everyone waiting for them gets the error (no data without its row).
            batch, self._waiting = batch + self._waiting, []
            dropped = self.journal.cut_back()
            log.error("audit_journal_not_written_rows_dropped", error=str(exc), bytes=dropped)
            exc = exc if isinstance(exc, AuditJournalError) else AuditJournalError(str(exc))
        for done in batch:
            if done.done():
                continue
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)
        self._sync_next()

    # --- copying to PostgreSQL --------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Journal bytes not yet in trygg.audit_log."""
        return self.journal.size - self._flushed

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken or self._conn_for != self.conninfo):
            await self._disconnect()
            conn = None
        if conn is None:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                         connect_timeout=max(1, round(self.connect_timeout_s)))
            self._conn, self._conn_for = conn, self.conninfo
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _store(self, conn: psycopg.AsyncConnection[Any], rows: list[AuditRow]) -> int:
        async with conn.transaction():
            stored = await insert_rows(conn, rows)
        AUDIT_STORED.inc(stored)
        return stored

    async def _adopt_orphans(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Store the rows of journals left by dashboards that are gone, then remove them."""
        loop = asyncio.get_running_loop()
        stored = 0
        with adopt_orphans(self.directory, self.journal.path) as orphans:
            for orphan in orphans:
                batch = await loop.run_in_executor(None, orphan.read)
                for start in range(0, len(batch.rows), 5000):
                    stored += await self._store(conn, batch.rows[start:start + 5000])
                orphan.remove()
                log.info("audit_journal_of_earlier_run_stored", rows=len(batch.rows), skipped=batch.bad,
                         journal=orphan.path.name)
        self._orphans_at = time.monotonic()
        return stored

    async def flush(self, conn: psycopg.AsyncConnection[Any] | None = None) -> int:
        """Copy every durable row not yet stored into trygg.audit_log now, over `conn`
        (idle: each chunk is committed in a transaction of its own) or the flusher's own
        connection; returns how many rows were new there. Raises psycopg errors when
        PostgreSQL refuses or is unreachable."""
        loop = asyncio.get_running_loop()
        journal = self.journal
        async with self._flush_lock:
            if conn is None:
                try:
                    conn = await self._connection()
                except psycopg.Error:
                    await self._disconnect()
                    raise
            try:
                stored = 0
                if time.monotonic() - self._orphans_at >= ORPHAN_SCAN_S:
                    stored += await self._adopt_orphans(conn)
                end = journal.size
                while self._flushed < end:
                    batch = await loop.run_in_executor(None, journal.read, self._flushed, end, CHUNK_ROWS)
                    if batch.bad:
                        log.error("audit_journal_records_skipped", records=batch.bad)
                    stored += await self._store(conn, batch.rows)
                    self._flushed = batch.end
                # on the loop, where rows are written, and never under an fsync in flight
                if not self._syncing and journal.truncate(self._flushed):
                    self._flushed = journal.begin
            except psycopg.Error:
                if conn is self._conn:
                    await self._disconnect()
                raise
            finally:
                AUDIT_PENDING.set(journal.size - self._flushed)
            return stored

    async def run(self) -> None:
        """Copy rows to PostgreSQL as soon as they are durable; until cancelled."""
        failures = 0
        backoff = Backoff(min(0.2, self.retry_max_s), self.retry_max_s)
        while True:
            if failures:
                await asyncio.sleep(backoff.next())
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._written.wait(), ORPHAN_SCAN_S)
            self._written.clear()
            try:
                await self.flush()
            except (psycopg.Error, AuditJournalError, OSError) as exc:
                if not failures:
                    log.warning("audit_rows_kept_in_journal",
                                error=str(exc).strip()[:200], pending_bytes=self.pending_bytes)
                failures += 1
                continue
            except Exception:  # the flusher must not end: the rows wait in the journal
                log.exception("audit_journal_not_stored",
                              pending_bytes=self.pending_bytes)
                failures += 1
                continue
            if failures:
                log.info("audit_journal_stored_in_postgresql_again", failed_attempts=failures)
                backoff.reset()
            failures = 0

    async def close(self, flush_timeout_s: float = 3.0) -> None:
        """Finish the writes in flight, store what can be stored within the timeout, and
        release the journal (removed when it is all in PostgreSQL, else left for the
        next start)."""
        self._closing = True
        await self._drained.wait()
        journal = self._journal
        if journal is not None:
            try:
                await asyncio.wait_for(self.flush(), flush_timeout_s)
            except (psycopg.Error, AuditJournalError, OSError, TimeoutError) as exc:
                log.warning("audit_rows_left_in_journal_for_next_start", error=str(exc).strip()[:200],
                            pending_bytes=self.pending_bytes, journal=str(journal.path))
            journal.close(remove=journal.size == self._flushed)
            self._journal = None
        await self._disconnect()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.shutdown)
            self._worker = None


__all__ = ["AUDIT_ROWS", "AuditLog", "action_of"]
