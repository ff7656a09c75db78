"""The insights store against a real PostgreSQL (storage/insights_store.py, migration 0019;
docs/storage.md "Insights"): a day's events of several residents come back as one columnar
`Events`, each row in its resident's frame, rooms and doors coded, positions only on days
with a location basis, a heard hour per activity sensor from the hourly rollup and the raw
heartbeats; days, notices and states are written in one go, a recompute keeps who saw a
notice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from storage import Pool
from storage.insights_store import (
    HASHED_ROOMS,
    RecordFormatError,
    Sensor,
    first_event_days,
    forget,
    parse_records,
    read_events,
    read_progress,
    read_states,
    try_lock,
    unlock,
    write_results,
)
from trygg.insights import FEATURES, ROOM_BATHROOM, Bands, Daily, Direction, Frames, Kind, Notice

pytestmark = pytest.mark.integration

OSLO = ZoneInfo("Europe/Oslo")
DAY = date(2026, 10, 25)  # the night before ends summer time in Norway: a 25-hour day
F = len(FEATURES)


def frames_of(days: list[tuple[date, bool]], zone: ZoneInfo = OSLO) -> Frames:
    """Frames of local days (23:00–06:00 nights), built by hand."""
    def at(d: date, t: time) -> float:
        return datetime.combine(d, t, zone).timestamp()

    return Frames(
        day_start=np.array([at(d, time(0)) for d, _ in days]),
        day_end=np.array([at(d + timedelta(days=1), time(0)) for d, _ in days]),
        night_start=np.array([at(d - timedelta(days=1), time(23)) for d, _ in days]),
        night_end=np.array([at(d, time(6)) for d, _ in days]),
        activity_sensors=np.full(len(days), 2, np.int16),
        away=np.zeros(len(days), np.bool_),
        located=np.array([loc for _, loc in days]),
    )


def local(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hour, minute), OSLO)


def add_events(conn: psycopg.Connection[tuple[object, ...]],
               rows: list[tuple[str, str, str, datetime, dict[str, object]]]) -> None:
    for i, (device, resident, kind, ts, data) in enumerate(rows):
        conn.execute("INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
                     " VALUES (%s, %s, %s, %s, %s, %s, %s)", (device, f"e{i}", resident, kind, ts, ts, Jsonb(data)))


SENSORS = [
    Sensor("a-motion-bed", 0, "motion_sensor", "Bedroom"),
    Sensor("a-motion-bath", 0, "motion_sensor", "bad"),
    Sensor("a-door", 0, "door_sensor"),
    Sensor("a-alarm", 0, "alarm_unit"),
    Sensor("a-gps", 0, "gps_tracker"),
    Sensor("b-motion", 1, "motion_sensor", "kitchen"),
]


@pytest.fixture
def conn(pool: Pool) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with pool.connection() as c:
        c.autocommit = True
        for parent in ("trygg.heartbeats", "trygg.device_hourly"):
            c.execute("SELECT trygg.ensure_partitions(%s, %s, %s)",
                      (parent, local(0) - timedelta(days=2), local(0) + timedelta(days=2)))
        yield c


def test_a_day_of_two_residents_comes_back_in_their_frames(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    rows: list[tuple[str, str, str, datetime, dict[str, object]]] = [
        # resident a: the night before (23:30 on the 24th) counts, 22:00 on the 24th does not
        ("a-motion-bed", "a", "motion", local(22, 0, DAY - timedelta(days=1)), {}),
        ("a-motion-bath", "a", "motion", local(23, 30, DAY - timedelta(days=1)), {}),
        ("a-motion-bed", "a", "motion", local(7, 15), {"room": "Toalett "}),  # the event's room wins
        ("a-motion-bed", "a", "motion", local(7, 20), {}),  # the sensor's room
        ("a-motion-bed", "a", "motion", local(7, 25), {"room": "vinterhage"}),  # a name nobody listed
        ("a-motion-bed", "a", "motion", local(7, 26), {"room": "Vinterhage"}),
        ("a-door", "a", "door.opened", local(9), {}),  # no name: the front door
        ("a-door", "a", "door.closed", local(9, 1), {"door": "Balcony"}),
        ("a-door", "a", "door.closed", local(9, 2), {"door": "ytterdør"}),
        ("a-alarm", "a", "alarm.button", local(12), {}),
        ("a-alarm", "a", "alarm.cancel", local(12, 1), {}),  # not a row of ours
        ("a-gps", "a", "location", local(10), {"lat": 59.9, "lon": 10.7, "accuracy_m": 12}),
        ("x-lock", "a", "door.unlocked", local(13), {"by": "ola"}),  # a device the registry does not list
        ("a-motion-bed", "a", "motion", local(0, 0, DAY + timedelta(days=1)), {}),  # the next day
        # resident b: a position on a day without a location basis is not read
        ("b-motion", "b", "motion", local(8), {}),
        ("b-gps", "b", "location", local(10), {"lat": 59.0, "lon": 10.0, "accuracy_m": 5}),
        ("c-motion", "c", "motion", local(8), {}),  # not in the batch
    ]
    add_events(conn, rows[::-1])  # stored out of order
    frames = frames_of([(DAY, True), (DAY, False)])
    events = read_events(conn, ["a", "b"], frames, SENSORS)

    a = events.row == 0
    assert list(events.row) == sorted(events.row)
    assert (np.diff(events.t[a]) >= 0).all()
    assert events.t[a].min() == local(23, 30, DAY - timedelta(days=1)).timestamp()
    assert events.t[a].max() < frames.day_end[0]
    kinds = events.kind[a & (events.kind != Kind.HEARD)].tolist()
    assert kinds == [Kind.MOTION] * 5 + [Kind.DOOR_OPENED, Kind.DOOR_CLOSED, Kind.DOOR_CLOSED, Kind.LOCATION,
                                         Kind.BUTTON, Kind.LOCK]
    motion = a & (events.kind == Kind.MOTION)
    rooms = events.room[motion].tolist()
    assert rooms[0] == ROOM_BATHROOM  # the bathroom sensor at night
    assert rooms[1] == ROOM_BATHROOM  # "Toalett " from the event
    assert rooms[2] not in (0, ROOM_BATHROOM) and rooms[2] < HASHED_ROOMS  # bedroom, the registry's
    assert rooms[3] == rooms[4] >= HASHED_ROOMS  # one unknown name, one code
    doors = a & np.isin(events.kind, [Kind.DOOR_OPENED, Kind.DOOR_CLOSED])
    assert events.exit[doors].tolist() == [True, False, True]  # no name: the front door
    assert not events.exit[~doors].any()
    located = events.kind == Kind.LOCATION
    assert located.sum() == 1 and events.row[located][0] == 0
    assert (events.lat[located][0], events.lon[located][0], float(events.accuracy_m[located][0])) == (59.9, 10.7, 12)
    assert np.isnan(events.lat[~located]).all()
    devices = events.device[a & (events.kind != Kind.HEARD)].tolist()
    assert devices[:2] == [2, 1] and devices[-1] == 0  # places in SENSORS + 1; an unlisted device 0
    b = events.row == 1
    assert events.kind[b].tolist() == [Kind.MOTION] and events.room[b][0] not in (0, ROOM_BATHROOM)


def test_heard_hours_come_from_the_rollup_and_the_raw_heartbeats(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    closed = local(12)  # maintenance closed the hours before noon
    conn.execute("UPDATE trygg.device_rollup_state SET hourly_until = %s", (closed,))
    for hour in (local(3), local(11)):
        conn.execute("INSERT INTO trygg.device_hourly (device_id, hour, heartbeats) VALUES ('a-door', %s, 60)",
                     (hour,))
    conn.execute("INSERT INTO trygg.device_hourly (device_id, hour, heartbeats) VALUES ('a-alarm', %s, 60)",
                 (local(3),))  # not an activity sensor: no heard row
    for minute in (0, 1, 59):  # three heartbeats, one heard hour
        conn.execute("INSERT INTO trygg.heartbeats (device_id, ts, received_at) VALUES ('a-door', %s, %s)",
                     (local(14, minute), local(14, minute)))
    conn.execute("INSERT INTO trygg.heartbeats (device_id, ts, received_at) VALUES ('a-door', %s, %s)",
                 (local(11, 30), local(11, 30)))  # a late heartbeat of a closed hour: the rollup has it
    conn.execute("INSERT INTO trygg.heartbeats (device_id, ts, received_at) VALUES ('b-motion', %s, %s)",
                 (local(15), local(15)))
    events = read_events(conn, ["a", "b"], frames_of([(DAY, False), (DAY, False)]), SENSORS)
    heard = events.kind == Kind.HEARD
    assert [(int(r), int(d), t) for r, d, t in zip(events.row[heard], events.device[heard], events.t[heard],
                                                    strict=True)] == [
        (0, 3, local(3).timestamp() + 1800), (0, 3, local(11).timestamp() + 1800),
        (0, 3, local(14).timestamp() + 1800), (1, 6, local(15).timestamp() + 1800)]


def test_no_residents_no_rows(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    assert len(read_events(conn, [], frames_of([]), [])) == 0
    events = read_events(conn, ["nobody"], frames_of([(DAY, True)]), [])
    assert len(events) == 0 and events.t.dtype == np.float64


def test_records_of_another_width_are_refused() -> None:
    with pytest.raises(RecordFormatError):
        parse_records(b"\x00" * 40)


def result(n: int, value: float) -> tuple[Daily, Bands]:
    values = np.full((n, F), value)
    values[:, 3] = np.nan  # unknown that day
    usual = np.full((n, F), np.nan)  # no baseline yet
    return (Daily(values, np.zeros(n, np.int16), np.ones(n, np.bool_), np.zeros(n, np.bool_)),
            Bands(usual, usual, usual))


def notice(row: int, feature: str = "night_toilet_visits") -> Notice:
    return Notice(row, feature, Direction.UP, 4.2, 1.5, 0.5, 2.5, 14,
                  "Nattlige toalettbesøk 4,2 per natt mot vanlig 1,5",
                  "Night-time toilet visits 4.2 per night against a usual 1.5")


def test_results_days_notices_and_states_are_written_together(pool: Pool) -> None:
    with pool.connection() as conn:
        conn.autocommit = True
        daily, bands = result(2, 2.0)
        days = [date(2025, 12, 31), date(2028, 1, 2)]  # partitions made for days outside the ready ones
        write_results(conn, ["a", "b"], days, daily, bands, [notice(1)], [b"state-a", b"state-b"])
        rows = conn.execute("SELECT resident_id, day, vals, usual, usable FROM trygg.insight_days"
                            " ORDER BY resident_id").fetchall()
        assert [(r[0], r[1]) for r in rows] == [("a", days[0]), ("b", days[1])]
        assert rows[0][2][3] is None and rows[0][2][0] == 2.0 and rows[0][3] == [None] * F and rows[0][4]
        assert read_states(conn, ["b", "nobody", "a"]) == [b"state-b", None, b"state-a"]
        assert read_progress(conn, ["a", "b", "c"]) == {"a": days[0], "b": days[1]}

        # the same day again (a recompute): the row is replaced, the notice seen stays as it was
        conn.execute("UPDATE trygg.insight_notices SET seen_at = now(), seen_by = 'ola', seen_note = 'Ringt datter'")
        daily, bands = result(2, 3.0)
        write_results(conn, ["a", "b"], days, daily, bands, [notice(1), notice(0, "active_hours")],
                      [b"state-a2", b"state-b2"])
        assert conn.execute("SELECT count(*), min(vals[1]) FROM trygg.insight_days").fetchone() == (2, 3.0)
        seen = conn.execute("SELECT resident_id, feature, seen_by, seen_note FROM trygg.insight_notices"
                            " ORDER BY resident_id").fetchall()
        assert seen == [("a", "active_hours", None, None), ("b", "night_toilet_visits", "ola", "Ringt datter")]
        assert read_states(conn, ["a"]) == [b"state-a2"]


def test_forget_before_a_recompute_keeps_the_notices_seen(pool: Pool) -> None:
    with pool.connection() as conn:
        conn.autocommit = True
        for d in (date(2026, 11, 1), date(2026, 11, 2)):
            daily, bands = result(2, 1.0)
            write_results(conn, ["a", "b"], [d, d], daily, bands, [notice(0), notice(1)], [b"s", b"s"])
        conn.execute("UPDATE trygg.insight_notices SET seen_at = now(), seen_by = 'ola'"
                     " WHERE resident_id = 'a' AND day = '2026-11-02'")
        removed = forget(conn, ["a"], date(2026, 11, 2))
        assert removed == {"days": 1, "notices": 0, "states": 1}
        assert read_progress(conn, ["a", "b"]) == {"b": date(2026, 11, 2)}
        assert conn.execute("SELECT count(*) FROM trygg.insight_notices").fetchone() == (4,)
        assert forget(conn, None, date(2026, 11, 1)) == {"days": 3, "notices": 3, "states": 1}
        assert conn.execute("SELECT resident_id, day, seen_by FROM trygg.insight_notices").fetchall() == [
            ("a", date(2026, 11, 2), "ola")]


def test_first_event_day_is_in_the_residents_zone(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    add_events(conn, [("a-motion-bed", "a", "motion", datetime(2026, 10, 20, 22, 30, tzinfo=UTC), {}),
                      ("b-motion", "b", "motion", datetime(2026, 10, 1, 8, tzinfo=UTC), {})])
    got = first_event_days(conn, ["a", "b", "c"], ["Europe/Oslo", "UTC", "UTC"], date(2026, 10, 5))
    assert got == {"a": date(2026, 10, 21)}  # 22:30 UTC is past midnight in Oslo; b's event is before `since`


def test_one_holder_of_the_lock(pool: Pool) -> None:
    with pool.connection() as first, pool.connection() as second:
        first.autocommit = second.autocommit = True
        assert try_lock(first)
        assert not try_lock(second)
        unlock(first)
        assert try_lock(second)
        unlock(second)
