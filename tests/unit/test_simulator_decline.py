"""The simulator of declining and stable residents (simulators/decline.py): deterministic
for a seed, whole frames, the clock changes, dead sensors, days away, and changes that
really are in the events."""

from __future__ import annotations

from datetime import date, time

import numpy as np
import pytest

from simulators.decline import DEVICE_NAMES, Municipality
from trygg.insights import FEATURE_INDEX, ROOM_BATHROOM, Events, Kind, frame_bounds


def quarter_hours_active(events: Events, day_start: np.ndarray, day_end: np.ndarray, n: int) -> np.ndarray:
    """Hours (in quarters) of the day with motion, per resident: what a person's active day is."""
    pick = (events.kind == Kind.MOTION) & (events.t >= day_start[events.row]) & (events.t < day_end[events.row])
    keys = np.unique(events.row[pick].astype(np.int64) * 128 + ((events.t[pick] - day_start[events.row[pick]])
                                                                 // 900).astype(np.int64))
    return np.bincount(keys // 128, minlength=n) / 4


def night_bathroom(events: Events, night_start: np.ndarray, night_end: np.ndarray, n: int) -> np.ndarray:
    """Toilet visits in the night window: bathroom motion more than 10 minutes after the last."""
    pick = ((events.kind == Kind.MOTION) & (events.room == ROOM_BATHROOM)
            & (events.t >= night_start[events.row]) & (events.t < night_end[events.row]))
    row, t = events.row[pick], events.t[pick]
    new = np.ones(len(row), np.bool_)
    new[1:] = (row[1:] != row[:-1]) | (t[1:] - t[:-1] > 600)
    return np.bincount(row[new], minlength=n)


@pytest.fixture(scope="module")
def town() -> Municipality:
    return Municipality(80, 100, seed=5, gradual=0.4, abrupt=0.3, dead_share=0.3, absent_share=0.3)


@pytest.fixture(scope="module")
def features(town: Municipality) -> tuple[np.ndarray, np.ndarray]:
    """Active hours and night toilet visits of every resident and day."""
    active = np.zeros((town.days, town.n))
    toilet = np.zeros((town.days, town.n))
    for d in range(town.days):
        b = town.day(d)
        active[d] = quarter_hours_active(b.events, b.frames.day_start, b.frames.day_end, town.n)
        toilet[d] = night_bathroom(b.events, b.frames.night_start, b.frames.night_end, town.n)
    return active, toilet


def test_the_same_seed_gives_the_same_days_and_another_seed_others() -> None:
    a, b, c = (Municipality(20, 40, seed=s).day(30).events for s in (3, 3, 4))
    assert np.array_equal(a.t, b.t) and np.array_equal(a.device, b.device) and np.array_equal(a.kind, b.kind)
    assert len(a.t) != len(c.t) or not np.array_equal(a.t, c.t)


def test_a_day_read_on_its_own_is_the_day_read_in_order() -> None:
    town = Municipality(15, 20, seed=2)
    in_order = [town.day(d).events for d in range(4)][3]
    alone = Municipality(15, 20, seed=2).day(3).events
    assert np.array_equal(in_order.t, alone.t) and np.array_equal(in_order.row, alone.row)


def test_events_are_sorted_and_cover_the_night_before_the_day(town: Municipality) -> None:
    batch = town.day(10)
    ev, fr = batch.events, batch.frames
    key = ev.row.astype(np.float64) * 1e6 + (ev.t - ev.t.min())
    assert np.all(np.diff(key) >= 0)
    assert np.all(fr.night_start < fr.day_start) and np.all(fr.night_end > fr.day_start)
    evening = ev.row[(ev.kind == Kind.HEARD) & (ev.t >= fr.night_start[ev.row]) & (ev.t < fr.day_start[ev.row])]
    heard_sensors = town.has[:, :6].sum(1) > 0
    assert set(np.unique(evening)) == set(np.flatnonzero(heard_sensors & ~town.dead_on(9)[:, :6].all(1)))
    # nothing of the evening before the night window
    assert np.all(ev.t >= fr.night_start[ev.row])


@pytest.mark.parametrize(("day", "hours"), [(date(2025, 3, 30), 23), (date(2025, 10, 26), 25),
                                            (date(2025, 6, 1), 24)])
def test_clock_change_days_have_their_hours(day: date, hours: int) -> None:
    start, end, _, _ = frame_bounds(day, "Europe/Oslo", time(23), time(6))
    assert end - start == hours * 3600
    assert (batch_frames := Municipality(1, 1, seed=1, start=day).day(0).frames).day_start[0] == start
    assert batch_frames.day_end[0] == end
    town = Municipality(10, 3, seed=1, start=day, dead_share=0, absent_share=0, trip_share=0)
    batch = town.day(0)
    ev = batch.events
    heard = ev.kind == Kind.HEARD
    in_day = heard & (ev.t >= start) & (ev.t < end)
    hour = ((ev.t[in_day] - start) // 3600).astype(np.int64)
    distinct = np.unique(ev.device[in_day].astype(np.int64) * 32 + hour)
    per_device = np.bincount(distinct // 32)
    per_device = per_device[per_device > 0]
    assert per_device.max() == hours  # a heartbeat in every hour of the day
    assert per_device.min() >= hours - 2  # one hour in 300 is lost


def test_a_dead_sensor_sends_nothing_while_dead() -> None:
    town = Municipality(200, 30, seed=8, dead_share=0.5)
    resident, first, last = (int(x) for x in town.dead[(town.dead[:, 1] >= 1) & (town.dead[:, 2] < 29)][0])
    device = int(town.dead_device[(town.dead[:, 0] == resident) & (town.dead[:, 1] == first)][0])
    assert DEVICE_NAMES[device] in [name for _, _, name in town.truth(resident).dead]
    device_id = resident * 8 + device

    def rows(d: int) -> int:
        ev = town.day(d).events
        return int(np.sum((ev.device == device_id) & (ev.t >= town.day(d).frames.day_start[0])))

    assert rows(first) == 0 and rows(last) == 0
    assert rows(last + 1) > 0  # replaced: heard again


def test_days_away_on_the_registry_are_away_and_empty(town: Municipality) -> None:
    resident, first, last = (int(x) for x in town.absent[(town.absent[:, 2] - town.absent[:, 1] >= 2)
                                                         & (town.absent[:, 1] >= 0)
                                                         & (town.absent[:, 2] < town.days)][0])
    middle = town.day(first + 1)
    assert middle.frames.away[resident]
    ev = middle.events
    motion = (ev.row == resident) & (ev.kind == Kind.MOTION) & (ev.t >= middle.frames.day_start[resident])
    assert not motion.any()
    assert not town.day(last + 1).frames.away[resident]


def test_the_truth_names_what_changes(town: Municipality) -> None:
    truths = [town.truth(i) for i in range(town.n)]
    assert {t.profile for t in truths} == {"stable", "gradual", "abrupt"}
    for t in truths:
        if t.profile == "stable":
            assert t.onset is None and not t.features
            continue
        assert t.onset is not None and t.full is not None and t.onset >= 35
        assert t.mechanisms and set(t.features) <= set(FEATURE_INDEX)
        span = t.full - t.onset + 1
        assert (28 <= span <= 56) if t.profile == "gradual" else span == 2


def test_fewer_active_hours_are_in_the_events(town: Municipality, features: tuple[np.ndarray, np.ndarray]) -> None:
    active, _ = features
    drops = []
    for i in range(town.n):
        t = town.truth(i)
        if "fewer_active_hours" in t.mechanisms and t.full is not None and t.full + 10 < town.days:
            assert t.onset is not None
            before = active[t.onset - 21:t.onset, i].mean()
            after = active[t.full + 1:t.full + 11, i].mean()
            drops.append(before - after)
    assert len(drops) >= 5
    assert np.median(drops) > 0.5  # hours a day, resting spells that still show a movement now and then
    stable = [i for i in range(town.n) if town.truth(i).profile == "stable"]
    assert abs(np.median(active[35:56, stable].mean(0) - active[80:90, stable].mean(0))) < 0.3


def test_an_infection_brings_more_toilet_visits_within_two_days(
        town: Municipality, features: tuple[np.ndarray, np.ndarray]) -> None:
    _, toilet = features
    rises = []
    for i in range(town.n):
        t = town.truth(i)
        if (t.profile == "abrupt" and "more_night_toilet_visits" in t.mechanisms and t.onset is not None
                and t.onset + 5 < town.days):
            rises.append(toilet[t.onset + 1:t.onset + 6, i].mean() - toilet[t.onset - 21:t.onset, i].mean())
    assert len(rises) >= 3
    assert np.median(rises) > 1.0


def test_stable_residents_vary_like_people(town: Municipality, features: tuple[np.ndarray, np.ndarray]) -> None:
    active, toilet = features
    stable = [i for i in range(town.n) if town.truth(i).profile == "stable" and not town.truth(i).absences
              and not town.truth(i).trips and not town.truth(i).dead]
    sd = np.median(active[:, stable].std(axis=0))
    assert 0.6 < sd < 2.0  # about an hour from day to day
    has_bath = [i for i in stable if town.has[i, 1]]
    assert 0.5 < toilet[:, has_bath].mean() < 2.5
