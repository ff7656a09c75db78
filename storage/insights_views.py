"""Reading the early signs of decline for the dashboard (docs/insights.md): a resident's
days and notices, a team's notices, marking one seen, and the research view of the
daily features (storage/migrations/0020_insights_research.sql).

The tables are written by the daily job (storage/insights_store.py, migration 0019);
nothing here writes them but `mark_seen`. All functions take an open async connection;
the caller decides who may see what (dashboard/routes_insights.py) and writes the audit
row.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Sequence
from datetime import date, datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from storage.research_store import close_cursor

#: The columns of a notice as the dashboard reads them.
NOTICE_COLUMNS: Final = (
    "n.notice_id, n.resident_id, n.feature, n.direction, n.day, n.value, n.usual, n.band_low, n.band_high,"
    " n.window_days, n.reason_nb, n.reason_en, n.created_at, n.seen_at, n.seen_by, n.seen_note"
)

#: A notice's columns after `mark_seen`'s UPDATE (no table alias there).
_RETURNED: Final = NOTICE_COLUMNS.replace("n.", "")


async def resident_days(conn: psycopg.AsyncConnection[Any], resident_id: str, since: date
                        ) -> list[dict[str, Any]]:
    """The resident's computed days from `since` on, oldest first: day, vals, usual,
    band_low, band_high (arrays in FEATURES order, None where unknown), hours_unheard,
    usable, away."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT day, vals, usual, band_low, band_high, hours_unheard, usable, away"
            " FROM trygg.insight_days WHERE resident_id = %s AND day >= %s ORDER BY day",
            (resident_id, since))
        return list(await cur.fetchall())


async def resident_notices(conn: psycopg.AsyncConnection[Any], resident_id: str, since: date,
                           limit: int = 100) -> list[dict[str, Any]]:
    """The resident's notices raised on or after `since`, and every one not yet seen
    (however old), newest first, at most `limit`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {NOTICE_COLUMNS} FROM trygg.insight_notices n"
            " WHERE n.resident_id = %s AND (n.day >= %s OR n.seen_at IS NULL)"
            " ORDER BY n.day DESC, n.notice_id DESC LIMIT %s".encode(),
            (resident_id, since, limit))
        return list(await cur.fetchall())


async def team_notices(conn: psycopg.AsyncConnection[Any], teams: Collection[str] | None,
                       seen_since: datetime, limit: int) -> list[dict[str, Any]]:
    """Notices of the residents of `teams` (None: every team) not yet seen, newest first,
    then those seen at or after `seen_since`, most recently seen first; with the
    resident's `resident_name` and `team_id`. At most `limit` of each."""
    query = (
        f"(SELECT {NOTICE_COLUMNS}, r.name AS resident_name, r.team_id"
        " FROM trygg.insight_notices n JOIN trygg.residents r ON r.id = n.resident_id"
        " WHERE n.seen_at IS NULL AND (%(all)s OR r.team_id = ANY(%(teams)s))"
        " ORDER BY n.day DESC, n.notice_id DESC LIMIT %(limit)s)"
        " UNION ALL"
        f" (SELECT {NOTICE_COLUMNS}, r.name AS resident_name, r.team_id"
        " FROM trygg.insight_notices n JOIN trygg.residents r ON r.id = n.resident_id"
        " WHERE n.seen_at >= %(seen_since)s AND (%(all)s OR r.team_id = ANY(%(teams)s))"
        " ORDER BY n.seen_at DESC, n.notice_id DESC LIMIT %(limit)s)"
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.encode(), {"all": teams is None, "teams": sorted(teams or ()),
                                           "seen_since": seen_since, "limit": limit})
        return list(await cur.fetchall())


async def notice_resident(conn: psycopg.AsyncConnection[Any], notice_id: int) -> str | None:
    """The resident a notice is about, or None if there is no such notice."""
    cur = await conn.execute("SELECT resident_id FROM trygg.insight_notices WHERE notice_id = %s", (notice_id,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def mark_seen(conn: psycopg.AsyncConnection[Any], notice_id: int, by: str, note: str | None
                    ) -> dict[str, Any] | None:
    """Mark a notice seen by `by` now, with `note`; the notice after the change, or None
    if it was already seen (or is gone). Committed when the caller's transaction is."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE trygg.insight_notices SET seen_at = now(), seen_by = %s, seen_note = %s"
            f" WHERE notice_id = %s AND seen_at IS NULL RETURNING {_RETURNED}".encode(),
            (by, note, notice_id))
        return await cur.fetchone()


# --- research (research.insight_days: consenting residents, pseudonymous) ------------------


async def research_feature_stats(conn: psycopg.AsyncConnection[Any], since: date, until: date, bucket: str,
                                 feature: str | None) -> list[dict[str, Any]]:
    """Per (bucket, feature) over the days in [since, until): distinct `residents`,
    resident-`days`, and the 25th, 50th and 75th percentile of the values (`p`, a list of
    three); unsuppressed (the caller holds back small groups). `bucket`: day, week (from
    Monday) or month."""
    if bucket not in ("day", "week", "month"):
        raise ValueError("bucket must be day, week or month")
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT date_trunc(%(bucket)s, v.day::timestamp)::date AS bucket_start, v.feature,"
                " count(DISTINCT v.resident_pseudonym) AS residents, count(*) AS days,"
                " percentile_cont(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY v.value) AS p"
                " FROM research.insight_days v"
                " WHERE v.day >= %(since)s AND v.day < %(until)s"
                " AND (%(feature)s::text IS NULL OR v.feature = %(feature)s::text)"
                " GROUP BY 1, 2 ORDER BY 1, 2",
                {"bucket": bucket, "since": since, "until": until, "feature": feature})
            return list(await cur.fetchall())


#: The export of daily features: values rounded to their feature's step, then only the
#: rows whose (day, feature, value) at least `k` distinct residents share.
_EXPORT: Final = """
WITH cut AS (
    SELECT v.resident_pseudonym, v.day, v.feature,
           round((v.value / s.step)::numeric) * s.step::numeric AS value
    FROM research.insight_days v
    JOIN unnest(%(features)s::text[], %(steps)s::float8[]) AS s(name, step) ON s.name = v.feature
    WHERE v.day >= %(since)s AND v.day < %(until)s
), cells AS (
    SELECT day, feature, value, array_agg(resident_pseudonym) AS pseudonyms
    FROM cut
    GROUP BY day, feature, value
    HAVING count(DISTINCT resident_pseudonym) >= %(k)s
)
SELECT resident_pseudonym, day, feature, value
FROM cells, unnest(pseudonyms) AS resident_pseudonym
ORDER BY day, feature, value, resident_pseudonym
"""

EXPORT_COLUMNS: Final = ("resident_pseudonym", "day", "feature", "value")


async def research_feature_rows(conn: psycopg.AsyncConnection[Any], since: date, until: date, *,
                                steps: Sequence[tuple[str, float]], k: int, batch: int = 5000
                                ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
    """Daily feature rows (EXPORT_COLUMNS) of the days in [since, until), each value
    rounded to the nearest multiple of its feature's step (`steps`: (feature, step)),
    only of cells of at least `k` distinct residents, `batch` at a time from a
    server-side cursor."""
    params = {"features": [name for name, _ in steps], "steps": [step for _, step in steps],
              "since": since, "until": until, "k": k}
    async with conn.transaction():
        cur = conn.cursor(name="trygg_research_insights_export")
        try:
            await cur.execute(_EXPORT, params)
            while rows := await cur.fetchmany(batch):
                yield rows
        finally:
            await close_cursor(conn, cur)


__all__ = [
    "EXPORT_COLUMNS",
    "NOTICE_COLUMNS",
    "mark_seen",
    "notice_resident",
    "research_feature_rows",
    "research_feature_stats",
    "resident_days",
    "resident_notices",
    "team_notices",
]
