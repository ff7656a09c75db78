"""A municipality of residents over many days, for the early signs of decline (issue 19).

`Municipality(n, days, seed)` draws `n` residents (their sensor kit, daily rhythm and
noise, days away, sensors that die, and whether and how they decline) and `day(d)` gives
local day `d` of all of them as one columnar batch: `trygg.insights.Events` (sorted by
resident row and time) and `trygg.insights.Frames` (row i = resident i), made with numpy
for all residents at once, no MQTT and no database. `truth(i)` is what the detector
should find: the profile (stable, gradual, abrupt), the onset day and the features that
change. Everything is a function of (seed, day): the same seed gives the same batches.

The day is a grid of 5-minute slots of real time (23, 24 or 25 hours: Europe/Oslo's
clock changes are in it). Awake at home, a resident moves between rooms as in
`simulators.rhythm` (its room-to-room weights), a motion sensor firing in most slots of
an occupied room and in few while the resident rests; outings, staff visits and days
away empty the home; the night (bed to wake) has toilet visits and restless spells as
minute-level sequences. Sensors send a heartbeat every hour (`Kind.HEARD`) unless dead.
docs/insights.md "The simulator" gives the parameters and the reasons for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from simulators.geo import WALK_SPEED_MPS
from simulators.profiles import ROOMS, TEAMS, SimResident
from simulators.rhythm import _NEXT_ROOM
from trygg.contract import DeviceKind
from trygg.insights import (
    CAP_BATHROOM,
    CAP_EXIT_DOOR,
    CAP_GPS,
    CAP_ROOMS,
    Events,
    Frames,
    Kind,
    frame_bounds,
    room_code,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

ZONE: Final = "Europe/Oslo"
#: 120 days from here contain the spring clock change (30 March 2025, 23 hours).
DEFAULT_START: Final = date(2025, 2, 3)
SLOT_S: Final = 300
_M_PER_DEG: Final = 111_320.0

# Devices of a resident: the motion sensors by room (ROOMS order), then these.
BEDROOM, BATHROOM, KITCHEN, LIVING, HALL = range(5)
DOOR, ALARM, TRACKER = 5, 6, 7
DEVICE_NAMES: Final = (*ROOMS, "door", "alarm_unit", "tracker")
_PER_ROW: Final = 8  # device id = row * _PER_ROW + device index
_CODES: dict[str, int] = {}
ROOM_CODES: Final = np.array([room_code(r, _CODES) for r in ROOMS], np.int16)
_STAY: Final = 0.7  # a 5-minute slot in the same room (mean stay ~17 min, as rhythm's 20)
_CUM_NEXT: Final = np.cumsum(np.array([_NEXT_ROOM[r] for r in ROOMS]), axis=1)

#: Sensor kits (motion rooms + door) and their share, after the municipal packages in
#: simulators/profiles.py: the whole package, dementia at home, frail, a minimal kit.
_KITS: Final = (
    ((BEDROOM, BATHROOM, KITCHEN, LIVING, HALL, DOOR), 0.35),
    ((BEDROOM, KITCHEN, HALL, DOOR), 0.25),
    ((BEDROOM, BATHROOM, HALL, DOOR), 0.25),
    ((BEDROOM, BATHROOM), 0.15),
)
_NIGHTS: Final = ((time(23), time(6)), (time(22), time(7)))  # registry night windows

# The ways a person declines, and the daily features each one moves.
ACTIVE, LATE, NIGHT, TOILET, TRIPS, WALKS = range(6)
MECHANISMS: Final = ("fewer_active_hours", "later_start", "more_night_activity", "more_night_toilet_visits",
                     "fewer_trips_out", "shorter_walks")
MOVES: Final = (("active_hours", "room_transitions"), ("first_activity", "active_hours"), ("night_activity",),
                 ("night_toilet_visits", "night_activity"), ("door_exits", "time_out"), ("walk_km", "time_out"))
#: Size of each change when fully there, (low, high) uniform: gradual, abrupt. Units: extra
#: resting hours, hours later, extra restless minutes a night, extra toilet visits a night,
#: share of trips out lost, share of walk length lost.
_SIZE: Final = {
    "gradual": ((2.0, 3.5), (1.0, 2.0), (30, 75), (1.5, 3.0), (0.5, 0.8), (0.4, 0.6)),
    "abrupt": ((2.5, 4.0), (1.0, 2.0), (45, 120), (2.0, 4.0), (0.7, 0.95), (0.5, 0.8)),
}


@dataclass(frozen=True, slots=True)
class Truth:
    """What happened to one resident. Days are indexes from the start (0 = first day)."""

    profile: str  # "stable", "gradual" or "abrupt"
    onset: int | None  # the first day of the change
    full: int | None  # the first day the change is at its full size
    mechanisms: tuple[str, ...]  # MECHANISMS that change
    features: tuple[str, ...]  # FEATURES names they move (trygg.insights.FEATURES)
    dead: tuple[tuple[int, int, str], ...]  # (first, last day, device): silent, no heartbeat
    absences: tuple[tuple[int, int, str], ...]  # (first, last day, reason): in the registry
    trips: tuple[tuple[int, int], ...]  # (first, last day) away, not in the registry
    kit: tuple[str, ...]  # the resident's activity sensors
    located: bool  # a tracker and a location basis


@dataclass(frozen=True, slots=True)
class DayBatch:
    index: int  # days from the start
    day: date
    events: Events
    frames: Frames


class _Clock:
    """One local day's wall clock ↔ UTC epoch seconds, vectorised (one clock change at most)."""

    def __init__(self, day: date, zone: str) -> None:
        tz = ZoneInfo(zone)
        self.start, self.end, _, _ = frame_bounds(day, zone, time(0), time(0))
        off0 = datetime.fromtimestamp(self.start, tz).utcoffset()
        off1 = datetime.fromtimestamp(self.end - 1, tz).utcoffset()
        assert off0 is not None and off1 is not None
        self.shift = (off1 - off0).total_seconds()
        self.change = self.end  # the instant the offset changes
        if self.shift:
            lo, hi = self.start, self.end
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if datetime.fromtimestamp(mid, tz).utcoffset() == off0 else (lo, mid)
            self.change = hi
        self.change_h = (self.change - self.start) / 3600  # on the clock before the change

    def epoch(self, hours: F64) -> F64:
        """The instant of a wall-clock time (hours after local midnight)."""
        return self.start + hours * 3600 - np.where(hours >= self.change_h, self.shift, 0.0)

    def wall(self, t: F64) -> F64:
        return (t - self.start + np.where(t >= self.change, self.shift, 0.0)) / 3600


def _spells(rng: np.random.Generator, n: int, days: int, share: float, lengths: tuple[int, int]) -> I64:
    """(resident, first, last) for a `share` of residents: one spell each, anywhere."""
    who = np.flatnonzero(rng.random(n) < share)
    length = rng.integers(lengths[0], lengths[1] + 1, len(who))
    first = rng.integers(-2, max(days - 2, 1), len(who))
    return np.stack([who, first, first + length - 1], axis=1).astype(np.int64)


def _covering(spells: I64, d: int) -> I64:
    return spells[(spells[:, 1] <= d) & (spells[:, 2] >= d)]


def _daylight_h(day: date, lat: float = 59.9) -> float:
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + day.timetuple().tm_yday) / 365)
    return 24 / math.pi * math.acos(-math.tan(math.radians(lat)) * math.tan(decl))


class Municipality:
    """`n` residents over `days` local days from `start`; a `gradual` and an `abrupt` share
    decline (the rest is stable), a `dead_share` have a sensor that dies for a while,
    `absent_share` are away on the registry (hospital, travel, respite) and `trip_share`
    away without it."""

    def __init__(self, n: int, days: int, seed: int = 1, start: date = DEFAULT_START, *, gradual: float = 0.2,
                 abrupt: float = 0.1, dead_share: float = 0.15, absent_share: float = 0.12,
                 trip_share: float = 0.1, zone: str = ZONE) -> None:
        self.n, self.days, self.seed, self.start, self.zone = n, days, seed, start, zone
        rng = np.random.default_rng([seed, 0])
        kit_of = rng.choice(len(_KITS), n, p=[share for _, share in _KITS])
        self.has = np.zeros((n, 8), np.bool_)
        for k, (devices, _) in enumerate(_KITS):
            self.has[np.ix_(kit_of == k, list(devices))] = True
        self.has[:, ALARM] = True
        self.located = self.has[:, DOOR] & (rng.random(n) < 0.25)
        self.has[:, TRACKER] = self.located
        self.activity_sensors = self.has[:, :6].sum(1).astype(np.int16)
        caps = (np.where(self.has[:, :5].any(1), CAP_ROOMS, 0) | np.where(self.has[:, BATHROOM], CAP_BATHROOM, 0)
                | np.where(self.has[:, DOOR], CAP_EXIT_DOOR, 0) | np.where(self.located, CAP_GPS, 0))
        self.capabilities = caps.astype(np.int16)  # what the registry says the kit can see
        self.night_kind = (rng.random(n) < 0.3).astype(np.int64)
        # the daily rhythm: each resident's usual and its day-to-day spread (hours)
        self.wake_mean = np.clip(rng.normal(7.3, 0.8, n), 5.0, 10.0)
        self.wake_sd = rng.uniform(0.5, 0.75, n)
        self.bed_mean = np.clip(rng.normal(22.3, 0.7, n), 20.0, 23.5)
        self.bed_sd = rng.uniform(0.4, 0.7, n)
        self.weekend_wake = rng.uniform(0, 0.75, n) * (rng.random(n) < 0.7)
        self.weekend_out = rng.uniform(0.6, 1.3, n)  # trips out at weekends, × weekdays
        self.rest_rate = rng.uniform(0.5, 2.0, n)  # resting spells (45–120 min) a day
        self.p_out = rng.uniform(0.15, 0.95, n)  # a trip out in the morning
        self.p_out2 = self.p_out * rng.uniform(0, 0.5, n)  # and one in the afternoon
        self.out_min = rng.uniform(30, 100, n)  # typical minutes out
        self.reach_m = rng.uniform(200, 1200, n)
        self.toilet = rng.uniform(0.7, 2.0, n)  # night-time toilet visits, Poisson mean
        self.restless = rng.uniform(0.1, 0.5, n)  # restless spells a night
        self.visits = rng.choice(4, n, p=[0.3, 0.2, 0.3, 0.2])  # home-care visits a day
        self.buttons = rng.uniform(0.01, 0.08, n)  # presses a day
        self.mail = rng.uniform(0.0, 0.5, n)  # door opened without going out, a day
        team = rng.integers(0, len(TEAMS), n)
        dist, angle = 2000 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
        self.home_lat = np.array([TEAMS[t].lat for t in team]) + dist * np.cos(angle) / _M_PER_DEG
        self.home_lon = (np.array([TEAMS[t].lon for t in team])
                         + dist * np.sin(angle) / (_M_PER_DEG * np.cos(np.radians(self.home_lat))))
        # off days: a bad night or a cold, 1–3 days, about one start in 50 days
        starts = rng.random((n, days + 1)) < 0.02
        length = rng.choice(3, (n, days + 1), p=[0.7, 0.25, 0.05]) + 1
        self.off = starts.copy()
        for k in (1, 2):
            self.off[:, k:] |= (starts & (length > k))[:, :-k]
        self._draw_declines(rng, gradual, abrupt)
        self.dead = _spells(rng, n, days, dead_share, (2, 14))
        sensors = [np.flatnonzero(self.has[i, :6]) for i in self.dead[:, 0]]
        self.dead_device = np.array([rng.choice(s) for s in sensors], np.int64)
        self.absent = _spells(rng, n, days, absent_share, (3, 14))
        self.absent_reason = rng.choice(["hospital", "travel", "respite"], len(self.absent), p=[0.5, 0.35, 0.15])
        self.trips = _spells(rng, n, days, trip_share, (2, 4))
        self.trips = self.trips[~np.isin(self.trips[:, 0], self.absent[:, 0])]
        self._cache: tuple[int, Events] | None = None

    def _draw_declines(self, rng: np.random.Generator, gradual: float, abrupt: float) -> None:
        n, days = self.n, self.days
        u = rng.random(n)
        self.profile = np.where(u < gradual, "gradual", np.where(u < gradual + abrupt, "abrupt", "stable"))
        self.onset = np.full(n, days + 10**6, np.int64)
        self.ramp = np.ones(n)
        self.recover = np.full(n, days + 10**6, np.int64)
        self.size = np.zeros((n, len(MECHANISMS)))
        measurable = np.stack([np.ones(n, np.bool_), np.ones(n, np.bool_), self.has[:, BEDROOM],
                               self.has[:, BATHROOM], self.has[:, DOOR], self.located], axis=1)
        for i in np.flatnonzero(self.profile != "stable"):
            kind = str(self.profile[i])
            if kind == "gradual":  # over 4–8 weeks, begun after a baseline can have formed
                self.ramp[i] = rng.integers(28, 57)
                self.onset[i] = rng.integers(35, max(days - 60, 36))
                pool = np.flatnonzero(measurable[i])
                count = min(int(rng.choice(3, p=[0.5, 0.35, 0.15])) + 1, len(pool))
            else:  # an infection: within two days, lasting 10–30 days, then a week to recover
                self.ramp[i] = 2
                self.onset[i] = rng.integers(35, max(days - 20, 36))
                self.recover[i] = self.onset[i] + rng.integers(10, 31)
                pool = np.flatnonzero(measurable[i] & np.isin(np.arange(6), [ACTIVE, LATE, NIGHT, TOILET, TRIPS]))
                count = min(int(rng.integers(2, 5)), len(pool))
            for m in rng.choice(pool, count, replace=False):
                self.size[i, m] = rng.uniform(*_SIZE[kind][m])

    # -- what happened ---------------------------------------------------------------------
    def truth(self, i: int) -> Truth:
        mech = tuple(int(m) for m in np.flatnonzero(self.size[i]))
        features: list[str] = []
        for m in mech:
            moved = MOVES[m] + (("walk_km",) if m == TRIPS and self.located[i] else ())
            features += [f for f in moved if f not in features]
        declining = self.profile[i] != "stable"
        onset = int(self.onset[i]) if declining else None
        return Truth(
            profile=str(self.profile[i]), onset=onset,
            full=None if onset is None else onset + int(self.ramp[i]) - 1,
            mechanisms=tuple(MECHANISMS[m] for m in mech), features=tuple(features),
            dead=tuple((int(a), int(b), DEVICE_NAMES[dev]) for (_, a, b), dev in
                       zip(self.dead[self.dead[:, 0] == i], self.dead_device[self.dead[:, 0] == i], strict=True)),
            absences=tuple((int(a), int(b), str(r)) for (_, a, b), r in
                           zip(self.absent[self.absent[:, 0] == i], self.absent_reason[self.absent[:, 0] == i],
                               strict=True)),
            trips=tuple((int(a), int(b)) for _, a, b in self.trips[self.trips[:, 0] == i]),
            kit=tuple(DEVICE_NAMES[k] for k in np.flatnonzero(self.has[i, :6])),
            located=bool(self.located[i]),
        )

    def date(self, d: int) -> date:
        return self.start + timedelta(days=d)

    def level(self, d: int) -> F64:
        """How much of each resident's change is there on day `d`, 0–1."""
        ramp = np.clip((d - self.onset + 1) / self.ramp, 0, 1)
        return ramp * np.clip(1 - (d - self.recover) / 7, 0, 1)

    def away_on(self, d: int) -> B:
        """Away on day `d` by the registry."""
        away = np.zeros(self.n, np.bool_)
        away[_covering(self.absent, d)[:, 0]] = True
        return away

    def dead_on(self, d: int) -> npt.NDArray[np.bool_]:
        """(n, 8): the device is silent on day `d`."""
        dead = np.zeros((self.n, 8), np.bool_)
        mask = (self.dead[:, 1] <= d) & (self.dead[:, 2] >= d)
        dead[self.dead[mask, 0], self.dead_device[mask]] = True
        return dead

    # -- the batches -----------------------------------------------------------------------
    def days_iter(self) -> Iterator[DayBatch]:
        for d in range(self.days):
            yield self.day(d)

    def day(self, d: int) -> DayBatch:
        """Local day `d` of every resident: a frame each, and their events from the start of
        the night window before it to the end of the day."""
        bounds = [[frame_bounds(self.date(d), self.zone, a, b) for a, b in _NIGHTS],
                  [frame_bounds(self.date(d + 1), self.zone, a, b) for a, b in _NIGHTS]]
        night = np.array([[b[2] for b in bounds[0]], [b[2] for b in bounds[1]]])[:, self.night_kind]
        night_end = np.array([b[3] for b in bounds[0]])[self.night_kind]
        if self._cache is not None and self._cache[0] == d - 1:
            tail = self._cache[1]
        else:
            before = _Generator(self, d - 1).events()
            tail = _select(before, before.t >= night[0][before.row])
        today = _Generator(self, d).events()
        self._cache = (d, _select(today, today.t >= night[1][today.row]))
        events = _sorted(_concat([tail, today]))
        n = self.n
        frames = Frames(
            day_start=np.full(n, bounds[0][0][0]), day_end=np.full(n, bounds[0][0][1]),
            night_start=night[0].copy(), night_end=night_end, activity_sensors=self.activity_sensors.copy(),
            away=self.away_on(d), located=self.located.copy(), capabilities=self.capabilities.copy(),
        )
        return DayBatch(d, self.date(d), events, frames)


@dataclass(frozen=True, slots=True)
class Change:
    """A decline given to one resident of `of_residents`: "gradual" (growing over `ramp`
    days) or "abrupt" (there within two days, for `lasts` days, then a week to recover),
    of the `mechanisms` (MECHANISMS names), from day `onset` (an index from the start);
    `strength` places each change in its size range (`_SIZE`): 0 the smallest, 1 the largest."""

    profile: str
    mechanisms: tuple[str, ...]
    onset: int
    ramp: int = 42
    lasts: int = 30
    strength: float = 0.5


def of_residents(residents: Sequence[SimResident], days: int, start: date, seed: int = 1,
                 changes: Mapping[str, Change] | None = None) -> Municipality:
    """A municipality of these fleet residents (row i = residents[i]), all of one time zone:
    their own sensor kits (motion sensors by room, a door sensor, a tracker or phone where
    the profile has a location basis) and night windows, their rhythm drawn from `seed` as
    `Municipality`'s. Nobody is away on the registry and no sensor dies (the registry says
    neither); the residents `changes` names decline as it says, the others are stable."""
    zones = {r.timezone for r in residents}
    if len(zones) > 1:
        raise ValueError(f"residents of one time zone at a time, not {sorted(zones)}")
    m = Municipality(len(residents), days, seed, start, gradual=0.0, abrupt=0.0, dead_share=0.0,
                     absent_share=0.0, zone=zones.pop() if zones else ZONE)
    has = np.zeros((m.n, 8), np.bool_)
    has[:, ALARM] = True
    for i, res in enumerate(residents):
        for dev in res.devices:
            if dev.kind is DeviceKind.MOTION_SENSOR and dev.room in ROOMS:
                has[i, ROOMS.index(dev.room)] = True
            elif dev.kind is DeviceKind.DOOR_SENSOR:
                has[i, DOOR] = True
            elif dev.kind in (DeviceKind.GPS_TRACKER, DeviceKind.PHONE) and res.profile.location_basis:
                has[i, TRACKER] = True
        night = (time.fromisoformat(res.night[0]), time.fromisoformat(res.night[1]))
        if night not in _NIGHTS:
            raise ValueError(f"{res.id}: night {res.night} is not one of the simulated ones {_NIGHTS}")
        m.night_kind[i] = _NIGHTS.index(night)
    m.has, m.located = has, has[:, TRACKER].copy()
    m.activity_sensors = has[:, :6].sum(1).astype(np.int16)
    m.capabilities = (np.where(has[:, :5].any(1), CAP_ROOMS, 0) | np.where(has[:, BATHROOM], CAP_BATHROOM, 0)
                      | np.where(has[:, DOOR], CAP_EXIT_DOOR, 0) | np.where(m.located, CAP_GPS, 0)).astype(np.int16)
    for i, res in enumerate(residents):
        change = (changes or {}).get(res.id)
        if change is None:
            continue
        m.profile[i], m.onset[i] = change.profile, change.onset
        m.ramp[i] = change.ramp if change.profile == "gradual" else 2
        if change.profile == "abrupt":
            m.recover[i] = change.onset + change.lasts
        for name in change.mechanisms:
            k = MECHANISMS.index(name)
            low, high = _SIZE[change.profile][k]
            m.size[i, k] = low + change.strength * (high - low)
    return m


def _select(ev: Events, keep: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Events:
    return Events(ev.row[keep], ev.t[keep], ev.kind[keep], ev.device[keep], ev.room[keep], ev.exit[keep],
                  ev.lat[keep], ev.lon[keep], ev.accuracy_m[keep])


def _concat(parts: list[Events]) -> Events:
    return Events(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Events)))


def _sorted(ev: Events) -> Events:
    if not len(ev):
        return ev
    base = ev.t.min()
    order = np.argsort(ev.row.astype(np.float64) * 1e6 + (ev.t - base))
    return _select(ev, order)


class _Generator:
    """One local day of every resident; `events()` in no particular order."""

    def __init__(self, m: Municipality, d: int) -> None:
        self.m, self.d, self.n = m, d, m.n
        self.rng = np.random.default_rng([m.seed, 1, d + 1])
        self.clock = _Clock(m.date(d), m.zone)
        self.parts: list[tuple[npt.NDArray[np.int64], F64, int, npt.NDArray[np.int64], bool]] = []
        self.locs: list[tuple[npt.NDArray[np.int64], F64, F64, F64, F64]] = []

    def add(self, row: npt.ArrayLike, t: npt.ArrayLike, kind: Kind, device: npt.ArrayLike, exit_: bool = False) -> None:
        row_a = np.asarray(row, np.int64)
        self.parts.append((row_a, np.broadcast_to(np.asarray(t, np.float64), row_a.shape),
                           int(kind), np.broadcast_to(np.asarray(device, np.int64), row_a.shape), exit_))

    def motion(self, row: npt.ArrayLike, wall_h: npt.ArrayLike, room: npt.ArrayLike) -> None:
        self.add(row, self.clock.epoch(np.asarray(wall_h, np.float64)), Kind.MOTION, room)

    def door(self, row: npt.NDArray[np.int64], wall_h: F64, going: bool) -> None:
        """Out through the front door (or back in): opened, closed a little later, with a
        hall motion just inside."""
        t = self.clock.epoch(wall_h)
        inside = t - 60 if going else t + 40
        self.add(row, t, Kind.DOOR_OPENED, DOOR, True)
        self.add(row, t + self.rng.uniform(10, 60, len(row)), Kind.DOOR_CLOSED, DOOR, True)
        self.add(row, inside, Kind.MOTION, HALL)

    def events(self) -> Events:
        m, d, n, rng, clock = self.m, self.d, self.n, self.rng, self.clock
        day = m.date(d)
        weekend = day.weekday() >= 5
        season = (_daylight_h(day) - 12) / 6  # about -0.8 in January, 1 at midsummer
        size = m.size * m.level(d)[:, None]
        off = m.off[:, max(d, 0)]
        # home: registry absences and unregistered trips leave the home empty
        home_from, home_until = np.zeros(n), np.full(n, 24.0)
        for spells in (_covering(m.absent, d), _covering(m.trips, d)):
            who, first, last = spells[:, 0], spells[:, 1], spells[:, 2]
            home_until[who] = np.where(first == d, rng.uniform(9, 13, len(who)), np.where(last == d, 24, 0))
            home_from[who] = np.where(last == d, rng.uniform(12, 17, len(who)), np.where(first == d, 0, 25))
            leaving, back = who[first == d], who[(last == d) & (first != d)]
            self.door(leaving, home_until[leaving], going=True)
            self.door(back, home_from[back], going=False)
        wake = (m.wake_mean + weekend * m.weekend_wake + m.wake_sd * rng.standard_normal(n) - 0.15 * season
                + size[:, LATE] + off * 1.0)
        wake = np.clip(wake, 4.5, 12.0)
        bed = m.bed_mean + 0.2 * weekend + m.bed_sd * rng.standard_normal(n) - 0.3 * size[:, ACTIVE]
        bed = np.clip(bed, np.maximum(wake + 6, 19.5), 23.9)
        up_from, up_until = np.maximum(wake, home_from), np.minimum(bed, home_until)
        out = self.outings(up_from, up_until, size, weekend, season)
        self.visits(up_from, up_until, out)
        rest = self.rests(up_from, up_until, size[:, ACTIVE] + off * 1.5)
        self.rooms(up_from, up_until, out, rest)
        self.nights(np.maximum(home_from, 0), np.minimum(wake, home_until), size, off)
        self.nights(np.maximum(bed, home_from), np.minimum(24, home_until), size, off)
        home_at_bed = (bed >= home_from) & (bed < home_until)
        who = np.flatnonzero(home_at_bed)
        self.motion(who, bed[who], BATHROOM)
        self.motion(who, bed[who] + 8 / 60, BEDROOM)
        presses = rng.poisson(m.buttons)
        who = np.repeat(np.arange(n), presses)
        self.add(who, clock.epoch(rng.uniform(up_from[who], np.maximum(up_until[who], up_from[who]))), Kind.BUTTON,
                 ALARM)
        self.home_fixes(home_from, home_until, out)
        self.heard()
        return self.assemble()

    # -- the waking day --------------------------------------------------------------------
    def outings(self, lo: F64, hi: F64, size: F64, weekend: bool, season: float) -> list[tuple[F64, F64]]:
        """Up to two trips out (morning, afternoon) as (start, end) wall hours, NaN = none."""
        m, rng, n = self.m, self.rng, self.n
        p = (1 + 0.15 * season) * (m.weekend_out if weekend else 1.0) * (1 - size[:, TRIPS])
        trips: list[tuple[F64, F64]] = []
        for first, chance in ((True, m.p_out), (False, m.p_out2)):
            minutes = np.clip(m.out_min * np.exp(rng.normal(0, 0.35, n)), 10, 240) * (1 - size[:, WALKS])
            earliest = lo + 1 if first else np.fmax(np.maximum(lo + 1, 14.0), trips[0][1] + 0.5)
            latest = np.minimum(12.5 if first else 24.0, hi - 1 - minutes / 60)
            start = rng.uniform(earliest, np.maximum(latest, earliest))
            go = (rng.random(n) < chance * p) & (latest > earliest)
            start = np.where(go, start, np.nan)
            end = start + minutes / 60
            who = np.flatnonzero(go)
            self.door(who, start[who], going=True)
            self.door(who, end[who], going=False)
            self.walks(who, start[who], end[who], m.reach_m[who] * (1 - size[who, WALKS]))
            trips.append((start, end))
        return trips

    def walks(self, who: I64, start: F64, end: F64, reach: F64) -> None:
        """GPS fixes every minute of a walk out and back (as `simulators.geo.walk_track`),
        for residents with a tracker and a location basis who took it along."""
        rng, clock = self.rng, self.clock
        keep = self.m.located[who] & (rng.random(len(who)) < 0.9)
        who, t0, t1 = who[keep], clock.epoch(start[keep]), clock.epoch(end[keep])
        fixes = np.maximum(((t1 - t0) // 60).astype(np.int64), 0)
        far = np.minimum(reach[keep], WALK_SPEED_MPS * (t1 - t0) / 2)
        bearing, phase = rng.uniform(0, 2 * np.pi, len(who)), rng.uniform(0, 2 * np.pi, len(who))
        k = np.arange(fixes.sum()) - np.repeat(np.cumsum(fixes) - fixes, fixes)
        walk = np.repeat(np.arange(len(who)), fixes)
        t = t0[walk] + 30 + 60 * k
        frac = (t - t0[walk]) / (t1 - t0)[walk]
        dist = far[walk] * (1 - np.abs(2 * frac - 1))
        heading = bearing[walk] + 0.25 * np.sin(2 * np.pi * frac + phase[walk])
        self.fixes(who[walk], t, dist * np.cos(heading), dist * np.sin(heading), rng.uniform(4, 15, len(t)))

    def fixes(self, row: I64, t: F64, north: F64, east: F64, accuracy: F64) -> None:
        north = north + self.rng.normal(0, accuracy / 2)
        east = east + self.rng.normal(0, accuracy / 2)
        lat = self.m.home_lat[row] + north / _M_PER_DEG
        self.locs.append((row, t, lat, self.m.home_lon[row] + east / (_M_PER_DEG * np.cos(np.radians(lat))),
                          accuracy))

    def home_fixes(self, home_from: F64, home_until: F64, out: list[tuple[F64, F64]]) -> None:
        """Trackers report a poor indoor position every 15 minutes while at home."""
        who = np.flatnonzero(self.m.located)
        slots = np.arange(0.0, 24.0, 0.25)
        at = home_from[who, None] <= slots
        at &= slots < home_until[who, None]
        for start, end in out:
            at &= ~((start[who, None] <= slots) & (slots < end[who, None]))
        r, s = np.nonzero(at)
        t = self.clock.epoch(slots[s]) + self.rng.uniform(0, 60, len(s))
        self.fixes(who[r], t, np.zeros(len(s)), np.zeros(len(s)), self.rng.uniform(15, 45, len(s)))

    def visits(self, lo: F64, hi: F64, out: list[tuple[F64, F64]]) -> None:
        """Home-care visits: staff open and close the front door coming and going, and now
        and then the resident opens it without going out (the post, a neighbour)."""
        m, rng, n = self.m, self.rng, self.n
        for k, (a, b) in enumerate(((8.0, 9.5), (12.0, 13.5), (19.0, 20.5))):
            start = np.maximum(rng.uniform(a, b, n), lo + 0.25)
            end = start + rng.uniform(15, 40, n) / 60
            ok = (m.visits > k) & (end < hi)
            for o_start, o_end in out:
                ok &= ~((start < o_end) & (end > o_start))
            who = np.flatnonzero(ok)
            for at in (start[who], end[who]):
                t = self.clock.epoch(at)
                self.add(who, t, Kind.DOOR_OPENED, DOOR, True)
                self.add(who, t + rng.uniform(10, 30, len(who)), Kind.DOOR_CLOSED, DOOR, True)
            # staff move about (hall, kitchen, bathroom, ...): the sensors cannot tell who it is
            moves = np.maximum(((end[who] - start[who]) * 15).astype(np.int64), 1)
            each = np.repeat(np.arange(len(who)), moves)
            k = np.arange(moves.sum()) - np.repeat(np.cumsum(moves) - moves, moves)
            rooms = rng.choice(np.array([HALL, KITCHEN, BATHROOM, BEDROOM, LIVING]), len(each),
                               p=[0.3, 0.3, 0.2, 0.1, 0.1])
            self.motion(who[each], start[who][each] + (k * 4 + rng.uniform(0.5, 3.5, len(each))) / 60, rooms)
        who = np.flatnonzero(rng.random(n) < m.mail)
        at = rng.uniform(lo[who], np.maximum(hi[who], lo[who]))
        t = self.clock.epoch(at)
        self.add(who, t, Kind.DOOR_OPENED, DOOR, True)
        self.add(who, t + rng.uniform(20, 90, len(who)), Kind.DOOR_CLOSED, DOOR, True)

    def rests(self, lo: F64, hi: F64, extra_h: F64) -> list[tuple[F64, F64]]:
        """Resting spells (a nap, the television): usual ones and, for a resident less
        active than before, extra ones adding up to `extra_h` hours."""
        rng, n = self.rng, self.n
        spells = []
        count = rng.poisson(self.m.rest_rate)
        for k in range(4):
            length = np.where(count > k, rng.uniform(0.75, 2.0, n), 0.0)
            spells.append(length)
        for _half in range(2):
            spells.append(extra_h / 2 * rng.uniform(0.7, 1.3, n) * (extra_h > 0))
        out = []
        for length in spells:
            start = rng.uniform(lo + 0.5, np.maximum(hi - length, lo + 0.5))
            out.append((np.where(length > 0, start, np.nan), start + length))
        return out

    def rooms(self, lo: F64, hi: F64, out: list[tuple[F64, F64]], rest: list[tuple[F64, F64]]) -> None:
        """Awake at home: a room each 5-minute slot (stay, or move on by rhythm's weights);
        the sensor of an occupied room fires in most slots, rarely while resting."""
        rng, n, clock = self.rng, self.n, self.clock
        slot_t = np.arange(clock.start, clock.end, SLOT_S)
        h = clock.wall(slot_t)
        present = (lo[:, None] <= h) & (h < hi[:, None])
        for start, end in out:  # no slot that overlaps a trip out: nobody moves at home after the door
            present &= ~((start[:, None] < h + SLOT_S / 3600) & (h < end[:, None]))
        resting = np.zeros_like(present)
        for start, end in rest:
            resting |= (start[:, None] <= h) & (h < end[:, None])
        rest_room = np.where(rng.random(n) < 0.7, LIVING, BEDROOM)
        room = np.full(n, BEDROOM, np.int64)
        rooms = np.empty((n, len(h)), np.int8)
        stay = rng.random((n, len(h)), np.float32) < _STAY
        pick = rng.random((n, len(h)), np.float32)
        for s in range(len(h)):
            moved = (_CUM_NEXT[room] < pick[:, s, None]).sum(1)
            room = np.where(stay[:, s], room, np.minimum(moved, 4))
            room = np.where(resting[:, s], rest_room, room)
            room = np.where(present[:, s], room, np.where(h[s] < 12, BEDROOM, HALL))
            rooms[:, s] = room
        entered = np.ones_like(present)
        entered[:, 1:] = (rooms[:, 1:] != rooms[:, :-1]) | ~present[:, :-1]
        chance = np.where(resting, np.float32(0.04), np.float32(0.8))
        fire = present & (entered | (rng.random((n, len(h)), np.float32) < chance))
        r, cell = np.nonzero(fire)
        self.add(r, slot_t[cell] + rng.uniform(0, SLOT_S, len(cell)), Kind.MOTION, rooms[r, cell])

    # -- the night -------------------------------------------------------------------------
    def nights(self, lo: F64, hi: F64, size: F64, off: B) -> None:
        """Asleep from `lo` to `hi` (wall hours; empty when hi <= lo): toilet visits
        (bedroom, hall, bathroom and back) and restless spells (up, moving about)."""
        m, rng = self.m, self.rng
        hours = np.maximum(hi - lo - 0.3, 0)
        visits = rng.poisson((m.toilet + size[:, TOILET] + off) / 8.5 * hours)
        who = np.repeat(np.arange(self.n), visits)
        at = rng.uniform(lo[who], lo[who] + hours[who])
        steps = ((BEDROOM, 0, 0), (HALL, 1, 1.5), (BATHROOM, 2, 3), (BATHROOM, 5, 7), (HALL, 8, 10),
                 (BEDROOM, 9, 12))
        for where, a, b in steps:
            self.motion(who, at + rng.uniform(a, b, len(who)) / 60, where)
        # restless spells: the usual ones, and extra minutes for a resident declining
        usual = rng.poisson(m.restless / 8.5 * hours)
        extra = rng.poisson(size[:, NIGHT] / 30 * hours / 8.5)
        count = usual + extra
        who = np.repeat(np.arange(self.n), count)
        length = rng.uniform(10, 40, len(who)) / 60
        start = rng.uniform(lo[who], np.maximum(lo[who] + hours[who] - length, lo[who]))
        moves = np.maximum((length * 12).astype(np.int64), 1)
        spell = np.repeat(np.arange(len(who)), moves)
        k = np.arange(moves.sum()) - np.repeat(np.cumsum(moves) - moves, moves)
        rooms = rng.choice(np.array([BEDROOM, LIVING, KITCHEN]), len(spell), p=[0.6, 0.25, 0.15])
        self.motion(who[spell], start[spell] + (k * 5 + rng.uniform(0, 2, len(spell))) / 60, rooms)

    # -- what the sensors send -------------------------------------------------------------
    def heard(self) -> None:
        """A heartbeat row per activity sensor and hour of the day (one hour in 300 lost)."""
        clock, rng = self.clock, self.rng
        hours = np.arange(clock.start, clock.end, 3600.0)
        alive = self.m.has[:, :6] & ~self.m.dead_on(self.d)[:, :6]
        heard = alive[:, :, None] & (rng.random((self.n, 6, len(hours)), np.float32) > 1 / 300)
        r, dev, hr = np.nonzero(heard)
        self.add(r, hours[hr] + rng.uniform(0, 3600, len(hr)), Kind.HEARD, dev)

    def assemble(self) -> Events:
        m = self.m
        row = np.concatenate([p[0] for p in self.parts])
        t = np.concatenate([p[1] for p in self.parts])
        kind = np.concatenate([np.full(len(p[0]), p[2], np.int8) for p in self.parts])
        dev = np.concatenate([p[3] for p in self.parts])
        exit_ = np.concatenate([np.full(len(p[0]), p[4]) for p in self.parts])
        keep = m.has[row, dev] & ~m.dead_on(self.d)[row, dev] & np.isfinite(t)
        row, t, kind, dev, exit_ = row[keep], t[keep], kind[keep], dev[keep], exit_[keep]
        room = np.where(kind == Kind.MOTION, ROOM_CODES[np.minimum(dev, 4)], 0).astype(np.int16)
        nan = np.full(len(t), np.nan)
        parts = [Events(row.astype(np.int32), t, kind, (row * _PER_ROW + dev).astype(np.int32), room, exit_,
                        nan, nan, np.full(len(t), np.nan, np.float32))]
        for r, tl, lat, lon, acc in self.locs:
            parts.append(Events(r.astype(np.int32), tl, np.full(len(r), Kind.LOCATION, np.int8),
                                (r * _PER_ROW + TRACKER).astype(np.int32), np.zeros(len(r), np.int16),
                                np.zeros(len(r), np.bool_), lat, lon, acc.astype(np.float32)))
        return _concat(parts)


__all__ = ["DEFAULT_START", "MECHANISMS", "MOVES", "ZONE", "Change", "DayBatch", "Municipality", "Truth",
           "of_residents"]
