"""A year of history for benchmarks: a database of its own (`trygg_bench_history`),
migrated with `storage.migrate`, holding what a fleet of `residents` stores in a year.

The registry is saved through the project's own path (`storage.save_registry`, then the
research pseudonyms through `dashboard.research.sync_pseudonyms`), so the consent views,
pseudonyms and location bases behave as in production. The events are made in SQL, one
month at a time: `generate_series` rows into a table shaped like a partition (UNLOGGED for
past months; the current month, where ingest writes, is an ordinary logged table), in
time order, vacuumed, indexed after loading, checked by a CHECK constraint and ATTACHed
as the month's partition of `trygg.events`. The same tables as the COPY path, in a
fraction of its time.

The fleet: every resident has an alarm unit, a motion sensor, a door sensor and a smoke
detector; some a door lock (30 %), a fall sensor (25 %), a GPS tracker (20 %, three in
four of them with a location basis). 90 % consent to research, half to the relatives'
status. Events: motion dominant, doors opened and closed, locks, positions (trackers
under a basis only), rare alarms, falls and smoke; a diurnal pattern (most between 06:30
and 22:30 Oslo time) and per-resident activity levels (at 5,000 residents the busiest
about 7 times the average, the quietest about 0.8 times). No heartbeats in
`trygg.events`: they live in `trygg.heartbeats` (`--heartbeat-days` of them, every
device at 60 s; none by default). Alerts for alarms, falls and smoke (resolved, with
realistic response times) for the research response-time query. The de-duplication keys
of the last 30 days (the acceptance window; older ones would have been pruned) go into
the weekly leaves of `trygg.event_keys`.

The research rollups are built by `storage.rollups.rebuild(conn, since, until)`
(`build_rollups`), as `trygg maintain` would have closed them hour by hour.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from storage import rollups, save_registry
from trygg.registry import parse_registry

DEFAULT_DB = "trygg_bench_history"
DEFAULT_EVENTS = 50_000_000
DEFAULT_RESIDENTS = 5_000
#: days of raw heartbeats loaded into trygg.heartbeats; none by default. The class
#: keeps 14, but every device at 60 s is 6,840 rows per resident-day (4.75 devices): one
#: day of 5,000 residents is 34 million rows, which took over 8 minutes to insert in time
#: order on this machine (the primary key grows as in production, far beyond
#: shared_buffers), 14 days ≈ 480 million rows, ~65 GB at the 137 bytes a heartbeat
#: measured. Neither research nor ingest of safety events reads them; docs/storage.md
#: "Sizing" extrapolates from the bytes per heartbeat. `--heartbeat-days 1` for an
#: ingest of heartbeats (`bench/ingest --type heartbeat`) into a full day's leaf.
DEFAULT_HEARTBEAT_DAYS = 0
KEY_WINDOW = timedelta(days=30)
PSEUDONYM_KEY = b"k" * 32  # the benches' TRYGG_PSEUDONYM_KEY
TEAMS = 20

Log = Callable[[str], None]


def say(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class History:
    url: str
    events: int
    residents: int
    since: datetime
    until: datetime


def history_url(admin_url: str, name: str = DEFAULT_DB) -> str:
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


# --- the registry -------------------------------------------------------------------------


def resident_id(i: int) -> str:
    return f"r{i:05d}"


def registry_document(residents: int, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The fleet as a registry document (docs/contract.md §3 registry file)."""
    people = []
    for i in range(residents):
        rid = resident_id(i)
        devices = [{"id": f"{rid}-{kind}", "kind": k} for kind, k in (
            ("alarm", "alarm_unit"), ("motion", "motion_sensor"), ("door", "door_sensor"),
            ("smoke", "smoke_detector"))]
        if i % 10 < 3:
            devices.append({"id": f"{rid}-lock", "kind": "door_lock"})
        if i % 4 == 1:
            devices.append({"id": f"{rid}-fall", "kind": "fall_sensor"})
        person: dict[str, Any] = {
            "id": rid, "name": f"Resident {i}", "team": f"team-{i % TEAMS:02d}", "devices": devices,
            "consents": {"research": i % 10 != 9, "relatives_status": i % 2 == 0},
        }
        if i % 5 == 2:
            devices.append({"id": f"{rid}-gps", "kind": "gps_tracker"})
            if i % 20 != 17:
                person["location_basis"] = {"kind": "vedtak" if i % 3 else "consent"}
        people.append(person)
    return {"teams": [{"id": f"team-{t:02d}", "name": f"Team {t}"} for t in range(TEAMS)],
            "residents": people + (extra or [])}


def save_fleet(conn: psycopg.Connection[Any], residents: int, extra: list[dict[str, Any]] | None = None) -> None:
    """Save the registry through the project's own load path (`storage.save_registry`)."""
    reg = parse_registry(json.dumps(registry_document(residents, extra)))
    save_registry(conn, reg, actor="bench")
    conn.commit()


async def _pseudonyms(url: str) -> int:
    from dashboard.research import sync_pseudonyms

    async with await psycopg.AsyncConnection.connect(url) as conn:
        n = await sync_pseudonyms(conn, PSEUDONYM_KEY)
        await conn.commit()
        return n


def sync_pseudonyms(url: str) -> int:
    return asyncio.run(_pseudonyms(url))


# --- the events ---------------------------------------------------------------------------

# One row per resident for the generator: `pick` is a random permutation, so that the
# skewed draw below (low picks more often) makes a random set of residents the busy ones.
_RESIDENT_TABLE = """
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.residents;
CREATE TABLE bench.residents AS
SELECT (row_number() OVER (ORDER BY md5(r.id)) - 1)::int AS pick,
       r.id AS rid, r.team_id AS team,
       max(d.id) FILTER (WHERE d.kind = 'alarm_unit') AS alarm,
       max(d.id) FILTER (WHERE d.kind = 'motion_sensor') AS motion,
       max(d.id) FILTER (WHERE d.kind = 'door_sensor') AS door,
       max(d.id) FILTER (WHERE d.kind = 'smoke_detector') AS smoke,
       max(d.id) FILTER (WHERE d.kind = 'door_lock') AS lock,
       max(d.id) FILTER (WHERE d.kind = 'fall_sensor') AS fall,
       max(d.id) FILTER (WHERE d.kind = 'gps_tracker') AS gps,
       bool_or(d.kind = 'gps_tracker') AND r.location_basis IS NOT NULL AS located,
       59.9 + (hashtext(r.id) % 1000) / 10000.0 AS lat,
       10.7 + (hashtext(r.id || 'x') % 1000) / 10000.0 AS lon
FROM trygg.residents r JOIN trygg.devices d ON d.resident_id = r.id
WHERE r.id ~ '^r[0-9]{5,}$'
GROUP BY r.id, r.team_id, r.location_basis;
CREATE UNIQUE INDEX ON bench.residents (pick);
ANALYZE bench.residents;
"""

# %(...)s: n rows, `residents`, [lo, hi) the span to fill, `days` whole days from lo, tag
# for unique event ids. The hour of day: 82 % between 05:30 and 21:30 UTC (06:30–22:30 in
# Oslo in winter), the rest at any hour.
_GENERATE = """
INSERT INTO {target} (device_id, event_id, resident_id, type, ts, received_at, data)
SELECT CASE
         WHEN t.type LIKE 'alarm.%%' THEN r.alarm
         WHEN t.type = 'fall.detected' THEN r.fall
         WHEN t.type LIKE 'smoke.%%' THEN r.smoke
         WHEN t.type IN ('door.opened', 'door.closed') THEN r.door
         WHEN t.type IN ('door.unlocked', 'door.locked') THEN r.lock
         WHEN t.type = 'location' THEN r.gps
         ELSE r.motion END,
       %(tag)s || g.i, r.rid, t.type, g.ts, g.ts + (0.05 + g.u2 * 1.5) * interval '1 second',
       CASE t.type
         WHEN 'motion' THEN (ARRAY['{{"room": "bedroom"}}', '{{"room": "kitchen"}}',
                                   '{{"room": "bathroom"}}', '{{"room": "living room"}}',
                                   '{{"room": "hall"}}']::jsonb[])[1 + floor(g.u2 * 5)::int]
         WHEN 'door.opened' THEN '{{"door": "front"}}'::jsonb
         WHEN 'door.closed' THEN '{{"door": "front"}}'::jsonb
         WHEN 'door.unlocked' THEN '{{"by": "resident"}}'::jsonb
         WHEN 'door.locked' THEN '{{"by": "resident"}}'::jsonb
         WHEN 'location' THEN jsonb_build_object('lat', round((r.lat + (g.u2 - 0.5) * 0.02)::numeric, 5),
                                                 'lon', round((r.lon + (g.u - 0.5) * 0.04)::numeric, 5),
                                                 'accuracy_m', 5 + floor(g.u2 * 30)::int)
         WHEN 'fall.detected' THEN '{{"confidence": 0.9}}'::jsonb
         WHEN 'battery.low' THEN '{{"battery_pct": 15}}'::jsonb
         ELSE '{{}}'::jsonb END
FROM (
    SELECT i, u, u2, CASE WHEN ts0 < %(hi)s THEN ts0 ELSE %(lo)s + random() * (%(hi)s - %(lo)s) END AS ts,
           floor(%(residents)s * power(random(), 1.3))::int AS pick
    FROM (
        SELECT i, random() AS u, random() AS u2,
               %(lo)s + floor(random() * %(days)s) * interval '1 day'
               + CASE WHEN random() < 0.82 THEN 19800 + random() * 57600 ELSE random() * 86400 END
                 * interval '1 second' AS ts0
        FROM generate_series(1, %(n)s) AS i
    ) raw
) g
JOIN bench.residents r ON r.pick = g.pick
CROSS JOIN LATERAL (SELECT CASE
    WHEN g.u < 0.0025 THEN 'alarm.button'
    WHEN g.u < 0.0030 THEN 'alarm.cancel'
    WHEN g.u < 0.0036 THEN CASE WHEN r.fall IS NOT NULL THEN 'fall.detected' ELSE 'alarm.button' END
    WHEN g.u < 0.0038 THEN 'smoke.detected'
    WHEN g.u < 0.0040 THEN 'smoke.cleared'
    WHEN g.u < 0.0050 THEN 'battery.low'
    WHEN g.u < 0.0950 THEN 'door.opened'
    WHEN g.u < 0.1850 THEN 'door.closed'
    WHEN g.u < 0.2350 THEN CASE WHEN r.lock IS NOT NULL THEN 'door.unlocked' ELSE 'motion' END
    WHEN g.u < 0.2850 THEN CASE WHEN r.lock IS NOT NULL THEN 'door.locked' ELSE 'motion' END
    WHEN g.u < 0.4350 THEN CASE WHEN r.located THEN 'location' ELSE 'motion' END
    ELSE 'motion' END AS type) t
ORDER BY g.ts
"""


def _partitioned(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s))",
                       (table,)).fetchone()
    return bool(row and row[0])


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def hypertable(conn: psycopg.Connection[Any], table: str) -> bool:
    """Whether `table` is a TimescaleDB hypertable (its chunks and keys are its own)."""
    if not _exists(conn, "_timescaledb_catalog.hypertable"):
        return False
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable"
                       " WHERE format('%%I.%%I', schema_name, table_name)::regclass = %s::regclass)",
                       (table,)).fetchone()
    return bool(row and row[0])


def _events_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """The partitioned indexes of trygg.events as column/method clauses, e.g.
    `USING btree (resident_id, ts)`: made on each loaded month before it is attached,
    so that ATTACH adopts them instead of building them under its lock."""
    rows = conn.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index"
                        " WHERE indrelid = 'trygg.events'::regclass").fetchall()
    return [str(r[0])[str(r[0]).index(" USING "):] for r in rows]


def _months(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    out = []
    m = since.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while m < until:
        nxt = (m.replace(day=28) + timedelta(days=4)).replace(day=1)
        out.append((m, nxt))
        m = nxt
    return out


def _drop_empty_partition(conn: psycopg.Connection[Any], name: str) -> None:
    """A month partition the migration made ahead: empty in a new database; replaced."""
    if not _exists(conn, f"trygg.{name}"):
        return
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM trygg.{})").format(sql.Identifier(name))).fetchone()
    if row and row[0]:
        raise SystemExit(f"trygg.{name} already holds rows: load into a fresh database")
    conn.execute(sql.SQL("ALTER TABLE trygg.events DETACH PARTITION trygg.{}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP TABLE trygg.{}").format(sql.Identifier(name)))


def load_events(conn: psycopg.Connection[Any], events: int, residents: int, since: datetime, until: datetime,
                log: Log) -> None:
    """`events` rows over [since, until), month by month, each attached as a partition
    (or, where trygg.events is a TimescaleDB hypertable, inserted into it)."""
    conn.execute(_RESIDENT_TABLE)
    partitioned = _partitioned(conn, "trygg.events")
    indexes = _events_indexes(conn) if partitioned else []
    span = (until - since).total_seconds()
    done = 0
    months = _months(since, until)
    for k, (m0, m1) in enumerate(months):
        lo, hi = max(m0, since), min(m1, until)
        n = round(events * (hi - lo).total_seconds() / span) if k < len(months) - 1 else events - done
        name = f"events_{m0:%Y_%m}"
        t0 = time.monotonic()
        params = {"n": n, "residents": residents, "lo": lo, "hi": hi, "tag": f"h{k:02d}-",
                  "days": math.ceil((hi - lo).total_seconds() / 86400)}
        if not partitioned:
            conn.execute(sql.SQL(_GENERATE).format(target=sql.SQL("trygg.events")), params)
        else:
            _drop_empty_partition(conn, name)
            current = m0 <= datetime.now(UTC) < m1  # ingest writes here: logged, like production
            stage = sql.Identifier(name)
            conn.execute(sql.SQL("CREATE {} TABLE trygg.{} (LIKE trygg.events INCLUDING DEFAULTS)").format(
                sql.SQL("" if current else "UNLOGGED"), stage))
            conn.execute(sql.SQL(_GENERATE).format(target=sql.SQL("trygg.{}").format(stage)), params)
            conn.execute(sql.SQL("VACUUM (ANALYZE) trygg.{}").format(stage))
            for i, clause in enumerate(indexes):
                conn.execute(sql.SQL("CREATE INDEX {} ON trygg.{} " + clause).format(
                    sql.Identifier(f"{name}_bench_{i}"), stage))
            conn.execute(sql.SQL("ALTER TABLE trygg.{} ADD CONSTRAINT {} CHECK (ts >= {} AND ts < {})").format(
                stage, sql.Identifier(f"{name}_range"), sql.Literal(m0), sql.Literal(m1)))
            conn.execute(sql.SQL("ALTER TABLE trygg.events ATTACH PARTITION trygg.{} FOR VALUES FROM ({}) TO ({})")
                         .format(stage, sql.Literal(m0), sql.Literal(m1)))
        done += n
        s = time.monotonic() - t0
        log(f"  {m0:%Y-%m}: {n:>11,} events in {s:6.1f} s ({n / max(s, 1e-9):>9,.0f} rows/s)"
            f"  total {done:,}")
    if not partitioned:
        conn.execute("VACUUM (ANALYZE) trygg.events")
    conn.execute("ANALYZE trygg.events")


# --- keys, alerts, device status, heartbeats -----------------------------------------------


def load_keys(conn: psycopg.Connection[Any], since: datetime, until: datetime) -> int:
    """The de-duplication keys of the events received in [since, until), in the weekly
    leaves of trygg.event_keys (`stored_at`: when they were received), in the order they
    arrive, so that each leaf's unique index grows as in production."""
    # The leaf migration 0011 made of the old table (MINVALUE up to the Monday after the
    # migration) would hold every key of a new database; a database a month past its
    # migration has weekly leaves only, and so has this one.
    if _exists(conn, "trygg.event_keys_legacy") and conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM trygg.event_keys_legacy)").fetchone() == (True,):
        conn.execute("ALTER TABLE trygg.event_keys DETACH PARTITION trygg.event_keys_legacy")
        conn.execute("DROP TABLE trygg.event_keys_legacy")
    conn.execute("SELECT trygg.ensure_partitions('trygg.event_keys', %s, %s)",
                 (since - timedelta(days=7), until + timedelta(days=14)))
    cur = conn.execute(
        "INSERT INTO trygg.event_keys (device_id, event_id, received_at, type, ts, stored_at)"
        " SELECT device_id, event_id, received_at, type, ts, received_at FROM trygg.events"
        " WHERE received_at >= %s AND received_at < %s AND ts >= %s ORDER BY received_at",
        (since, until + timedelta(minutes=1), since - timedelta(minutes=1)))
    n = cur.rowcount
    conn.execute("VACUUM (ANALYZE) trygg.event_keys")
    return n


_ALERTS = """
INSERT INTO trygg.alerts (alert_id, resident_id, team_id, kind, priority, state, opened_at, updated_at,
    acknowledged_at, acknowledged_by, resolved_at, resolved_by, closed_at, event_count, escalation_level,
    escalated_at, trigger, last_event, teams, version, transition_count)
SELECT 'a-' || e.event_id, e.resident_id, r.team, k.kind, 'critical', 'resolved', e.received_at, e.resolved,
       e.acked, 'staff-' || (hashtext(e.event_id) & 31), e.resolved, 'staff-' || (hashtext(e.event_id) & 31),
       e.resolved, 1, CASE WHEN e.acked - e.received_at > interval '3 minutes' THEN 1 ELSE 0 END,
       e.received_at, e.doc, e.doc, ARRAY[r.team], 3, 3
FROM (SELECT ev.*, jsonb_build_object('device_id', ev.device_id, 'event_id', ev.event_id, 'type', ev.type,
                                      'ts', ev.ts, 'data', ev.data) AS doc,
             ev.received_at + (15 + 165 * power(random(), 2)) * interval '1 second' AS acked,
             ev.received_at + (300 + 2400 * random()) * interval '1 second' AS resolved
      FROM trygg.events ev WHERE ev.type IN ('alarm.button', 'fall.detected', 'smoke.detected')) e
JOIN bench.residents r ON r.rid = e.resident_id
CROSS JOIN LATERAL (SELECT CASE e.type WHEN 'alarm.button' THEN 'alarm' WHEN 'fall.detected' THEN 'fall'
                                       ELSE 'smoke' END AS kind) k
"""

_DEVICE_STATUS = """
INSERT INTO trygg.device_status (device_id, online, status_at, last_seen)
SELECT d.id, true, %(until)s - interval '20 days', %(until)s - random() * interval '60 seconds'
FROM trygg.devices d JOIN bench.residents r ON r.rid = d.resident_id
ON CONFLICT (device_id) DO NOTHING
"""

_HEARTBEATS = """
INSERT INTO trygg.heartbeats (device_id, ts, received_at, battery_pct)
SELECT d.id, t.ts, t.ts + interval '200 milliseconds', (100 - (hashtext(d.id) & 63))::smallint
FROM trygg.devices d JOIN bench.residents r ON r.rid = d.resident_id
CROSS JOIN LATERAL (
    SELECT %(lo)s + m * interval '60 seconds' + (hashtext(d.id) & 59) * interval '1 second' AS ts
    FROM generate_series(0, %(minutes)s - 1) AS m
) t
WHERE t.ts < %(hi)s
ORDER BY t.ts, d.id
"""


def load_heartbeats(conn: psycopg.Connection[Any], days: int, until: datetime, log: Log) -> int:
    """`days` days of raw heartbeats in trygg.heartbeats, every device at 60 s, day by day."""
    if days <= 0:
        return 0
    since = until - timedelta(days=days)
    # daily leaves (a no-op where trygg.heartbeats is a TimescaleDB hypertable)
    conn.execute("SELECT trygg.ensure_partitions('trygg.heartbeats', %s, %s)",
                 (since - timedelta(days=1), until + timedelta(days=2)))
    total = 0
    day = since
    while day < until:
        t0 = time.monotonic()
        hi = min(day + timedelta(days=1), until)
        cur = conn.execute(_HEARTBEATS, {"lo": day, "hi": hi, "minutes": 1440})
        total += cur.rowcount
        s = time.monotonic() - t0
        log(f"  heartbeats {day:%Y-%m-%d %H:%M}: {cur.rowcount:>11,} rows in {s:6.1f} s "
            f"({cur.rowcount / max(s, 1e-9):>9,.0f} rows/s)")
        day = hi
    conn.execute("VACUUM (ANALYZE) trygg.heartbeats")
    return total


def build_rollups(conn: psycopg.Connection[Any], since: datetime, until: datetime, log: Log) -> float:
    """The research rollups over the loaded history (`storage.rollups.rebuild`), which the
    bulk load bypassed the event writer for; returns the seconds it took."""
    t0 = time.monotonic()
    rollups.rebuild(conn, since, until)
    # statistics, as autovacuum would have gathered them in a database filled over a
    # year (without them a year's rollup rows are estimated at a few thousand)
    conn.execute("ANALYZE trygg.research_hourly, trygg.research_daily, trygg.research_alerts_daily,"
                 " trygg.research_ordinals, trygg.research_cohort, trygg.research_pseudonyms")
    s = time.monotonic() - t0
    log(f"  research rollups rebuilt in {s:.1f} s")
    return s


# --- the whole load -------------------------------------------------------------------------


_META = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.history (
    events bigint NOT NULL, residents int NOT NULL, since timestamptz NOT NULL, until timestamptz NOT NULL,
    heartbeats bigint NOT NULL, keys bigint NOT NULL, load_s real NOT NULL, timings jsonb NOT NULL
);
"""


def loaded(url: str) -> History | None:
    """The history already in the database at `url` (None when there is none)."""
    try:
        with psycopg.connect(url) as conn:
            if not _exists(conn, "bench.history"):
                return None
            row = conn.execute("SELECT events, residents, since, until FROM bench.history").fetchone()
    except psycopg.OperationalError:
        return None
    return None if row is None else History(url, int(row[0]), int(row[1]), row[2], row[3])


def drop(admin_url: str, name: str = DEFAULT_DB) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def load(admin_url: str, *, events: int = DEFAULT_EVENTS, residents: int = DEFAULT_RESIDENTS,
         name: str = DEFAULT_DB, reuse: bool = False, heartbeat_days: int = DEFAULT_HEARTBEAT_DAYS,
         log: Log = say) -> History:
    """A database `name` on the server of `admin_url` holding a year of history; with
    `reuse`, the one already loaded there (any size). Only the database `name` is ever
    created or dropped."""
    url = history_url(admin_url, name)
    if reuse:
        found = loaded(url)
        if found is None:
            raise SystemExit(f"--reuse: no loaded history in database {name}")
        log(f"reusing {name}: {found.events:,} events of {found.residents:,} residents, "
            f"{found.since:%Y-%m-%d} – {found.until:%Y-%m-%d %H:%M}")
        return found
    from tests.fix_db import migrate_url

    drop(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    started = time.monotonic()
    timings: dict[str, float] = {}
    migrate_url(url)
    until = datetime.now(UTC).replace(second=0, microsecond=0)
    since = until - timedelta(days=365)
    log(f"loading {events:,} events of {residents:,} residents over {since:%Y-%m-%d} – {until:%Y-%m-%d %H:%M} "
        f"into database {name}")
    with psycopg.connect(url) as conn:
        t0 = time.monotonic()
        save_fleet(conn, residents)
        timings["registry_s"] = time.monotonic() - t0
    timings["pseudonyms"] = sync_pseudonyms(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET work_mem = '256MB'")
        conn.execute("SET synchronous_commit = off")
        t0 = time.monotonic()
        load_events(conn, events, residents, since, until, log)
        timings["events_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        keys = load_keys(conn, until - KEY_WINDOW, until)
        timings["keys_s"] = time.monotonic() - t0
        log(f"  {keys:,} de-duplication keys (the last 30 days) in {timings['keys_s']:.1f} s")
        t0 = time.monotonic()
        alerts = conn.execute(_ALERTS).rowcount
        conn.execute(_DEVICE_STATUS, {"until": until})
        conn.execute("VACUUM (ANALYZE) trygg.alerts, trygg.device_status")
        timings["alerts_s"] = time.monotonic() - t0
        log(f"  {alerts:,} alerts, device status in {timings['alerts_s']:.1f} s")
        t0 = time.monotonic()
        heartbeats = load_heartbeats(conn, heartbeat_days, until, log)
        timings["heartbeats_s"] = time.monotonic() - t0
        timings["rollups_s"] = build_rollups(conn, since, until, log)
        total = time.monotonic() - started
        conn.execute(_META)
        conn.execute("INSERT INTO bench.history VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                     (events, residents, since, until, heartbeats, keys, total, json.dumps(timings)))
    log(f"loaded in {total:.0f} s ({events / total:,.0f} events/s overall)")
    return History(url, events, residents, since, until)


__all__ = ["DEFAULT_DB", "History", "build_rollups", "drop", "history_url", "hypertable", "load", "loaded",
           "registry_document", "save_fleet", "sync_pseudonyms"]
