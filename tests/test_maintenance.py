"""Maintenance against a real PostgreSQL (storage/maintenance.py, migration 0013;
docs/storage.md "Retention", docs/privacy.md "The audit log"): retention drops exactly the
partitions past their class's limit; audit rows survive every run and leave only through
the maintainer's function, never younger than 2 years; of two runs at once one does the
work; ingest under maintenance loses nothing and is not held up; `trygg maintain` says what
it did; `trygg up` runs it by itself."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from composition.maintain import summary
from composition.runtime import open_pool
from storage import EventStore, Pool
from storage.maintenance import EVENT_KEYS_KEEP, Retention, Step, close_device_rollups, run
from storage.partitions import partitions
from tests.fix_db import PoolOf
from tests.fix_timescale import skip_on_timescaledb
from tests.helpers import wait_for
from trygg.contract import Event, EventType
from trygg.settings import Settings

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
RETENTION = Retention(events=timedelta(days=400), heartbeats=timedelta(days=14),
                      device_hourly=timedelta(days=90), device_daily=timedelta(days=800),
                      dead_letters=timedelta(days=90))
#: how far back test_retention makes partitions of each class (a step of each is past the limit)
HISTORY = {
    "trygg.events": timedelta(days=900),
    "trygg.heartbeats": timedelta(days=30),
    "trygg.event_keys": timedelta(weeks=20),
    "trygg.dead_letters": timedelta(weeks=30),
    "trygg.device_hourly": timedelta(days=240),
    "trygg.device_daily": timedelta(days=5 * 365),
}
#: a row for a leaf, at a point inside it (marked so that the test counts only its own rows)
ROW_SQL = {
    "trygg.events": "INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at)"
                    " VALUES ('ret', gen_random_uuid()::text, 'r-1', 'motion', %(at)s, %(at)s)",
    "trygg.heartbeats": "INSERT INTO trygg.heartbeats (device_id, ts, received_at, battery_pct)"
                        " VALUES ('ret', %(at)s, %(at)s, 80)",
    "trygg.event_keys": "INSERT INTO trygg.event_keys (device_id, event_id, received_at, type, ts, stored_at)"
                        " VALUES ('ret', gen_random_uuid()::text, %(at)s, 'motion', %(at)s, %(at)s)",
    "trygg.dead_letters": "INSERT INTO trygg.dead_letters (received_at, topic, payload, reason, detail,"
                          " payload_size) VALUES (%(at)s, 't', '\\x00', 'bad_json', 'ret', 1)",
    "trygg.device_hourly": "INSERT INTO trygg.device_hourly (device_id, hour, heartbeats)"
                           " VALUES ('ret-rollup', date_trunc('hour', %(at)s::timestamptz), 1)",
    "trygg.device_daily": "INSERT INTO trygg.device_daily (device_id, day, heartbeats, hours_heard)"
                          " VALUES ('ret-rollup', (%(at)s::timestamptz AT TIME ZONE 'UTC')::date, 1, 1)",
}
#: where the TimescaleDB variants of the tests of plain partitions are
VARIANTS = "tests/test_timescale.py"
MARK = {"trygg.dead_letters": "detail = 'ret'", "trygg.device_hourly": "device_id = 'ret-rollup'",
        "trygg.device_daily": "device_id = 'ret-rollup'"}


def make_history(url: str, now: datetime, history: dict[str, timedelta] = HISTORY, *, rows: bool = True) -> None:
    """Past partitions of every class through the one SQL home (trygg.ensure_partitions),
    each with one row of ours."""
    with psycopg.connect(url, autocommit=True) as conn:
        for parent, back in history.items():
            conn.execute("SELECT trygg.ensure_partitions(%s, %s, %s)", (parent, now - back, now))
            if not rows:
                continue
            for leaf in partitions(conn, parent):
                if leaf.upper is None or leaf.upper > now:
                    continue
                at = leaf.upper - timedelta(seconds=1) if leaf.lower is None else leaf.lower + timedelta(hours=1)
                conn.execute(ROW_SQL[parent].encode(), {"at": at})


def without_legacy_leaf(url: str, parent: str) -> None:
    """Drop the (empty) leaf `<parent>_legacy` that a new database has up to next Monday,
    so that make_history can make the weeks before it."""
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute(f"ALTER TABLE {parent} DETACH PARTITION {parent}_legacy")
        owner.execute(f"DROP TABLE {parent}_legacy")


def leaves(url: str) -> dict[str, tuple[str, datetime | None, int]]:
    """Every leaf of the classes: name → (parent, upper bound, rows of ours in it)."""
    out = {}
    with psycopg.connect(url) as conn:
        for parent in HISTORY:
            for leaf in partitions(conn, parent):
                mark = MARK.get(parent, "device_id = 'ret'")
                count = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE " + mark).format(leaf.identifier)
                                     ).fetchone()
                out[leaf.name] = (parent, leaf.upper, count[0] if count else 0)
    return out


def keep_of(parent: str) -> timedelta:
    return RETENTION.by_parent()[parent]


@contextlib.contextmanager
def login(url: str, member_of: str) -> Iterator[str]:
    """A login role of its own that is a member of `member_of`; its URL."""
    name = f"trygg_t_{member_of}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(name),
                                                                      sql.Identifier(member_of)))
    try:
        yield psycopg.conninfo.make_conninfo(url, user=name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def audit_rows(url: str) -> list[tuple[datetime, str, str, str]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute("SELECT at, actor, role, action FROM trygg.audit_log ORDER BY at, id")]


def add_audit_rows(url: str, *ages: timedelta) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        for age in ages:
            conn.execute("INSERT INTO trygg.audit_log (at, actor, role, resident_id, action)"
                         " VALUES (%s, 'nurse', 'staff', 'r-1', 'GET /api/residents/r-1')", (now - age,))


# --- retention --------------------------------------------------------------------------

def test_retention_drops_exactly_the_partitions_past_their_class_limit(database: str, pool: Pool) -> None:
    skip_on_timescaledb(database, "events and heartbeats are hypertables; the chunk variant is "
                        f"{VARIANTS}::test_retention_drops_exactly_the_chunks_past_their_class_limit")
    now = datetime.now(UTC) + timedelta(days=400)  # the old keys and dead letters (leaves *_legacy) expire too
    make_history(database, now)
    add_audit_rows(database, timedelta(days=3650), DAY, timedelta(0))
    before = leaves(database)
    expected = {name for name, (parent, upper, _) in before.items()
                if upper is not None and upper < now - keep_of(parent)}
    for parent in HISTORY:  # each class has old leaves on both sides of its limit
        mine = [(n, u) for n, (p, u, _) in before.items() if p == parent]
        assert any(n in expected for n, _ in mine), parent
        assert any(n not in expected and u is not None and u < now for n, u in mine), parent

    def metric(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    events_dropped = metric("trygg_partitions_dropped_total", table="trygg.events")
    retention_runs = metric("trygg_maintenance_runs_total", step="retention", outcome="ok")
    started = time.time()
    with psycopg.connect(database) as conn:
        insight_years = {leaf.name for leaf in partitions(conn, "trygg.insight_days")}

    report = run(pool, RETENTION, now)

    assert report.ok, summary(report)
    # the daily features' yearly partitions go with the events' retention
    assert set(report.dropped) - insight_years == expected
    assert {n for n in insight_years if n in report.dropped} == {
        n for n in insight_years if int(n.rsplit("_", 1)[1]) + 1 <= (now - keep_of("trygg.events")).year}
    assert metric("trygg_partitions_dropped_total", table="trygg.events") - events_dropped == sum(
        1 for n in expected if before[n][0] == "trygg.events")
    assert metric("trygg_maintenance_runs_total", step="retention", outcome="ok") == retention_runs + 1
    assert metric("trygg_maintenance_seconds_count", step="retention") >= 1
    assert metric("trygg_maintenance_last_success_timestamp_seconds") >= started
    after = leaves(database)
    assert not expected & after.keys()
    for name, (_, _, rows) in before.items():  # every other leaf is there, with its rows
        if name not in expected:
            assert after[name][2] == rows, name
    assert len(audit_rows(database)) == 3

    again = run(pool, RETENTION, now)  # nothing more is past its limit
    assert again.ok and again.dropped == []


def test_raw_heartbeats_are_dropped_only_once_rolled_up(database: str, pool: Pool) -> None:
    skip_on_timescaledb(database, "heartbeats are a hypertable; the chunk variant is "
                        f"{VARIANTS}::test_raw_heartbeat_chunks_are_dropped_only_once_refreshed")
    now = datetime.now(UTC)
    make_history(database, now, {"trygg.heartbeats": timedelta(days=30)})
    with psycopg.connect(database, autocommit=True) as conn:  # rolled up until 20 days ago only
        conn.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s, daily_until = %s",
                     (now - timedelta(days=20), (now - timedelta(days=21)).date()))
    report = run(pool, RETENTION, now)
    assert report.ok
    uppers = [u for n, (p, u, _) in leaves(database).items() if p == "trygg.heartbeats"]
    # what is older than 14 days but not yet rolled up (the hours closed by this run
    # included) is still there
    closed = now - timedelta(days=20) + timedelta(hours=48)
    assert min(u for u in uppers if u is not None) > closed - DAY
    assert any(u is not None and u < now - timedelta(days=14) for u in uppers)


def test_device_rollups_hourly_from_heartbeats_daily_from_hourly_and_a_recomputed_hour_is_the_same(
        database: str, pool: Pool) -> None:
    now = datetime(2026, 12, 5, 12, 30, tzinfo=UTC)
    h0 = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)  # 23:00 in Oslo on the 4th
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT trygg.ensure_partitions('trygg.heartbeats', %s, %s)", (h0, now))
        for minute, battery in ((0, 90), (20, None), (40, 88), (60, 87), (120, 85)):
            for device in ("d-1", "d-2"):
                conn.execute("INSERT INTO trygg.heartbeats (device_id, ts, received_at, battery_pct)"
                             " VALUES (%s, %s, %s, %s)", (device, h0 + timedelta(minutes=minute),
                                                          h0 + timedelta(minutes=minute), battery))
        conn.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s, daily_until = '2026-12-04'", (h0,))
        close_device_rollups(conn, now, RETENTION.heartbeats)
        hourly = conn.execute("SELECT hour, heartbeats, battery_min, battery_max, battery_last"
                              " FROM trygg.device_hourly WHERE device_id = 'd-1' ORDER BY hour").fetchall()
        assert hourly == [(h0, 3, 88, 90, 88), (h0 + timedelta(hours=1), 1, 87, 87, 87),
                          (h0 + timedelta(hours=2), 1, 85, 85, 85)]
        daily = conn.execute("SELECT day::text, heartbeats, hours_heard, battery_min, battery_max, battery_last"
                             " FROM trygg.device_daily WHERE device_id = 'd-1' ORDER BY day").fetchall()
        assert daily == [("2026-12-04", 3, 1, 88, 90, 88)]  # the 5th (Oslo) is not over yet
        state = conn.execute("SELECT hourly_until, daily_until::text FROM trygg.device_rollup_state").fetchone()
        assert state == (datetime(2026, 12, 5, 12, tzinfo=UTC), "2026-12-05")

        conn.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s, daily_until = '2026-12-03'", (h0,))
        close_device_rollups(conn, now, RETENTION.heartbeats)  # the same hours again
        assert conn.execute("SELECT hour, heartbeats, battery_min, battery_max, battery_last"
                            " FROM trygg.device_hourly WHERE device_id = 'd-1' ORDER BY hour").fetchall() == hourly
        assert conn.execute("SELECT count(*) FROM trygg.device_daily").fetchone() == (2,)


def test_the_database_floors_are_the_settings_minimums(database: str) -> None:
    with psycopg.connect(database) as conn:
        floors = {p: k.days for p, k in conn.execute("SELECT parent, min_keep FROM trygg.retention_floors")}
    fields = {"trygg.events": "retain_events_days", "trygg.heartbeats": "retain_heartbeats_days",
              "trygg.device_hourly": "retain_device_hourly_days",
              "trygg.device_daily": "retain_device_daily_days", "trygg.dead_letters": "retain_dead_letters_days"}
    for parent, name in fields.items():
        minimum = next(m.ge for m in Settings.model_fields[name].metadata if hasattr(m, "ge"))
        assert floors[parent] == minimum, parent
    assert floors["trygg.event_keys"] == EVENT_KEYS_KEEP.days


def test_the_application_role_drops_only_expired_partitions_of_planned_tables(database: str) -> None:
    skip_on_timescaledb(database, "events are a hypertable; the chunk variant is "
                        f"{VARIANTS}::test_the_application_role_drops_only_expired_chunks")
    now = datetime.now(UTC)
    make_history(database, now, {"trygg.events": timedelta(days=100)}, rows=False)
    with psycopg.connect(database) as conn:
        leaves_ = partitions(conn, "trygg.events")
    old = next(p for p in leaves_ if p.upper is not None and p.upper < now - timedelta(days=40))
    recent = next(p for p in leaves_ if p.upper is not None and p.upper > now)
    with login(database, "trygg_app") as app_url, psycopg.connect(app_url, autocommit=True) as conn:
        refused = [
            ("trygg.events", recent.name, timedelta(days=31)),            # within the limit
            ("trygg.events", old.name, timedelta(days=3650)),             # within what the caller keeps
            ("trygg.audit_log", "trygg.audit_log", timedelta(days=31)),   # not a planned table
            ("trygg.heartbeats", old.name, timedelta(days=31)),           # not one of its partitions
        ]
        for parent, leaf, keep in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT trygg.drop_expired_partition(%s, %s, %s)", (parent, leaf, keep))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # it owns nothing
            conn.execute(sql.SQL("DROP TABLE {}").format(old.identifier))
        assert conn.execute("SELECT trygg.drop_expired_partition('trygg.events', %s, %s)",
                            (old.name, timedelta(days=1))).fetchone() == (True,)  # kept: max(1 day, 31-day floor)
    with psycopg.connect(database) as conn:
        assert old.name not in {p.name for p in partitions(conn, "trygg.events")}


def test_a_detach_cut_short_by_a_long_reader_fails_that_step_only_and_the_next_run_finishes_it(
        database: str, pool: Pool) -> None:
    skip_on_timescaledb(database, "events are a hypertable: no DETACH, drop_chunks instead")
    now = datetime.now(UTC)
    make_history(database, now, {"trygg.events": timedelta(days=500)})
    with psycopg.connect(database) as reader:
        reader.execute("SELECT count(*) FROM trygg.events").fetchone()  # holds its lock until commit
        first = run(pool, RETENTION, now)
        reader.commit()
    failed = [s for s in first.steps if not s.ok]
    assert [s.name for s in failed] == ["retention"]
    assert "lock timeout" in (failed[0].error or "")
    assert all(s.ok for s in first.steps if s.name != "retention")
    with psycopg.connect(database) as conn:
        logged = conn.execute("SELECT ok, error FROM trygg.maintenance_log WHERE step = 'retention'").fetchall()
    assert logged and logged[-1][0] is False and "lock timeout" in logged[-1][1]

    second = run(pool, RETENTION, now)
    assert second.ok, summary(second)
    expected = {n for n, (p, u, _) in leaves(database).items() if u is not None and u < now - keep_of(p)}
    assert not expected
    assert second.dropped
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhdetachpending").fetchone() == (0,)


def test_a_resend_inside_the_window_is_stored_once_after_key_pruning(database: str, pool: Pool) -> None:
    """Keys go a leaf at a time once the leaf's upper bound is 31 days old: an event whose
    key is gone was received more than 31 days ago, so its re-send is older than the
    gateway's 30-day window (plus 24 h of device clock) and is dead-lettered there."""
    now = datetime.now(UTC)
    press = Event("d-1-alarm", "e-1", EventType.ALARM_BUTTON, now - DAY, now - DAY, {}, "r-1")
    store = EventStore(pool)
    try:
        assert store.write([press]) == 1
        with psycopg.connect(database) as conn:
            key_leaf = next(p for p in partitions(conn, "trygg.event_keys")
                            if (p.lower is None or p.lower <= now) and p.upper is not None and now < p.upper)
        assert run(pool, RETENTION, now + timedelta(days=29)).ok  # the key's leaf is within 31 days
        assert store.write([press]) == 0
        pruned = run(pool, RETENTION, key_leaf.upper + EVENT_KEYS_KEEP + timedelta(minutes=1))
        assert pruned.ok and key_leaf.name in pruned.dropped
    finally:
        store.close()
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM trygg.events WHERE event_id = 'e-1'").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM trygg.event_keys WHERE event_id = 'e-1'").fetchone() == (0,)


# --- the audit log ----------------------------------------------------------------------

def test_audit_rows_survive_every_maintenance_run(database: str, pool: Pool) -> None:
    add_audit_rows(database, timedelta(days=20 * 365), timedelta(days=3 * 365), DAY)
    rows = audit_rows(database)
    now = datetime.now(UTC)
    for at in (now, now + timedelta(days=365), now + timedelta(days=30 * 365)):
        assert run(pool, RETENTION, at).ran
        assert audit_rows(database) == rows


def test_purging_the_audit_log_is_the_maintainers_never_inside_two_years_and_leaves_its_own_row(
        database: str) -> None:
    add_audit_rows(database, timedelta(days=5 * 365), timedelta(days=3 * 365), timedelta(days=365), timedelta(0))
    now = datetime.now(UTC)
    with psycopg.connect(database) as owner, pytest.raises(psycopg.errors.CheckViolation,
                                                            match="kept at least 2 years"):
        owner.execute("SELECT trygg.purge_audit_before(%s, 'Kari')", (now - timedelta(days=700),))
    with login(database, "trygg_app") as app_url, psycopg.connect(app_url, autocommit=True) as app:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT trygg.purge_audit_before(%s, 'app')", (now - timedelta(days=4 * 365),))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("DELETE FROM trygg.audit_log")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("TRUNCATE trygg.audit_log")
    assert len(audit_rows(database)) == 4

    with login(database, "trygg_maintainer") as url, psycopg.connect(url) as maintainer:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the function is its only way
            maintainer.execute("DELETE FROM trygg.audit_log")
        maintainer.rollback()
        removed = maintainer.execute("SELECT trygg.purge_audit_before(%s, 'Kari Nordmann')",
                                     (now - timedelta(days=2 * 365 + 1),)).fetchone()
        maintainer.commit()
        user = psycopg.conninfo.conninfo_to_dict(url)["user"]
    assert removed == (2,)
    rows = audit_rows(database)
    assert len(rows) == 3
    _, actor, role, action = rows[-1]
    assert (actor, role) == ("Kari Nordmann", "maintainer")
    assert action.startswith("audit_purged before ") and ": 2 rows" in action and str(user) in action


def test_the_delete_path_opens_only_for_the_owner_inside_the_function(database: str) -> None:
    """A role given DELETE on the log and setting the function's flag itself is refused by
    the trigger: the flag counts only for the table's owner."""
    add_audit_rows(database, timedelta(days=5 * 365))
    with login(database, "trygg_app") as url:
        name = psycopg.conninfo.conninfo_to_dict(url)["user"]
        with psycopg.connect(database, autocommit=True) as owner:
            owner.execute(sql.SQL("GRANT DELETE ON trygg.audit_log TO {}").format(sql.Identifier(str(name))))
        with psycopg.connect(url) as conn:
            conn.execute("SELECT set_config('trygg.audit_purge', 'on', true)")
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute("DELETE FROM trygg.audit_log")
    assert len(audit_rows(database)) == 1


# --- concurrency and ingest -------------------------------------------------------------

def test_of_two_concurrent_runs_one_does_the_work_and_the_other_says_so(database: str, pool: Pool) -> None:
    now = datetime.now(UTC)
    without_legacy_leaf(database, "trygg.dead_letters")
    make_history(database, now, {"trygg.dead_letters": timedelta(weeks=30)}, rows=False)  # (either engine)
    inside, release = threading.Event(), threading.Event()

    def hold(conn: psycopg.Connection[tuple[object, ...]], now: datetime) -> None:
        inside.set()
        release.wait(30)

    reports = {}
    first = threading.Thread(target=lambda: reports.update(
        first=run(pool, RETENTION, now, extra_steps=[Step("held", hold)])))
    first.start()
    try:
        assert inside.wait(10)
        reports["second"] = run(pool, RETENTION, now)
        old_still_there = {n for n, (p, u, _) in leaves(database).items() if u and u < now - keep_of(p)}
    finally:
        release.set()
        first.join(30)
    assert not reports["second"].ran and reports["second"].steps == []
    assert old_still_there  # the second one dropped nothing
    assert summary(reports["second"]) == [
        "maintenance: another run (another Trygg instance) holds the lock; nothing done"]
    assert reports["first"].ok and set(reports["first"].dropped) == old_still_there


#: a chunk a day in the first days of 2019 of the two hypertables (TimescaleDB), made by a
#: row each; the events' rows are deleted again (the research rollups would count 2019 on)
OLD_CHUNKS = """
INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at)
SELECT 'old', gen_random_uuid()::text, 'r-1', 'motion', d, d
FROM generate_series(timestamptz '2019-01-01 12:00+00', '2019-01-05 12:00+00', interval '1 day') d;
DELETE FROM trygg.events WHERE device_id = 'old';
INSERT INTO trygg.heartbeats (device_id, ts, received_at)
SELECT 'old', d, d FROM generate_series(timestamptz '2019-01-01 12:00+00', '2019-01-05 12:00+00', interval '1 day') d
ON CONFLICT DO NOTHING;  -- (a chunk kept until the refresh policy has run)
"""


def _ingest_under_maintenance(database: str, writer_pool: Pool, maintenance_pool: Pool,
                              seconds: float) -> tuple[int, int, list[float], int, int]:
    """A writer storing batches through EventStore (COPY) while maintenance runs again and
    again, each time dropping the old partitions made again before it. Returns (events
    written, stored, batch latencies, runs, partitions dropped)."""
    now = datetime.now(UTC)
    old = {"trygg.events": (datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 6, 1, tzinfo=UTC)),
           "trygg.event_keys": (datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 2, 15, tzinfo=UTC)),
           "trygg.heartbeats": (datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 1, 8, tzinfo=UTC)),
           "trygg.dead_letters": (datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 2, 15, tzinfo=UTC))}
    retention = Retention(events=timedelta(days=31), heartbeats=timedelta(days=14), device_hourly=timedelta(days=90),
                          device_daily=timedelta(days=1827), dead_letters=timedelta(days=90))
    with psycopg.connect(database, autocommit=True) as owner:  # old weekly leaves instead of the legacy ones
        for parent in ("trygg.event_keys", "trygg.dead_letters"):
            owner.execute(f"ALTER TABLE {parent} DETACH PARTITION {parent}_legacy")
            owner.execute(f"DROP TABLE {parent}_legacy")
            owner.execute("SELECT trygg.ensure_partitions(%s, %s, %s)", (parent, now - DAY, now + DAY))
    stop = threading.Event()
    latencies: list[float] = []
    written = 0
    store = EventStore(writer_pool)

    def write() -> None:
        nonlocal written
        n = 0
        while not stop.is_set():
            batch = []
            for _ in range(200):
                n += 1
                kind = EventType.HEARTBEAT if n % 2 else EventType.MOTION
                ts = now + timedelta(milliseconds=n)
                batch.append(Event(f"ing-{n % 20}", f"e-{n}", kind, ts, ts, {"battery_pct": 80}, "r-1"))
            t0 = time.perf_counter()
            store.write(batch)
            latencies.append(time.perf_counter() - t0)
            written += len(batch)

    writer = threading.Thread(target=write)
    runs = dropped = 0
    with psycopg.connect(database, autocommit=True) as owner:
        chunked = owner.execute("SELECT relkind FROM pg_class WHERE oid = 'trygg.events'::regclass"
                                ).fetchone() != ("p",)
        writer.start()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for parent, (lo, hi) in old.items():
                    owner.execute("SELECT trygg.ensure_partitions(%s, %s, %s)", (parent, lo, hi))
                if chunked:  # TimescaleDB: old chunks of events and heartbeats (a row makes one)
                    owner.execute(OLD_CHUNKS)
                report = run(maintenance_pool, retention)
                assert report.ok, summary(report)
                runs += 1
                dropped += len(report.dropped)
        finally:
            stop.set()
            writer.join(30)
            store.close()
        stored = sum(owner.execute(f"SELECT count(*) FROM {t} WHERE device_id LIKE 'ing-%%'").fetchone()[0]
                     for t in ("trygg.events", "trygg.heartbeats"))
    return written, stored, latencies, runs, dropped


@pytest.mark.serial
@pytest.mark.slow
@pytest.mark.parametrize("maintainer", ["owner", "trygg_app"])
def test_maintenance_under_concurrent_ingest_loses_nothing_and_does_not_hold_the_writer_up(
        database: str, pool: Pool, pool_of: PoolOf, maintainer: str) -> None:
    with contextlib.ExitStack() as stack:
        url = database if maintainer == "owner" else stack.enter_context(login(database, "trygg_app"))
        maintenance_pool = stack.enter_context(open_pool(url, 2, name="maintenance-test"))
        written, stored, latencies, runs, dropped = _ingest_under_maintenance(
            database, pool, maintenance_pool, seconds=4.0)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"\ningest under maintenance ({maintainer}): {written} events in {len(latencies)} batches, "
          f"{runs} runs dropped {dropped} partitions; batch p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert stored == written
    assert runs >= 2 and dropped >= runs * 10
    assert latencies[-1] < 1.0


# --- the commands -----------------------------------------------------------------------

def trygg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trygg", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def cli_env(database: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({"TRYGG_DATABASE_URL": database, "TRYGG_DATA_DIR": str(tmp_path), "TRYGG_LOG_FORMAT": "json",
                **settings})
    return env


def test_trygg_maintain_says_what_it_would_drop_then_drops_it(database: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    without_legacy_leaf(database, "trygg.dead_letters")
    make_history(database, now, {"trygg.dead_letters": timedelta(weeks=30)})  # weekly leaves on either engine
    env = cli_env(database, tmp_path, TRYGG_RETAIN_DEAD_LETTERS_DAYS="90")
    expected = sorted(n for n, (p, u, _) in leaves(database).items()
                      if p == "trygg.dead_letters" and u and u < now - timedelta(days=90))
    assert expected

    dry = trygg(env, "maintain", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for name in expected:
        assert f"would drop {name} (trygg.dead_letters, kept 90 days, ended " in dry.stdout
    assert f"dry run: {len(expected)} partition(s) would be dropped; nothing was changed" in dry.stdout
    assert set(expected) <= leaves(database).keys()

    done = trygg(env, "maintain")
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("retention"))
    assert f"dropped {len(expected)} partition(s): " + ", ".join(expected) in line
    assert f"{len(expected)} dropped" in done.stdout.splitlines()[-1]
    assert not set(expected) & leaves(database).keys()


def test_trygg_maintain_with_a_retention_under_its_minimum_stops_with_one_line(
        database: str, tmp_path: Path) -> None:
    result = trygg(cli_env(database, tmp_path, TRYGG_RETAIN_EVENTS_DAYS="7"), "maintain")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "trygg: invalid setting TRYGG_RETAIN_EVENTS_DAYS: Input should be greater than or equal to 31 (got '7')"]


def test_trygg_maintain_purge_audit(database: str, tmp_path: Path) -> None:
    add_audit_rows(database, timedelta(days=4 * 365), timedelta(days=365))
    with login(database, "trygg_maintainer") as url:
        env = cli_env(url, tmp_path)
        too_recent = trygg(env, "maintain", "purge-audit", "--before", f"{datetime.now(UTC).year - 1}-01-01",
                           "--actor", "Kari Nordmann")
        assert too_recent.returncode == 1
        assert "the audit log was not changed" in too_recent.stderr
        assert "kept at least 2 years" in too_recent.stderr
        cutoff = (datetime.now(UTC) - timedelta(days=3 * 365)).date().isoformat()
        done = trygg(env, "maintain", "purge-audit", "--before", cutoff, "--actor", "Kari Nordmann")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"audit log: 1 row(s) recorded before {cutoff} removed")
    with login(database, "trygg_app") as url:
        refused = trygg(cli_env(url, tmp_path), "maintain", "purge-audit", "--before", cutoff, "--actor", "x")
        assert refused.returncode == 1
        assert "must be a member of trygg_maintainer" in refused.stderr
    assert [r[2] for r in audit_rows(database)] == ["staff", "maintainer"]


@pytest.mark.slow
def test_trygg_up_runs_maintenance_every_interval(database: str, up: Callable[..., object]) -> None:
    process = up(database, TRYGG_MAINTENANCE_INTERVAL_S="1")

    def runs() -> int:
        with psycopg.connect(database) as conn:
            row = conn.execute("SELECT count(*) FROM trygg.maintenance_log WHERE step = 'partitions_ahead' AND ok"
                               ).fetchone()
        return int(row[0]) if row else 0

    assert wait_for(runs, lambda n: n >= 3, timeout=30) >= 3
    process.stop()  # type: ignore[attr-defined]
    assert process.proc.returncode == 0  # type: ignore[attr-defined]
    assert "part_that_must_not_end_has_ended" not in process.log.read_text()  # type: ignore[attr-defined]
