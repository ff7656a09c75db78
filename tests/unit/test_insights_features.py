"""Daily features on hand-made days (processors/insights/features.py, docs/insights.md).

Each test writes a resident's day as events at local wall-clock times in Europe/Oslo and
checks what staff would read: the hours, the clock times, the counts, and whether the
day may be judged at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from processors.insights import daily_features, frame_bounds
from trygg.insights import (
    CAP_BATHROOM,
    CAP_EXIT_DOOR,
    CAP_GPS,
    CAP_ROOMS,
    FEATURE_INDEX,
    ROOM_BATHROOM,
    Daily,
    Events,
    Frames,
    Kind,
    Params,
)

OSLO = ZoneInfo("Europe/Oslo")
NIGHT = (time(23), time(6))
MOTION_1, MOTION_BATH, DOOR = 1, 2, 3
BEDROOM, KITCHEN = 2, 3
ALL = CAP_ROOMS | CAP_BATHROOM | CAP_EXIT_DOOR | CAP_GPS


def at(day: date, hhmm: str, *, fold: int = 0) -> float:
    h, m = map(int, hhmm.split(":"))
    return datetime.combine(day, time(h, m), tzinfo=OSLO).replace(fold=fold).timestamp()


@dataclass
class Day:
    day: date
    sensors: int = 3  # two motion sensors and the door
    away: bool = False
    located: bool = False
    caps: int = ALL
    night: tuple[time, time] = NIGHT
    rows: list[tuple[float, int, int, int, bool, float, float, float]] = field(default_factory=list)
    heard: bool = True  # every activity sensor sends heartbeats all day

    def motion(self, t: float, room: int, device: int = MOTION_1) -> Day:
        self.rows.append((t, Kind.MOTION, device, room, False, np.nan, np.nan, np.nan))
        return self

    def door(self, t: float, kind: Kind = Kind.DOOR_CLOSED) -> Day:
        self.rows.append((t, kind, DOOR, 0, True, np.nan, np.nan, np.nan))
        return self

    def fix(self, t: float, lat: float, lon: float, accuracy: float = 10.0) -> Day:
        self.rows.append((t, Kind.LOCATION, 9, 0, False, lat, lon, accuracy))
        return self

    def press(self, t: float) -> Day:
        self.rows.append((t, Kind.BUTTON, 8, 0, False, np.nan, np.nan, np.nan))
        return self


def compute(*days: Day, params: Params = Params(), silent: dict[int, set[int]] | None = None) -> Daily:
    """Features of `days`; `silent` = {frame: devices that are never heard that day}."""
    cols: list[tuple[int, float, int, int, int, bool, float, float, float]] = []
    bounds = [frame_bounds(d.day, "Europe/Oslo", *d.night) for d in days]
    for i, (d, (ds, de, ns, _)) in enumerate(zip(days, bounds, strict=True)):
        quiet = (silent or {}).get(i, set())
        cols += [(i, *r) for r in d.rows if r[2] not in quiet]
        if d.heard:
            for device in (MOTION_1, MOTION_BATH, DOOR)[: d.sensors]:
                if device not in quiet:
                    cols += [(i, t + 60, Kind.HEARD, device, 0, False, np.nan, np.nan, np.nan)
                             for t in np.arange(min(ns, ds), de, 3600.0)]
    cols.sort(key=lambda c: (c[0], c[1]))
    a: list[tuple[float, ...]] = list(zip(*cols, strict=True)) if cols else [()] * 9
    events = Events(row=np.array(a[0], np.int32), t=np.array(a[1], np.float64), kind=np.array(a[2], np.int8),
                    device=np.array(a[3], np.int32), room=np.array(a[4], np.int16), exit=np.array(a[5], bool),
                    lat=np.array(a[6], np.float64), lon=np.array(a[7], np.float64),
                    accuracy_m=np.array(a[8], np.float32))
    b = np.array(bounds)
    frames = Frames(day_start=b[:, 0], day_end=b[:, 1], night_start=b[:, 2], night_end=b[:, 3],
                    activity_sensors=np.array([d.sensors for d in days], np.int16),
                    away=np.array([d.away for d in days]), located=np.array([d.located for d in days]),
                    capabilities=np.array([d.caps for d in days], np.int16))
    return daily_features(events, frames, params)


def value(daily: Daily, name: str, frame: int = 0) -> float:
    return float(daily.values[frame, FEATURE_INDEX[name]])


def ordinary(day: date) -> Day:
    """Up at 07:12, a toilet visit at 23:40 the evening before and one at 03:10, a trip out
    10:00–11:30, bed at 22:30."""
    prev = day - timedelta(days=1)
    d = Day(day)
    d.motion(at(prev, "23:40"), ROOM_BATHROOM, MOTION_BATH).motion(at(prev, "23:44"), BEDROOM)
    d.motion(at(day, "03:10"), ROOM_BATHROOM, MOTION_BATH).motion(at(day, "03:13"), ROOM_BATHROOM, MOTION_BATH)
    d.motion(at(day, "03:20"), BEDROOM)
    d.motion(at(day, "07:12"), BEDROOM).motion(at(day, "07:20"), ROOM_BATHROOM, MOTION_BATH)
    d.motion(at(day, "07:27"), ROOM_BATHROOM, MOTION_BATH).motion(at(day, "07:40"), KITCHEN)
    d.door(at(day, "09:59"), Kind.DOOR_OPENED).door(at(day, "10:00"))
    d.door(at(day, "11:30"), Kind.DOOR_OPENED).door(at(day, "11:31")).motion(at(day, "11:32"), KITCHEN)
    d.motion(at(day, "22:05"), KITCHEN).motion(at(day, "22:12"), ROOM_BATHROOM, MOTION_BATH)
    d.motion(at(day, "22:30"), BEDROOM)
    return d


def test_an_ordinary_day_reads_as_a_person_would_tell_it() -> None:
    daily = compute(ordinary(date(2026, 11, 10)))
    assert value(daily, "first_activity") == pytest.approx(7.2)
    assert value(daily, "last_activity") == pytest.approx(22.5)
    assert value(daily, "night_toilet_visits") == 2  # 23:40 and 03:10 (03:13 is the same visit)
    assert value(daily, "door_exits") == 1
    assert value(daily, "time_out") == pytest.approx(1.5)
    # quarter hours of the waking day (not 03:00, in the night): 07:00, 07:15, 07:30, 09:45,
    # the trip 10:00–11:30 (6), 11:30, 22:00, 22:30
    assert value(daily, "active_hours") == pytest.approx(13 / 4)
    # bath → bedroom at 03:20, bedroom → bath → kitchen in the morning, kitchen → bath → bedroom at night
    assert value(daily, "room_transitions") == 5
    assert value(daily, "night_activity") == 15  # slots 03:10, 03:20 and 23:40 (23:44 is the same slot)
    assert value(daily, "button_presses") == 0
    assert np.isnan(value(daily, "walk_km"))  # no location basis
    assert daily.hours_unheard[0] == 0 and daily.usable[0] and not daily.away[0]


def test_a_toilet_visit_is_not_getting_up_and_one_late_is_not_staying_up() -> None:
    day = date(2026, 11, 10)
    d = ordinary(day).motion(at(day, "06:10"), ROOM_BATHROOM, MOTION_BATH)  # back to bed after
    d.motion(at(day, "22:50"), ROOM_BATHROOM, MOTION_BATH)
    daily = compute(d)
    assert value(daily, "first_activity") == pytest.approx(7.2)
    assert value(daily, "last_activity") == pytest.approx(22.5)


def test_the_night_window_runs_across_midnight_and_belongs_to_the_morning_it_ends() -> None:
    day = date(2026, 11, 10)
    late = ordinary(day).motion(at(day, "23:30"), ROOM_BATHROOM, MOTION_BATH)  # tomorrow's night
    daily = compute(late)
    assert value(daily, "night_toilet_visits") == 2
    assert value(daily, "last_activity") == pytest.approx(22.5)  # 23:30 is the next night
    tomorrow = compute(Day(day + timedelta(days=1)).motion(at(day, "23:30"), ROOM_BATHROOM, MOTION_BATH)
                       .motion(at(day + timedelta(days=1), "08:00"), KITCHEN))
    assert value(tomorrow, "night_toilet_visits") == 1


@pytest.mark.parametrize(("day", "hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
def test_a_night_with_a_clock_change_keeps_wall_clock_times(day: date, hours: int) -> None:
    d = ordinary(day)
    ds, de, ns, ne = frame_bounds(day, "Europe/Oslo", *NIGHT)
    assert (de - ds) / 3600 == hours
    assert (ne - ns) / 3600 == hours - 24 + 7  # 23:00–06:00 is 6 h in March, 8 h in October
    daily = compute(d)
    assert value(daily, "first_activity") == pytest.approx(7.2)
    assert value(daily, "last_activity") == pytest.approx(22.5)
    assert daily.hours_unheard[0] == 0 and daily.usable[0]


def test_the_hour_that_happens_twice_in_october_is_counted_twice() -> None:
    day = date(2026, 10, 25)
    d = Day(day).motion(at(day, "02:30", fold=0), BEDROOM).motion(at(day, "02:30", fold=1), BEDROOM)
    d.motion(at(day, "08:00"), KITCHEN)
    assert value(compute(d), "night_activity") == 10  # two 5-minute slots, an hour apart


def test_a_silent_motion_sensor_makes_the_day_unusable_not_inactive() -> None:
    day = date(2026, 11, 10)
    daily = compute(ordinary(day), ordinary(day + timedelta(days=1)), silent={1: {MOTION_1}})
    assert daily.usable[0]
    assert daily.hours_unheard[1] == 24
    assert not daily.usable[1]


def test_a_few_unheard_hours_are_tolerated_more_are_not() -> None:
    day = date(2026, 11, 10)
    d = ordinary(day)
    d.heard = False
    _ds, de, ns, _ = frame_bounds(day, "Europe/Oslo", *NIGHT)
    heard_until = de - 3 * 3600  # the door and motion sensors go quiet at 21:00
    for device in (MOTION_1, MOTION_BATH, DOOR):
        d.rows += [(t + 60, Kind.HEARD, device, 0, False, np.nan, np.nan, np.nan)
                   for t in np.arange(ns, heard_until, 3600.0)]
    daily = compute(d)
    # 21, 22 and 23: in 22 one motion sensor was heard (22:30's motion), the others not
    assert daily.hours_unheard[0] == 3
    assert daily.usable[0]
    assert not compute(d, params=Params(max_unheard_hours=2)).usable[0]


def test_a_week_away_is_away_registered_or_not() -> None:
    day = date(2026, 11, 10)
    registered = Day(day, away=True).motion(at(day, "12:00"), KITCHEN)
    empty_home = Day(day)  # sensors heard, nobody moving at home
    left_yesterday = Day(day).door(at(day - timedelta(days=1), "23:30"))
    daily = compute(registered, empty_home, left_yesterday)
    assert list(daily.away) == [True, True, True]
    assert not daily.usable.any()


def test_a_long_day_out_counts_as_away() -> None:
    day = date(2026, 11, 10)
    d = Day(day).motion(at(day, "05:00"), KITCHEN).door(at(day, "05:10")).door(at(day, "22:00"), Kind.DOOR_OPENED)
    d.motion(at(day, "22:01"), KITCHEN)
    daily = compute(d)
    assert value(daily, "time_out") == pytest.approx(16 + 50 / 60)
    assert daily.away[0]


def test_coming_home_in_the_morning_after_a_night_out() -> None:
    day = date(2026, 11, 10)
    d = Day(day).door(at(day, "09:00"), Kind.DOOR_OPENED).motion(at(day, "09:01"), KITCHEN)
    daily = compute(d)
    assert value(daily, "time_out") == pytest.approx(9.0)  # midnight to 09:00 of the day
    assert value(daily, "door_exits") == 0  # the trip began the day before


def test_sitting_still_after_closing_the_door_is_not_a_trip() -> None:
    day = date(2026, 11, 10)
    d = Day(day).motion(at(day, "08:00"), KITCHEN).door(at(day, "09:00")).motion(at(day, "09:40"), KITCHEN)
    assert value(compute(d), "door_exits") == 0


def test_walking_is_measured_only_under_a_location_basis_and_at_walking_speed() -> None:
    day = date(2026, 11, 10)
    d = ordinary(day)
    d.located = True
    start = at(day, "10:05")
    for k in range(31):  # 30 minutes north at about 1.2 m/s, a fix a minute
        d.fix(start + 60 * k, 59.9 + k * 72 / 111_195, 10.75)
    d.fix(start + 31 * 60, 60.9, 10.75)  # a jump of 100 km: not walking
    d.fix(start + 32 * 60, 60.9001, 10.75, accuracy=500)
    km = value(compute(d), "walk_km")
    assert km == pytest.approx(30 * 72 / 1000, rel=0.01)
    d.located = False
    assert np.isnan(value(compute(d), "walk_km"))


def test_what_the_sensors_cannot_see_is_unknown_not_zero() -> None:
    day = date(2026, 11, 10)
    no_bath = ordinary(day)
    no_bath.caps = CAP_ROOMS | CAP_EXIT_DOOR
    daily = compute(no_bath)
    assert np.isnan(value(daily, "night_toilet_visits"))
    no_sensors = Day(day, sensors=0).press(at(day, "12:00")).press(at(day, "12:01"))
    daily = compute(no_sensors)
    assert np.isnan(value(daily, "active_hours")) and np.isnan(value(daily, "door_exits"))
    assert value(daily, "button_presses") == 2
    quiet_night = Day(day).motion(at(day, "08:00"), KITCHEN)
    assert value(compute(quiet_night), "night_toilet_visits") == 0


def test_capabilities_are_inferred_from_the_rows_when_not_given() -> None:
    day = date(2026, 11, 10)
    events = Events.empty()
    ds, de, ns, ne = frame_bounds(day, "Europe/Oslo", *NIGHT)
    frames = Frames(np.array([ds]), np.array([de]), np.array([ns]), np.array([ne]), np.array([0], np.int16),
                    np.array([False]), np.array([False]))
    daily = daily_features(events, frames, Params())
    assert np.isnan(value(daily, "night_toilet_visits"))
    assert value(daily, "button_presses") == 0
    assert daily.usable[0]
