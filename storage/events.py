"""Batch writes of events and dead letters with COPY, idempotent on (device_id, event_id).

One `EventStore` holds one connection and is used from one thread (the gateway's
writer). A batch is one transaction: either every row of it is durable, or none is and
`DatabaseUnavailable` tells the caller to spool it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from storage.errors import DatabaseUnavailable
from trygg.contract import MAX_PAYLOAD_BYTES, Event

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS event_stage (
    n int, device_id text, event_id text, resident_id text, type text,
    ts timestamptz, received_at timestamptz, data jsonb
) ON COMMIT DELETE ROWS
"""

_COPY_STAGE = (
    "COPY event_stage (n, device_id, event_id, resident_id, type, ts, received_at, data) FROM STDIN"
)

# Keys first: a key that already exists marks a re-sent event, which is skipped.
_INSERT_NEW = """
WITH new_keys AS (
    INSERT INTO trygg.event_keys (device_id, event_id, received_at)
    SELECT device_id, event_id, received_at FROM event_stage
    ON CONFLICT DO NOTHING
    RETURNING device_id, event_id
)
INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)
SELECT s.device_id, s.event_id, s.resident_id, s.type, s.ts, s.received_at, s.data
FROM event_stage s JOIN new_keys k USING (device_id, event_id)
ORDER BY s.n
"""

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
    """A message that broke the contract, kept raw with the reason (DESIGN.md §3)."""

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


def unique_events(events: Iterable[Event]) -> list[Event]:
    """Drop repeats of (device_id, event_id) inside one batch, keeping the first."""
    seen: set[tuple[str, str]] = set()
    out = []
    for ev in events:
        key = (ev.device_id, ev.event_id)
        if key not in seen:
            seen.add(key)
            out.append(ev)
    return out


class EventStore:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                conn = psycopg.connect(self._conninfo, connect_timeout=3)
                conn.execute(_STAGE)
                conn.commit()
            except psycopg.Error as exc:
                raise DatabaseUnavailable(str(exc).strip()) from exc
            self._conn = conn
        return self._conn

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        try:
            self._connection().execute("SELECT 1").fetchone()
            self._connection().rollback()
        except psycopg.Error as exc:
            self.close()
            raise DatabaseUnavailable(str(exc).strip()) from exc

    def write(
        self,
        events: Sequence[Event],
        dead: Sequence[DeadLetter] = (),
        statuses: Sequence[StatusRow] = (),
    ) -> int:
        """Commit one batch; returns how many events were new (not re-sent)."""
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                inserted = 0
                if events:
                    with cur.copy(_COPY_STAGE) as copy:
                        for n, ev in enumerate(unique_events(events)):
                            copy.write_row((
                                n, ev.device_id, ev.event_id, ev.resident_id, ev.type.value,
                                ev.ts, ev.received_at, json.dumps(ev.data),
                            ))
                    cur.execute(_INSERT_NEW)
                    inserted = cur.rowcount
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
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(str(exc).strip()) from exc
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
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
            self.close()
            raise DatabaseUnavailable(str(exc).strip()) from exc

    def ensure_partitions(self) -> None:
        conn = self._connection()
        conn.execute(
            "SELECT trygg.ensure_event_partitions(now() - interval '2 months',"
            " now() + interval '3 months')"
        )
        conn.commit()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
