"""Rows of `trygg.alerts` and `trygg.alert_transitions`: batch writes and the start-up load.

One `AlertStore` holds one connection of the pool and is used from one thread (the alerts stage's
writer, or a start-up load). A batch is one transaction. Writes are idempotent, so a
batch written twice (a journal replayed after a crash) changes nothing the second time:

- an alert row is upserted only when its `version` is newer than the stored one;
- a transition is keyed by `(alert_id, seq)` and inserted once.

The alerts stage converts between these records and its own model; storage does not
import the stages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from storage.errors import DatabaseUnavailable
from storage.pool import Pool

ACTIVE_STATES = ("open", "acknowledged")

_COLUMNS = (
    "alert_id", "resident_id", "team_id", "kind", "priority", "state", "opened_at",
    "updated_at", "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by",
    "closed_at", "note", "event_count", "escalation_level", "escalated_at", "trigger",
    "last_event", "location", "teams", "device_id", "detail", "sources", "version",
    "transition_count",
)

_UPSERT = (
    f"INSERT INTO trygg.alerts ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
    " ON CONFLICT (alert_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "alert_id")
    + " WHERE trygg.alerts.version < excluded.version"
)

_INSERT_TRANSITION = """
INSERT INTO trygg.alert_transitions (alert_id, seq, at, from_state, to_state, actor, note)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (alert_id, seq) DO NOTHING
"""

_LOAD = f"""
SELECT {', '.join(_COLUMNS)} FROM trygg.alerts
WHERE state IN ('open', 'acknowledged') OR closed_at >= %s
ORDER BY opened_at
"""


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One row of `trygg.alerts` (DESIGN.md §6b, and what a restart needs)."""

    alert_id: str
    resident_id: str
    team_id: str
    kind: str
    priority: str
    state: str
    opened_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    closed_at: datetime | None
    note: str | None
    event_count: int
    escalation_level: int
    escalated_at: datetime
    trigger: dict[str, Any]
    last_event: dict[str, Any]
    location: dict[str, Any] | None
    teams: tuple[str, ...]
    device_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    version: int = 1
    transition_count: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def params(self) -> tuple[object, ...]:
        return (
            self.alert_id, self.resident_id, self.team_id, self.kind, self.priority, self.state,
            self.opened_at, self.updated_at, self.acknowledged_at, self.acknowledged_by,
            self.resolved_at, self.resolved_by, self.closed_at, self.note, self.event_count,
            self.escalation_level, self.escalated_at, Jsonb(self.trigger), Jsonb(self.last_event),
            None if self.location is None else Jsonb(self.location), list(self.teams),
            self.device_id, Jsonb(self.detail), Jsonb(list(self.sources)), self.version,
            self.transition_count,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AlertRecord:
        values = dict(row)
        values["teams"] = tuple(values["teams"] or ())
        values["sources"] = tuple(values["sources"] or ())
        values["detail"] = values["detail"] or {}
        return cls(**values)


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One row of `trygg.alert_transitions`; `from_state` is None for the opening."""

    alert_id: str
    seq: int
    at: datetime
    from_state: str | None
    to_state: str
    actor: str
    note: str | None = None

    def params(self) -> tuple[object, ...]:
        return (self.alert_id, self.seq, self.at, self.from_state, self.to_state, self.actor, self.note)


def newest(records: Sequence[AlertRecord]) -> list[AlertRecord]:
    """The newest version of each alert, in order of first appearance."""
    latest: dict[str, AlertRecord] = {}
    for rec in records:
        have = latest.get(rec.alert_id)
        if have is None or have.version < rec.version:
            latest[rec.alert_id] = rec
    return list(latest.values())


class AlertStore:
    """`wait_s`: how long to wait for a connection of the pool; one borrowed connection
    is kept while it works."""

    def __init__(self, pool: Pool, *, wait_s: float = 3.0) -> None:
        self._pool = pool
        self._wait_s = wait_s
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            try:
                self._conn = self._pool.getconn(timeout=self._wait_s)
            except psycopg.Error as exc:
                raise DatabaseUnavailable(str(exc).strip()) from exc
        return self._conn

    def write(self, alerts: Sequence[AlertRecord], transitions: Sequence[TransitionRecord]) -> None:
        """Commit one batch: the newest version of each alert, then the transitions.

        Raises DatabaseUnavailable when the server cannot be reached (the caller keeps
        the batch and retries); any other psycopg error means a bad row and is raised as is.
        """
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                rows = newest(alerts)
                if rows:
                    cur.executemany(_UPSERT, [r.params() for r in rows])
                if transitions:
                    cur.executemany(_INSERT_TRANSITION, [t.params() for t in transitions])
            conn.commit()
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(str(exc).strip()) from exc
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            raise

    def load(self, closed_since: datetime | None = None) -> list[AlertRecord]:
        """Every unresolved alert (open or acknowledged), oldest first, and those closed
        since `closed_since` when given."""
        conn = self._connection()
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(_LOAD, (closed_since,))
                rows = cur.fetchall()
            conn.rollback()
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(str(exc).strip()) from exc
        return [AlertRecord.from_row(row) for row in rows]

    def transitions(self, alert_id: str) -> list[TransitionRecord]:
        """The recorded transitions of one alert, in order."""
        conn = self._connection()
        try:
            rows = conn.execute(
                "SELECT alert_id, seq, at, from_state, to_state, actor, note"
                " FROM trygg.alert_transitions WHERE alert_id = %s ORDER BY seq",
                (alert_id,),
            ).fetchall()
            conn.rollback()
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(str(exc).strip()) from exc
        return [TransitionRecord(*row) for row in rows]

    def close(self) -> None:
        """Give the connection back to the pool (which replaces a broken one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            self._pool.putconn(conn)


__all__ = ["ACTIVE_STATES", "AlertRecord", "AlertStore", "TransitionRecord", "newest"]
