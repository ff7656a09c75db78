"""Bounded storage against a real PostgreSQL (migration 0011, docs/storage.md "Partitions
and retention"): the migration keeps every row of an existing database; heartbeats live
in their own table; de-duplication keys are partitioned by week and still find a re-send
whose key sits in an older week; a row whose partition is missing is stored, not
spooled for ever; the application role creates partitions only through the function."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import psycopg
import pytest
from psycopg import sql

from composition.runtime import open_pool
from storage import EventStore, Pool, partitions, residents_store
from storage import events as events_module
from storage.events import DeadLetter
from storage.migrate import available
from tests.fix_db import PoolOf, drop_database, migrate_url, scalar
from tests.fix_timescale import skip_on_timescaledb
from trygg.contract import Event, EventType, rekeyed_id

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=250000)
#: why a test of the partitions of trygg.events and trygg.heartbeats is skipped on TimescaleDB
HYPERTABLES = "trygg.events and trygg.heartbeats are hypertables whose chunks TimescaleDB makes"


def event(event_id: str, ts: datetime, kind: EventType = EventType.DOOR_OPENED,
          data: dict[str, object] | None = None, device: str = "d-1-door") -> Event:
    return Event(device, event_id, kind, ts, min(ts, NOW) + timedelta(milliseconds=30),
                 data if data is not None else {}, "r-1")


def beat(ts: datetime, battery: int | None = None, device: str = "d-1-alarm", event_id: str = "") -> Event:
    data = {} if battery is None else {"battery_pct": battery}
    return Event(device, event_id or f"hb-{ts.timestamp()}", EventType.HEARTBEAT, ts,
                 min(ts, NOW) + timedelta(milliseconds=30), data, "r-1")


def rows(url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(query.encode(), args).fetchall())  # type: ignore[call-overload]


def leaf_names(url: str, parent: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [p.name for p in partitions.partitions(conn, parent)]


def drop_leaf_holding(url: str, parent: str, at: datetime) -> str:
    """Detach and drop the leaf of `parent` whose bounds hold `at`; its name."""
    with psycopg.connect(url) as conn:
        leaf = next(p for p in partitions.partitions(conn, parent)
                    if (p.lower is None or p.lower <= at) and (p.upper is None or at < p.upper))
        assert not conn.execute(sql.SQL("SELECT count(*) FROM {}").format(leaf.identifier)).fetchone()[0]
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
            sql.Identifier(*parent.split(".")), leaf.identifier))
        conn.execute(sql.SQL("DROP TABLE {}").format(leaf.identifier))
    return leaf.name


def weekly_keys_since(url: str, since: datetime) -> None:
    """Key leaves week by week from `since` on, instead of the (empty) event_keys_legacy
    that a new database has for the weeks up to the one it was made in."""
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE trygg.event_keys DETACH PARTITION trygg.event_keys_legacy")
        conn.execute("DROP TABLE trygg.event_keys_legacy")
        partitions.ensure_range(conn, "event_keys", since, NOW + timedelta(days=14))


@pytest.fixture
def store(pool: Pool) -> Iterator[EventStore]:
    s = EventStore(pool)
    yield s
    s.close()


# -- the migration on a database of 0001-0010 with data --------------------------------

def migrate_to(url: str, last: int) -> None:
    """Apply migrations up to `last` as `storage.migrate` does (one transaction each)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS trygg")
        conn.execute("CREATE TABLE trygg.schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())")
        for mig in available():
            if mig.version <= last:
                with conn.transaction():
                    conn.execute(mig.sql.encode())
                    conn.execute("INSERT INTO trygg.schema_migrations (version, name) VALUES (%s, %s)",
                                 (mig.version, mig.name))


@pytest.fixture
def database_of_0010(pg_admin_url: str) -> Iterator[str]:
    name = f"trygg_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(pg_admin_url, dbname=name)
    try:
        migrate_to(url, 10)
        yield url
    finally:
        drop_database(pg_admin_url, url)


EVENT_ROWS = "SELECT device_id, event_id, resident_id, type, ts, received_at, data, seq FROM trygg.events ORDER BY seq"
KEY_ROWS = "SELECT device_id, event_id, received_at, type, ts FROM trygg.event_keys ORDER BY device_id, event_id"
DEAD_ROWS = "SELECT id, received_at, topic, payload, reason, detail, payload_size FROM trygg.dead_letters ORDER BY id"


def test_migration_0011_keeps_every_row_of_a_database_of_0010(database_of_0010: str, pool_of: PoolOf) -> None:
    url = database_of_0010
    with psycopg.connect(url) as conn:
        # rows in events_default: older than the monthly partitions made at migration,
        # and far ahead of them (a device clock years off, stored before the gateway
        # refused such times)
        conn.execute(
            "INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data) VALUES"
            " ('d-1', 'old', 'r-1', 'door.opened', now() - interval '7 months', now() - interval '7 months', '{}'),"
            " ('d-1', 'ahead', 'r-1', 'motion', now() + interval '9 months', now(), '{\"room\": \"hall\"}'),"
            " ('d-1', 'hb', 'r-1', 'heartbeat', now() - interval '1 hour', now(), '{\"battery_pct\": 80}'),"
            " ('d-1', 'now', 'r-1', 'alarm.button', now(), now(), '{}')")
        conn.execute("INSERT INTO trygg.event_keys (device_id, event_id, received_at, type, ts)"
                     " SELECT device_id, event_id, received_at, type, ts FROM trygg.events")
        conn.execute("INSERT INTO trygg.event_keys (device_id, event_id, received_at)"
                     " VALUES ('d-1', 'before-0009', now() - interval '20 days')")
        conn.execute("INSERT INTO trygg.dead_letters (received_at, topic, payload, reason, detail, payload_size)"
                     " VALUES (now() - interval '100 days', 't/1', '\\x00ff', 'bad_json', 'x', 2),"
                     "        (now() - interval '1 day', 't/2', '\\x01', 'unknown_device', 'y', 1)")
        conn.execute("INSERT INTO trygg.device_status (device_id, online, status_at, last_seen)"
                     " VALUES ('d-1', true, now(), now())")
        assert conn.execute("SELECT count(*) FROM trygg.events_default").fetchone() == (2,)
    before = {q: rows(url, q) for q in (EVENT_ROWS, KEY_ROWS, DEAD_ROWS)}

    assert migrate_url(url) == [f"{m.version:04d}_{m.name}" for m in available() if m.version > 10]

    assert {q: rows(url, q) for q in before} == before, "a row was lost or changed by the migration"
    assert scalar(url, "SELECT to_regclass('trygg.events_default')") is None
    assert "trygg.event_keys_legacy" in leaf_names(url, "event_keys")
    assert "trygg.dead_letters_legacy" in leaf_names(url, "dead_letters")
    # the moved rows sit in monthly partitions of their own
    for event_id in ("old", "ahead"):
        leaf = scalar(url, "SELECT tableoid::regclass::text FROM trygg.events WHERE event_id = %s", event_id)
        assert str(leaf).startswith("trygg.events_20"), leaf
    # the id sequence goes on after the old dead letters, and belongs to the new table
    pool = pool_of(url)
    store = EventStore(pool)
    try:
        store.write([], [DeadLetter(NOW, "t/3", b"z", "bad_json", "z")])
        assert [r[0] for r in rows(url, DEAD_ROWS)] == [1, 2, 3]
        # keys from before the migration still make re-sends: stored once
        stored_now = rows(url, "SELECT ts FROM trygg.events WHERE event_id = 'now'")[0][0]
        assert isinstance(stored_now, datetime)
        assert store.write([Event("d-1", "now", EventType.ALARM_BUTTON, stored_now, NOW, {}, "r-1")]) == 0
        assert store.write([Event("d-1", "before-0009", EventType.MOTION, NOW, NOW, {}, "r-1")]) == 0
    finally:
        store.close()
    assert len(rows(url, EVENT_ROWS)) == 4
    assert scalar(url, "SELECT pg_get_serial_sequence('trygg.dead_letters', 'id')") == "trygg.dead_letters_id_seq"


# -- heartbeats --------------------------------------------------------------------------

def test_heartbeats_are_stored_once_in_their_own_table_and_not_as_events(store: EventStore, database: str) -> None:
    first, second = NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)
    batch = [beat(first, 81), beat(second, 80), event("e-1", NOW)]
    assert store.write(batch) == 3
    assert store.write(batch) == 0, "a re-sent heartbeat or event counted as new"
    # the same heartbeat again under another id (a device re-sending after a reset)
    assert store.write([beat(second, 80, event_id="hb-again")]) == 0
    assert rows(database, "SELECT device_id, ts, battery_pct FROM trygg.heartbeats ORDER BY ts") == [
        ("d-1-alarm", first, 81), ("d-1-alarm", second, 80)]
    assert rows(database, "SELECT event_id FROM trygg.events") == [("e-1",)]
    assert rows(database, "SELECT event_id FROM trygg.event_keys") == [("e-1",)], "heartbeats take no key"


def test_heartbeats_without_battery_and_in_a_batch_with_a_reused_id(store: EventStore, database: str) -> None:
    assert store.write([beat(NOW - timedelta(seconds=5), None, event_id="e-1"),
                        event("e-1", NOW), event("e-1", NOW - timedelta(hours=1))]) == 3
    assert rows(database, "SELECT battery_pct FROM trygg.heartbeats") == [(None,)]
    assert sorted(str(r[0]) for r in rows(database, "SELECT event_id FROM trygg.events")) == sorted(
        ["e-1", rekeyed_id("e-1", "door.opened", NOW - timedelta(hours=1))])


def test_the_latest_battery_report_of_any_event_is_kept_per_device(store: EventStore, database: str) -> None:
    store.write([beat(NOW - timedelta(minutes=3), 60), beat(NOW - timedelta(minutes=2), 55),
                 event("low", NOW - timedelta(minutes=10), EventType.BATTERY_LOW, {"battery_pct": 12},
                       device="d-1-alarm")])
    assert rows(database, "SELECT battery_pct, battery_at FROM trygg.device_status WHERE device_id = 'd-1-alarm'") == [
        (55, NOW - timedelta(minutes=2))]
    store.write([beat(NOW - timedelta(minutes=5), 70)])  # older (a spooled one): changes nothing
    assert rows(database, "SELECT battery_pct FROM trygg.device_status WHERE device_id = 'd-1-alarm'") == [(55,)]
    store.write([Event("d-1-alarm", "hb-x", EventType.HEARTBEAT, NOW, NOW, {"battery_pct": 12.4}, "r-1")])
    assert rows(database, "SELECT battery_pct FROM trygg.device_status WHERE device_id = 'd-1-alarm'") == [(12,)]


# -- de-duplication keys across weekly leaves ---------------------------------------------

def test_a_resend_whose_key_sits_in_an_older_week_is_stored_once(store: EventStore, database: str) -> None:
    weeks_ago = NOW - timedelta(days=16)
    weekly_keys_since(database, weeks_ago)
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO trygg.event_keys (device_id, event_id, received_at, type, ts, stored_at)"
                     " VALUES ('d-1-door', 'e-old', %s, 'door.opened', %s, %s)", (weeks_ago, weeks_ago, weeks_ago))
    old_leaf = scalar(database, "SELECT tableoid::regclass::text FROM trygg.event_keys WHERE event_id = 'e-old'")
    assert old_leaf == "trygg.event_keys_" + (weeks_ago - timedelta(days=weeks_ago.weekday())).strftime("%Y%m%d")

    assert store.write([event("e-old", weeks_ago)]) == 0, "a re-send inside the window was stored again"
    assert store.write([event("e-old", weeks_ago), event("e-new", NOW)]) == 1
    # the same id for another event: re-keyed, found across the leaves too
    assert store.write([event("e-old", NOW)]) == 1
    assert sorted(str(r[0]) for r in rows(database, "SELECT event_id FROM trygg.events")) == sorted(
        ["e-new", rekeyed_id("e-old", "door.opened", NOW)])
    new_leaf = scalar(database, "SELECT tableoid::regclass::text FROM trygg.event_keys WHERE event_id = 'e-new'")
    assert new_leaf != old_leaf


def test_keys_are_looked_up_one_index_probe_per_leaf(database: str) -> None:
    """The writer's key lookups never scan a key leaf, however many keys it holds."""
    weekly_keys_since(database, NOW - timedelta(days=28))
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO trygg.event_keys (device_id, event_id, received_at, stored_at)"
                     " SELECT 'd-' || g % 500, 'k-' || g, now(), now() - (g % 28) * interval '1 day'"
                     " FROM generate_series(1, 100000) g")
        conn.execute("ANALYZE trygg.event_keys")
        conn.execute(events_module._STAGE)
        conn.execute("INSERT INTO event_stage SELECT g, 'd-' || g % 500, 'k-' || g, 'r-1', 'motion', now(), now(),"
                     " '{}' FROM generate_series(1, 2000) g")
        filled = [str(r[0]).removeprefix("trygg.") for r in conn.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM trygg.event_keys")]
        assert len(filled) >= 4
        for query in (events_module._INSERT_NEW, events_module._COLLIDING):
            plan = "\n".join(r[0] for r in conn.execute(("EXPLAIN " + query).encode()))
            for leaf in filled:  # (an empty leaf may be read as it is: it holds nothing)
                assert f"Index Only Scan using {leaf}_device_id_event_id_key on {leaf} " in plan or \
                    f"Index Scan using {leaf}_device_id_event_id_key on {leaf} " in plan, plan
            empty = [p.name.removeprefix("trygg.") for p in partitions.partitions(conn, "event_keys")
                     if p.name.removeprefix("trygg.") not in filled]
            scans = plan.count("Seq Scan on event_stage") + sum(f"Seq Scan on {leaf} " in plan for leaf in empty)
            assert plan.count("Seq Scan") == scans, plan


# -- missing partitions ------------------------------------------------------------------

def test_an_event_whose_partition_is_missing_is_stored_not_spooled(store: EventStore, database: str) -> None:
    """ts up to 24 h ahead is allowed (docs/contract.md#3-events); its month's, its day's
    and the key table's current partitions may all be missing (maintenance not run)."""
    skip_on_timescaledb(database, f"{HYPERTABLES} (one for any ts: none is ever missing)")
    ahead = NOW + timedelta(hours=23, minutes=59)
    gone = [drop_leaf_holding(database, "trygg.events", ahead),
            drop_leaf_holding(database, "trygg.heartbeats", ahead),
            drop_leaf_holding(database, "trygg.dead_letters", NOW)]
    taken = DeadLetter(NOW, "t/1", b"{", "bad_json", "x")
    assert store.write([event("e-ahead", ahead), beat(ahead, 40)], [taken]) == 2
    assert rows(database, "SELECT event_id, ts FROM trygg.events") == [("e-ahead", ahead)]
    assert rows(database, "SELECT ts FROM trygg.heartbeats") == [(ahead,)]
    assert rows(database, "SELECT topic FROM trygg.dead_letters") == [("t/1",)]
    with psycopg.connect(database) as conn:
        names = {p.name for parent in ("events", "heartbeats", "dead_letters")
                 for p in partitions.partitions(conn, parent)}
    assert set(gone[:2]) <= names  # the dead letters' old leaf is followed by this week's
    monday = (NOW - timedelta(days=NOW.weekday())).strftime("%Y%m%d")
    assert scalar(database, "SELECT tableoid::regclass::text FROM trygg.dead_letters") == f"trygg.dead_letters_{monday}"
    assert store.write([event("e-ahead", ahead)]) == 0


def test_a_missing_current_key_partition_is_created_when_needed(store: EventStore, database: str) -> None:
    with psycopg.connect(database) as conn:
        conn.execute("ALTER TABLE trygg.event_keys DETACH PARTITION trygg.event_keys_legacy")
    assert store.write([event("e-1", NOW)]) == 1
    monday = (NOW - timedelta(days=NOW.weekday())).strftime("%Y%m%d")
    assert scalar(database, "SELECT tableoid::regclass::text FROM trygg.event_keys") == f"trygg.event_keys_{monday}"


def test_a_replayed_event_older_than_every_partition_is_stored(store: EventStore, database: str) -> None:
    """A spool replayed after a long outage may hold rows older than the oldest partition."""
    old = NOW - timedelta(days=400)
    assert store.write([event("e-old", old), beat(old, 50)], [DeadLetter(old, "t/1", b"{", "bad_json", "x")]) == 2
    assert rows(database, "SELECT count(*) FROM trygg.events WHERE ts = %s", old) == [(1,)]
    assert rows(database, "SELECT count(*) FROM trygg.dead_letters WHERE received_at = %s", old) == [(1,)]


def test_events_in_hours_the_research_rollups_closed_mark_those_hours(store: EventStore, database: str) -> None:
    """The writer marks, in the batch's transaction, the closed hours its events fall in
    (storage/rollups.py MARK_DIRTY_SQL), so the next close counts a late event; heartbeats
    are not research events and mark nothing."""
    hour = NOW.replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(database) as conn:
        conn.execute("UPDATE trygg.research_rollup_state SET mark_before = %s", (hour,))
    late = hour - timedelta(hours=3)
    store.write([event("e-late", late + timedelta(minutes=5)), event("e-now", NOW), beat(late, 90)])
    store.write([event("e-late", late + timedelta(minutes=5))])  # a re-send marks again, harmlessly
    assert rows(database, "SELECT hour FROM trygg.research_dirty_hours") == [(late,)]


# -- the plan and its partitions ---------------------------------------------------------

def test_partitions_are_listed_with_their_bounds_oldest_first(database: str) -> None:
    skip_on_timescaledb(database, HYPERTABLES)
    with psycopg.connect(database) as conn:
        events = partitions.partitions(conn, "trygg.events")
        keys = partitions.partitions(conn, "event_keys")
        daily = partitions.partitions(conn, "device_daily")
        assert partitions.partitions(conn, "trygg.events") == events
        planned = {p.parent: p.step for p in partitions.plan(conn)}
    month = NOW.strftime("%Y_%m")
    assert f"trygg.events_{month}" in [p.name for p in events]
    def month(t: datetime | None) -> int:
        assert t is not None
        return t.year * 12 + t.month

    # at least two months back (the test databases' from January 2026: tests/fix_db.py), three ahead
    assert month(events[0].lower) <= month(NOW) - 2 and month(events[-1].lower) == month(NOW) + 3
    for before, after in pairwise(events):
        assert before.upper == after.lower, "a gap or an overlap between monthly partitions"
    assert all(p.parent == "trygg.events" for p in events)
    assert keys[0].name == "trygg.event_keys_legacy" and keys[0].lower is None
    assert keys[0].upper is not None and keys[0].upper.weekday() == 0 and keys[0].upper > NOW
    assert [p.upper - p.lower for p in keys[1:] if p.upper and p.lower] == [timedelta(days=7)] * 2
    assert daily[0].lower == datetime(NOW.year, 1, 1, tzinfo=UTC)
    assert planned == {"trygg.events": "month", "trygg.heartbeats": "day", "trygg.event_keys": "week",
                       "trygg.dead_letters": "week", "trygg.device_hourly": "month", "trygg.device_daily": "year",
                       "trygg.insight_days": "year"}


def test_ensure_makes_the_plan_ahead_and_is_idempotent(database: str) -> None:
    skip_on_timescaledb(database, HYPERTABLES)
    later = NOW + timedelta(days=40)
    with psycopg.connect(database) as conn:
        created = partitions.ensure(conn, later)
        conn.commit()
        # from `later` to `later` + ahead, both ends included: 4 days, 3 weeks
        assert (created["trygg.heartbeats"], created["trygg.event_keys"]) == (4, 3)
        assert set(partitions.ensure(conn, later).values()) == {0}
        days = [p for p in partitions.partitions(conn, "heartbeats")
                if p.lower and p.lower >= later - timedelta(days=1)]
    assert [p.upper - p.lower for p in days if p.upper and p.lower] == [timedelta(days=1)] * 4
    assert days[-1].upper is not None and days[-1].upper >= later + timedelta(days=3)
    for before, after in pairwise(days):
        assert before.upper == after.lower


def test_a_range_of_more_than_1000_partitions_is_refused(database: str) -> None:
    made = leaf_names(database, "dead_letters")  # weekly leaves: partitioned on either engine
    with psycopg.connect(database) as conn, pytest.raises(psycopg.errors.RaiseException, match="1000 partitions"):
        partitions.ensure_range(conn, "dead_letters", NOW, NOW + timedelta(weeks=1000))
    assert leaf_names(database, "dead_letters") == made


def test_concurrent_ensures_wait_for_each_other(database: str) -> None:
    far = NOW + timedelta(days=800)
    with psycopg.connect(database) as first, psycopg.connect(database) as second:
        assert partitions.ensure_range(first, "dead_letters", far, far) == 1  # not committed yet
        answer: list[int] = []
        other = threading.Thread(target=lambda: answer.append(
            partitions.ensure_range(second, "dead_letters", far, far)))
        other.start()
        other.join(0.5)
        assert other.is_alive(), "the second call did not wait for the first"
        first.commit()
        other.join(10)
        second.commit()
    assert answer == [0]


# -- least privilege ---------------------------------------------------------------------

@pytest.fixture
def app_login_url(database: str) -> Iterator[str]:
    """A login role that is a member of trygg_app, as production runs Trygg."""
    role = f"trygg_t_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE trygg_app").format(sql.Identifier(role)))
    try:
        yield psycopg.conninfo.make_conninfo(database, user=role)
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_application_role_writes_and_creates_partitions_only_through_the_function(
        app_login_url: str, database: str) -> None:
    skip_on_timescaledb(database, HYPERTABLES)
    ahead = NOW + timedelta(hours=23)
    drop_leaf_holding(database, "trygg.heartbeats", ahead)
    with open_pool(app_login_url, 2) as pool:
        store = EventStore(pool)
        try:
            assert store.write([event("e-1", NOW), beat(ahead, 33)],
                               [DeadLetter(NOW, "t/1", b"{", "bad_json", "x")]) == 2
            store.ensure_partitions()
        finally:
            store.close()
    with psycopg.connect(app_login_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() != ("postgres",)
        assert partitions.ensure_range(conn, "heartbeats", NOW + timedelta(days=30), NOW + timedelta(days=30)) == 1
        conn.commit()
        leaf = partitions.partitions(conn, "heartbeats")[-1]
        assert conn.execute("SELECT has_table_privilege('trygg_app', %s, 'SELECT, INSERT')",
                            (leaf.name,)).fetchone() == (True,)
        for statement in ("INSERT INTO trygg.partition_plan VALUES ('trygg.x', 'ts', 'day', '1 day')",
                          "CREATE TABLE trygg.events_2099_01 PARTITION OF trygg.events"
                          " FOR VALUES FROM ('2099-01-01') TO ('2099-02-01')",
                          "ALTER TABLE trygg.heartbeats DETACH PARTITION " + leaf.name):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())
            conn.rollback()
    assert rows(database, "SELECT ts FROM trygg.heartbeats") == [(ahead,)]


# -- staff's reads -----------------------------------------------------------------------

def test_a_residents_30_day_timeline_and_last_contact_read_from_the_index(database: str) -> None:
    """With a few hundred thousand rows of other residents (and a busy motion sensor),
    the timeline and the last contact read the resident's rows from (resident_id, ts)."""
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
                     " SELECT 'd-' || g % 1000, 'x-' || g, 'r-' || g % 1000,"
                     "        (ARRAY['motion', 'door.opened', 'location'])[1 + g % 3],"
                     "        now() - g * interval '10 seconds', now() - g * interval '10 seconds', '{}'"
                     " FROM generate_series(1, 300000) g")
        conn.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
                     " SELECT 'd-busy', 'y-' || g, 'r-busy', 'motion', now() - g * interval '60 seconds',"
                     "        now() - g * interval '60 seconds', '{}' FROM generate_series(1, 40000) g")
        conn.execute("ANALYZE trygg.events")
        month_ago = datetime.now(UTC) - timedelta(days=30)
        for resident in ("r-7", "r-busy"):
            for with_locations in (True, False):
                plan = "\n".join(r[0] for r in conn.execute(
                    b"EXPLAIN " + residents_store.timeline_query(with_locations),
                    (resident, month_ago, datetime.now(UTC), 501)))
                # (a monthly partition's index, or a TimescaleDB chunk's)
                assert re.search(r"resident(_id)?_ts_idx", plan) and "Seq Scan" not in plan, plan
            plan = "\n".join(r[0] for r in conn.execute(
                ("EXPLAIN " + residents_store.LAST_CONTACT).encode(), (resident, resident, month_ago)))
            assert "Seq Scan on events" not in plan, plan
