"""Batch writes of events and dead letters with COPY, idempotent on (device_id, event_id).

One `EventStore` holds one connection, borrowed from the pool once and kept while it
works (not per batch), and is used from one thread (the gateway's writer). A batch is
one transaction: either every row of it is durable, or none is and `DatabaseUnavailable`
tells the caller to spool it.

A re-used id (docs/ingest.md "Re-used ids"): `(device_id, id)` is the de-duplication key,
but a copy is a re-send only if it also has the same `type` and `ts`. `trygg.event_keys`
remembers both; a staged event whose key is taken by an event of another type or time is
a different event, stored in the same transaction under `trygg.contract.rekeyed_id`.

Heartbeats (docs/storage.md "Heartbeats") go to `trygg.heartbeats`, keyed by (device_id,
ts): a re-send has the same ts and is stored once; they take no key. Every event whose
data has `battery_pct` updates the device's latest battery report in
`trygg.device_status`.

Keys are partitioned by when they were stored (migration 0011): a key is looked up in
every leaf of `trygg.event_keys` (one index probe per leaf) before it is inserted, and
the insert's ON CONFLICT relies on the current leaf's unique index against a concurrent
insert of the same key (the same device is written by one writer, so that is rare).

A row that no partition takes (a `ts` beyond the partitions made ahead, or a replayed
event older than the oldest) never fails a batch for good: the batch is rolled back, the
missing partitions are created (`storage.partitions`, through the owner's function) and
the batch is written once more. Whatever fails then goes to the caller as a refused
batch (gateway/durable.py writes it row by row and dead-letters what is refused).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import psycopg

from storage import partitions
from storage.errors import DatabaseUnavailable
from storage.pool import Pool
from storage.rollups import MARK_DIRTY_SQL
from trygg.contract import MAX_PAYLOAD_BYTES, Event, EventType, rekeyed_id
from trygg.logging import get_logger

log = get_logger(__name__)

#: how long a writer waits for a connection of the pool (seconds)
CONNECTION_WAIT_S: Final = 1.0
#: how long the ping that asks whether PostgreSQL is back waits for one: the pool
#: reconnects in the background, so the ping only looks; a writer that waited longer would
#: not spool meanwhile, its queue would fill and the gateway would stop reading, alarms too
PING_WAIT_S: Final = 0.02
#: rounds of re-keying in one batch: a re-keyed id is taken again only by a crafted id
#: (one that already ends in `~` and the same 8 hex digits) or a 32-bit hash collision
REKEY_ROUNDS: Final = 4

# `doc` is the event's JSON document: the payload as the device sent it, or one made
# from `data` (spool replay, a refused batch written row by row); `data` is taken from it.
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS event_stage (
    n int, device_id text, event_id text, resident_id text, type text,
    ts timestamptz, received_at timestamptz, doc jsonb
) ON COMMIT DELETE ROWS
"""

_COPY_STAGE = (
    "COPY event_stage (n, device_id, event_id, resident_id, type, ts, received_at, doc) FROM STDIN"
)


# A key already stored, in any leaf of the key table: one lookup of the leaf's unique
# index per leaf and staged row. A subquery in the select list is never turned into a
# join, so the planner cannot pick a scan of a key table that holds weeks; compared in
# the key's own collation "C" so that the index answers.
_KEY_OF = """(SELECT {what} FROM trygg.event_keys k
 WHERE k.device_id = s.device_id COLLATE "C" AND k.event_id = s.event_id COLLATE "C" LIMIT 1)"""

# Keys first: a key that already exists marks a re-sent event, which is skipped (or,
# with another type or ts, a re-used id: `_COLLIDING`). Heartbeats take no key. (`IS NOT
# TRUE` rather than `IS NULL`: the planner then expects most staged keys to be new, as
# they are, and joins the new keys back to the stage by hashing.)
_INSERT_NEW = f"""
WITH new_keys AS (
    INSERT INTO trygg.event_keys (device_id, event_id, received_at, type, ts)
    SELECT device_id, event_id, received_at, type, ts FROM (
        SELECT s.device_id, s.event_id, s.received_at, s.type, s.ts, {_KEY_OF.format(what="true")} AS known
        FROM event_stage s WHERE s.type <> 'heartbeat'
    ) staged
    WHERE known IS NOT TRUE
    ON CONFLICT DO NOTHING
    RETURNING device_id, event_id
)
INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)
SELECT s.device_id, s.event_id, s.resident_id, s.type, s.ts, s.received_at,
       coalesce(nullif(s.doc -> 'data', 'null'::jsonb), '{{}}'::jsonb)
FROM event_stage s JOIN new_keys k USING (device_id, event_id)
ORDER BY s.n
"""

# `data.battery_pct` of a staged event (a number 0..100, docs/contract.md#3-events), else NULL.
_BATTERY = """CASE WHEN jsonb_typeof(s.doc -> 'data' -> 'battery_pct') = 'number'
 THEN round((s.doc -> 'data' ->> 'battery_pct')::numeric)::smallint END"""

_INSERT_HEARTBEATS = f"""
INSERT INTO trygg.heartbeats (device_id, ts, received_at, battery_pct)
SELECT s.device_id, s.ts, s.received_at, {_BATTERY} FROM event_stage s WHERE s.type = 'heartbeat'
ON CONFLICT DO NOTHING
"""

# The newest battery report of each device in the stage, if newer than the stored one.
# Its time is the device's, but never later than when it was received (a device clock
# ahead would otherwise hold back the reports after it).
_UPSERT_BATTERY = f"""
INSERT INTO trygg.device_status AS st (device_id, online, status_at, last_seen, battery_pct, battery_at)
SELECT DISTINCT ON (device_id) device_id, NULL::boolean, NULL::timestamptz, received_at, pct, at
FROM (SELECT s.n, s.device_id, s.received_at, least(s.ts, s.received_at) AS at, {_BATTERY} AS pct
      FROM event_stage s) b
WHERE pct IS NOT NULL
ORDER BY device_id, at DESC, n DESC
ON CONFLICT (device_id) DO UPDATE SET battery_pct = excluded.battery_pct, battery_at = excluded.battery_at
WHERE st.battery_at IS NULL OR st.battery_at < excluded.battery_at
"""

# Staged events whose key is taken by an event of another type or device time; run only
# when the insert skipped some keys. Keys from before migration 0009 (NULL type) and the
# keys this batch just took (same type and ts) compare as the same event. One unique
# index lookup per leaf and staged row (`_KEY_OF`).
_COLLIDING = f"""
SELECT n, event_id, type, ts FROM (
    SELECT s.n, s.event_id, s.type, s.ts, {_KEY_OF.format(what="k.type <> s.type OR k.ts <> s.ts")} AS taken
    FROM event_stage s WHERE s.type <> 'heartbeat'
) staged
WHERE taken
ORDER BY n
"""

# The colliding events get their new ids; the rest of the stage is done with.
_KEEP_ONLY = "DELETE FROM event_stage WHERE n <> ALL(%s::int[])"
_REKEY = """
UPDATE event_stage s SET event_id = r.event_id
FROM unnest(%s::int[], %s::text[]) AS r(n, event_id) WHERE s.n = r.n
"""

# What is left staged after the last round of re-keying and still collides.
_DEAD_TAKEN = f"""
INSERT INTO trygg.dead_letters (received_at, topic, payload, reason, detail, payload_size)
SELECT s.received_at, 'devices/' || s.device_id || '/events', convert_to(s.doc::text, 'UTF8'),
       'storage_refused', 'event id ' || s.event_id || ' is still taken by another event after re-keying',
       octet_length(s.doc::text)
FROM ({_COLLIDING}) c JOIN event_stage s USING (n)
"""

#: COPY's text format: these four characters are written as escapes
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

_COPY_DEAD = (
    "COPY trygg.dead_letters (received_at, topic, payload, reason, detail, payload_size)"
    " FROM STDIN"
)

_UPSERT_SEEN = """
INSERT INTO trygg.device_status (device_id, online, status_at, last_seen)
SELECT d, NULL, NULL, s FROM unnest(%s::text[], %s::timestamptz[]) AS t(d, s)
ON CONFLICT (device_id) DO UPDATE SET last_seen = greatest(device_status.last_seen, excluded.last_seen)
"""

_UPSERT_STATUS = """
INSERT INTO trygg.device_status (device_id, online, status_at, last_seen)
VALUES (%s, %s, %s, %s)
ON CONFLICT (device_id) DO UPDATE SET online = excluded.online, status_at = excluded.status_at,
    last_seen = greatest(device_status.last_seen, excluded.last_seen)
WHERE device_status.status_at IS NULL OR device_status.status_at <= excluded.status_at
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that broke the contract, kept raw with the reason (docs/contract.md#3-events)."""

    received_at: datetime
    topic: str
    payload: bytes
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class StatusRow:
    device_id: str
    online: bool
    at: datetime


def copy_rows(events: Iterable[Event], *, as_received: bool = True) -> bytes:
    """The staging rows of `events` in COPY's text format, made here rather than by
    psycopg's row formatter: this runs on a writer thread that shares the interpreter
    with the alarm path, so the less Python per row, the less the loop waits for it.
    With `as_received` an event's payload text is its `doc` as it is (no second
    serialisation); device, resident and type are contract identifiers, which need no
    escaping."""
    lines = []
    stamp_of: dict[datetime, str] = {}  # events received together share a stamp
    for n, ev in enumerate(events):
        received = stamp_of.get(ev.received_at)
        if received is None:
            received = stamp_of[ev.received_at] = ev.received_at.isoformat()
        doc = ev.text if as_received and ev.text else json.dumps({"data": ev.data})
        lines.append(f"{n}\t{ev.device_id}\t{ev.event_id.translate(_COPY_ESCAPES)}\t{ev.resident_id}\t"
                     f"{ev.type.value}\t{ev.ts.isoformat()}\t{received}\t{doc.translate(_COPY_ESCAPES)}\n")
    return "".join(lines).encode()


def unique_events(events: Iterable[Event]) -> list[Event]:
    """Drop re-sends inside one batch — a (device_id, event_id) again with the same type
    and ts — keeping the first copy. Events that share a key with another type or ts are
    different events and all kept (the store tells which one holds the key)."""
    return _dedupe(events)[0]


def _dedupe(events: Iterable[Event]) -> tuple[list[Event], bool]:
    """`unique_events`, and whether two of them share a key (a re-used id: rare)."""
    first: dict[tuple[str, str], tuple[EventType, datetime]] = {}
    more: dict[tuple[str, str], list[tuple[EventType, datetime]]] = {}
    out = []
    for ev in events:
        key = (ev.device_id, ev.event_id)
        mark = (ev.type, ev.ts)
        known = first.get(key)
        if known is None:
            first[key] = mark
        elif known == mark or mark in more.get(key, ()):
            continue
        else:
            more.setdefault(key, []).append(mark)
        out.append(ev)
    return out, bool(more)


def _layers(events: list[Event]) -> list[list[Event]]:
    """`events` in layers whose keys are unique, the first of each key in the first
    layer: the stage's insert skips a key taken earlier in the same statement without
    saying which row took it, so a re-used id inside one batch waits for the next layer."""
    layers: list[list[Event]] = [[]]
    depth: dict[tuple[str, str], int] = {}
    for ev in events:
        key = (ev.device_id, ev.event_id)
        n = depth.get(key, -1) + 1
        depth[key] = n
        if n == len(layers):
            layers.append([])
        layers[n].append(ev)
    return layers


def _store_rekeyed(cur: psycopg.Cursor[tuple[object, ...]]) -> int:
    """Store the staged events whose key another event (of another type or ts) holds,
    under their re-keyed ids; returns how many were new. A re-keyed id that is itself
    taken by the same event (a re-send of a re-used id) is skipped like any re-send."""
    stored = 0
    for _ in range(REKEY_ROUNDS):
        rows = cast(list[tuple[int, str, str, datetime]], cur.execute(_COLLIDING).fetchall())
        if not rows:
            return stored
        cur.execute(_KEEP_ONLY, ([n for n, _, _, _ in rows],))
        cur.execute(_REKEY, ([n for n, _, _, _ in rows],
                             [rekeyed_id(event_id, type_, ts) for _, event_id, type_, ts in rows]))
        cur.execute(_INSERT_NEW)
        stored += cur.rowcount
    # Only a crafted id gets here (one ending in the very suffix re-keying adds): kept as
    # a dead letter, never dropped.
    cur.execute(_DEAD_TAKEN)
    if cur.rowcount:
        log.error("rekeyed_event_id_taken_dead_lettered", events=cur.rowcount)
    return stored


def _make_partitions(conn: psycopg.Connection[tuple[Any, ...]], events: Sequence[Event],
                     dead: Sequence[DeadLetter]) -> None:
    """Create the partitions a batch needs: ahead of now for every planned table, and
    around the times of its rows (events and heartbeats by `ts`, dead letters, which
    may also be made from its events, by `received_at`). Committed at once, so the
    locks it takes on the parents are held only for as long as it takes."""
    partitions.ensure(conn, datetime.now(UTC))
    beats = [ev.ts for ev in events if ev.type is EventType.HEARTBEAT]
    others = [ev.ts for ev in events if ev.type is not EventType.HEARTBEAT]
    received = [d.received_at for d in dead] + [ev.received_at for ev in events]
    for parent, times in ((partitions.EVENTS, others), (partitions.HEARTBEATS, beats),
                          (partitions.DEAD_LETTERS, received)):
        if times:
            partitions.ensure_range(conn, parent, min(times), max(times))
    conn.commit()


class EventStore:
    def __init__(self, pool: Pool, *, wait_s: float = CONNECTION_WAIT_S) -> None:
        self._pool = pool
        self._wait_s = wait_s
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._down = False  # PostgreSQL was lost and has not answered since

    def _connection(self, wait_s: float | None = None) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            try:
                conn = self._pool.getconn(timeout=self._wait_s if wait_s is None else wait_s)
            except psycopg.Error as exc:  # PoolTimeout: PostgreSQL unreachable
                self._down = True
                raise DatabaseUnavailable(str(exc).strip()) from exc
            self._conn = conn
            self._down = False
            try:
                conn.execute(_STAGE)
                conn.commit()
            except psycopg.Error as exc:
                raise self._lost(exc) from exc
        return self._conn

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers; once it was lost, only a
        connection the pool has within `PING_WAIT_S` counts."""
        try:
            wait_s = min(self._wait_s, PING_WAIT_S) if self._down else None
            self._connection(wait_s).execute("SELECT 1").fetchone()
            self._connection().rollback()
        except psycopg.Error as exc:
            raise self._lost(exc) from exc

    def write(
        self,
        events: Sequence[Event],
        dead: Sequence[DeadLetter] = (),
        statuses: Sequence[StatusRow] = (),
        *,
        as_received: bool = True,
    ) -> int:
        """Commit one batch; returns how many events were new (not re-sent; a heartbeat
        counts as new when its (device, ts) was not stored yet). Without `as_received`
        each event's `data` is serialised anew instead of storing from the payload's text
        (for a batch the database refused). A row that no partition takes makes the
        missing partitions and the batch is written once more (module docstring)."""
        conn = self._connection()
        try:
            try:
                return self._commit(conn, events, dead, statuses, as_received)
            except psycopg.errors.CheckViolation as exc:
                if not partitions.missing_partition(exc):
                    raise
                conn.rollback()
                log.warning("partition_missing_creating_it", error=str(exc).strip())
                _make_partitions(conn, events, dead)
                return self._commit(conn, events, dead, statuses, as_received)
        except psycopg.OperationalError as exc:
            raise self._lost(exc) from exc
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise

    def _commit(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        events: Sequence[Event],
        dead: Sequence[DeadLetter],
        statuses: Sequence[StatusRow],
        as_received: bool,
    ) -> int:
        with conn.cursor() as cur:
            inserted = 0
            batch, shared = _dedupe(events)
            for depth, layer in enumerate(_layers(batch) if shared else [batch] if batch else []):
                if depth:  # a re-used id inside the batch (rare)
                    cur.execute("DELETE FROM event_stage")
                with cur.copy(_COPY_STAGE) as copy:
                    copy.write(copy_rows(layer, as_received=as_received))
                beats = sum(1 for ev in layer if ev.type is EventType.HEARTBEAT)
                if beats:
                    cur.execute(_INSERT_HEARTBEATS)
                    inserted += cur.rowcount
                new = 0
                if beats < len(layer):
                    cur.execute(_INSERT_NEW)
                    new = cur.rowcount
                    # while the stage still holds every event of the layer (re-keying
                    # removes rows): hours the research rollups closed are marked again
                    cur.execute(MARK_DIRTY_SQL)
                if any("battery_pct" in ev.data for ev in layer):
                    cur.execute(_UPSERT_BATTERY)
                if new < len(layer) - beats:  # re-sends, or a re-used id
                    new += _store_rekeyed(cur)
                inserted += new
            if dead:
                with cur.copy(_COPY_DEAD) as copy:
                    for d in dead:
                        copy.write_row((
                            d.received_at, d.topic, d.payload[:MAX_PAYLOAD_BYTES],
                            d.reason, d.detail, len(d.payload),
                        ))
            for st in statuses:
                cur.execute(_UPSERT_STATUS, (st.device_id, st.online, st.at, st.at))
        conn.commit()
        return inserted

    def touch_devices(self, last_seen: dict[str, datetime]) -> None:
        """Record when each device was last heard (used to rebuild supervision)."""
        if not last_seen:
            return
        conn = self._connection()
        try:
            conn.execute(_UPSERT_SEEN, (list(last_seen), list(last_seen.values())))
            conn.commit()
        except psycopg.OperationalError as exc:
            raise self._lost(exc) from exc

    def ensure_partitions(self) -> None:
        """Partitions ready ahead of now for every planned table (trygg.partition_plan)."""
        conn = self._connection()
        try:
            partitions.ensure(conn, datetime.now(UTC))
            conn.commit()
        except psycopg.OperationalError as exc:  # e.g. the server went away since the ping
            raise self._lost(exc) from exc

    def _lost(self, exc: psycopg.Error) -> DatabaseUnavailable:
        """The connection is gone: close it and hand it back (the pool replaces it; the
        next call borrows anew) and say so."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self.close()
        self._down = True
        return DatabaseUnavailable(str(exc).strip())

    def close(self) -> None:
        """Give the connection back to the pool (which replaces a broken one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            self._pool.putconn(conn)
