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
hour-cut `research.events`. Event counts read closed hours from the research rollups
(storage/migrations/0012_research_rollups.sql, storage/rollups.py) and only the rest
from raw rows.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

#: The zone research time buckets are cut in.
BUCKET_ZONE: Final = "Europe/Oslo"
BUCKETS: Final = ("hour", "day", "week", "month")
_ZONE: Final = ZoneInfo(BUCKET_ZONE)

EXPORT_COLUMNS: Final = ("resident_pseudonym", "type", "device_kind", "ts", "received_at", "lat", "lon", "data")


def floor_to(unit: str, t: datetime) -> datetime:
    """The start of the bucket (hour, or day/week/month in Europe/Oslo) holding `t`, in UTC."""
    if unit == "hour":  # Norway's offsets are whole hours
        return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    day = t.astimezone(_ZONE).date()
    if unit == "week":
        day -= timedelta(days=day.weekday())
    elif unit == "month":
        day = day.replace(day=1)
    return datetime.combine(day, time(0), _ZONE).astimezone(UTC)


def next_bucket(unit: str, start: datetime) -> datetime:
    """The start of the bucket after the one starting at `start`."""
    if unit == "hour":
        return start + timedelta(hours=1)
    day = start.astimezone(_ZONE).date()
    if unit == "day":
        day += timedelta(days=1)
    elif unit == "week":
        day += timedelta(days=7)
    else:
        day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime.combine(day, time(0), _ZONE).astimezone(UTC)


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
    """Events and distinct residents per (bucket start, type), unsuppressed; heartbeats
    are not counted (docs/research.md).

    Closed hours come from the rollups (storage/rollups.py), the rest — the open tail,
    hours marked dirty by a late event, a window edge inside an hour — from the raw rows,
    all in one snapshot, so the answer is the one the raw rows give. Distinct residents
    are exact: bitmaps of resident ordinals, OR-ed over the bucket and ANDed with the
    residents who consent now. The cohort the rollups count must be reconciled first
    (`storage.rollups.areconcile`), or a resident who just withdrew would still be in the
    event counts (never in the resident counts)."""
    async with conn.transaction():
        query, params = await _counts_statement(conn, since, until, bucket, event_type)
        async with conn.cursor(row_factory=dict_row) as dcur:
            await dcur.execute(query + b" ORDER BY 1, 2", params)
            return list(await dcur.fetchall())


async def event_counts_json(conn: psycopg.AsyncConnection[Any], since: datetime, until: datetime,
                            bucket: str, event_type: str | None, min_group: int) -> tuple[str, int]:
    """The answer of `event_counts` with small groups suppressed, made by PostgreSQL for
    an answer in JSON: the groups of at least `min_group` distinct residents as the text
    of the JSON objects `{"bucket_start": "…Z", "type": …, "events": …, "residents": …}`
    separated by commas (the elements of a JSON array, in the order of `event_counts`),
    and how many groups were held back. A year by the hour is tens of thousands of
    groups: made here, none of them becomes a Python object."""
    async with conn.transaction():
        query, params = await _counts_statement(conn, since, until, bucket, event_type)
        cur = await conn.execute(_SHOWN_AS_JSON.replace(b"{counts}", query), {**params, "min_group": min_group})
        row = await cur.fetchone()
        assert row is not None
        return str(row[0]), int(row[1])


async def _counts_statement(conn: psycopg.AsyncConnection[Any], since: datetime, until: datetime,
                            bucket: str, event_type: str | None) -> tuple[bytes, dict[str, Any]]:
    """The counts query (unordered) and its parameters, in a repeatable-read snapshot
    taken here: the caller has opened the transaction."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}")
    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    # JIT would compile this query for longer than it runs; a year by the hour is
    # ~90,000 rows to sort, in memory
    await conn.execute("SET LOCAL jit = off; SET LOCAL work_mem = '32MB'")
    closed_until, capacity, dirty = await _rollup_state(conn, since)
    plan = plan_sources(since, until, bucket, closed_until, dirty)
    return _spans_query(_COUNTS, "v.ts", len(plan.raw)), {
        "bucket": bucket, "zone": BUCKET_ZONE, "type": event_type, "capacity": capacity,
        "by_hour": bucket == "hour",
        "daily_s": [s for s, _ in plan.daily], "daily_e": [e for _, e in plan.daily],
        "hourly_s": [s for s, _ in plan.hourly], "hourly_e": [e for _, e in plan.hourly],
        **_span_params(plan.raw),
    }


#: `{counts}`'s groups of at least `min_group` residents as JSON objects (times in UTC,
#: as the API writes every time: `2026-11-17T23:00:00Z`), and the number held back.
_SHOWN_AS_JSON: Final = b"""
SELECT coalesce(string_agg(
           '{"bucket_start":"' || to_char(c.bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           || '","type":' || to_json(c.type)::text || ',"events":' || c.events
           || ',"residents":' || c.residents || '}', ',' ORDER BY c.bucket_start, c.type)
           FILTER (WHERE c.residents >= %(min_group)s), ''),
       count(*) FILTER (WHERE c.residents < %(min_group)s)
FROM ({counts}) AS c
"""


Span = tuple[datetime, datetime]


@dataclass(frozen=True)
class Sources:
    """Where each part of a window is read from: whole Europe/Oslo days from
    trygg.research_daily, hours from trygg.research_hourly, the rest from raw rows."""

    daily: list[Span]
    hourly: list[Span]
    raw: list[Span]


def plan_sources(since: datetime, until: datetime, bucket: str, closed_until: datetime | None,
                 dirty: Sequence[datetime]) -> Sources:
    """Split [since, until) by source. Rollups answer whole hours before `closed_until`
    that are not `dirty` (a late event since they were computed); days are used only
    whole and without a dirty hour, and only for buckets of a day or more."""
    first = floor_to("hour", since)
    if first < since:
        first += _HOUR
    last = floor_to("hour", until)
    if closed_until is not None:
        last = min(last, closed_until)
    if closed_until is None or last <= first:
        return Sources([], [], [(since, until)])
    marked = sorted(h for h in set(dirty) if first <= h < last)
    raw = [(since, first)] if since < first else []
    raw += [(h, h + _HOUR) for h in marked]
    if last < until:
        raw.append((last, until))
    hourly: list[Span] = []
    daily: list[Span] = []

    def hours(start: datetime, end: datetime) -> None:
        at = start
        for h in marked:
            if start <= h < end:
                if at < h:
                    hourly.append((at, h))
                at = h + _HOUR
        if at < end:
            hourly.append((at, end))

    day = floor_to("day", first)
    if day < first:
        day = next_bucket("day", day)
    if bucket == "hour" or next_bucket("day", day) > last:
        hours(first, last)
    else:
        hours(first, day)
        while (end := next_bucket("day", day)) <= last:
            if any(day <= h < end for h in marked):
                hours(day, end)
            else:
                daily.append((day, end))
            day = end
        hours(day, last)
    return Sources(_merged(daily), _merged(hourly), _merged(raw))


def _merged(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and out[-1][1] >= start:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif start < end:
            out.append((start, end))
    return out


_HOUR: Final = timedelta(hours=1)

#: Counts from the three sources, merged per (bucket, type). A resident who consents but
#: has no ordinal yet (the cohort not yet reconciled) can only be in the raw rows: counted
#: there by pseudonym.
_COUNTS: Final = """
WITH masks AS MATERIALIZED (
    SELECT trygg.research_bits(array_agg(o.ord), %(capacity)s) AS everyone,
           trygg.research_bits(array_agg(o.ord) FILTER (WHERE r.location_basis_valid), %(capacity)s) AS located
    FROM trygg.research_residents r JOIN trygg.research_ordinals o ON o.resident_id = r.resident_id
), parts AS (
    SELECT date_trunc(%(bucket)s, d.day, %(zone)s) AS bucket_start, d.type, d.events, d.members,
           0::bigint AS unordered
    FROM unnest(%(daily_s)s::timestamptz[], %(daily_e)s::timestamptz[]) AS w(s, e)
    JOIN trygg.research_daily d ON d.day >= w.s AND d.day < w.e
    WHERE %(type)s::text IS NULL OR d.type = %(type)s::text
    UNION ALL
    SELECT date_trunc(%(bucket)s, h.hour, %(zone)s), h.type, h.events, h.members, 0
    FROM unnest(%(hourly_s)s::timestamptz[], %(hourly_e)s::timestamptz[]) AS w(s, e)
    JOIN trygg.research_hourly h ON h.hour >= w.s AND h.hour < w.e
    WHERE NOT %(by_hour)s AND (%(type)s::text IS NULL OR h.type = %(type)s::text)
    UNION ALL
    SELECT date_trunc(%(bucket)s, v.ts, %(zone)s), v.type, count(*),
           trygg.research_bits(array_agg(DISTINCT o.ord) FILTER (WHERE o.ord IS NOT NULL), %(capacity)s),
           count(DISTINCT v.resident_pseudonym) FILTER (WHERE o.ord IS NULL)
    FROM trygg.research_event_rows v
    LEFT JOIN trygg.research_pseudonyms p ON p.pseudonym = v.resident_pseudonym
    LEFT JOIN trygg.research_ordinals o ON o.resident_id = p.resident_id
    WHERE {spans} AND trygg.research_type_counted(v.type)
      AND (%(type)s::text IS NULL OR v.type = %(type)s::text)
    GROUP BY 1, 2
), groups AS (
    SELECT bucket_start, type, sum(events)::bigint AS events, bit_or(members) AS members,
           sum(unordered)::bigint AS unordered
    FROM parts
    GROUP BY bucket_start, type
    HAVING sum(events) > 0
)
SELECT g.bucket_start, g.type, g.events,
       bit_count(g.members & CASE WHEN trygg.research_row_visible(g.type, false)
                                  THEN m.everyone ELSE m.located END) + g.unordered AS residents
FROM groups g CROSS JOIN masks m
UNION ALL
-- by the hour, an hour of the rollups is a bucket of its own (never also in another part)
SELECT h.hour, h.type, h.events,
       bit_count(h.members & CASE WHEN trygg.research_row_visible(h.type, false)
                                  THEN m.everyone ELSE m.located END)
FROM unnest(%(hourly_s)s::timestamptz[], %(hourly_e)s::timestamptz[]) AS w(s, e)
JOIN trygg.research_hourly h ON h.hour >= w.s AND h.hour < w.e
CROSS JOIN masks m
WHERE %(by_hour)s AND h.events > 0 AND (%(type)s::text IS NULL OR h.type = %(type)s::text)
"""


async def response_times(conn: psycopg.AsyncConnection[Any], since: datetime, until: datetime
                         ) -> list[dict[str, Any]]:
    """Per alert kind: alerts, distinct residents, and p50/p90/p99 seconds to acknowledge and
    to resolve, over alerts opened in [since, until) as research.alerts cuts `opened_at`
    (to the hour); unsuppressed.

    Whole Europe/Oslo days before `closed_until` come from the rollups
    (trygg.research_alerts_daily: the exact durations as sorted arrays), the rest — the
    open tail, days with an alert changed since they were computed (marked dirty by a
    trigger on trygg.alerts), window edges — from the raw alerts, all in one snapshot;
    percentiles are taken over the exact durations of both, so the answer is the one the
    raw rows give. As for `event_counts`, the cohort must be reconciled first."""
    # research.alerts cuts opened_at to the hour: `cut >= t` is `opened_at >= t` rounded up
    since, until = _ceil_hour(since), _ceil_hour(until)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # JIT would compile for longer than this runs; a year's durations (100,000
        # alerts) sorted in memory
        await conn.execute("SET LOCAL jit = off; SET LOCAL work_mem = '32MB'")
        closed_until, capacity, dirty = await _rollup_state(conn, since)
        plan = plan_sources(since, until, "day", closed_until, dirty) if since < until else Sources([], [], [])
        raw = _merged(plan.hourly + plan.raw)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_spans_query(_RESPONSE_TIMES, "a.opened_at", len(raw)), {
                "capacity": capacity, "daily_s": [s for s, _ in plan.daily], "daily_e": [e for _, e in plan.daily],
                **_span_params(raw)})
            return list(await cur.fetchall())


def _ceil_hour(t: datetime) -> datetime:
    start = floor_to("hour", t)
    return start if start == t else start + _HOUR


async def _rollup_state(conn: psycopg.AsyncConnection[Any], since: datetime
                        ) -> tuple[datetime | None, int, list[datetime]]:
    """closed_until, the bitmaps' capacity and the dirty hours from `since` on."""
    cur = await conn.execute("SELECT closed_until, capacity FROM trygg.research_rollup_state")
    row = await cur.fetchone()
    closed_until, capacity = (row[0], row[1]) if row else (None, 64)
    dirty: list[datetime] = []
    if closed_until is not None:
        cur = await conn.execute("SELECT hour FROM trygg.research_dirty_hours"
                                 " WHERE hour >= %s AND hour < %s ORDER BY hour",
                                 (floor_to("hour", since), closed_until))
        dirty = [r[0] for r in await cur.fetchall()]
    return closed_until, capacity, dirty


#: Response times from the rollups' days and the raw alerts, merged per kind; the
#: percentiles over the exact durations of both. A consenting resident without an
#: ordinal yet can only be in the raw rows: counted there by id.
_RESPONSE_TIMES: Final = """
WITH masks AS MATERIALIZED (
    SELECT trygg.research_bits(array_agg(o.ord), %(capacity)s) AS everyone
    FROM trygg.research_residents r JOIN trygg.research_ordinals o ON o.resident_id = r.resident_id
), parts AS MATERIALIZED (
    SELECT d.kind, d.alerts, d.members, d.acknowledge, d.resolve, 0::bigint AS unordered
    FROM unnest(%(daily_s)s::timestamptz[], %(daily_e)s::timestamptz[]) AS w(s, e)
    JOIN trygg.research_alerts_daily d ON d.day >= w.s AND d.day < w.e
    UNION ALL
    SELECT a.kind, count(*), trygg.research_bits(array_agg(o.ord) FILTER (WHERE o.ord IS NOT NULL), %(capacity)s),
           coalesce(array_agg(trygg.research_seconds(a.opened_at, a.acknowledged_at))
                    FILTER (WHERE a.acknowledged_at IS NOT NULL), '{}'),
           coalesce(array_agg(trygg.research_seconds(a.opened_at, a.resolved_at))
                    FILTER (WHERE a.resolved_at IS NOT NULL), '{}'),
           count(DISTINCT a.resident_id) FILTER (WHERE o.ord IS NULL)
    FROM trygg.alerts a
    JOIN trygg.research_residents r ON r.resident_id = a.resident_id
    LEFT JOIN trygg.research_ordinals o ON o.resident_id = a.resident_id
    WHERE {spans}
    GROUP BY a.kind
), groups AS (
    SELECT kind, sum(alerts)::bigint AS alerts, bit_or(members) AS members, sum(unordered)::bigint AS unordered
    FROM parts GROUP BY kind HAVING sum(alerts) > 0
)
SELECT g.kind, g.alerts, bit_count(g.members & m.everyone) + g.unordered AS residents,
       ack.n AS acknowledged, ack.p AS acknowledge, res.n AS resolved, res.p AS resolve
FROM groups g CROSS JOIN masks m
-- per kind, so that only the percentiles sort (a few kinds: `parts` is read once each)
CROSS JOIN LATERAL (
    SELECT count(*) AS n, percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY v) AS p
    FROM parts p CROSS JOIN LATERAL unnest(p.acknowledge) AS v WHERE p.kind = g.kind) ack
CROSS JOIN LATERAL (
    SELECT count(*) AS n, percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY v) AS p
    FROM parts p CROSS JOIN LATERAL unnest(p.resolve) AS v WHERE p.kind = g.kind) res
ORDER BY g.kind
"""


def _spans_query(query: str, column: str, spans: int) -> bytes:
    """`query` with one range condition on `column` per raw span (constants, so that only
    the partitions and index ranges of those spans are read)."""
    cond = " OR ".join(f"({column} >= %(raw_s{i})s AND {column} < %(raw_e{i})s)" for i in range(spans)) or "false"
    return query.replace("{spans}", f"({cond})").encode()


def _span_params(spans: list[Span]) -> dict[str, datetime]:
    return {**{f"raw_s{i}": s for i, (s, _) in enumerate(spans)},
            **{f"raw_e{i}": e for i, (_, e) in enumerate(spans)}}


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
            await close_cursor(conn, cur)


async def close_cursor(conn: psycopg.AsyncConnection[Any], cur: psycopg.AsyncServerCursor[Any]) -> None:
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
    "Sources",
    "close_cursor",
    "event_counts",
    "event_counts_json",
    "export_rows",
    "floor_to",
    "next_bucket",
    "plan_sources",
    "residents_needing_pseudonyms",
    "response_times",
    "save_pseudonyms",
]
