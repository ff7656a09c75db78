"""Rule-state snapshots and the events to replay after one (restart of the processors).

One process (`trygg up`) keeps one snapshot (`save_rule_state`); in the cluster mode each
resident partition has its own, with the position in the stream it reflects
(`save_partition_state`, migration 0018)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from storage.pool import Pool
from trygg.contract import Event, EventType


def save_rule_state(pool: Pool, saved_at: datetime, state: dict[str, Any]) -> None:
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO trygg.rule_state (id, saved_at, state) VALUES (1, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET saved_at = excluded.saved_at, state = excluded.state",
            (saved_at, Jsonb(state)),
        )


def load_rule_state(pool: Pool) -> tuple[datetime, dict[str, Any]] | None:
    with pool.connection() as conn:
        row = conn.execute("SELECT saved_at, state FROM trygg.rule_state WHERE id = 1").fetchone()
    return (row[0], row[1]) if row else None


@dataclass(frozen=True, slots=True)
class PartitionState:
    """A resident partition's rule state as of message `seq` of its stream."""

    partition: int
    seq: int
    saved_at: datetime
    state: dict[str, Any]


def save_partition_state(pool: Pool, snapshot: PartitionState) -> None:
    """Replace the partition's snapshot; an older position never replaces a newer one
    (a previous owner's last save arriving late)."""
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO trygg.partition_state (partition, seq, saved_at, state) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (partition) DO UPDATE SET seq = excluded.seq, saved_at = excluded.saved_at,"
            " state = excluded.state WHERE trygg.partition_state.seq <= excluded.seq",
            (snapshot.partition, snapshot.seq, snapshot.saved_at, Jsonb(snapshot.state)),
        )


def load_partition_state(pool: Pool, partition: int) -> PartitionState | None:
    with pool.connection() as conn:
        row = conn.execute("SELECT seq, saved_at, state FROM trygg.partition_state WHERE partition = %s",
                           (partition,)).fetchone()
    return None if row is None else PartitionState(partition, row[0], row[1], row[2])


def last_seen(pool: Pool, devices: Collection[str] | None = None) -> dict[str, datetime]:
    """When each device (of `devices`, when given) was last heard (written by the
    gateway every few seconds)."""
    with pool.connection() as conn:
        if devices is None:
            return dict(conn.execute("SELECT device_id, last_seen FROM trygg.device_status").fetchall())
        return dict(conn.execute("SELECT device_id, last_seen FROM trygg.device_status WHERE device_id = ANY(%s)",
                                 (list(devices),)).fetchall())


def events_since(pool: Pool, since: datetime, until: datetime) -> Iterator[Event]:
    """Stored events received in (since, until], in the order they were received. The
    connection is held until the iterator is used up or closed (a server-side cursor).

    Heartbeats are not among them (they are kept in trygg.heartbeats, migration 0011):
    what the rules take from a heartbeat is that the device was heard, which
    `last_seen` restores (composition/app.py `restore_rules` arms supervision from it),
    and a battery reading, which the device's next report brings again."""
    with pool.connection() as conn, conn.cursor(name="replay") as cur:
        cur.itersize = 5000
        cur.execute(
            "SELECT device_id, event_id, type, ts, received_at, data, resident_id FROM trygg.events"
            " WHERE received_at > %s AND received_at <= %s AND ts > %s - interval '31 days'"
            " ORDER BY received_at, seq",
            (since, until, since),
        )
        for device_id, event_id, kind, ts, received_at, data, resident_id in cur:
            yield Event(device_id, event_id, EventType(kind), ts, received_at, data, resident_id)
