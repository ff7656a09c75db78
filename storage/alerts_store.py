"""Rows of `trygg.alerts` and `trygg.alert_transitions`: batch writes and the start-up load.

One `AlertStore` holds one connection of the pool and is used from one thread (the alerts stage's
writer, or a start-up load). A batch is one transaction. Writes are idempotent, so a
batch written twice (a journal replayed after a crash) changes nothing the second time:

- an alert row is upserted only when its `version` is newer than the stored one;
- a transition is keyed by `(alert_id, seq)` and inserted once.

Rows are `trygg.alert.Alert` (the kernel's alert, by its `record`) and `Transition`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from storage.errors import DatabaseUnavailable
from storage.pool import Pool
from trygg.alert import RECORD_FIELDS, Alert, Transition
from trygg.contract import AlertState

_JSON = frozenset({"trigger", "last_event", "location", "detail", "sources"})

_UPSERT = (
    f"INSERT INTO trygg.alerts ({', '.join(RECORD_FIELDS)}) VALUES ({', '.join(['%s'] * len(RECORD_FIELDS))})"
    " ON CONFLICT (alert_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in RECORD_FIELDS if c != "alert_id")
    + " WHERE trygg.alerts.version < excluded.version"
)

_INSERT_TRANSITION = """
INSERT INTO trygg.alert_transitions (alert_id, seq, at, from_state, to_state, actor, note)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (alert_id, seq) DO NOTHING
"""

_LOAD = f"""
SELECT {', '.join(RECORD_FIELDS)} FROM trygg.alerts
WHERE state IN ('open', 'acknowledged') OR closed_at >= %s
ORDER BY opened_at
"""


def _params(alert: Alert) -> tuple[object, ...]:
    rec = alert.record()
    return tuple(Jsonb(rec[c]) if c in _JSON and rec[c] is not None else rec[c] for c in RECORD_FIELDS)


def _transition_params(step: Transition) -> tuple[object, ...]:
    return (step.alert_id, step.seq, step.at, None if step.from_state is None else step.from_state.value,
            step.to_state.value, step.actor, step.note)


def _transition(row: tuple[Any, ...]) -> Transition:
    alert_id, seq, at, from_state, to_state, actor, note = row
    return Transition(alert_id, seq, at, None if from_state is None else AlertState(from_state),
                      AlertState(to_state), actor, note)


def newest(alerts: Sequence[Alert]) -> list[Alert]:
    """The newest version of each alert, in order of first appearance."""
    latest: dict[str, Alert] = {}
    for alert in alerts:
        have = latest.get(alert.alert_id)
        if have is None or have.version < alert.version:
            latest[alert.alert_id] = alert
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

    def write(self, alerts: Sequence[Alert], transitions: Sequence[Transition]) -> None:
        """Commit one batch: the newest version of each alert, then the transitions.

        Raises DatabaseUnavailable when the server cannot be reached (the caller keeps
        the batch and retries); any other psycopg error means a bad row and is raised as is.
        """
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                rows = newest(alerts)
                if rows:
                    cur.executemany(_UPSERT, [_params(a) for a in rows])
                if transitions:
                    cur.executemany(_INSERT_TRANSITION, [_transition_params(t) for t in transitions])
            conn.commit()
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(str(exc).strip()) from exc
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            raise

    def load(self, closed_since: datetime | None = None) -> list[Alert]:
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
        return [Alert.from_record(row) for row in rows]

    def transitions(self, alert_id: str) -> list[Transition]:
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
        return [_transition(row) for row in rows]

    def close(self) -> None:
        """Give the connection back to the pool (which replaces a broken one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                if not conn.closed:
                    conn.rollback()
            self._pool.putconn(conn)


__all__ = ["AlertStore", "newest"]
