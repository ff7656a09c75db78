"""Research counts from the rollups (storage/rollups.py, docs/research.md "How the counts
stay fast"): the same answers as the raw rows give, at every bucket size and across the
daylight-saving changes of Europe/Oslo; a withdrawn consent leaves every answer at once
and a renewed one brings the resident back; a late event is counted; small groups are
judged on exact distinct residents; a new pseudonym key changes no count."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from dashboard.research import pseudonym, research_window, sync_pseudonyms
from storage import rollups, timescale
from storage.research_store import BUCKET_ZONE, BUCKETS, event_counts, response_times
from tests.fix_api import World, give_location_basis, insert_alert
from tests.fix_timescale import _use_timescale
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

KEY = b"rollup-test-key-0123456789"
TYPES = ("alarm.button", "motion", "door.opened", "location", "fall.detected", "heartbeat")
#: A week around each daylight-saving change of 2026 in Oslo (29 March, 25 October).
SPRING = datetime(2026, 3, 26, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC)
AUTUMN = datetime(2026, 10, 22, tzinfo=UTC), datetime(2026, 10, 29, tzinfo=UTC)
NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)

#: Today's raw query (before the rollups): counts over the research rows, no heartbeats.
RAW = """
SELECT date_trunc(%(bucket)s, ts, %(zone)s) AS bucket_start, type,
       count(*) AS events, count(DISTINCT resident_pseudonym) AS residents
FROM trygg.research_event_rows
WHERE ts >= %(since)s AND ts < %(until)s AND type <> 'heartbeat'
GROUP BY 1, 2 ORDER BY 1, 2
"""


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database, autocommit=True) as c:
        c.execute("SELECT trygg.ensure_event_partitions('2026-03-01', '2026-12-01')")
        c.execute("INSERT INTO trygg.teams (id, name) VALUES ('east', 'Øst')")
        yield c


def add_residents(conn: psycopg.Connection[Any], ids: range, *, consent: float = 0.8, basis: float = 0.5,
                  seed: int = 1) -> None:
    rng = random.Random(seed)
    for n in ids:
        rid = f"r-{n}"
        conn.execute("INSERT INTO trygg.residents (id, name, team_id, consents, location_basis)"
                     " VALUES (%s, %s, 'east', %s, %s)",
                     (rid, f"Person {n}", Jsonb({"research": rng.random() < consent}),
                      Jsonb({"kind": "vedtak"}) if rng.random() < basis else None))
    asyncio.run(_sync(conn.info.dsn, KEY))


async def _sync(dsn: str, key: bytes) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as aconn:
        written = await sync_pseudonyms(aconn, key)
        await aconn.commit()
        return written


def write_events(conn: psycopg.Connection[Any], rows: list[tuple[str, str, datetime]]) -> None:
    """(resident, type, ts) rows stored as the event writer stores a batch: staged, inserted,
    and the closed hours they fall in marked dirty (storage/rollups.py MARK_DIRTY_SQL)."""
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS event_stage (n int, device_id text, event_id text,"
                     " resident_id text, type text, ts timestamptz, received_at timestamptz, doc jsonb)"
                     " ON COMMIT DELETE ROWS")
        with conn.cursor().copy("COPY event_stage FROM STDIN") as copy:
            for n, (rid, type_, ts) in enumerate(rows):
                copy.write_row((n, f"d-{rid}", f"e-{random.getrandbits(64):x}", rid, type_, ts, ts, Jsonb({
                    "data": {"lat": 59.91, "lon": 10.75} if type_ == "location" else {}})))
        conn.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
                     " SELECT device_id, event_id, resident_id, type, ts, received_at, doc -> 'data'"
                     " FROM event_stage ORDER BY n")
        conn.execute(rollups.MARK_DIRTY_SQL)


def random_events(rng: random.Random, residents: range, span: tuple[datetime, datetime],
                  count: int) -> list[tuple[str, str, datetime]]:
    seconds = int((span[1] - span[0]).total_seconds())
    return [(f"r-{rng.choice(residents)}", rng.choice(TYPES), span[0] + timedelta(seconds=rng.randrange(seconds),
                                                                                   microseconds=rng.randrange(10**6)))
            for _ in range(count)]


def counts(conn: psycopg.Connection[Any], since: datetime, until: datetime, bucket: str,
           event_type: str | None = None) -> list[tuple[Any, ...]]:
    async def run() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(conn.info.dsn) as aconn:
            await rollups.areconcile(aconn)
            return await event_counts(aconn, since, until, bucket, event_type)
    return [(r["bucket_start"], r["type"], r["events"], r["residents"]) for r in asyncio.run(run())]


def raw(conn: psycopg.Connection[Any], since: datetime, until: datetime, bucket: str) -> list[tuple[Any, ...]]:
    return conn.execute(RAW, {"bucket": bucket, "zone": BUCKET_ZONE, "since": since, "until": until}).fetchall()


def windows(rng: random.Random) -> list[tuple[datetime, datetime, str]]:
    """Whole-bucket windows as the API asks them, and ragged ones (inside hours)."""
    out = []
    for span in (SPRING, AUTUMN):
        for bucket in BUCKETS:
            out.append((*research_window(span[0], span[1], bucket), bucket))
            start = span[0] + timedelta(hours=rng.randrange(48), minutes=rng.randrange(60))
            out.append((start, start + timedelta(days=rng.randrange(1, 5), minutes=rng.randrange(600)), bucket))
    out.append((SPRING[0], AUTUMN[1], "month"))
    return out


def assert_same(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    for since, until, bucket in windows(rng):
        assert counts(conn, since, until, bucket) == raw(conn, since, until, bucket), (since, until, bucket)


def test_rollup_answers_equal_raw_answers_through_consent_changes_and_late_events(
        conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(16)
    add_residents(conn, range(1, 41))
    events = [*random_events(rng, range(1, 41), SPRING, 3000), *random_events(rng, range(1, 41), AUTUMN, 3000)]
    write_events(conn, events)
    done = rollups.close(conn, NOW)
    assert done["closed_until"] == "2026-11-02T11:00:00+00:00"
    assert conn.execute("SELECT count(*) FROM trygg.research_hourly").fetchone() != (0,)
    assert_same(conn, rng)

    # Consent withdrawn and given, a location basis ended and begun, new residents
    # beyond the bitmaps' first 64 bits, and late events in closed hours.
    conn.execute("UPDATE trygg.residents SET consents = jsonb_build_object('research', NOT"
                 " coalesce((consents ->> 'research')::boolean, false)) WHERE id IN ('r-1', 'r-2', 'r-3', 'r-4')")
    conn.execute("UPDATE trygg.residents SET location_basis = CASE WHEN location_basis IS NULL"
                 " THEN '{\"kind\": \"consent\"}'::jsonb END WHERE id IN ('r-5', 'r-6', 'r-7')")
    add_residents(conn, range(41, 101), consent=0.9, seed=2)
    late = [*random_events(rng, range(1, 101), SPRING, 500), *random_events(rng, range(1, 101), AUTUMN, 500)]
    write_events(conn, late)
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone()[0] > 0
    assert_same(conn, rng)  # dirty hours answered from raw rows until the next close
    assert conn.execute("SELECT capacity FROM trygg.research_rollup_state").fetchone()[0] >= 128

    rollups.close(conn, NOW + timedelta(minutes=10))
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone() == (0,)
    assert_same(conn, rng)

    # The rollups themselves are what the raw rows say now (not only the merged answers).
    conn.execute("UPDATE trygg.research_rollup_state SET closed_until = NULL")
    raw_only = {s: counts(conn, *research_window(*s, "hour"), "hour") for s in (SPRING, AUTUMN)}
    conn.execute("UPDATE trygg.research_rollup_state SET closed_until = %s", (NOW,))
    assert {s: counts(conn, *research_window(*s, "hour"), "hour") for s in (SPRING, AUTUMN)} == raw_only


def test_rebuild_of_a_bulk_load_equals_raw_answers(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(7)
    add_residents(conn, range(1, 31))
    with conn.cursor().copy("COPY trygg.events (device_id, event_id, resident_id, type, ts, received_at)"
                            " FROM STDIN") as copy:
        for n, (rid, type_, ts) in enumerate(random_events(rng, range(1, 31), (SPRING[0], AUTUMN[1]), 8000)):
            copy.write_row((f"d-{rid}", f"bulk-{n}", rid, type_, ts, ts))
    rollups.rebuild(conn, SPRING[0], AUTUMN[1])
    assert conn.execute("SELECT closed_until FROM trygg.research_rollup_state").fetchone() == (AUTUMN[1],)
    assert_same(conn, rng)
    # again over a part: the same rollups
    before = conn.execute("SELECT * FROM trygg.research_daily ORDER BY day, type").fetchall()
    rollups.rebuild(conn, AUTUMN[0], AUTUMN[1])
    assert conn.execute("SELECT * FROM trygg.research_daily ORDER BY day, type").fetchall() == before


def test_late_event_is_counted_at_once_and_rolled_up_at_the_next_close(conn: psycopg.Connection[Any]) -> None:
    add_residents(conn, range(1, 8), consent=1.0)
    hour = datetime(2026, 10, 27, 9, tzinfo=UTC)
    write_events(conn, [(f"r-{n}", "motion", hour + timedelta(minutes=n)) for n in range(1, 6)])
    rollups.close(conn, NOW)
    day = research_window(hour, hour, "day")
    assert counts(conn, *day, "day") == [(day[0], "motion", 5, 5)]

    write_events(conn, [("r-6", "motion", hour + timedelta(minutes=30))])  # late: its hour is closed
    assert conn.execute("SELECT hour FROM trygg.research_dirty_hours").fetchall() == [(hour,)]
    assert counts(conn, *day, "day") == [(day[0], "motion", 6, 6)]
    assert counts(conn, *day, "hour") == [(hour, "motion", 6, 6)]

    done = rollups.close(conn, NOW)
    assert done["dirty_hours"] == 1
    assert conn.execute("SELECT events FROM trygg.research_hourly WHERE hour = %s", (hour,)).fetchone() == (6,)
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone() == (0,)
    assert counts(conn, *day, "week") == [(research_window(hour, hour, "week")[0], "motion", 6, 6)]

    # A heartbeat is never a research event (and needs no recomputation).
    write_events(conn, [("r-6", "heartbeat", hour)])
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone() == (0,)


def test_a_new_pseudonym_key_changes_no_count(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(3)
    add_residents(conn, range(1, 21), consent=1.0)
    write_events(conn, random_events(rng, range(1, 21), AUTUMN, 2000))
    rollups.close(conn, NOW)
    window = research_window(*AUTUMN, "day")
    before = counts(conn, *window, "day")
    assert asyncio.run(_sync(conn.info.dsn, b"another-key-0123456789")) == 20
    assert conn.execute("SELECT pseudonym FROM trygg.research_pseudonyms WHERE resident_id = 'r-1'"
                        ).fetchone() == (pseudonym(b"another-key-0123456789", "r-1"),)
    assert counts(conn, *window, "day") == before == raw(conn, *window, "day")


# --- through the API ------------------------------------------------------------------

DAY = datetime(2026, 11, 18, tzinfo=UTC)
SINCE, UNTIL = "2026-11-18T00:00:00Z", "2026-11-19T00:00:00Z"


def api_counts(w: World, bucket: str = "day", event_type: str = "alarm.button") -> dict[str, Any]:
    response = w.client.get("/api/research/events", params={"since": SINCE, "until": UNTIL, "bucket": bucket,
                                                             "type": event_type}, headers=w.headers("researcher"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def close_now(w: World) -> None:
    with psycopg.connect(w.url, autocommit=True) as conn:
        rollups.close(conn, datetime.now(UTC))


def set_consent(w: World, resident: str, research: bool) -> None:
    with psycopg.connect(w.url) as conn:
        conn.execute("UPDATE trygg.residents SET consents = consents || jsonb_build_object('research', %s::boolean)"
                     " WHERE id = %s", (research, resident))


def test_a_withdrawn_consent_leaves_every_answer_at_once_and_a_renewed_one_returns(world: World) -> None:
    """Six residents press the alarm on one day (three hours each); the day is rolled up.
    r-2 withdraws: the very next answer has 5 residents and none of r-2's presses; r-4
    too: the group of 4 is held back (judged on exact distinct residents, not on the 12
    resident-hours). Consent given again: back in the next answer."""
    give_location_basis(world, ())  # everyone consents to research
    pressers = ("r-1", "r-2", "r-3", "r-4", "r-5", "r-6")
    with psycopg.connect(world.url, autocommit=True) as conn:
        write_events(conn, [(rid, "alarm.button", DAY + timedelta(hours=h, minutes=n))
                            for n, rid in enumerate(pressers) for h in (8, 12, 16)])
    close_now(world)
    assert api_counts(world)["rows"] == [{"bucket_start": "2026-11-17T23:00:00Z", "type": "alarm.button",
                                          "events": 18, "residents": 6}]

    set_consent(world, "r-2", False)
    assert [(r["events"], r["residents"]) for r in api_counts(world)["rows"]] == [(15, 5)]
    set_consent(world, "r-4", False)
    day = api_counts(world)
    assert day["rows"] == [] and day["suppressed_groups"] == 1
    hourly = api_counts(world, "hour")
    assert hourly["rows"] == [] and hourly["suppressed_groups"] == 3

    set_consent(world, "r-2", True)
    set_consent(world, "r-4", True)
    assert [(r["events"], r["residents"]) for r in api_counts(world)["rows"]] == [(18, 6)]
    with psycopg.connect(world.url) as conn:  # the stored counts are back too, not only the answer
        assert conn.execute("SELECT sum(events) FROM trygg.research_hourly WHERE type = 'alarm.button'"
                            ).fetchone() == (18,)


def test_a_withdrawn_consent_leaves_the_response_times_at_once(world: World) -> None:
    """Six residents' falls on one day, acknowledged after 10..60 s; the day is rolled up.
    r-6 (60 s) withdraws: the next answer has 5 residents and none of r-6's seconds; r-5
    too: the kind is held back. Consent given again: back in the next answer."""
    give_location_basis(world, ())
    opened = DAY + timedelta(hours=9)
    with psycopg.connect(world.url) as conn:
        for n in range(1, 7):
            insert_alert(conn, {"alert_id": f"fall-{n}", "resident_id": f"r-{n}", "team_id": "east", "kind": "fall",
                                "priority": "high", "state": "resolved", "opened_at": opened, "updated_at": opened,
                                "acknowledged_at": opened + timedelta(seconds=10 * n),
                                "resolved_at": opened + timedelta(minutes=10)})
    close_now(world)
    with psycopg.connect(world.url) as conn:
        assert conn.execute("SELECT alerts FROM trygg.research_alerts_daily").fetchall() == [(6,)]

    def fall() -> dict[str, Any]:
        response = world.client.get("/api/research/response-times", params={"since": SINCE, "until": UNTIL},
                                    headers=world.headers("researcher"))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    assert [(k["residents"], k["time_to_acknowledge_s"]["p99"]) for k in fall()["kinds"]] == [(6, 59.5)]
    set_consent(world, "r-6", False)
    assert [(k["alerts"], k["residents"], k["time_to_acknowledge_s"]["p99"]) for k in fall()["kinds"]] == [
        (5, 5, 49.6)]
    set_consent(world, "r-5", False)
    held = fall()
    assert held["kinds"] == [] and held["suppressed_groups"] == 1
    set_consent(world, "r-5", True)
    set_consent(world, "r-6", True)
    assert [(k["residents"], k["time_to_acknowledge_s"]["p99"]) for k in fall()["kinds"]] == [(6, 59.5)]


def test_an_event_written_while_its_hour_closes_is_counted(conn: psycopg.Connection[Any]) -> None:
    """A writer stores an event in an hour that is not closed yet and has checked whether
    to mark it (no: not closed) but not committed, when a close of that hour starts. The
    close waits for the writer before it computes, so the event is in the hour."""
    add_residents(conn, range(1, 4), consent=1.0)
    hour = datetime(2026, 10, 27, 9, tzinfo=UTC)
    rollups.close(conn, hour)  # closed up to 08:00
    with psycopg.connect(conn.info.dsn) as writer:
        write_events(writer, [("r-1", "motion", hour + timedelta(minutes=1))])  # commits
        with writer.transaction():
            writer.execute("CREATE TEMP TABLE IF NOT EXISTS event_stage (n int, device_id text, event_id text,"
                           " resident_id text, type text, ts timestamptz, received_at timestamptz, doc jsonb)")
            writer.execute("INSERT INTO event_stage VALUES (0, 'd-r-2', 'late-1', 'r-2', 'motion', %s, %s, '{}')",
                           (hour + timedelta(minutes=2), hour))
            writer.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at)"
                           " SELECT device_id, event_id, resident_id, type, ts, received_at FROM event_stage")
            writer.execute(rollups.MARK_DIRTY_SQL)
            assert writer.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone() == (0,)
            closing = threading.Thread(target=lambda: rollups.close(conn, hour + timedelta(hours=1, minutes=5)))
            closing.start()
            waiting = wait_for(lambda: conn_waits(writer), bool, timeout=10, interval=0.01)
            assert waiting, "the close did not wait for the writer"
        closing.join(10)
    assert conn.execute("SELECT events FROM trygg.research_hourly WHERE hour = %s", (hour,)).fetchone() == (2,)
    day = research_window(hour, hour, "day")
    assert counts(conn, *day, "day") == raw(conn, *day, "day") == [(day[0], "motion", 2, 2)]


def conn_waits(c: psycopg.Connection[Any]) -> bool:
    """Whether another session waits for a lock this one holds."""
    row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                    " AND pg_backend_pid() = ANY(pg_blocking_pids(pid))").fetchone()
    return bool(row and row[0])


# --- response times -----------------------------------------------------------------------

#: Today's raw query (before the rollups): response times over research.alerts.
RAW_TIMES = """
SELECT kind, count(*) AS alerts, count(DISTINCT resident_pseudonym) AS residents,
       count(seconds_to_acknowledge) AS acknowledged,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY seconds_to_acknowledge) AS acknowledge,
       count(seconds_to_resolve) AS resolved,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY seconds_to_resolve) AS resolve
FROM research.alerts WHERE opened_at >= %s AND opened_at < %s
GROUP BY kind ORDER BY kind
"""
KINDS = ("fall", "alarm", "smoke", "device_offline")


def times(conn: psycopg.Connection[Any], since: datetime, until: datetime) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(conn.info.dsn) as aconn:
            await rollups.areconcile(aconn)
            return await response_times(aconn, since, until)
    return asyncio.run(run())


def raw_times(conn: psycopg.Connection[Any], since: datetime, until: datetime) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(RAW_TIMES, (since, until)).fetchall()


def add_alerts(conn: psycopg.Connection[Any], rng: random.Random, residents: range, span: tuple[datetime, datetime],
               count: int, prefix: str) -> list[str]:
    """Alerts opened at random in `span`: a third still open, some acknowledged only,
    some cancelled, the rest resolved; durations with microseconds (exact values)."""
    seconds = int((span[1] - span[0]).total_seconds())
    ids = []
    for n in range(count):
        opened = span[0] + timedelta(seconds=rng.randrange(seconds), microseconds=rng.randrange(10**6))
        ack = opened + timedelta(seconds=rng.expovariate(1 / 90), microseconds=rng.randrange(10**6))
        fate = rng.random()
        state, acked, resolved = (("open", None, None) if fate < 0.3 else
                                  ("acknowledged", ack, None) if fate < 0.5 else
                                  ("cancelled", None, None) if fate < 0.6 else
                                  ("resolved", ack, ack + timedelta(seconds=rng.expovariate(1 / 900))))
        alert_id = f"{prefix}-{n}"
        insert_alert(conn, {"alert_id": alert_id, "resident_id": f"r-{rng.choice(residents)}", "team_id": "east",
                            "kind": rng.choice(KINDS), "priority": "high", "state": state, "opened_at": opened,
                            "updated_at": opened, "acknowledged_at": acked, "resolved_at": resolved})
        ids.append(alert_id)
    return ids


def time_windows(rng: random.Random) -> list[tuple[datetime, datetime]]:
    """Whole days as the API asks them, and ragged windows (inside hours, across days)."""
    out = [research_window(*span, "day") for span in (SPRING, AUTUMN)]
    out.append((SPRING[0], AUTUMN[1]))
    for span in (SPRING, AUTUMN):
        start = span[0] + timedelta(hours=rng.randrange(48), minutes=rng.randrange(60), seconds=rng.randrange(60))
        out.append((start, start + timedelta(days=rng.randrange(1, 5), minutes=rng.randrange(600))))
    return out


def assert_same_times(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    for since, until in time_windows(rng):
        assert times(conn, since, until) == raw_times(conn, since, until), (since, until)


def test_response_times_from_rollups_equal_raw_answers_as_alerts_change_and_consent_changes(
        conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(1616)
    add_residents(conn, range(1, 41))
    ids = [*add_alerts(conn, rng, range(1, 41), SPRING, 400, "s"),
           *add_alerts(conn, rng, range(1, 41), AUTUMN, 400, "a")]
    rollups.close(conn, NOW)
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone() == (0,)
    assert conn.execute("SELECT sum(alerts) FROM trygg.research_alerts_daily").fetchone()[0] > 300
    assert_same_times(conn, rng)

    # Alerts change after their day was rolled up: open ones acknowledged and resolved,
    # one reopened, one deleted, one written late (opened days ago), one moved to another
    # kind. Each marks its hour: answered from raw alerts at once, rolled up at the next close.
    still_open = [r[0] for r in conn.execute("SELECT alert_id FROM trygg.alerts WHERE state = 'open'"
                                             " ORDER BY alert_id LIMIT 40").fetchall()]
    conn.execute("UPDATE trygg.alerts SET state = 'acknowledged', acknowledged_at = opened_at + interval '7 min 3.25 s'"
                 " WHERE alert_id = ANY(%s)", (still_open[:20],))
    conn.execute("UPDATE trygg.alerts SET state = 'resolved', acknowledged_at = opened_at + interval '2 min',"
                 " resolved_at = opened_at + interval '3 h 0.5 s' WHERE alert_id = ANY(%s)", (still_open[20:],))
    resolved = conn.execute("SELECT alert_id FROM trygg.alerts WHERE state = 'resolved' AND NOT alert_id = ANY(%s)"
                            " ORDER BY alert_id LIMIT 2", (still_open,)).fetchall()
    conn.execute("UPDATE trygg.alerts SET state = 'open', acknowledged_at = NULL, resolved_at = NULL"
                 " WHERE alert_id = %s", resolved[0])
    conn.execute("UPDATE trygg.alerts SET kind = 'smoke' WHERE alert_id = %s", resolved[1])
    conn.execute("DELETE FROM trygg.alerts WHERE alert_id = %s", (ids[5],))
    add_alerts(conn, rng, range(1, 41), AUTUMN, 3, "late")
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone()[0] > 30
    assert_same_times(conn, rng)
    rollups.close(conn, NOW)
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone() == (0,)
    assert_same_times(conn, rng)
    # a change no answer shows (an escalation step) marks nothing
    conn.execute("UPDATE trygg.alerts SET escalation_level = escalation_level + 1, updated_at = now()")
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone() == (0,)

    # Consent withdrawn and given, new residents (bitmaps grow past 64 bits) with alerts.
    conn.execute("UPDATE trygg.residents SET consents = jsonb_build_object('research', NOT"
                 " coalesce((consents ->> 'research')::boolean, false)) WHERE id IN ('r-1', 'r-2', 'r-3', 'r-4')")
    add_residents(conn, range(41, 101), consent=0.9, seed=3)
    add_alerts(conn, rng, range(1, 101), AUTUMN, 200, "new")
    assert_same_times(conn, rng)
    rollups.close(conn, NOW + timedelta(minutes=10))
    assert conn.execute("SELECT count(*) FROM trygg.research_dirty_hours").fetchone() == (0,)
    assert_same_times(conn, rng)
    conn.execute("UPDATE trygg.residents SET consents = '{\"research\": false}' WHERE id IN ('r-5', 'r-41', 'r-42')")
    assert_same_times(conn, rng)

    # The rollup rows themselves are what the raw alerts give now (not only the answers).
    stored = conn.execute("SELECT * FROM trygg.research_alerts_daily ORDER BY day, kind").fetchall()
    rollups.rebuild(conn, SPRING[0], NOW + timedelta(minutes=10))
    assert conn.execute("SELECT * FROM trygg.research_alerts_daily ORDER BY day, kind").fetchall() == stored


def test_an_alert_acknowledged_through_the_alert_writer_is_answered_at_once(conn: psycopg.Connection[Any]) -> None:
    """The alert writer upserts whole rows (INSERT … ON CONFLICT DO UPDATE): an
    acknowledgement of an alert whose day is rolled up is in the very next answer."""
    add_residents(conn, range(1, 8), consent=1.0)
    opened = datetime(2026, 10, 27, 9, 30, tzinfo=UTC)
    for n in range(1, 7):
        insert_alert(conn, {"alert_id": f"f-{n}", "resident_id": f"r-{n}", "team_id": "east", "kind": "fall",
                            "priority": "high", "state": "open", "opened_at": opened, "updated_at": opened,
                            "version": 1})
    rollups.close(conn, NOW)
    day = research_window(opened, opened, "day")
    assert [(r["alerts"], r["residents"], r["acknowledged"], r["acknowledge"]) for r in times(conn, *day)] == [
        (6, 6, 0, None)]
    conn.execute("INSERT INTO trygg.alerts SELECT * FROM trygg.alerts WHERE alert_id = 'f-1'"
                 " ON CONFLICT (alert_id) DO UPDATE SET state = 'acknowledged', version = 2,"
                 " acknowledged_at = excluded.opened_at + interval '42 s' WHERE trygg.alerts.version < 2")
    assert [(r["acknowledged"], r["acknowledge"]) for r in times(conn, *day)] == [(1, [42.0, 42.0, 42.0])]
    rollups.close(conn, NOW)
    assert conn.execute("SELECT acknowledge FROM trygg.research_alerts_daily").fetchall() == [([42.0],)]
    assert times(conn, *day) == raw_times(conn, *day)


# --- retention --------------------------------------------------------------------------


def drop_events_before(conn: psycopg.Connection[Any], cut: datetime) -> None:
    """What retention does: whole partitions (or TimescaleDB chunks) of trygg.events whose
    upper bound is at or before `cut`."""
    if timescale.is_hypertable(conn, "trygg.events"):
        timescale.drop_old_chunks(conn, "trygg.events", cut)
        return
    leaves = conn.execute(
        "SELECT c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'trygg.events'::regclass").fetchall()
    for name, bound in leaves:
        if bound != "DEFAULT":
            upper = conn.execute("SELECT (regexp_match(%s, 'TO \\(''([^'']+)''\\)'))[1]::timestamptz",
                                 (bound,)).fetchone()[0]
            if upper <= cut:
                conn.execute(f"ALTER TABLE trygg.events DETACH PARTITION {name}")
                conn.execute(f"DROP TABLE {name}")


def test_forget_before_leaves_nothing_of_dropped_events_and_answers_stay_those_of_the_rows_left(
        conn: psycopg.Connection[Any], pytestconfig: pytest.Config) -> None:
    """Events of March and April rolled up; retention drops what lies before 1 April 00:00
    UTC (01:00 or 02:00 in Oslo: the cut falls inside an Oslo day). After `forget_before`:
    no rollup hour before the cut; counts at every bucket size equal those of the raw rows
    left (the day of the cut holds only its later hours); a resident who withdraws then
    leaves every count, though the rows of theirs that were dropped can no longer be read;
    response times (alerts are kept) are unchanged; a second call removes nothing."""
    rng = random.Random(44)
    add_residents(conn, range(1, 31), consent=1.0)
    span = (datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 4, 10, tzinfo=UTC))
    write_events(conn, random_events(rng, range(1, 31), span, 4000))
    add_alerts(conn, rng, range(1, 31), span, 200, "x")
    rollups.close(conn, NOW)
    whole = (span[0], span[1])
    alerts_before = times(conn, *whole)

    cut = datetime(2026, 4, 1, tzinfo=UTC)
    # chunks dropped with --timescale, partitions otherwise
    assert timescale.is_hypertable(conn, "trygg.events") == _use_timescale(pytestconfig)
    drop_events_before(conn, cut)
    assert conn.execute("SELECT count(*) FROM trygg.events WHERE ts < %s", (cut,)).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM trygg.events WHERE ts >= %s", (cut,)).fetchone()[0] > 1000
    removed = rollups.forget_before(conn, cut)
    assert removed > 0
    assert conn.execute("SELECT count(*) FROM trygg.research_hourly WHERE hour < %s", (cut,)).fetchone() == (0,)
    # the Oslo day of the cut began before it: its row is the sum of its hours left
    assert conn.execute(
        "SELECT count(*) FROM trygg.research_daily d WHERE d.events <> (SELECT coalesce(sum(h.events), 0)"
        " FROM trygg.research_hourly h WHERE h.type = d.type AND date_trunc('day', h.hour, 'Europe/Oslo') = d.day)"
    ).fetchone() == (0,)
    for bucket in BUCKETS:
        window = research_window(*whole, bucket)
        assert counts(conn, *window, bucket) == raw(conn, *window, bucket), bucket

    conn.execute("UPDATE trygg.residents SET consents = '{\"research\": false}' WHERE id = 'r-7'")
    window = research_window(*whole, "day")
    assert counts(conn, *window, "day") == raw(conn, *window, "day")
    assert counts(conn, *window, "day") == raw(conn, *window, "day")  # r-7's remaining rows subtracted
    assert conn.execute("SELECT count(*) FROM trygg.research_hourly h, trygg.research_ordinals o"
                        " WHERE o.resident_id = 'r-7' AND get_bit(h.members, o.ord) = 1").fetchone() == (0,)
    conn.execute("UPDATE trygg.residents SET consents = '{\"research\": true}' WHERE id = 'r-7'")
    assert times(conn, *whole) == alerts_before == raw_times(conn, *whole)
    assert rollups.forget_before(conn, cut) == 0
    rollups.close(conn, NOW + timedelta(hours=1))
    for bucket in BUCKETS:
        window = research_window(*whole, bucket)
        assert counts(conn, *window, bucket) == raw(conn, *window, bucket), bucket


def test_forget_before_a_time_inside_an_hour_reads_that_hour_from_the_rows_left(
        conn: psycopg.Connection[Any]) -> None:
    add_residents(conn, range(1, 8), consent=1.0)
    hour = datetime(2026, 10, 27, 9, tzinfo=UTC)
    write_events(conn, [(f"r-{n}", "motion", hour + timedelta(minutes=10 * n)) for n in range(1, 6)])
    rollups.close(conn, NOW)
    conn.execute("DELETE FROM trygg.events WHERE ts < %s", (hour + timedelta(minutes=25),))  # (a chunk's edge)
    rollups.forget_before(conn, hour + timedelta(minutes=25))
    day = research_window(hour, hour, "day")
    assert counts(conn, *day, "hour") == raw(conn, *day, "hour") == [(hour, "motion", 3, 3)]
    rollups.close(conn, NOW)
    assert conn.execute("SELECT events FROM trygg.research_hourly WHERE hour = %s", (hour,)).fetchone() == (3,)
