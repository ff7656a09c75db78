"""The partition plan seen from Python (migration 0011, docs/storage.md "Partitions and
retention").

What is partitioned, by which column and in which steps is data: `trygg.partition_plan`.
Partitions are created in one place only, the SQL function `trygg.ensure_partitions`
(it runs with its owner's rights, so the application role may call it); this module
calls it for the plan and lists what exists. Removing partitions is maintenance's
(storage/maintenance.py), which takes its list from `partitions`.

Every function takes an open connection and runs in the caller's transaction: the
caller commits (creating a leaf holds a lock on its parent's plan until then).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql

#: the parents the writer needs (schema-qualified, as in the plan)
EVENTS: Final = "trygg.events"
HEARTBEATS: Final = "trygg.heartbeats"
EVENT_KEYS: Final = "trygg.event_keys"
DEAD_LETTERS: Final = "trygg.dead_letters"

Connection = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class Planned:
    """One row of `trygg.partition_plan`."""

    parent: str  # schema-qualified, e.g. "trygg.events"
    column_name: str  # the partition key
    step: str  # day, week, month or year (UTC; a week starts on Monday)
    ahead: timedelta  # how far ahead of now partitions are kept ready


@dataclass(frozen=True, slots=True)
class Partition:
    """One leaf of a partitioned table and its bounds: [lower, upper). A bound of MINVALUE
    (an old table attached as a leaf) is None as `lower`, MAXVALUE None as `upper`. Bounds
    of a `date` column are midnight UTC."""

    name: str  # schema-qualified, e.g. "trygg.events_2026_12"
    parent: str  # schema-qualified, e.g. "trygg.events"
    lower: datetime | None
    upper: datetime | None

    @property
    def identifier(self) -> sql.Identifier:
        """The leaf's name for composing SQL (`psycopg.sql`)."""
        return sql.Identifier(*self.name.split(".", 1))


def qualified(parent: str) -> str:
    """`parent` with its schema: "events" is "trygg.events"."""
    return parent if "." in parent else f"trygg.{parent}"


def plan(conn: Connection) -> list[Planned]:
    rows = conn.execute(
        "SELECT parent, column_name, step, ahead FROM trygg.partition_plan ORDER BY parent").fetchall()
    return [Planned(*row) for row in rows]


# A leaf's bound as PostgreSQL prints it, e.g. FOR VALUES FROM ('2026-12-01 00:00:00+00')
# TO ('2027-01-01 00:00:00+00'), read back in the same session (so in the same date
# style); a date is taken as midnight UTC. MINVALUE and MAXVALUE are NULL.
_PARTITIONS = """
SELECT leaf,
       CASE WHEN is_date THEN (lower_text::date)::timestamp AT TIME ZONE 'UTC' ELSE lower_text::timestamptz END,
       CASE WHEN is_date THEN (upper_text::date)::timestamp AT TIME ZONE 'UTC' ELSE upper_text::timestamptz END
FROM (
    SELECT format('%%I.%%I', n.nspname, c.relname) AS leaf,
           regexp_match(pg_get_expr(c.relpartbound, c.oid), '^FOR VALUES FROM \\((.*)\\) TO \\((.*)\\)$') AS b,
           a.atttypid = 'date'::regtype AS is_date
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_partitioned_table pt ON pt.partrelid = i.inhparent
    JOIN pg_attribute a ON a.attrelid = i.inhparent AND a.attnum = pt.partattrs[0]
    WHERE i.inhparent = to_regclass(%s)
) leaves
CROSS JOIN LATERAL (SELECT nullif(btrim(b[1], ''''), 'MINVALUE') AS lower_text,
                           nullif(btrim(b[2], ''''), 'MAXVALUE') AS upper_text) t
"""


def partitions(conn: Connection, parent: str) -> list[Partition]:
    """The leaves of `parent` ("trygg.events" or "events"), oldest first (a MINVALUE leaf
    first). Empty for a table that is not declaratively partitioned (a TimescaleDB
    hypertable: its chunks are TimescaleDB's)."""
    name = qualified(parent)
    found = [Partition(leaf, name, lo, hi) for leaf, lo, hi in conn.execute(_PARTITIONS, (name,)).fetchall()]
    return sorted(found, key=lambda p: (p.lower is not None, p.lower or datetime.min.replace(tzinfo=UTC)))


def ensure_range(conn: Connection, parent: str, from_ts: datetime, until_ts: datetime) -> int:
    """Create the missing leaves of `parent` so that every instant of [from_ts, until_ts]
    has one; returns how many were created (0 for a TimescaleDB hypertable)."""
    row = conn.execute("SELECT trygg.ensure_partitions(%s, %s, %s)",
                       (qualified(parent), from_ts, until_ts)).fetchone()
    return int(row[0]) if row else 0


def ensure(conn: Connection, now: datetime) -> dict[str, int]:
    """Partitions ready from `now` to `now` + the plan's `ahead`, for every planned table;
    returns how many leaves were created, per parent."""
    rows = conn.execute("SELECT parent, trygg.ensure_partitions(parent, %s, %s + ahead)"
                        " FROM trygg.partition_plan ORDER BY parent", (now, now)).fetchall()
    return {parent: int(created) for parent, created in rows}


def missing_partition(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL refusing a row that no partition takes."""
    return (isinstance(exc, psycopg.errors.CheckViolation)
            and (exc.diag.message_primary or "").startswith("no partition of relation"))


__all__ = [
    "DEAD_LETTERS",
    "EVENTS",
    "EVENT_KEYS",
    "HEARTBEATS",
    "Partition",
    "Planned",
    "ensure",
    "ensure_range",
    "missing_partition",
    "partitions",
    "plan",
    "qualified",
]
