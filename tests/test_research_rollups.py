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
from psycopg.types.json import Jsonb

from dashboard.research import pseudonym, research_window, sync_pseudonyms
from storage import rollups
from storage.research_store import BUCKET_ZONE, BUCKETS, event_counts
from tests.fix_api import World, give_location_basis
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
