"""The durability loop: batches received messages, makes them durable in PostgreSQL or
the local spool, and only then acknowledges them to the broker (docs/contract.md#5-delivery-guarantees).

It runs in its own thread, which must not end: whatever goes wrong in a round is logged,
counted (`trygg_gateway_writer_errors`) and tried again, the batch held unacknowledged
meanwhile; the thread is watched (trygg/watchdog.py), so if it ends anyway the process
exits and its supervisor restarts it. While neither PostgreSQL nor the spool takes a
batch, the batch stays unacknowledged and is retried: the broker keeps it.
`oldest_pending_age` tells how long the oldest message not yet acknowledged has waited.

The queue in front of it is bounded: `put` says when it is full, the gateway then stops
reading the MQTT socket and the broker holds the rest (back-pressure, never a silent
drop); `on_room` is called once there is room again.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from gateway import metrics
from gateway.errors import SpoolError
from gateway.spool import Record, Spool
from storage import DatabaseUnavailable, DeadLetter, EventStore, StatusRow
from trygg.contract import Event
from trygg.logging import get_logger
from trygg.watchdog import WatchedThread

log = get_logger(__name__)

#: How often the last-heard time of each device is written (for restarts).
TOUCH_INTERVAL_S = 5.0
#: While neither PostgreSQL nor the spool takes a batch: how often that is logged again.
STUCK_LOG_S = 60.0


@dataclass(slots=True)
class Pending:
    """Messages received together, on their way to durability; acknowledged once durable."""

    records: list[Record]
    mids: list[int]  # packet ids to acknowledge (QoS 1 messages only)
    generation: int  # MQTT connection they arrived on; a stale one is not acknowledged
    put_at: float = field(default=0.0)  # time.monotonic() of `put`


def _split(records: Sequence[Record]) -> tuple[list[Event], list[DeadLetter], list[StatusRow]]:
    events, dead, statuses = [], [], []
    for rec in records:
        if isinstance(rec, Event):
            events.append(rec)
        elif isinstance(rec, DeadLetter):
            dead.append(rec)
        else:
            statuses.append(rec)
    return events, dead, statuses


class DurableWriter:
    def __init__(
        self,
        store: EventStore,
        spool: Spool,
        ack: Callable[[list[int], int], None],
        *,
        batch_max: int = 2000,
        batch_wait_s: float = 0.005,
        queue_max: int = 20_000,
        retry_s: float = 2.0,
        orphans: Sequence[Spool] = (),
        on_room: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._spool = spool
        # spools of shards that no longer exist (the writer count changed): replayed first
        self._orphans = []
        for orphan in orphans:
            if orphan.pending_bytes():
                self._orphans.append(orphan)
            else:
                orphan.remove()
        self._ack = ack
        self._batch_max = batch_max
        self._batch_wait_s = batch_wait_s
        self._retry_s = retry_s
        self._queue_max = queue_max
        self._on_room = on_room
        self._full = False
        self._chunks: deque[Pending] = deque()
        self._queued = 0  # records in _chunks
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread = WatchedThread(self._run, "trygg-durable", self._stopping.is_set)
        self._held: list[Pending] = []  # taken from the queue, not yet acknowledged
        self._stuck_logged = -math.inf
        self._db_ok = False
        self._next_try = 0.0
        self._last_seen: dict[str, datetime] = {}
        self._last_touch = time.monotonic()
        self.idle = threading.Event()  # set while nothing is waiting to become durable

    @property
    def database_ok(self) -> bool:
        return self._db_ok

    @property
    def full(self) -> bool:
        """True from a `put` that filled the queue until `on_room` is called."""
        return self._full

    def put(self, item: Pending) -> bool:
        """Hand over received messages without blocking; True when the queue is now full
        (stop receiving until `on_room`)."""
        item.put_at = time.monotonic()
        with self._cond:
            self.idle.clear()
            self._chunks.append(item)
            self._queued += len(item.records)
            if self._queued >= self._queue_max:
                self._full = True
            # Wake the writer only for a first chunk or a full batch: while it waits for a
            # batch to fill it wakes at its deadline anyway, and every needless wake-up
            # takes the GIL from the receiving loop.
            if len(self._chunks) == 1 or self._queued >= self._batch_max:
                self._cond.notify()
            return self._full

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest chunk not yet acknowledged was `put` (0.0 if none)."""
        with self._cond:
            oldest = self._held[0] if self._held else self._chunks[0] if self._chunks else None
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest.put_at)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Make everything queued durable, then stop."""
        self._stopping.set()
        self._thread.join(timeout)
        self._store.close()
        if not self._thread.is_alive():
            self._spool.close()

    # -- the loop ---------------------------------------------------------------------

    def _take(self) -> list[Pending]:
        """Chunks up to `batch_max` records, waiting at most `batch_wait_s` to fill up."""
        with self._cond:
            if not self._chunks:
                self._cond.wait(0.2)
            if not self._chunks:
                return []
            deadline = time.monotonic() + self._batch_wait_s
            while self._queued < self._batch_max and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            batch: list[Pending] = []
            taken = 0
            while self._chunks and (not batch or taken + len(self._chunks[0].records) <= self._batch_max):
                chunk = self._chunks.popleft()
                batch.append(chunk)
                taken += len(chunk.records)
            self._queued -= taken
            self._held = batch
            room = self._full and self._queued < self._queue_max // 2
            if room:
                self._full = False
        if room:
            self._on_room()
        return batch

    def _run(self) -> None:
        while True:
            try:
                if self._round():
                    return
            except Exception:  # this thread must not end: the held batch is tried again
                metrics.WRITER_ERRORS.inc()
                log.exception("durable_writer_unexpected_error", held=len(self._held))
                time.sleep(min(self._retry_s, 1.0))

    def _round(self) -> bool:
        """Take a batch (or go on with the one held), make it durable, acknowledge it;
        True when stopped."""
        batch = self._held or self._take()
        metrics.QUEUE_DEPTH.set(self._queued)
        self._check_database_safely()
        if batch:
            self._make_durable([r for p in batch for r in p.records])
            for chunk in batch:
                try:
                    self._ack(chunk.mids, chunk.generation)
                except Exception:  # durable already: the broker sends it again, stored once
                    metrics.WRITER_ERRORS.inc()
                    log.exception("acknowledgement_failed", messages=len(chunk.mids))
            with self._cond:
                self._held = []
        elif self._stopping.is_set():
            return True
        else:
            self.idle.set()
        if self._spool.degraded is not None:
            self._spool.recheck()
        try:
            self._touch_devices()
        except Exception:  # last-heard times are a hint for restarts, not data
            log.exception("last_heard_times_not_written")
        return False

    def _check_database_safely(self) -> None:
        try:
            self._check_database()
        except Exception as exc:  # an unexpected error: treat it as the database down
            log.exception("database_check_failed_spooling")
            self._database_lost(exc)

    def _check_database(self) -> None:
        """Bring the database back into use: ping, then replay the spool in order."""
        pending = self._spool.pending_bytes() + sum(o.pending_bytes() for o in self._orphans)
        metrics.SPOOL_PENDING.set(pending)
        if self._db_ok and not pending:
            return
        now = time.monotonic()
        if not self._db_ok and now < self._next_try:
            return
        try:
            if not self._db_ok:
                self._store.ping()
                self._store.ensure_partitions()
            if pending:
                self._replay()
            if not self._db_ok:
                log.info("database_available", spool_replayed=bool(pending))
            self._db_ok = True
            metrics.DB_UP.set(1)
        except DatabaseUnavailable as exc:
            self._database_lost(exc)

    def _database_lost(self, exc: Exception) -> None:
        if self._db_ok:
            log.warning("database_unavailable_spooling_locally", error=str(exc))
        self._db_ok = False
        self._next_try = time.monotonic() + self._retry_s
        metrics.DB_UP.set(0)

    def _replay(self) -> None:
        for spool in [*self._orphans, self._spool]:
            spool.replay(self._write_replayed, self._batch_max)
        for orphan in self._orphans:
            orphan.remove()
        self._orphans = []
        metrics.SPOOL_PENDING.set(self._spool.pending_bytes())

    def _write_replayed(self, records: list[Record]) -> None:
        self._write(records)
        metrics.REPLAYED.inc(len(records))

    def _make_durable(self, records: list[Record]) -> None:
        """Return only when the records are committed or fsync'ed."""
        started = time.perf_counter()
        while True:
            if self._db_ok:
                try:
                    self._write(records)
                    break
                except DatabaseUnavailable as exc:
                    self._database_lost(exc)
                except Exception as exc:  # kept in the spool, retried with it
                    log.exception("batch_not_written_spooling", events=len(records))
                    self._database_lost(exc)
            try:
                self._spool.append(records)
                metrics.SPOOLED.inc(len(records))
                metrics.SPOOL_PENDING.set(self._spool.pending_bytes())
                break
            except SpoolError as exc:
                # Neither store takes it: hold the batch (unacknowledged) and keep trying.
                if time.monotonic() - self._stuck_logged >= STUCK_LOG_S:
                    self._stuck_logged = time.monotonic()
                    log.error("cannot_make_events_durable", error=str(exc), events=len(records))
                time.sleep(min(self._retry_s, 1.0))
                self._check_database_safely()
        self._stuck_logged = -math.inf
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    def _write(self, records: Sequence[Record]) -> None:
        events, dead, statuses = _split(records)
        write_batch(self._store, events, dead, statuses)
        for ev in events:
            self._last_seen[ev.device_id] = ev.received_at
        for st in statuses:
            self._last_seen[st.device_id] = st.at

    def _touch_devices(self) -> None:
        now = time.monotonic()
        if not self._db_ok or not self._last_seen or now - self._last_touch < TOUCH_INTERVAL_S:
            return
        seen, self._last_seen = self._last_seen, {}
        self._last_touch = now
        try:
            self._store.touch_devices(seen)
        except DatabaseUnavailable as exc:
            self._database_lost(exc)


def write_batch(store: EventStore, events: list[Event], dead: list[DeadLetter], statuses: list[StatusRow]) -> int:
    """Commit a batch; returns how many events were new (the others were stored before).
    One bad row must not block the stream: a batch PostgreSQL refuses is stored row by row
    and whatever the database itself refuses is dead-lettered (`storage_refused`). Raises
    DatabaseUnavailable. Used by the gateway's writers and the cluster's ingest."""
    try:
        inserted = store.write(events, dead, statuses)
    except DatabaseUnavailable:
        raise
    except psycopg.Error as exc:
        log.error("batch_refused_writing_row_by_row", error=str(exc))
        inserted = _write_one_by_one(store, events, dead, statuses)
    metrics.STORED.inc(inserted)
    metrics.DUPLICATES.inc(len(events) - inserted)
    return inserted


def _write_one_by_one(store: EventStore, events: list[Event], dead: list[DeadLetter],
                      statuses: list[StatusRow]) -> int:
    inserted = 0
    refused: list[DeadLetter] = []
    for ev in events:
        try:
            inserted += store.write([ev], as_received=False)
        except DatabaseUnavailable:
            raise
        except psycopg.Error as exc:
            refused.append(DeadLetter(
                ev.received_at, f"devices/{ev.device_id}/events",
                repr(ev).encode()[:16384], "storage_refused", str(exc).strip()[:500],
            ))
    for extra in (dead, refused):
        if extra:
            store.write([], extra)
    for st in statuses:
        store.write([], [], [st])
    return inserted
