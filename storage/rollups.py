"""Research rollups (storage/migrations/0012_research_rollups.sql; docs/research.md "How
the counts stay fast"): events per hour and per Europe/Oslo day and type, with the
residents who had them as bitmaps of dense ordinals, so that a year's counts with exact
distinct residents are read from a few thousand rows instead of millions of events; and
per Europe/Oslo day and alert kind the alerts, their residents and their exact durations
(sorted arrays), for the response-time percentiles.

- `close(conn, now)`: hours up to `now − CLOSE_AFTER` are computed from the raw events
  (a day per transaction) with the alert days they touch, and closed hours that a late
  event or a changed alert marked dirty are computed again. Maintenance runs it every
  minute.
- `reconcile(conn)` / `areconcile(conn)`: the cohort (who the stored counts include)
  brought in step with trygg.research_residents (consent and location basis now): the
  counts and alerts of each resident who changed are added or subtracted, from their
  own raw rows (the (resident_id, ts) and (resident_id, opened_at) indexes). Run before
  every research answer, so a withdrawn consent leaves every answer at once.
- `rebuild(conn, since, until)`: the same computation as `close` for a loaded history,
  a month per statement (the benchmark's bulk loader).
- `MARK_DIRTY_SQL`: the event writer runs it in its batch's transaction (alerts are
  marked by a trigger on trygg.alerts, migration 0012).
- `forget_before(conn, cut)`: after retention dropped the raw events before `cut`.

Every change to the rollups happens under one transaction-scoped advisory lock
(`LOCK_KEY`), so close, rebuild and reconcile never interleave. Ordinals, never
pseudonyms, are stored: a new pseudonym key changes nothing here.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg

from storage.research_store import BUCKET_ZONE, floor_to, next_bucket

#: pg_advisory_xact_lock key of every change to the research rollups ("rsrch").
LOCK_KEY: Final = 0x7273726368
#: an hour is closed this long after it ended (events arrive a little late)
CLOSE_AFTER: Final = timedelta(minutes=5)
#: hours computed per transaction by `close` (a first close, or one after a long stop,
#: catches up a day at a time, so a research answer waits for one day at most)
CLOSE_STEP: Final = timedelta(days=1)
#: dirty hours recomputed per transaction
DIRTY_STEP: Final = 200

_HOUR: Final = timedelta(hours=1)

#: Run by the event writer in its batch's transaction, after the first insert from its
#: temp table `event_stage` (before any staged row is removed): marks the hours of
#: staged events that are already closed, so that the next `close` computes them again
#: (and answers read them from raw rows until then). Nothing to mark (the normal case)
#: costs one read of the one-row state, under FOR KEY SHARE: a close that advances
#: `mark_before` waits for the writers that read the old value, so no event can slip
#: into an hour between its computation and its mark.
MARK_DIRTY_SQL: Final = """
INSERT INTO trygg.research_dirty_hours (hour)
SELECT DISTINCT date_trunc('hour', s.ts, 'UTC')
FROM event_stage s
WHERE trygg.research_type_counted(s.type)
  AND s.ts < (SELECT mark_before FROM trygg.research_rollup_state FOR KEY SHARE)
ON CONFLICT (hour) DO UPDATE SET marked_at = now(), mark = nextval('trygg.research_dirty_mark_seq')
"""

Row = tuple[Any, ...]
#: A step of a transaction: a statement and its parameters; the rows it returned are sent back.
Statement = tuple[str, Sequence[Any] | dict[str, Any] | None]
Steps = Generator[Statement, list[Row], int]


# --- running steps on a connection ----------------------------------------------------


def _run(conn: psycopg.Connection[Any], steps: Steps) -> int:
    with conn.transaction():
        try:
            query, params = next(steps)
            while True:
                cur = conn.execute(query.encode(), params)
                query, params = steps.send(cur.fetchall() if cur.description else [])
        except StopIteration as done:
            return int(done.value)


async def _arun(conn: psycopg.AsyncConnection[Any], steps: Steps) -> int:
    async with conn.transaction():
        try:
            query, params = next(steps)
            while True:
                cur = await conn.execute(query.encode(), params)
                query, params = steps.send(await cur.fetchall() if cur.description else [])
        except StopIteration as done:
            return int(done.value)


# --- reconcile: the cohort in step with consent ----------------------------------------

_CHANGES = """
SELECT coalesce(c.resident_id, r.resident_id) AS resident_id,
       coalesce(c.included, false), coalesce(c.location, false),
       r.resident_id IS NOT NULL, coalesce(r.location_basis_valid, false)
FROM trygg.research_cohort c
FULL JOIN (SELECT resident_id COLLATE "C" AS resident_id, location_basis_valid
           FROM trygg.research_residents) r ON r.resident_id = c.resident_id
WHERE coalesce(c.included, false) <> (r.resident_id IS NOT NULL)
   OR coalesce(c.location, false) <> coalesce(r.location_basis_valid, false)
ORDER BY 1
"""

_NEW_ORDINALS = """
INSERT INTO trygg.research_ordinals (resident_id, ord)
SELECT id, (SELECT coalesce(max(ord) + 1, 0) FROM trygg.research_ordinals) + row_number() OVER (ORDER BY id) - 1
FROM unnest(%s::text[]) AS id
WHERE NOT EXISTS (SELECT 1 FROM trygg.research_ordinals o WHERE o.resident_id = id)
"""

_STATE = "SELECT closed_until, capacity, (SELECT coalesce(max(ord) + 1, 0) FROM trygg.research_ordinals)" \
         " FROM trygg.research_rollup_state"

_GROW = [
    "UPDATE trygg.research_hourly SET members = members || repeat('0', %(more)s)::varbit",
    "UPDATE trygg.research_daily SET members = members || repeat('0', %(more)s)::varbit",
    "UPDATE trygg.research_alerts_daily SET members = members || repeat('0', %(more)s)::varbit",
    "UPDATE trygg.research_rollup_state SET capacity = capacity + %(more)s",
]

# The changed residents' own events in closed hours, per hour and per day: +1 where they
# now count and did not, −1 the other way round.
_DELTA = """
CREATE TEMP TABLE research_delta ON COMMIT DROP AS
WITH changed AS (
    SELECT * FROM unnest(%(ids)s::text[], %(ords)s::int[], %(was)s::bool[], %(was_loc)s::bool[],
                         %(now)s::bool[], %(now_loc)s::bool[]) AS t(resident_id, ord, was, was_loc, inc, loc)
), per AS (
    SELECT date_trunc('hour', e.ts, 'UTC') AS hour, e.type, c.ord,
           (c.inc AND trygg.research_row_visible(e.type, c.loc))::int
           - (c.was AND trygg.research_row_visible(e.type, c.was_loc))::int AS sign,
           count(*) AS n
    FROM changed c
    JOIN trygg.events e ON e.resident_id = c.resident_id COLLATE "C"
    WHERE e.ts < %(closed)s AND trygg.research_type_counted(e.type)
    GROUP BY 1, 2, 3, 4
)
SELECT 'hour' AS grain, hour AS at, type, sum(sign * n) AS events,
       trygg.research_bits(array_agg(ord) FILTER (WHERE sign > 0), %(capacity)s) AS added,
       trygg.research_bits(array_agg(ord) FILTER (WHERE sign < 0), %(capacity)s) AS removed
FROM per WHERE sign <> 0 GROUP BY hour, type
UNION ALL
SELECT 'day', date_trunc('day', hour, %(zone)s), type, sum(sign * n),
       trygg.research_bits(array_agg(DISTINCT ord) FILTER (WHERE sign > 0), %(capacity)s),
       trygg.research_bits(array_agg(DISTINCT ord) FILTER (WHERE sign < 0), %(capacity)s)
FROM per WHERE sign <> 0 GROUP BY 2, type
"""


def _apply_delta(table: str, key: str, grain: str) -> list[str]:
    where = f"d.grain = '{grain}' AND t.{key} = d.at AND t.type = d.type"
    return [
        f"UPDATE trygg.{table} t SET events = t.events + d.events, members = (t.members | d.added) & ~d.removed"
        f" FROM research_delta d WHERE {where}",
        f"INSERT INTO trygg.{table} ({key}, type, events, members)"
        f" SELECT d.at, d.type, d.events, d.added FROM research_delta d"
        f" WHERE d.grain = '{grain}' AND d.events > 0"
        f" AND NOT EXISTS (SELECT 1 FROM trygg.{table} t WHERE t.{key} = d.at AND t.type = d.type)",
        f"DELETE FROM trygg.{table} t USING research_delta d WHERE {where} AND t.events <= 0",
    ]


_APPLY_DELTA: Final = [*_apply_delta("research_hourly", "hour", "hour"),
                       *_apply_delta("research_daily", "day", "day")]

# The changed residents' alerts opened in closed hours, per day and kind: their count,
# bits and durations added where they now count and did not, removed the other way round.
_ALERT_DELTA = """
CREATE TEMP TABLE research_alert_delta ON COMMIT DROP AS
WITH changed AS (
    SELECT * FROM unnest(%(ids)s::text[], %(ords)s::int[], %(was)s::bool[], %(now)s::bool[])
             AS t(resident_id, ord, was, inc)
    WHERE was <> inc
), per AS (
    SELECT date_trunc('day', a.opened_at, %(zone)s) AS day, a.kind, c.ord, c.inc::int - c.was::int AS sign,
           trygg.research_seconds(a.opened_at, a.acknowledged_at) AS ack,
           trygg.research_seconds(a.opened_at, a.resolved_at) AS res
    FROM changed c
    JOIN trygg.alerts a ON a.resident_id = c.resident_id COLLATE "C"
    WHERE a.opened_at < %(closed)s
)
SELECT day, kind, sum(sign) AS alerts,
       trygg.research_bits(array_agg(ord) FILTER (WHERE sign > 0), %(capacity)s) AS added,
       trygg.research_bits(array_agg(ord) FILTER (WHERE sign < 0), %(capacity)s) AS removed,
       coalesce(array_agg(ack) FILTER (WHERE sign > 0 AND ack IS NOT NULL), '{}') AS ack_added,
       coalesce(array_agg(ack) FILTER (WHERE sign < 0 AND ack IS NOT NULL), '{}') AS ack_removed,
       coalesce(array_agg(res) FILTER (WHERE sign > 0 AND res IS NOT NULL), '{}') AS res_added,
       coalesce(array_agg(res) FILTER (WHERE sign < 0 AND res IS NOT NULL), '{}') AS res_removed
FROM per GROUP BY day, kind
"""

_APPLY_ALERT_DELTA: Final = [
    "UPDATE trygg.research_alerts_daily t SET alerts = t.alerts + d.alerts,"
    " members = (t.members | d.added) & ~d.removed,"
    " acknowledge = trygg.research_sorted_change(t.acknowledge, d.ack_added, d.ack_removed),"
    " resolve = trygg.research_sorted_change(t.resolve, d.res_added, d.res_removed)"
    " FROM research_alert_delta d WHERE t.day = d.day AND t.kind = d.kind",
    "INSERT INTO trygg.research_alerts_daily (day, kind, alerts, members, acknowledge, resolve)"
    " SELECT d.day, d.kind, d.alerts, d.added, trygg.research_sorted_change('{}', d.ack_added, '{}'),"
    " trygg.research_sorted_change('{}', d.res_added, '{}') FROM research_alert_delta d WHERE d.alerts > 0"
    " AND NOT EXISTS (SELECT 1 FROM trygg.research_alerts_daily t WHERE t.day = d.day AND t.kind = d.kind)",
    "DELETE FROM trygg.research_alerts_daily t USING research_alert_delta d"
    " WHERE t.day = d.day AND t.kind = d.kind AND t.alerts <= 0",
]

_SAVE_COHORT = """
INSERT INTO trygg.research_cohort (resident_id, included, location)
SELECT * FROM unnest(%s::text[], %s::bool[], %s::bool[])
ON CONFLICT (resident_id) DO UPDATE SET included = excluded.included, location = excluded.location
"""


def _capacity_for(bits: int) -> int:
    """Bits of a bitmap for `bits` ordinals: an eighth more, in whole 64-bit words."""
    return max(64, -(-(bits + bits // 8) // 64) * 64)


def _reconcile_steps(locked: bool) -> Steps:
    if locked:
        yield "SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,)
    changes = yield _CHANGES, None
    if not changes or not locked:
        return len(changes)
    ids = [str(r[0]) for r in changes]
    yield _NEW_ORDINALS, ([r[0] for r in changes if r[3]],)
    ((closed, capacity, needed),) = yield _STATE, None
    if needed > capacity:
        more = _capacity_for(needed) - capacity
        for statement in _GROW:
            yield statement, {"more": more}
        capacity += more
    if closed is not None:
        found = yield "SELECT resident_id, ord FROM trygg.research_ordinals WHERE resident_id = ANY(%s)", (ids,)
        ords = {str(r[0]): int(r[1]) for r in found}
        counted = [r for r in changes if r[0] in ords]
        if counted:
            yield _DELTA, {
                "ids": [r[0] for r in counted], "ords": [ords[r[0]] for r in counted],
                "was": [r[1] for r in counted], "was_loc": [r[2] for r in counted],
                "now": [r[3] for r in counted], "now_loc": [r[3] and r[4] for r in counted],
                "closed": closed, "capacity": capacity, "zone": BUCKET_ZONE,
            }
            for statement in _APPLY_DELTA:
                yield statement, None
            yield _ALERT_DELTA, {
                "ids": [r[0] for r in counted], "ords": [ords[r[0]] for r in counted],
                "was": [r[1] for r in counted], "now": [r[3] for r in counted],
                "closed": closed, "capacity": capacity, "zone": BUCKET_ZONE,
            }
            for statement in _APPLY_ALERT_DELTA:
                yield statement, None
    yield _SAVE_COHORT, (ids, [r[3] for r in changes], [r[3] and r[4] for r in changes])
    return len(changes)


def reconcile(conn: psycopg.Connection[Any]) -> int:
    """Bring the cohort in step with trygg.research_residents; returns how many residents
    changed. Cheap when none did: one comparison, no lock. `conn` must not be inside a
    transaction of its own (this one commits)."""
    if not _run(conn, _reconcile_steps(locked=False)):
        return 0
    return _run(conn, _reconcile_steps(locked=True))


async def areconcile(conn: psycopg.AsyncConnection[Any]) -> int:
    """`reconcile` on an async connection (the research pool)."""
    if not await _arun(conn, _reconcile_steps(locked=False)):
        return 0
    return await _arun(conn, _reconcile_steps(locked=True))


# --- close: hours from raw events --------------------------------------------------------

_COMPUTE_HOURS = """
INSERT INTO trygg.research_hourly (hour, type, events, members)
SELECT hour, type, sum(n), trygg.research_bits(array_agg(ord), %(capacity)s)
FROM (
    SELECT date_trunc('hour', e.ts, 'UTC') AS hour, e.type, o.ord, count(*) AS n
    FROM trygg.events e
    JOIN trygg.research_cohort c ON c.resident_id = e.resident_id
    JOIN trygg.research_ordinals o ON o.resident_id = e.resident_id
    WHERE e.ts >= %(s)s AND e.ts < %(e)s
      AND c.included AND trygg.research_type_counted(e.type) AND trygg.research_row_visible(e.type, c.location)
    GROUP BY 1, 2, 3
) per
GROUP BY hour, type
"""

_DAY_SPAN = """
SELECT date_trunc('day', %(s)s::timestamptz, %(zone)s),
       ((date_trunc('day', %(e)s::timestamptz - interval '1 microsecond', %(zone)s) AT TIME ZONE %(zone)s)
        + interval '1 day') AT TIME ZONE %(zone)s
"""

_DAYS_FROM_HOURS = """
INSERT INTO trygg.research_daily (day, type, events, members)
SELECT date_trunc('day', hour, %(zone)s), type, sum(events), bit_or(members)
FROM trygg.research_hourly WHERE hour >= %(s)s AND hour < %(e)s
GROUP BY 1, 2
"""


_COMPUTE_ALERT_DAYS = """
INSERT INTO trygg.research_alerts_daily (day, kind, alerts, members, acknowledge, resolve)
SELECT date_trunc('day', a.opened_at, %(zone)s), a.kind, count(*),
       trygg.research_bits(array_agg(o.ord), %(capacity)s),
       coalesce(array_agg(trygg.research_seconds(a.opened_at, a.acknowledged_at)
                          ORDER BY trygg.research_seconds(a.opened_at, a.acknowledged_at))
                FILTER (WHERE a.acknowledged_at IS NOT NULL), '{}'),
       coalesce(array_agg(trygg.research_seconds(a.opened_at, a.resolved_at)
                          ORDER BY trygg.research_seconds(a.opened_at, a.resolved_at))
                FILTER (WHERE a.resolved_at IS NOT NULL), '{}')
FROM trygg.alerts a
JOIN trygg.research_cohort c ON c.resident_id = a.resident_id
JOIN trygg.research_ordinals o ON o.resident_id = a.resident_id
WHERE a.opened_at >= %(s)s AND a.opened_at < least(%(e)s, %(upto)s) AND c.included
GROUP BY 1, 2
"""


def _day_span(conn: psycopg.Connection[Any], start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The Europe/Oslo days [first, after last) that hours [start, end) touch."""
    row = conn.execute(_DAY_SPAN.encode(), {"s": start, "e": end, "zone": BUCKET_ZONE}).fetchone()
    assert row is not None
    return row[0], row[1]


def _compute(conn: psycopg.Connection[Any], start: datetime, end: datetime, capacity: int) -> None:
    """Hours [start, end) from raw events, and the days they touch from the hours."""
    span = {"s": start, "e": end, "capacity": capacity, "zone": BUCKET_ZONE}
    conn.execute("DELETE FROM trygg.research_hourly WHERE hour >= %(s)s AND hour < %(e)s", span)
    conn.execute(_COMPUTE_HOURS.encode(), span)
    _days_from_hours(conn, *_day_span(conn, start, end))


def _days_from_hours(conn: psycopg.Connection[Any], first: datetime, after: datetime) -> None:
    days = {"s": first, "e": after, "zone": BUCKET_ZONE}
    conn.execute("DELETE FROM trygg.research_daily WHERE day >= %(s)s AND day < %(e)s", days)
    conn.execute(_DAYS_FROM_HOURS.encode(), days)


def _compute_alert_days(conn: psycopg.Connection[Any], first: datetime, after: datetime, upto: datetime,
                        capacity: int) -> None:
    """The response-time rows of days [first, after) from the raw alerts opened before `upto`
    (closed_until once this transaction commits)."""
    span = {"s": first, "e": after, "upto": upto, "capacity": capacity, "zone": BUCKET_ZONE}
    conn.execute("DELETE FROM trygg.research_alerts_daily WHERE day >= %(s)s AND day < %(e)s", span)
    conn.execute(_COMPUTE_ALERT_DAYS.encode(), span)


def _locked_state(conn: psycopg.Connection[Any]) -> tuple[datetime | None, int]:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    row = conn.execute("SELECT closed_until, capacity FROM trygg.research_rollup_state").fetchone()
    assert row is not None
    return row[0], int(row[1])


def _advance_marks(conn: psycopg.Connection[Any], until: datetime) -> None:
    """Writers mark hours before `until` from now on. FOR UPDATE waits for every writer
    that read the old value (FOR KEY SHARE) to commit, so a computation that starts
    after this sees their events."""
    with conn.transaction():
        conn.execute("SELECT 1 FROM trygg.research_rollup_state FOR UPDATE")
        conn.execute("UPDATE trygg.research_rollup_state SET mark_before = greatest(mark_before, %s)", (until,))


def _first_hour(conn: psycopg.Connection[Any], default: datetime) -> datetime:
    """Where a first close starts: the hour of the oldest counted event or alert."""
    row = conn.execute("SELECT least((SELECT min(ts) FROM trygg.events WHERE trygg.research_type_counted(type)),"
                       " (SELECT min(opened_at) FROM trygg.alerts))").fetchone()
    return floor_to("hour", row[0]) if row and row[0] is not None else default


def _take_marks(conn: psycopg.Connection[Any], start: datetime, end: datetime,
                limit: int | None = None) -> list[Row]:
    """The dirty marks of hours in [start, end), read before the hours are computed (so
    the computation sees the events that made them)."""
    return conn.execute("SELECT hour, mark FROM trygg.research_dirty_hours WHERE hour >= %s AND hour < %s"
                        " ORDER BY hour LIMIT %s", (start, end, limit)).fetchall()


def _drop_marks(conn: psycopg.Connection[Any], marks: list[Row]) -> None:
    """Remove the marks taken, unless a writer marked the hour again since (a larger
    `mark`: its events may be newer than the computation)."""
    if marks:
        conn.execute("DELETE FROM trygg.research_dirty_hours d USING unnest(%s::timestamptz[], %s::bigint[])"
                     " AS m(hour, mark) WHERE d.hour = m.hour AND d.mark <= m.mark",
                     ([h for h, _ in marks], [m for _, m in marks]))


def _recompute_dirty(conn: psycopg.Connection[Any]) -> int:
    """Closed hours marked dirty, computed again, DIRTY_STEP per transaction."""
    done = 0
    while True:
        with conn.transaction():
            closed, capacity = _locked_state(conn)
            marks = _take_marks(conn, datetime.min.replace(tzinfo=UTC), closed, DIRTY_STEP) if closed else []
            days = set()
            for hour, _ in marks:
                _compute(conn, hour, hour + _HOUR, capacity)
                days.add(_day_span(conn, hour, hour + _HOUR))
            for first, after in sorted(days):
                assert closed is not None
                _compute_alert_days(conn, first, after, closed, capacity)
            _drop_marks(conn, marks)
        done += len(marks)
        if len(marks) < DIRTY_STEP:
            return done


def _close_to(conn: psycopg.Connection[Any], target: datetime, step: Callable[[datetime], datetime],
              *, first: datetime | None = None) -> tuple[int, datetime | None]:
    """Hours from closed_until to `target` computed, each `step` its own transaction;
    returns how many hours were closed, and closed_until."""
    hours = 0
    while True:
        with conn.transaction():
            closed, capacity = _locked_state(conn)
            start = closed if closed is not None else (first or _first_hour(conn, target))
            if start >= target:
                if closed is None:
                    conn.execute("UPDATE trygg.research_rollup_state SET closed_until = %s", (target,))
                return hours, closed or target
            end = min(step(start), target)
            marks = _take_marks(conn, start, end)
            _compute(conn, start, end, capacity)
            _compute_alert_days(conn, *_day_span(conn, start, end), end, capacity)
            _drop_marks(conn, marks)
            conn.execute("UPDATE trygg.research_rollup_state SET closed_until = %s", (end,))
        hours += int((end - start) / _HOUR)


def _require_idle(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError("the research rollups need a connection outside any transaction (they commit)")


def close(conn: psycopg.Connection[Any], now: datetime) -> dict[str, Any]:
    """Close the hours up to `now − CLOSE_AFTER` and recompute dirty ones; the cohort is
    reconciled first. Returns what it did (maintenance logs it)."""
    _require_idle(conn)
    target = floor_to("hour", now - CLOSE_AFTER)
    reconciled = reconcile(conn)
    _advance_marks(conn, target)
    dirty = _recompute_dirty(conn)
    hours, closed = _close_to(conn, target, lambda start: start + CLOSE_STEP)
    return {"residents_reconciled": reconciled, "dirty_hours": dirty, "hours_closed": hours,
            "closed_until": closed.isoformat() if closed else None}


def rebuild(conn: psycopg.Connection[Any], since: datetime, until: datetime) -> dict[str, Any]:
    """The rollups of [since, until) computed from raw events a month per statement, and
    closed up to `until` (hour-aligned). For a bulk load that bypassed the event writer.
    With nothing closed yet the rollups start at `since`: the history must not hold
    counted events or alerts before it."""
    _require_idle(conn)
    since, until = floor_to("hour", since), floor_to("hour", until)
    reconciled = reconcile(conn)
    _advance_marks(conn, until)
    with conn.transaction():
        closed, _ = _locked_state(conn)
        if closed is not None and closed > since:  # recompute from `since` on
            conn.execute("UPDATE trygg.research_rollup_state SET closed_until = %s", (since,))
    hours, _ = _close_to(conn, until, lambda start: next_bucket("month", floor_to("month", start)), first=since)
    dirty = _recompute_dirty(conn)
    return {"residents_reconciled": reconciled, "hours_closed": hours, "dirty_hours": dirty}


def forget_before(conn: psycopg.Connection[Any], before: datetime) -> int:
    """Forget the event counts of the time before `before`, whose raw events retention has
    dropped: the rollups then never hold counts that a withdrawal could no longer
    subtract, and answers stay those of the raw rows that are left. Hours before it are
    removed; the Europe/Oslo day it falls in keeps only its later hours (its day row is
    summed again from them); an hour it cuts (not on the hour) is marked dirty, so it is
    read from the raw rows left and computed again from them at the next close. Alerts
    are not dropped by retention: their response-time rows stay. Returns the hourly rows
    removed."""
    _require_idle(conn)
    cut = floor_to("hour", before)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        cur = conn.execute("DELETE FROM trygg.research_hourly WHERE hour < %s", (cut,))
        removed = cur.rowcount
        first, after = _day_span(conn, cut, cut + _HOUR)
        conn.execute("DELETE FROM trygg.research_daily WHERE day < %s", (first,))
        _days_from_hours(conn, first, after)
        if cut < before:
            conn.execute("INSERT INTO trygg.research_dirty_hours (hour) VALUES (%s) ON CONFLICT (hour)"
                         " DO UPDATE SET marked_at = now(), mark = nextval('trygg.research_dirty_mark_seq')",
                         (cut,))
        return removed


__all__ = [
    "CLOSE_AFTER",
    "LOCK_KEY",
    "MARK_DIRTY_SQL",
    "areconcile",
    "close",
    "forget_before",
    "rebuild",
    "reconcile",
]
