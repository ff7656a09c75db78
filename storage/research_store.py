"""Queries over the research views (storage/migrations/0005_research.sql,
0010_research_privacy.sql) and the pseudonym table behind them.

The views hold the row rules (consent filter, pseudonyms, coarse positions, positions
only under a location basis); these queries aggregate them. Small-group suppression of
aggregates is applied by the caller (dashboard/research.py) so that it can say how many
groups it held back; the export's suppression is here, in SQL (`export_rows`), because
it needs every row of a cell before it may show one.

They read `trygg.research_event_rows` (exact times) and filter on the exact `ts`, so
that partitions are pruned; the windows they are given are cut at whole buckets
(dashboard/research.py `research_window`), so the answer is the same as over the
hour-cut `research.events`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

#: The zone research time buckets are cut in.
BUCKET_ZONE: Final = "Europe/Oslo"
BUCKETS: Final = ("hour", "day", "week", "month")

EXPORT_COLUMNS: Final = ("resident_pseudonym", "type", "device_kind", "ts", "received_at", "lat", "lon", "data")


async def residents_needing_pseudonyms(conn: psycopg.AsyncConnection[Any], key_id: str) -> list[str]:
    """Residents with no pseudonym yet, or one made with another key."""
    cur = await conn.execute(
        "SELECT r.id FROM trygg.residents r"
        " LEFT JOIN trygg.research_pseudonyms p ON p.resident_id = r.id"
        " WHERE p.resident_id IS NULL OR p.key_id <> %s",
        (key_id,),
    )
    return [row[0] for row in await cur.fetchall()]


async def save_pseudonyms(conn: psycopg.AsyncConnection[Any], rows: Sequence[tuple[str, str]],
                          key_id: str) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO trygg.research_pseudonyms (resident_id, pseudonym, key_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (resident_id) DO UPDATE SET pseudonym = excluded.pseudonym,"
            " key_id = excluded.key_id, updated_at = now()",
            [(resident_id, pseudonym, key_id) for resident_id, pseudonym in rows],
        )


async def event_counts(conn: psycopg.AsyncConnection[Any], since: datetime, until: datetime,
                       bucket: str, event_type: str | None) -> list[dict[str, Any]]:
    """Events and distinct residents per (bucket start, type), unsuppressed."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT date_trunc(%(bucket)s, ts, %(zone)s) AS bucket_start, type,"
            " count(*) AS events, count(DISTINCT resident_pseudonym) AS residents"
            " FROM trygg.research_event_rows"
            " WHERE ts >= %(since)s AND ts < %(until)s"
            " AND (%(type)s::text IS NULL OR type = %(type)s::text)"
            " GROUP BY 1, 2 ORDER BY 1, 2",
            {"bucket": bucket, "zone": BUCKET_ZONE, "since": since, "until": until, "type": event_type},
        )
        return list(await cur.fetchall())


async def response_times(conn: psycopg.AsyncConnection[Any], since: datetime, until: datetime
                         ) -> list[dict[str, Any]]:
    """Per alert kind: alerts, distinct residents, and p50/p90/p99 seconds to acknowledge and
    to resolve, over alerts opened in [since, until)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT kind, count(*) AS alerts, count(DISTINCT resident_pseudonym) AS residents,"
            " count(seconds_to_acknowledge) AS acknowledged,"
            " percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY seconds_to_acknowledge)"
            "   AS acknowledge,"
            " count(seconds_to_resolve) AS resolved,"
            " percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY seconds_to_resolve)"
            "   AS resolve"
            " FROM research.alerts WHERE opened_at >= %s AND opened_at < %s"
            " GROUP BY kind ORDER BY kind",
            (since, until),
        )
        return list(await cur.fetchall())


#: The export: rows with times cut to the grain, of the cells (every column but the
#: pseudonym) that at least `k` distinct residents share; one row per event.
_EXPORT_QUERY: Final = """
WITH cut AS (
    SELECT resident_pseudonym, type, device_kind,
           date_trunc(%(grain)s, ts, %(zone)s) AS ts,
           date_trunc(%(grain)s, received_at, %(zone)s) AS received_at,
           lat, lon, data
    FROM trygg.research_event_rows
    WHERE ts >= %(since)s AND ts < %(until)s
), cells AS (
    SELECT ts, received_at, type, device_kind, lat, lon, data,
           array_agg(resident_pseudonym) AS pseudonyms
    FROM cut
    GROUP BY ts, received_at, type, device_kind, lat, lon, data
    HAVING count(DISTINCT resident_pseudonym) >= %(k)s
)
SELECT resident_pseudonym, type, device_kind, ts, received_at, lat, lon, data
FROM cells, unnest(pseudonyms) AS resident_pseudonym
ORDER BY ts, resident_pseudonym, type
"""


async def export_rows(conn: psycopg.AsyncConnection[Any], since: datetime, until: datetime, *,
                      grain: str, k: int, batch: int = 5000) -> AsyncGenerator[list[tuple[Any, ...]], None]:
    """Event rows in [since, until) whose times are cut to `grain` (hour|day|week|month,
    in Europe/Oslo) and that lie in a cell of at least `k` distinct residents, in time
    order, `batch` at a time (a server-side cursor: never the whole range in memory on
    this side)."""
    if grain not in BUCKETS:
        raise ValueError(f"grain must be one of {', '.join(BUCKETS)}")
    async with conn.transaction():
        cur = conn.cursor(name="trygg_research_export")
        try:
            await cur.execute(_EXPORT_QUERY, {"grain": grain, "zone": BUCKET_ZONE, "since": since,
                                              "until": until, "k": k})
            while rows := await cur.fetchmany(batch):
                yield rows
        finally:
            await _close(conn, cur)


async def _close(conn: psycopg.AsyncConnection[Any], cur: psycopg.AsyncServerCursor[Any]) -> None:
    """Close a server-side cursor. If that fails — the server ended the session, or the
    task was cancelled in the middle — close the connection too: then the cursor counts
    as closed and the pool drops the connection instead of lending it out again."""
    try:
        await cur.close()
    except BaseException:
        await conn.close()
        await cur.close()
        raise


__all__ = [
    "BUCKETS",
    "BUCKET_ZONE",
    "EXPORT_COLUMNS",
    "event_counts",
    "export_rows",
    "residents_needing_pseudonyms",
    "response_times",
    "save_pseudonyms",
]
