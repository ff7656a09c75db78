"""One maintenance run (docs/storage.md "Retention"): partitions created ahead, the device
rollups closed, the research rollups closed, expired partitions dropped, each step timed,
logged, counted and recorded in `trygg.maintenance_log`.

`run` holds `pg_try_advisory_lock(LOCK_KEY)` on a connection of its own for the whole run,
so of several Trygg instances one does the work and the others say so and do nothing. The
work runs on a second connection in autocommit: each DDL statement its own short
transaction, waiting `DDL_LOCK_TIMEOUT` at most for a lock. A step that fails is logged and
the others still run; the next run tries it again.

Never blocking ingest: a partition is detached with `DETACH PARTITION CONCURRENTLY` (which
never takes a lock that conflicts with inserts into the parent) and then dropped. A role
that does not own the parent (Trygg running as `trygg_app`) cannot do that; it asks the
owner's function `trygg.drop_expired_partition` (migration 0013), which detaches plainly
under a 100 ms lock timeout and checks the partition's bound itself. On a TimescaleDB
hypertable (and the continuous aggregate trygg.device_hourly) retention is `drop_chunks`,
under the same rule and the same rolled-up guards; there the device rollups' hourly step
is a refresh of the continuous aggregate (docs/storage.md "TimescaleDB").

Order: partitions ahead first (the writers need them), rollups before retention (raw
heartbeats and hourly rows are dropped only once they have been rolled up).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Final

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg import sql

from storage import partitions as partition_plan
from storage import rollups, timescale
from storage.partitions import Partition
from storage.pool import Pool
from trygg.logging import get_logger

log = get_logger(__name__)

#: pg_try_advisory_lock key of maintenance: "maint" in ASCII (migrations use "trygg").
LOCK_KEY: Final = 0x6D61696E74
#: the longest a DDL statement of a run waits for a lock before it fails (tried next run)
DDL_LOCK_TIMEOUT: Final = "500ms"
#: de-duplication keys: the 30-day acceptance window plus 24 h of future device time
EVENT_KEYS_KEEP: Final = timedelta(days=31)
#: an hour of heartbeats is rolled up this long after it ended; heartbeats that arrive
#: later for it stay in the raw table only (docs/storage.md "Device rollups")
HOUR_CLOSE_AFTER: Final = timedelta(minutes=5)
#: hours closed per run at most (a first run or one after a long stop catches up in steps)
MAX_HOURS_PER_RUN: Final = 48
#: the days of trygg.device_daily (as the research rollups' days)
ROLLUP_ZONE: Final = "Europe/Oslo"
#: rows of trygg.maintenance_log are kept this long
LOG_KEEP: Final = timedelta(days=30)

RUNS = Counter("trygg_maintenance_runs", "Maintenance steps run, by outcome (step=run: whole runs; "
               "outcome=skipped: another instance held the lock)", ["step", "outcome"])
SECONDS = Histogram("trygg_maintenance_seconds", "Time of one maintenance step", ["step"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
PARTITIONS_DROPPED = Counter("trygg_partitions_dropped", "Partitions or chunks dropped by retention",
                             ["table"])
LAST_SUCCESS = Gauge("trygg_maintenance_last_success_timestamp_seconds",
                     "When this process last finished a maintenance run with every step done (Unix time)")

Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class Retention:
    """How long each class is kept (trygg/settings.py TRYGG_RETAIN_*)."""

    events: timedelta
    heartbeats: timedelta
    device_hourly: timedelta
    device_daily: timedelta
    dead_letters: timedelta

    def by_parent(self) -> dict[str, timedelta]:
        """Keep per partitioned table (schema-qualified)."""
        return {
            "trygg.events": self.events,
            "trygg.heartbeats": self.heartbeats,
            "trygg.device_hourly": self.device_hourly,
            "trygg.device_daily": self.device_daily,
            "trygg.dead_letters": self.dead_letters,
            "trygg.event_keys": EVENT_KEYS_KEEP,
            # daily features are derived from the events: kept as long (docs/insights.md)
            "trygg.insight_days": self.events,
        }


@dataclass(frozen=True)
class Expired:
    """A partition (or TimescaleDB chunk) past its class's limit."""

    parent: str
    name: str
    upper: datetime | None  # None: a chunk, whose bound drop_chunks judges


@dataclass(frozen=True)
class Step:
    """A step of a run: `action(conn, now)` on the run's autocommit connection; what it
    returns (a dict) is the step's detail in the log."""

    name: str
    action: Callable[[Connection, datetime], object]
    #: run after retention (e.g. what must follow the raw rows it dropped) instead of before
    after_retention: bool = False


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Report:
    """What one run did; `ran` is False when another run held the lock."""

    ran: bool
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ran and all(s.ok for s in self.steps)

    @property
    def created(self) -> list[str]:
        return [n for s in self.steps for n in s.detail.get("created", [])]

    @property
    def dropped(self) -> list[str]:
        return [n for s in self.steps for n in s.detail.get("dropped", [])]


#: Steps added to the built-in ones, before retention (or after it); tests pass them.
ExtraSteps = Sequence[Step]


def _forget_research(conn: Connection, now: datetime) -> dict[str, int]:
    """Research rollups follow the raw events: cut where the events retention left begin
    (a withdrawal can only be subtracted from counts whose raw rows still exist)."""
    cut = oldest_kept(conn, "trygg.events")
    return {"hours_removed": rollups.forget_before(conn, cut) if cut else 0}


def oldest_kept(conn: Connection, parent: str) -> datetime | None:
    """The lower bound of `parent`'s oldest leaf: no row before it is kept (None: no leaf,
    or one from MINVALUE)."""
    leaves = partition_plan.partitions(conn, parent)
    return as_time(leaves[0].lower) if leaves else None


def as_time(bound: datetime | date | None) -> datetime | None:
    """A partition bound as a point in time: a date bound is UTC midnight."""
    if bound is None or isinstance(bound, datetime):
        return bound
    return _midnight(bound)


def expired(leaves: Iterable[Partition], keep: timedelta, now: datetime,
            *, closed_until: datetime | None = None) -> list[Partition]:
    """The leaves whose upper bound is older than `now - keep` (and, for raw data that is
    rolled up, not later than `closed_until`); oldest first. A leaf without an upper
    bound (MAXVALUE) never expires."""
    limit = now - keep
    if closed_until is not None:
        limit = min(limit, closed_until + timedelta(microseconds=1))
    out = [p for p in leaves if (upper := as_time(p.upper)) is not None and upper < limit]
    return sorted(out, key=lambda p: as_time(p.upper) or limit)


def run(pool: Pool, retention: Retention, now: datetime | None = None, *,
        extra_steps: ExtraSteps = (), stop: Callable[[], bool] = lambda: False) -> Report:
    """One run, under the maintenance lock; `now` is injected by tests (default: now).
    `stop()` is asked between steps (a shutdown does not wait for the remaining ones).
    Needs two connections of `pool`."""
    with pool.connection() as lock_conn:
        lock_conn.autocommit = True
        try:
            got = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            if not (got and got[0]):
                log.info("maintenance_skipped_another_run_holds_the_lock")
                RUNS.labels("run", "skipped").inc()
                return Report(ran=False)
            try:
                with pool.connection() as conn:
                    conn.autocommit = True
                    try:
                        return _run_locked(conn, retention, now, extra_steps, stop)
                    finally:
                        _reset(conn)
            finally:
                if not lock_conn.broken:
                    lock_conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        finally:
            _reset(lock_conn)


def _reset(conn: Connection) -> None:
    """Hand a connection back to the pool as it was lent (a broken one is replaced)."""
    if conn.broken or conn.closed:
        return
    try:
        conn.rollback()
        conn.autocommit = False
    except psycopg.Error:
        pass


def _run_locked(conn: Connection, retention: Retention, now: datetime | None,
                extra_steps: ExtraSteps, stop: Callable[[], bool]) -> Report:
    at = now or datetime.now(UTC)
    steps = [
        Step("partitions_ahead", _ensure_ahead),
        Step("device_rollups", lambda c, n: close_device_rollups(c, n, retention.heartbeats)),
        Step("research_rollups", rollups.close),
        *(s for s in extra_steps if not s.after_retention),
        Step("retention", lambda c, n: apply_retention(c, retention, n)),
        Step("research_forget", _forget_research),
        Step("insight_notices", lambda c, n: _prune_insight_notices(c, n, retention.events)),
        *(s for s in extra_steps if s.after_retention),
        Step("maintenance_log", _prune_log),
    ]
    report = Report(ran=True)
    for step in steps:
        if stop():
            break
        report.steps.append(_timed(conn, step, at))
    outcome = "ok" if report.ok else "failed"
    RUNS.labels("run", outcome).inc()
    if report.ok:
        LAST_SUCCESS.set(time.time())
    log.info("maintenance_run_done", ok=report.ok, created=len(report.created), dropped=len(report.dropped),
             failed=[s.name for s in report.steps if not s.ok])
    return report


def _timed(conn: Connection, step: Step, now: datetime) -> StepResult:
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        result = step.action(conn, now)
        detail = result if isinstance(result, dict) else {}
        outcome = StepResult(step.name, True, 0.0, detail)
    except Exception as exc:  # one step's failure is that step's; the others still run
        detail = getattr(exc, "detail", {}) if isinstance(getattr(exc, "detail", None), dict) else {}
        outcome = StepResult(step.name, False, 0.0, detail, f"{type(exc).__name__}: {str(exc).strip()}")
    outcome.seconds = time.perf_counter() - t0
    SECONDS.labels(step.name).observe(outcome.seconds)
    RUNS.labels(step.name, "ok" if outcome.ok else "failed").inc()
    if outcome.ok:
        log.info("maintenance_step_done", step=step.name, seconds=round(outcome.seconds, 4), **outcome.detail)
    else:
        log.error("maintenance_step_failed", step=step.name, seconds=round(outcome.seconds, 4),
                  error=outcome.error, **outcome.detail)
    _record(conn, started, outcome)
    return outcome


def _record(conn: Connection, started: datetime, outcome: StepResult) -> None:
    """The step's row in trygg.maintenance_log (a lost database loses it: logged above)."""
    if conn.broken or conn.closed:
        return
    try:
        conn.execute(
            "INSERT INTO trygg.maintenance_log (started_at, finished_at, step, detail, ok, error)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (started, started + timedelta(seconds=outcome.seconds), outcome.name,
             json.dumps(outcome.detail, default=str), outcome.ok, outcome.error))
    except psycopg.Error as exc:
        log.warning("maintenance_log_not_written", step=outcome.name, error=str(exc).strip())


class StepError(Exception):
    """A step failed part-way; `detail` says what it had done (and what not)."""

    def __init__(self, message: str, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


# --- partitions ahead -------------------------------------------------------------------

def _planned_parents(conn: Connection) -> list[str]:
    return [p.parent for p in partition_plan.plan(conn)]


def _leaf_names(conn: Connection, parents: Iterable[str]) -> set[str]:
    return {p.name for parent in parents for p in partition_plan.partitions(conn, parent)}


@contextmanager
def ddl_lock_timeout(conn: Connection) -> Iterator[None]:
    """DDL of a run waits `DDL_LOCK_TIMEOUT` at most for a lock (the rollups' statements
    are not DDL and wait as long as they must)."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
    try:
        yield
    finally:
        if not conn.broken:
            conn.execute("RESET lock_timeout")


def _ensure_ahead(conn: Connection, now: datetime) -> dict[str, Any]:
    parents = _planned_parents(conn)
    before = _leaf_names(conn, parents)
    with ddl_lock_timeout(conn):
        partition_plan.ensure(conn, now)
    return {"created": sorted(_leaf_names(conn, parents) - before)}


# --- device rollups ---------------------------------------------------------------------

# Hours [start, end) of trygg.heartbeats into trygg.device_hourly; a recomputed hour gets
# the same row. The last battery report of the hour is the one with the latest ts.
_HOURLY = """
INSERT INTO trygg.device_hourly AS h (device_id, hour, heartbeats, battery_min, battery_max, battery_last)
SELECT device_id, date_trunc('hour', ts, 'UTC'), count(*), min(battery_pct), max(battery_pct),
       (array_agg(battery_pct ORDER BY ts DESC) FILTER (WHERE battery_pct IS NOT NULL))[1]
FROM trygg.heartbeats WHERE ts >= %(start)s AND ts < %(end)s
GROUP BY 1, 2
ON CONFLICT (device_id, hour) DO UPDATE SET heartbeats = excluded.heartbeats,
    battery_min = excluded.battery_min, battery_max = excluded.battery_max,
    battery_last = excluded.battery_last
"""

# Days [start, end) (Europe/Oslo) of trygg.device_hourly into trygg.device_daily.
_DAILY = f"""
INSERT INTO trygg.device_daily AS d (device_id, day, heartbeats, hours_heard, battery_min, battery_max,
                                     battery_last)
SELECT device_id, (hour AT TIME ZONE '{ROLLUP_ZONE}')::date, sum(heartbeats), count(*) FILTER (WHERE heartbeats > 0),
       min(battery_min), max(battery_max),
       (array_agg(battery_last ORDER BY hour DESC) FILTER (WHERE battery_last IS NOT NULL))[1]
FROM trygg.device_hourly
WHERE hour >= (%(start)s::date::timestamp AT TIME ZONE '{ROLLUP_ZONE}')
  AND hour < (%(end)s::date::timestamp AT TIME ZONE '{ROLLUP_ZONE}')
GROUP BY 1, 2
ON CONFLICT (device_id, day) DO UPDATE SET heartbeats = excluded.heartbeats,
    hours_heard = excluded.hours_heard, battery_min = excluded.battery_min,
    battery_max = excluded.battery_max, battery_last = excluded.battery_last
"""


def floor_hour(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return t.replace(minute=0, second=0, microsecond=0)


HOURLY: Final = "trygg.device_hourly"


def device_rollups_active(conn: Connection) -> bool:
    """True where the device rollups are closed by the maintenance run: trygg.device_hourly
    is a table Trygg fills, or (TimescaleDB) a continuous aggregate it refreshes."""
    return _hourly_kind(conn) is not None


def _hourly_kind(conn: Connection) -> str | None:
    """'table', 'continuous_aggregate', or None (missing, or a view nobody refreshes)."""
    if timescale.is_continuous_aggregate(conn, HOURLY):
        return "continuous_aggregate"
    row = conn.execute("SELECT c.relkind IN ('p', 'r') FROM pg_class c WHERE c.oid = to_regclass(%s)",
                       (HOURLY,)).fetchone()
    return "table" if row and row[0] else None


def close_device_rollups(conn: Connection, now: datetime, heartbeats_keep: timedelta) -> dict[str, Any]:
    """Close the hours of heartbeats that ended `HOUR_CLOSE_AFTER` ago (at most
    `MAX_HOURS_PER_RUN` per call) into trygg.device_hourly, and the days they complete into
    trygg.device_daily; the watermarks move in the same transaction as the rows.
    Where trygg.device_hourly is a continuous aggregate the hours are a refresh of it
    (`_refresh_device_hourly`), and the days are computed from it as here."""
    kind = _hourly_kind(conn)
    if kind is None:
        return {"skipped": "trygg.device_hourly is neither a table nor a continuous aggregate here"}
    if kind == "continuous_aggregate":
        return _refresh_device_hourly(conn, now, heartbeats_keep)
    closed = floor_hour(now - HOUR_CLOSE_AFTER)
    with conn.transaction():
        row = conn.execute(
            "SELECT hourly_until, daily_until FROM trygg.device_rollup_state FOR UPDATE").fetchone()
        assert row is not None  # migration 0013 inserts the one row
        hourly_until: datetime | None = row[0]
        daily_until: date | None = row[1]
        start = hourly_until or floor_hour(now - heartbeats_keep)
        end = min(closed, start + timedelta(hours=MAX_HOURS_PER_RUN))
        hours = 0
        if start < end:
            partition_plan.ensure_range(conn, "trygg.device_hourly", start, end)
            hours = conn.execute(_HOURLY, {"start": start, "end": end}).rowcount
            hourly_until = end
        if hourly_until is None:
            return {"hours": 0}
        daily_until, days = _close_days(conn, start, hourly_until, daily_until)
        conn.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s, daily_until = %s",
                     (hourly_until, daily_until))
    return {"hourly_until": hourly_until.isoformat(), "hourly_rows": hours,
            "daily_until": daily_until.isoformat() if daily_until else None, "daily_rows": days}


def _close_days(conn: Connection, start: datetime, hourly_until: datetime,
                daily_until: date | None) -> tuple[date | None, int]:
    """Close into trygg.device_daily the (Oslo) days before the one holding `hourly_until`
    (they are complete), from `daily_until` (or `start`'s day) on; returns the new
    `daily_until` and the rows written."""
    day_end = _local_date(conn, hourly_until)
    day_start = daily_until or _local_date(conn, start)
    if day_start >= day_end:
        return daily_until, 0
    partition_plan.ensure_range(conn, "trygg.device_daily", _midnight(day_start), _midnight(day_end))
    days = conn.execute(_DAILY, {"start": day_start, "end": day_end}).rowcount
    return day_end, days


def _refresh_device_hourly(conn: Connection, now: datetime, heartbeats_keep: timedelta) -> dict[str, Any]:
    """TimescaleDB: refresh the continuous aggregate trygg.device_hourly for hours up to
    `HOUR_CLOSE_AFTER` ago, then close the days it completes into trygg.device_daily.

    The window starts at the raw heartbeats' retention cutoff (late heartbeats of the
    hours since are counted: only changed hours are recomputed), or earlier where the last
    refresh is behind it (raw chunks are kept until refreshed: `_rolled_up_until`), and
    never reaches into dropped raw chunks (their range is marked changed, and a refresh
    there recomputes those hours from rows that are gone, emptying them). It grows by at
    most `MAX_HOURS_PER_RUN` past the last refresh. TimescaleDB refuses the refresh inside
    a transaction: `conn` is in autocommit; the watermarks move after it."""
    closed = floor_hour(now - HOUR_CLOSE_AFTER)
    row = conn.execute("SELECT hourly_until, daily_until FROM trygg.device_rollup_state").fetchone()
    assert row is not None  # migration 0013 inserts the one row
    hourly_until: datetime | None = row[0]
    cutoff = floor_hour(now - heartbeats_keep)
    start = cutoff if hourly_until is None else min(hourly_until, cutoff)
    end = min(closed, max(start, hourly_until or start) + timedelta(hours=MAX_HOURS_PER_RUN))
    if not timescale.may_refresh(conn, HOURLY):
        # trygg_app: TimescaleDB's refresh policy (migration 0014) refreshes it as its owner
        policy = timescale.continuous_aggregate_watermark(conn, HOURLY)
        if policy is None:
            return {"skipped": "trygg.device_hourly not refreshed yet by its policy"}
        start = end = min(closed, policy)
    elif start < end:
        timescale.refresh_continuous_aggregate(conn, HOURLY, start, end)
    refreshed_until = max(end, hourly_until) if hourly_until else end
    # the rows of the hours closed now (as the plain path counts its hourly rows)
    counted = conn.execute(f"SELECT count(*) FROM {HOURLY} WHERE hour >= %s AND hour < %s",
                           (hourly_until or start, refreshed_until)).fetchone()
    with conn.transaction():
        row = conn.execute(
            "SELECT hourly_until, daily_until FROM trygg.device_rollup_state FOR UPDATE").fetchone()
        assert row is not None
        daily_until, days = _close_days(conn, start, refreshed_until, row[1])
        conn.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s, daily_until = %s",
                     (refreshed_until, daily_until))
    return {"refreshed": [start.isoformat(), end.isoformat()] if start < end else [],
            "hourly_until": refreshed_until.isoformat(), "hourly_rows": counted[0] if counted else 0,
            "daily_until": daily_until.isoformat() if daily_until else None, "daily_rows": days}


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _local_date(conn: Connection, t: datetime) -> date:
    row = conn.execute(f"SELECT (%s::timestamptz AT TIME ZONE '{ROLLUP_ZONE}')::date", (t,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _rolled_up_until(conn: Connection) -> dict[str, datetime | None]:
    """Raw data is dropped only once it is rolled up: heartbeats up to `hourly_until`,
    hourly rows up to `daily_until` (where Trygg keeps the device rollups)."""
    if not device_rollups_active(conn):
        return {}
    row = conn.execute("SELECT hourly_until, daily_until FROM trygg.device_rollup_state").fetchone()
    hourly, daily = (row or (None, None))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return {"trygg.heartbeats": hourly or epoch,
            "trygg.device_hourly": as_time(daily) if daily else epoch}


# --- retention --------------------------------------------------------------------------

def _kind(conn: Connection, parent: str) -> str | None:
    """'chunks' (a TimescaleDB hypertable or continuous aggregate), 'partitioned', or None
    (missing, or a table maintenance leaves alone)."""
    if timescale.is_hypertable(conn, parent) or timescale.is_continuous_aggregate(conn, parent):
        return "chunks"
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (parent,)).fetchone()
    return "partitioned" if row and row[0] == "p" else None


def chunk_cutoff(keep: timedelta, now: datetime, closed_until: datetime | None = None) -> datetime:
    """`older_than` for drop_chunks: it drops a chunk whose upper bound is at or before it,
    so this is the partitions' rule of `expired` (upper bound before `now - keep`, and not
    after `closed_until`) one microsecond earlier."""
    limit = now - keep
    if closed_until is not None:
        limit = min(limit, closed_until + timedelta(microseconds=1))
    return limit - timedelta(microseconds=1)


def plan(conn: Connection, retention: Retention, now: datetime) -> list[Expired]:
    """What retention would drop now, without dropping it (`trygg maintain --dry-run`)."""
    out: list[Expired] = []
    rolled = _rolled_up_until(conn)
    for parent, keep in retention.by_parent().items():
        kind = _kind(conn, parent)
        if kind == "chunks":
            out += [Expired(parent, str(r[0]), None) for r in conn.execute(
                "SELECT c::text FROM show_chunks(%s::regclass, older_than => %s::timestamptz) c",
                (parent, chunk_cutoff(keep, now, rolled.get(parent))))]
        elif kind == "partitioned":
            leaves = partition_plan.partitions(conn, parent)
            out += [Expired(parent, p.name, as_time(p.upper))
                    for p in expired(leaves, keep, now, closed_until=rolled.get(parent))]
    return out


def apply_retention(conn: Connection, retention: Retention, now: datetime) -> dict[str, Any]:
    """Drop every partition past its class's limit; one that cannot be dropped now (a lock
    not had in time) is named in the error and tried again next run, with the later
    leaves of its table (a table has one detach at a time)."""
    owned = _owned_parents(conn)
    keeps = retention.by_parent()
    rolled = _rolled_up_until(conn)
    items = plan(conn, retention, now)
    jobs: list[tuple[str, str, Callable[[], list[str]]]] = [
        (parent, parent, partial(_drop_chunks, conn, parent, chunk_cutoff(keeps[parent], now, rolled.get(parent)),
                                 now, owned=parent in owned))
        for parent in sorted({e.parent for e in items if e.upper is None})  # TimescaleDB: a class at once
    ]
    jobs += [(e.parent, e.name, partial(_drop_partition, conn, e.parent, e.name, keeps[e.parent],
                                        owned=e.parent in owned))
             for e in items if e.upper is not None]
    dropped: list[str] = []
    failed: dict[str, str] = {}
    later: dict[str, int] = {}  # per table whose drop failed: its leaves left for the next run
    with ddl_lock_timeout(conn):
        for parent, name, job in jobs:
            if parent in later:
                later[parent] += 1
                continue
            try:
                names = job()
            except psycopg.Error as exc:
                if conn.broken:
                    raise
                failed[name] = str(exc).strip().splitlines()[0]
                later[parent] = 0
                log.warning("partition_not_dropped", table=parent, partition=name, error=failed[name])
                continue
            for each in names:
                PARTITIONS_DROPPED.labels(parent).inc()
                log.info("partition_dropped", table=parent, partition=each, keep_days=keeps[parent].days)
            dropped += names
    detail: dict[str, Any] = {"dropped": dropped}
    if failed:
        detail["not_dropped"] = failed
        more = sum(later.values())
        raise StepError("not dropped now, tried again next run: "
                        + "; ".join(f"{name} ({error})" for name, error in failed.items())
                        + (f"; {more} more after it" if more else ""), detail)
    return detail


def _owned_parents(conn: Connection) -> set[str]:
    """Parents the current role may DETACH from (it owns them, or is a member of their owner)."""
    rows = conn.execute(
        "SELECT p.parent FROM (SELECT parent FROM trygg.partition_plan UNION SELECT %s) p"
        " JOIN pg_class c ON c.oid = to_regclass(p.parent)"
        " WHERE pg_has_role(c.relowner, 'USAGE')"
        " AND NOT EXISTS (SELECT 1 FROM pg_partitioned_table t WHERE t.partrelid = c.oid AND t.partdefid <> 0)",
        (HOURLY,))  # (a continuous aggregate trygg.device_hourly is not in the plan)
    return {str(r[0]) for r in rows}


def _drop_partition(conn: Connection, parent: str, leaf: str, keep: timedelta, *, owned: bool) -> list[str]:
    if not owned:  # the owner's function (also where the parent has a DEFAULT partition)
        row = conn.execute("SELECT trygg.drop_expired_partition(%s, %s, %s)", (parent, leaf, keep)).fetchone()
        return [leaf] if row and row[0] else []
    parent_id = sql.Identifier(*parent.split("."))
    leaf_id = sql.Identifier(*leaf.split("."))
    row = conn.execute(
        "SELECT i.inhdetachpending FROM pg_inherits i"
        " WHERE i.inhparent = to_regclass(%s) AND i.inhrelid = to_regclass(%s)", (parent, leaf)).fetchone()
    if row is not None:
        how = sql.SQL("FINALIZE") if row[0] else sql.SQL("CONCURRENTLY")
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(parent_id, leaf_id, how))
    try:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(leaf_id))
    except psycopg.errors.LockNotAvailable:  # someone reads it by its name: it is no partition any more
        log.error("partition_detached_not_dropped", table=parent, partition=leaf)
        raise
    return [leaf]


def _drop_chunks(conn: Connection, parent: str, older_than: datetime, now: datetime, *, owned: bool) -> list[str]:
    if owned:
        return timescale.drop_old_chunks(conn, parent, older_than)
    # the owner's function takes a keep (from its own now(), never under the class's floor)
    rows = conn.execute("SELECT c FROM trygg.drop_expired_chunks(%s, %s) c", (parent, now - older_than))
    return [str(r[0]) for r in rows]


def _prune_insight_notices(conn: Connection, now: datetime, keep: timedelta) -> dict[str, Any]:
    """Notices of days older than the events they came from (their days are dropped with
    the partitions of trygg.insight_days)."""
    if conn.execute("SELECT to_regclass('trygg.insight_notices')").fetchone() == (None,):
        return {"removed": 0}
    cur = conn.execute("DELETE FROM trygg.insight_notices WHERE day < %s", ((now - keep).date(),))
    return {"removed": cur.rowcount}


def _prune_log(conn: Connection, now: datetime) -> dict[str, Any]:
    cur = conn.execute("DELETE FROM trygg.maintenance_log WHERE started_at < %s", (now - LOG_KEEP,))
    return {"removed": cur.rowcount}


__all__ = [
    "EVENT_KEYS_KEEP",
    "LOCK_KEY",
    "Expired",
    "Report",
    "Retention",
    "Step",
    "StepResult",
    "apply_retention",
    "chunk_cutoff",
    "close_device_rollups",
    "expired",
    "oldest_kept",
    "plan",
    "run",
]
