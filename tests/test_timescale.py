"""TimescaleDB (docs/storage.md "TimescaleDB"; issue 16 item 6): the engine decision
before any migration, on both server states — installed and preloaded, installed but not
preloaded — and the hypertable, chunk-retention and continuous-aggregate paths, for real
on private servers (tests/fix_timescale.py; skipped with the reason where the build is
absent). Plain PostgreSQL stays the default: the rest of the suite runs on it, and the
last test here checks that migration 0014 leaves it as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import structlog

from storage import EventStore, Pool, migrate
from storage.errors import EngineError
from storage.maintenance import Retention, floor_hour, run
from storage.migrate import available
from storage.timescale import (
    NOT_PRELOADED,
    OFF_WARNING,
    PLAIN_WARNING,
    Decision,
    ServerState,
    decide,
    drop_old_chunks,
    is_continuous_aggregate,
    is_hypertable,
    refresh_continuous_aggregate,
    server_state,
)
from tests.fix_db import PoolOf, migrate_url, scalar
from tests.fix_timescale import TimescaleServer
from trygg.contract import Event, EventType

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

# --- the decision, as a table (no server) ---------------------------------------------

@pytest.mark.parametrize(("mode", "state", "expected"), [
    # a new database
    ("auto", ServerState(False, False, False, None), Decision("postgresql", False, None)),
    ("auto", ServerState(True, False, True, None), Decision("timescaledb", True, None)),
    ("auto", ServerState(True, True, True, None), Decision("timescaledb", False, None)),
    ("on", ServerState(True, False, True, None), Decision("timescaledb", True, None)),
    ("off", ServerState(True, False, True, None), Decision("postgresql", False, OFF_WARNING)),
    ("off", ServerState(True, False, False, None), Decision("postgresql", False, OFF_WARNING)),
    ("off", ServerState(False, False, False, None), Decision("postgresql", False, None)),
    # a database that has its engine already: the setting cannot convert it
    ("auto", ServerState(True, True, True, "timescaledb"), Decision("timescaledb", False, None)),
    ("auto", ServerState(False, False, False, "postgresql"), Decision("postgresql", False, None)),
    ("auto", ServerState(True, False, True, "postgresql"), Decision("postgresql", False, PLAIN_WARNING)),
    ("auto", ServerState(True, False, False, "postgresql"), Decision("postgresql", False, PLAIN_WARNING)),
    ("off", ServerState(True, False, False, "postgresql"), Decision("postgresql", False, OFF_WARNING)),
])
def test_the_engine_decision(mode: str, state: ServerState, expected: Decision) -> None:
    assert decide(mode, state) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "state", "says"), [
    ("auto", ServerState(True, False, False, None), "shared_preload_libraries = 'timescaledb'"),
    ("on", ServerState(True, False, False, None), "shared_preload_libraries = 'timescaledb'"),
    ("on", ServerState(False, False, False, None), "no timescaledb extension"),
    ("on", ServerState(True, False, True, "postgresql"), "cannot become hypertables"),
    ("off", ServerState(True, True, True, "timescaledb"), "already uses TimescaleDB"),
    ("auto", ServerState(True, True, False, "timescaledb"), "does not preload it"),
    ("off", ServerState(True, True, False, "postgresql"), "does not preload it"),
])
def test_what_the_decision_refuses_it_says_in_one_line(mode: str, state: ServerState, says: str) -> None:
    with pytest.raises(EngineError) as refused:
        decide(mode, state)  # type: ignore[arg-type]
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


# --- the two server states --------------------------------------------------------------

def test_the_preload_check_tells_the_two_servers_apart_for_any_role(
        timescale_server: TimescaleServer, unloaded_timescale_server: TimescaleServer) -> None:
    for server, preloaded in ((timescale_server, True), (unloaded_timescale_server, False)):
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS plain_reader")
            conn.execute("CREATE ROLE plain_reader LOGIN")
        url = psycopg.conninfo.make_conninfo(server.url(), user="plain_reader")
        with psycopg.connect(url) as conn:
            state = server_state(conn)
            hidden = conn.execute("SELECT count(*) FROM pg_settings"
                                  " WHERE name = 'shared_preload_libraries'").fetchone()
        assert state == ServerState(available=True, installed=False, preloaded=preloaded, events=None)
        assert hidden == (0,), "shared_preload_libraries became readable: the check could use it"


def test_create_extension_without_the_preload_ends_the_connection_as_the_issue_saw(
        timescale_server: TimescaleServer, unloaded_timescale_server: TimescaleServer) -> None:
    url = unloaded_timescale_server.create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            with pytest.raises(psycopg.Error, match="must be preloaded") as ended:
                conn.execute("CREATE EXTENSION timescaledb")
            assert ended.value.diag.severity == "FATAL"
            with pytest.raises(psycopg.OperationalError, match="the connection is closed"):
                conn.execute("SELECT 1")
    finally:
        unloaded_timescale_server.drop_database(url)
    url = timescale_server.create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION timescaledb")
            assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                                ).fetchone() == (timescale_server.prefix.version,)
    finally:
        timescale_server.drop_database(url)


def trygg(command: str, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`trygg <command>` as an operator runs it, against the database at `url`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    environment.update(TRYGG_DATABASE_URL=url, TRYGG_LOG_FORMAT="json", TRYGG_MQTT_URL="mqtt://127.0.0.1:1",
                       TRYGG_PSEUDONYM_KEY="a-pseudonym-key-for-tests",
                       TRYGG_SESSION_SECRET="a-session-secret-for-tests", **env)
    return subprocess.run([sys.executable, "-m", "trygg", command], env=environment, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def unloaded_url(unloaded_timescale_server: TimescaleServer) -> Iterator[str]:
    url = unloaded_timescale_server.create_database()
    yield url
    unloaded_timescale_server.drop_database(url)


@pytest.mark.parametrize("command", ["migrate", "up"])
def test_without_the_preload_trygg_stops_with_one_line_saying_what_to_set(command: str, unloaded_url: str) -> None:
    done = trygg(command, unloaded_url)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"trygg: {NOT_PRELOADED}"]
    assert scalar(unloaded_url, "SELECT to_regnamespace('trygg') IS NULL") is True, "a migration ran"
    assert scalar(unloaded_url, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0


def test_with_timescaledb_off_it_migrates_to_plain_partitions_with_one_warning(unloaded_url: str) -> None:
    done = trygg("migrate", unloaded_url, TRYGG_TIMESCALEDB="off")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("applied: 0001_registry, 0002_events")
    warnings = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(w["level"], w["event"]) for w in warnings] == [("warning", "timescaledb_not_used")]
    assert "shared_preload_libraries = 'timescaledb'" in warnings[0]["detail"]
    assert scalar(unloaded_url, "SELECT relkind::text FROM pg_class WHERE oid = 'trygg.events'::regclass") == "p"
    assert scalar(unloaded_url, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
    again = trygg("migrate", unloaded_url, TRYGG_TIMESCALEDB="off")
    assert (again.returncode, again.stdout.strip()) == (0, "database is up to date")
    # and without `off`, the database it made keeps working: it is plain, nothing is created
    auto = trygg("migrate", unloaded_url)
    assert (auto.returncode, auto.stdout.strip()) == (0, "database is up to date"), auto.stderr


# --- the hypertable path --------------------------------------------------------------

def event(n: int, ts: datetime, kind: EventType = EventType.ALARM_BUTTON) -> Event:
    return Event(f"d-{n % 3}-alarm", f"e-{n}", kind, ts, ts + timedelta(milliseconds=30), {}, f"r-{n % 3}")


@pytest.fixture
def ts_pool(timescale_url: str, pool_of: PoolOf) -> Pool:
    return pool_of(timescale_url)


@pytest.fixture
def store(ts_pool: Pool) -> Iterator[EventStore]:
    s = EventStore(ts_pool)
    yield s
    s.close()


def test_on_the_preloaded_server_events_are_a_hypertable_of_daily_chunks(timescale_url: str) -> None:
    applied = scalar(timescale_url, "SELECT array_agg(version ORDER BY version) FROM trygg.schema_migrations")
    assert applied == [m.version for m in available()]
    with psycopg.connect(timescale_url) as conn:
        assert is_hypertable(conn, "trygg.events")
        assert conn.execute("SELECT time_interval FROM timescaledb_information.dimensions"
                            " WHERE hypertable_schema = 'trygg' AND hypertable_name = 'events'"
                            ).fetchone() == (DAY,)
        assert server_state(conn) == ServerState(True, True, True, "timescaledb")


def test_the_event_store_writes_and_deduplicates_in_the_hypertable(store: EventStore, timescale_url: str) -> None:
    batch = [event(n, TODAY - DAY * (n % 3) + timedelta(hours=n)) for n in range(9)]
    assert store.write(batch) == 9
    assert store.write(batch[:4]) == 0, "a re-send was stored again"
    assert store.write([*batch[4:], event(9, TODAY)]) == 1
    assert scalar(timescale_url, "SELECT count(*) FROM trygg.events") == 10
    assert scalar(timescale_url, "SELECT count(*) FROM show_chunks('trygg.events')") == len(
        {(e.ts.date()) for e in batch})


def test_drop_old_chunks_removes_only_chunks_wholly_older_than_the_cutoff(
        store: EventStore, timescale_url: str) -> None:
    days = [TODAY - DAY * d for d in range(5, 0, -1)]  # five whole UTC days, the oldest first
    store.write([event(n, day + timedelta(hours=h)) for n, (day, h) in enumerate(
        (day, h) for day in days for h in (1, 23))])

    def kept() -> list[object]:
        return sorted({r[0] for r in conn.execute("SELECT date(ts AT TIME ZONE 'UTC') FROM trygg.events")})

    with psycopg.connect(timescale_url, autocommit=True) as conn:
        # a cutoff inside a day keeps that day's chunk: its upper bound is after the cutoff
        assert len(drop_old_chunks(conn, "trygg.events", days[2] + timedelta(hours=12))) == 2
        assert kept() == [d.date() for d in days[2:]]
        # a chunk whose upper bound is the cutoff goes
        assert len(drop_old_chunks(conn, "trygg.events", days[3])) == 1
        assert kept() == [d.date() for d in days[3:]]
        assert drop_old_chunks(conn, "trygg.events", days[3]) == []
        assert conn.execute("SELECT count(*) FROM trygg.events").fetchone() == (4,)


# --- the continuous aggregate ---------------------------------------------------------

#: trygg.device_hourly as migration 0011 makes it (before 0014 replaces an empty one)
DEVICE_HOURLY_0011 = """
CREATE TABLE trygg.device_hourly (
    device_id text COLLATE "C" NOT NULL, hour timestamptz NOT NULL, heartbeats int NOT NULL,
    battery_min smallint, battery_max smallint, battery_last smallint,
    PRIMARY KEY (device_id, hour)
) PARTITION BY RANGE (hour);
CREATE TABLE trygg.device_hourly_2020_01 PARTITION OF trygg.device_hourly
    FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');
INSERT INTO trygg.partition_plan VALUES ('trygg.device_hourly', 'hour', 'month', '1 month', NULL);
"""


def rerun_0014(url: str, before: str) -> list[str]:
    """Migration 0014 again, on trygg.device_hourly as `before` (SQL) leaves it."""
    with psycopg.connect(url) as conn:
        conn.execute("DROP MATERIALIZED VIEW trygg.device_hourly")
        conn.execute(before.encode())
        conn.execute("DELETE FROM trygg.schema_migrations WHERE version = 14")
    return migrate_url(url)


@pytest.fixture
def with_heartbeats(timescale_url: str) -> str:
    """The database as migrations 0011 and 0014 make it on TimescaleDB."""
    with psycopg.connect(timescale_url) as conn:
        assert is_hypertable(conn, "trygg.heartbeats")
        assert is_continuous_aggregate(conn, "trygg.device_hourly")
        assert conn.execute("SELECT has_table_privilege('trygg_app', 'trygg.device_hourly', 'SELECT')"
                            ).fetchone() == (True,), "the grant of the table it replaced was lost"
    return timescale_url


def test_an_empty_device_hourly_table_is_replaced_with_its_grants_and_leaves_the_plan(timescale_url: str) -> None:
    applied = rerun_0014(timescale_url, DEVICE_HOURLY_0011 + "GRANT SELECT ON trygg.device_hourly TO PUBLIC;")
    assert applied == ["0014_timescale"]
    with psycopg.connect(timescale_url) as conn:
        assert is_continuous_aggregate(conn, "trygg.device_hourly")
        assert conn.execute("SELECT has_table_privilege('public', 'trygg.device_hourly', 'SELECT')"
                            ).fetchone() == (True,), "the grant of the table it replaced was lost"
        assert conn.execute("SELECT count(*) FROM trygg.partition_plan WHERE parent LIKE '%device_hourly'"
                            ).fetchone() == (0,), "ensure_partitions would attach partitions to the view"


def test_device_hourly_is_a_continuous_aggregate_refreshed_over_heartbeats(with_heartbeats: str) -> None:
    hour = TODAY - DAY + timedelta(hours=10)
    beats = [("d-1", hour + timedelta(minutes=m), 90 - m // 10) for m in range(0, 60, 1)]
    beats += [("d-1", hour + timedelta(hours=1, minutes=5), None), ("d-2", hour + timedelta(minutes=1), 50)]
    with psycopg.connect(with_heartbeats, autocommit=True) as conn:
        assert is_continuous_aggregate(conn, "trygg.device_hourly")
        assert conn.execute("SELECT count(*) FROM trygg.partition_plan WHERE parent LIKE '%device_hourly'"
                            ).fetchone() == (0,), "ensure_partitions would attach partitions to the view"
        with conn.cursor().copy("COPY trygg.heartbeats (device_id, ts, received_at, battery_pct) FROM STDIN") as cp:
            for device, ts, battery in beats:
                cp.write_row((device, ts, ts, battery))
        refresh_continuous_aggregate(conn, "trygg.device_hourly", TODAY - 3 * DAY, TODAY)
        rows = conn.execute("SELECT device_id, hour, heartbeats, battery_min, battery_max, battery_last"
                            " FROM trygg.device_hourly ORDER BY device_id, hour").fetchall()
        assert rows == [("d-1", hour, 60, 85, 90, 85), ("d-1", hour + timedelta(hours=1), 1, None, None, None),
                        ("d-2", hour, 1, 50, 50, 50)]
        # a heartbeat that arrives late, into an hour already materialised, counts at the next refresh
        conn.execute("INSERT INTO trygg.heartbeats VALUES ('d-2', %s, now(), 40)", (hour + timedelta(minutes=30),))
        refresh_continuous_aggregate(conn, "trygg.device_hourly", TODAY - 3 * DAY, TODAY)
        assert conn.execute("SELECT heartbeats, battery_min, battery_last FROM trygg.device_hourly"
                            " WHERE device_id = 'd-2'").fetchone() == (2, 40, 40)
        with pytest.raises(ValueError, match="autocommit"), psycopg.connect(with_heartbeats) as other:
            refresh_continuous_aggregate(other, "trygg.device_hourly", TODAY - 3 * DAY, TODAY)


def test_a_device_hourly_table_that_holds_rows_is_kept(timescale_url: str) -> None:
    applied = rerun_0014(timescale_url, DEVICE_HOURLY_0011 + "INSERT INTO trygg.device_hourly VALUES"
                         " ('d-1', '2020-01-02', 60, 80, 81, 80);")
    assert applied == ["0014_timescale"]
    with psycopg.connect(timescale_url) as conn:
        assert not is_continuous_aggregate(conn, "trygg.device_hourly")
        assert conn.execute("SELECT heartbeats FROM trygg.device_hourly").fetchall() == [(60,)]


def test_raw_heartbeats_age_out_before_their_hourly_rollup(with_heartbeats: str) -> None:
    """Retention per class: raw heartbeats go after days, the hourly rollup stays longer.
    Dropping raw chunks leaves the materialised hours while refreshes start at the raw
    retention cutoff; a refresh reaching into the dropped range would empty those hours
    (TimescaleDB recomputes them from the rows that are gone: the rule the maintenance
    follows, docs/storage.md "TimescaleDB"). The rollup's own old chunks go by
    drop_old_chunks as well."""
    old, recent = TODAY - 20 * DAY, TODAY - DAY
    raw_cutoff = TODAY - 14 * DAY
    with psycopg.connect(with_heartbeats, autocommit=True) as conn:
        for ts in (old, old + timedelta(minutes=1), recent):
            conn.execute("INSERT INTO trygg.heartbeats VALUES ('d-1', %s, %s, 80)", (ts, ts))
        refresh_continuous_aggregate(conn, "trygg.device_hourly", TODAY - 30 * DAY, TODAY)
        assert len(drop_old_chunks(conn, "trygg.heartbeats", raw_cutoff)) == 1
        assert conn.execute("SELECT count(*) FROM trygg.heartbeats").fetchone() == (1,)
        conn.execute("INSERT INTO trygg.heartbeats VALUES ('d-1', %s, now(), 70)", (recent + timedelta(minutes=5),))
        refresh_continuous_aggregate(conn, "trygg.device_hourly", raw_cutoff, TODAY)
        hours = conn.execute("SELECT hour, heartbeats FROM trygg.device_hourly ORDER BY hour").fetchall()
        assert hours == [(old, 2), (recent, 2)]
        dropped = drop_old_chunks(conn, "trygg.device_hourly", TODAY - 10 * DAY)
        assert dropped, "the rollup's chunk of 20 days ago was kept"
        assert conn.execute("SELECT hour FROM trygg.device_hourly").fetchall() == [(recent,)]


# --- retention and the device rollups through a maintenance run -------------------------

RETENTION = Retention(events=timedelta(days=400), heartbeats=timedelta(days=14),
                      device_hourly=timedelta(days=90), device_daily=timedelta(days=800),
                      dead_letters=timedelta(days=90))


def chunks(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, tuple[str, datetime]]:
    """Every chunk of the classes kept in chunks: name → (class, upper bound)."""
    rows = conn.execute(
        "SELECT format('%I.%I', c.chunk_schema, c.chunk_name), coalesce('trygg.' || a.view_name,"
        " c.hypertable_schema || '.' || c.hypertable_name), c.range_end"
        " FROM timescaledb_information.chunks c LEFT JOIN timescaledb_information.continuous_aggregates a"
        " ON a.materialization_hypertable_schema = c.hypertable_schema"
        " AND a.materialization_hypertable_name = c.hypertable_name").fetchall()
    return {str(name): (str(parent), upper) for name, parent, upper in rows}


def add_audit_row(conn: psycopg.Connection[tuple[object, ...]], at: datetime) -> None:
    conn.execute("INSERT INTO trygg.audit_log (at, actor, role, resident_id, action)"
                 " VALUES (%s, 'nurse', 'staff', 'r-1', 'GET /api/residents/r-1')", (at,))


def test_retention_drops_exactly_the_chunks_past_their_class_limit(
        timescale_url: str, ts_pool: Pool) -> None:
    """Each class on both sides of its limit: events (400 days), raw heartbeats (14 days),
    the hourly rollup (90 days, chunks of the continuous aggregate); a chunk goes when its
    upper bound is older than now − keep, nothing else goes, no kept row changes, and
    audit rows of any age survive."""
    now = datetime.now(UTC)
    ages = {"trygg.events": (398, 399.5, 401, 403), "trygg.heartbeats": (10, 13, 15, 17, 85, 95, 120)}
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        for age in ages["trygg.events"]:
            at = now - timedelta(days=age)
            conn.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at)"
                         " VALUES ('ret', %s, 'r-1', 'motion', %s, %s)", (f"e-{age}", at, at))
        for age in ages["trygg.heartbeats"]:
            at = now - timedelta(days=age)
            conn.execute("INSERT INTO trygg.heartbeats VALUES ('ret', %s, %s, 80)", (at, at))
        # the hours of 85 to 120 days ago materialised while their raw rows were there
        refresh_continuous_aggregate(conn, "trygg.device_hourly", now - 130 * DAY, now - 50 * DAY)
        for age in (5000, 800, 1):
            add_audit_row(conn, now - timedelta(days=age))
        before = chunks(conn)
        hourly_before = conn.execute("SELECT hour FROM trygg.device_hourly ORDER BY hour").fetchall()
        audit = conn.execute("SELECT * FROM trygg.audit_log ORDER BY id").fetchall()
    keep = RETENTION.by_parent()
    expected = {n for n, (parent, upper) in before.items() if upper < now - keep[parent]}
    for parent in ("trygg.events", "trygg.heartbeats", "trygg.device_hourly"):
        mine = {n for n, (p, _) in before.items() if p == parent}
        assert mine & expected and mine - expected, parent  # chunks on both sides of the limit

    report = run(ts_pool, RETENTION, now)

    assert report.ok, [(s.name, s.error) for s in report.steps]
    assert set(report.dropped) == expected
    with psycopg.connect(timescale_url) as conn:
        after = chunks(conn)
        assert not expected & after.keys()
        assert set(before) - expected <= after.keys()  # (and the chunk the run's refresh made)
        kept_events = sorted(r[0] for r in conn.execute("SELECT event_id FROM trygg.events"))
        assert kept_events == ["e-398", "e-399.5"]
        kept_beats = conn.execute("SELECT count(*) FROM trygg.heartbeats").fetchone()
        assert kept_beats == (2,)  # 10 and 13 days old
        # the hourly rows in kept chunks are all there: never emptied by a refresh
        hourly = conn.execute("SELECT hour FROM trygg.device_hourly WHERE hour < %s ORDER BY hour",
                              (now - 50 * DAY,)).fetchall()
        assert hourly and set(hourly) < set(hourly_before)
        assert all(now - h[0] < timedelta(days=101) for h in hourly)
        assert conn.execute("SELECT * FROM trygg.audit_log ORDER BY id").fetchall() == audit
    again = run(ts_pool, RETENTION, now)
    assert again.ok and again.dropped == []


def test_raw_heartbeat_chunks_are_dropped_only_once_refreshed(timescale_url: str, ts_pool: Pool) -> None:
    """A maintenance run that is behind (last refresh 20 days ago) refreshes from where it
    stopped, 48 hours a run, and drops only the raw chunks before that: every hour is in
    the raw table or in device_hourly, never in neither."""
    now = datetime.now(UTC)
    first = floor_hour(now - 30 * DAY)
    behind = floor_hour(now - 20 * DAY)
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute("INSERT INTO trygg.heartbeats SELECT 'd-1', h, h, 80"
                     " FROM generate_series(%s::timestamptz, %s, interval '1 hour') h", (first, now - DAY))
        refresh_continuous_aggregate(conn, "trygg.device_hourly", first, behind)
        conn.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s", (behind,))
    report = run(ts_pool, RETENTION, now)
    assert report.ok, [(s.name, s.error) for s in report.steps]
    assert report.dropped
    with psycopg.connect(timescale_url) as conn:
        refreshed = conn.execute("SELECT hourly_until FROM trygg.device_rollup_state").fetchone()
        assert refreshed == (behind + timedelta(hours=48),)
        raw = {r[0] for r in conn.execute("SELECT ts FROM trygg.heartbeats")}
        hourly = {r[0] for r in conn.execute("SELECT hour FROM trygg.device_hourly WHERE heartbeats = 1")}
        assert min(raw) > now - 20 * DAY, "nothing was dropped"
        every = {first + timedelta(hours=h) for h in range(int((now - DAY - first) / timedelta(hours=1)) + 1)}
        missing = sorted(every - raw - hourly)
        assert not missing, f"hours neither raw nor rolled up: {missing[:3]}"
        # the days the refreshed hours complete are in device_daily
        assert conn.execute("SELECT count(*) FROM trygg.device_daily").fetchone() != (0,)


def test_the_application_role_drops_only_expired_chunks(timescale_url: str) -> None:
    """trygg_app owns no hypertable: the owner's function drops chunks for it, never
    inside the class's floor (31 days for events), whatever keep it asks for."""
    now = datetime.now(UTC)
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        for age in (40, 20):
            at = now - timedelta(days=age)
            conn.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at)"
                         " VALUES ('d-1', %s, 'r-1', 'motion', %s, %s)", (f"e-{age}", at, at))
        conn.execute("DROP ROLE IF EXISTS trygg_t_app_chunks")
        conn.execute("CREATE ROLE trygg_t_app_chunks LOGIN IN ROLE trygg_app")
    app_url = psycopg.conninfo.make_conninfo(timescale_url, user="trygg_t_app_chunks")
    try:
        with psycopg.connect(app_url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT drop_chunks('trygg.events', older_than => now())")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT trygg.drop_expired_chunks('trygg.audit_log', '1 day')")
            dropped = conn.execute("SELECT trygg.drop_expired_chunks('trygg.events', '1 day')").fetchall()
        assert len(dropped) == 1
        assert scalar(timescale_url, "SELECT array_agg(event_id) FROM trygg.events") == ["e-20"]
    finally:
        with psycopg.connect(timescale_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY trygg_t_app_chunks")
            conn.execute("DROP ROLE trygg_t_app_chunks")


def test_as_the_application_role_the_refresh_policy_materialises_and_maintenance_follows_it(
        timescale_url: str, pool_of: PoolOf) -> None:
    """trygg_app may not refresh the aggregate (TimescaleDB wants its owner): the policy
    of migration 0014 does it as the owner, and the run takes its watermark as the end of
    the closed hours, refreshing nothing itself."""
    now = datetime.now(UTC)
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        job = conn.execute("SELECT job_id FROM timescaledb_information.jobs WHERE proc_name ="
                           " 'policy_refresh_continuous_aggregate' AND hypertable_schema = 'trygg'"
                           " AND hypertable_name = 'device_hourly'").fetchone()
        assert job is not None, "no refresh policy on trygg.device_hourly"
        conn.execute("INSERT INTO trygg.heartbeats SELECT 'd-1', h, h, 80"
                     " FROM generate_series(%s::timestamptz, %s, interval '10 minutes') h",
                     (floor_hour(now - DAY), now - timedelta(hours=2)))
        conn.execute("CALL run_job(%s)", (job[0],))  # what the scheduler does every 5 minutes
        conn.execute("DROP ROLE IF EXISTS trygg_t_app_policy")
        conn.execute("CREATE ROLE trygg_t_app_policy LOGIN IN ROLE trygg_app")
    app_url = psycopg.conninfo.make_conninfo(timescale_url, user="trygg_t_app_policy")
    try:
        report = run(pool_of(app_url), RETENTION, now)
        assert report.ok, [(s.name, s.error) for s in report.steps]
        rollups = next(s for s in report.steps if s.name == "device_rollups")
        assert rollups.detail["refreshed"] == []
        with psycopg.connect(timescale_url) as conn:
            until = conn.execute("SELECT hourly_until FROM trygg.device_rollup_state").fetchone()
            last = conn.execute("SELECT max(hour) + interval '1 hour' FROM trygg.device_hourly").fetchone()
            assert until is not None and last is not None and until[0] == last[0]
            assert conn.execute("SELECT sum(heartbeats) FROM trygg.device_hourly").fetchone() == (
                conn.execute("SELECT count(*) FROM trygg.heartbeats").fetchone())
    finally:
        with psycopg.connect(timescale_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY trygg_t_app_policy")
            conn.execute("DROP ROLE trygg_t_app_policy")


# --- plain PostgreSQL stays the default -------------------------------------------------

def test_on_plain_postgresql_0014_changes_nothing(database: str) -> None:
    with psycopg.connect(database) as conn:
        if server_state(conn).available:
            pytest.skip("the `database` fixture is on a server with TimescaleDB (--timescale)")
        assert server_state(conn).events == "postgresql"
        assert not is_hypertable(conn, "trygg.events")
        assert not is_continuous_aggregate(conn, "trygg.device_hourly")
        assert conn.execute("SELECT count(*) FROM trygg.schema_migrations WHERE version = 14").fetchone() == (1,)


def test_migrate_with_timescaledb_on_refuses_a_server_without_it(pg_admin_url: str, pool_of: PoolOf) -> None:
    with psycopg.connect(pg_admin_url) as conn:
        if server_state(conn).available:
            pytest.skip("this server has TimescaleDB")
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE trygg_t_ts_on")
    try:
        url = psycopg.conninfo.make_conninfo(pg_admin_url, dbname="trygg_t_ts_on")
        with structlog.testing.capture_logs() as logs, pytest.raises(EngineError, match="no timescaledb extension"):
            migrate(pool_of(url), "on")
        assert logs == []
        assert scalar(url, "SELECT to_regnamespace('trygg') IS NULL") is True
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS trygg_t_ts_on WITH (FORCE)")
