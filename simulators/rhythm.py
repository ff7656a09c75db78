"""A resident's day in local time: sleep and wake, rooms, doors, walks and incidents.

`plan_day` returns what the resident *does* on one local calendar day as `Happening`s on
their devices. What the devices add on their own (heartbeats, batteries, going silent,
network imperfections) is `simulators.devices`. Everything is drawn from the `Random`
handed in, so a day is a pure function of (resident, day, random stream).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from simulators.geo import home_fix, walk_track
from simulators.profiles import ROOMS, SimDevice, SimResident
from trygg.contract import DeviceKind, EventType

MINUTE: Final = 60_000
_NEXT_ROOM: Final[dict[str, tuple[float, ...]]] = {
    # weights over ROOMS (bedroom, bathroom, kitchen, living_room, hallway)
    "bedroom": (0.0, 0.35, 0.25, 0.3, 0.1),
    "bathroom": (0.25, 0.0, 0.25, 0.35, 0.15),
    "kitchen": (0.1, 0.15, 0.0, 0.6, 0.15),
    "living_room": (0.1, 0.2, 0.45, 0.0, 0.25),
    "hallway": (0.15, 0.2, 0.3, 0.35, 0.0),
}
_HOME_FIX_MIN: Final[dict[DeviceKind, float]] = {DeviceKind.GPS_TRACKER: 15, DeviceKind.PHONE: 30}
_WALK_FIX_S: Final[dict[DeviceKind, float]] = {DeviceKind.GPS_TRACKER: 60, DeviceKind.PHONE: 120}


@dataclass(frozen=True, slots=True)
class Happening:
    """Something a device reports: `type` with `data` at `ts_ms`."""

    ts_ms: int
    device: SimDevice
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DayPlan:
    start_ms: int  # local midnight
    end_ms: int  # next local midnight
    wake_ms: int
    bed_ms: int
    happenings: list[Happening] = field(default_factory=list)
    away: list[tuple[int, int]] = field(default_factory=list)  # out of the home
    visits: list[int] = field(default_factory=list)  # home-care visits (battery changes)
    charged: bool = True  # trackers/phones put on the charger at bedtime


def local_ms(day: date, hours: float, zone: ZoneInfo) -> int:
    """Milliseconds of a local wall-clock time (`hours` after midnight) on `day`."""
    wall = datetime.combine(day, time(0), zone) + timedelta(hours=hours)
    return round(wall.timestamp() * 1000)


class _Day:
    def __init__(self, res: SimResident, day: date, rng: random.Random, scale: float) -> None:
        self.res, self.rng, self.scale = res, rng, scale
        zone = ZoneInfo(res.timezone)
        self.day, self.zone = day, zone
        self.rooms = res.motion_rooms()
        self.busy: list[tuple[int, int]] = []  # door episodes: outings and visits
        self.door_open = False
        self.locked = True
        self.door = res.device(DeviceKind.DOOR_SENSOR)
        self.lock = res.device(DeviceKind.DOOR_LOCK)
        self.alarm = res.device(DeviceKind.ALARM_UNIT)
        wake = min(max(rng.gauss(7.0, 0.7), 5.5), 9.5)
        bed = min(max(rng.gauss(22.5, 0.75), 21.0), 23.8)
        self.plan = DayPlan(
            local_ms(day, 0, zone), local_ms(day + timedelta(days=1), 0, zone),
            local_ms(day, wake, zone), local_ms(day, bed, zone),
        )

    # -- helpers ---------------------------------------------------------------------------
    def at(self, hours: float) -> int:
        return local_ms(self.day, hours, self.zone)

    def emit(self, ts: int, device: SimDevice | None, kind: EventType, **data: Any) -> None:
        if device is not None:
            self.plan.happenings.append(Happening(ts, device, kind, data))

    def chance(self, p: float) -> bool:
        return self.rng.random() < p * self.scale

    def motion(self, ts: int, room: str) -> None:
        self.emit(ts, self.rooms.get(room), EventType.MOTION, room=room)

    def free(self, lo: int, hi: int, spans: list[tuple[int, int]] | None = None) -> bool:
        return all(hi <= a or lo >= b for a, b in (self.busy if spans is None else spans))

    # -- episodes --------------------------------------------------------------------------
    def indoors(self, start: int, end: int, room: str) -> None:
        """Moving between rooms; a motion sensor fires on entry and while someone is there."""
        t = start
        while t < end:
            dwell = min(max(int(self.rng.expovariate(1 / 20) * MINUTE), 2 * MINUTE), end - t)
            self.motion(t, room)
            retrigger = t + int(self.rng.uniform(4, 12) * MINUTE)
            while retrigger < t + dwell:
                self.motion(retrigger, room)
                retrigger += int(self.rng.uniform(4, 12) * MINUTE)
            t += dwell
            room = self.rng.choices(ROOMS, weights=_NEXT_ROOM[room])[0]

    def leave(self, t: int, night: bool) -> None:
        """Out through the front door, which is kept locked: unlock, open, close, lock. At
        night a confused resident does not lock it, and now and then leaves it open."""
        self.motion(t - MINUTE, "hallway")
        self.emit(t - 20_000, self.lock, EventType.DOOR_UNLOCKED, by="resident")
        self.emit(t, self.door, EventType.DOOR_OPENED, door="front")
        self.door_open = night and self.rng.random() < 0.3
        self.locked = not night
        if not self.door_open:
            closed = t + int(self.rng.uniform(10, 60) * 1000)
            self.emit(closed, self.door, EventType.DOOR_CLOSED, door="front")
            if self.locked:
                self.emit(closed + 15_000, self.lock, EventType.DOOR_LOCKED, by="resident")

    def come_back(self, t: int) -> None:
        if not self.door_open:
            if self.locked:
                self.emit(t - 30_000, self.lock, EventType.DOOR_UNLOCKED, by="resident")
            self.emit(t, self.door, EventType.DOOR_OPENED, door="front")
        self.door_open, self.locked = False, True
        self.emit(t + 15_000, self.door, EventType.DOOR_CLOSED, door="front")
        self.emit(t + 30_000, self.lock, EventType.DOOR_LOCKED, by="resident")
        self.motion(t + 40_000, "hallway")

    def walk(self, start: int, end: int, reach: float) -> None:
        for dev in self.res.locators():
            if self.rng.random() < 0.92:  # now and then the tracker stays at home
                for fix in walk_track(self.rng, self.res.home, start, end,
                                      _WALK_FIX_S[dev.kind], reach):
                    self.emit(fix.ts_ms, dev, EventType.LOCATION, **fix.data())

    def outing(self, start: int, minutes: float, night: bool = False) -> None:
        end = start + int(minutes * MINUTE)
        self.plan.away.append((start, end))
        self.busy.append((start, end))
        self.leave(start, night)
        lo, hi = self.res.profile.walk_reach_m
        reach = self.rng.uniform(lo, hi) * (1.5 if night else 1.0)
        self.walk(start + MINUTE, end - MINUTE, reach)
        self.come_back(end)

    def visit(self, t: int, minutes: float) -> None:
        staff = self.rng.choice(self.res.staff) if self.res.staff else "staff"
        end = t + int(minutes * MINUTE)
        self.plan.visits.append(t)
        self.busy.append((t, end))
        self.emit(t - 30_000, self.lock, EventType.DOOR_UNLOCKED, by=staff)
        self.emit(t, self.door, EventType.DOOR_OPENED, door="front")
        self.emit(t + 20_000, self.door, EventType.DOOR_CLOSED, door="front")
        self.motion(t + 45_000, "hallway")
        self.emit(end, self.door, EventType.DOOR_OPENED, door="front")
        self.emit(end + 20_000, self.door, EventType.DOOR_CLOSED, door="front")
        self.emit(end + 50_000, self.lock, EventType.DOOR_LOCKED, by=staff)

    def slot(self, lo_h: float, hi_h: float, minutes: float, tries: int = 6) -> int | None:
        """A start time between two local hours whose `minutes` do not overlap time away."""
        for _ in range(tries):
            t = self.at(self.rng.uniform(lo_h, hi_h))
            if self.free(t - 5 * MINUTE, t + int(minutes * MINUTE) + 5 * MINUTE):
                return t
        return None

    # -- the day ---------------------------------------------------------------------------
    def night(self, lo_h: float, hi_h: float, incidents: bool) -> None:
        prof, rng = self.res.profile, self.rng
        for _ in range(rng.choices((0, 1, 2), weights=(0.4, 0.4, 0.2))[0]):
            t = self.at(rng.uniform(lo_h, hi_h))
            if self.free(t - 10 * MINUTE, t + 15 * MINUTE):
                self.motion(t, "bedroom")
                self.motion(t + MINUTE, "hallway")
                self.motion(t + 2 * MINUTE, "bathroom")
                self.motion(t + int(rng.uniform(6, 12) * MINUTE), "bedroom")
        if not incidents:
            return
        if self.chance(prof.night_wander) and self.door is not None:
            minutes = rng.uniform(15, 45)
            leave = self.slot(max(lo_h, 0.5), min(hi_h, 4.5), minutes)
            if leave is not None:
                self.motion(leave - 3 * MINUTE, "bedroom")
                self.outing(leave, minutes, night=True)
                self.motion(leave + int((minutes + 4) * MINUTE), "bedroom")
        if self.chance(prof.auto_alarm * 0.6):
            t = self.at(rng.uniform(lo_h, hi_h))
            self.emit(t, self.res.device(DeviceKind.AUTO_ALARM), EventType.ALARM_AUTO,
                      source=prof.auto_source)

    def daytime(self) -> None:
        prof, rng, plan = self.res.profile, self.rng, self.plan
        wake_h = (plan.wake_ms - plan.start_ms) / 3_600_000
        bed_h = (plan.bed_ms - plan.start_ms) / 3_600_000
        for p in prof.outings:
            if rng.random() < p:
                minutes = rng.uniform(*prof.outing_minutes)
                latest = bed_h - 1 - minutes / 60
                earliest = max(wake_h + 1, 8.5)
                t = self.slot(earliest, latest, minutes) if latest > earliest else None
                if t is not None:
                    self.outing(t, minutes)
        if self.door is not None or self.lock is not None:
            for _ in range(rng.randint(*prof.staff_visits)):
                minutes = rng.uniform(15, 40)
                t = self.slot(wake_h + 0.5, bed_h - 1, minutes)
                if t is not None:
                    self.visit(t, minutes)
        # rooms, between the outings
        t, room = plan.wake_ms, "bedroom"
        for lo, hi in sorted(plan.away):
            if lo > t:
                self.indoors(t, min(lo, plan.bed_ms), room)
                room = "hallway"
            t = max(t, hi)
        if t < plan.bed_ms:
            self.indoors(t, plan.bed_ms, room)
        self.motion(plan.bed_ms, "bathroom")
        self.motion(plan.bed_ms + 8 * MINUTE, "bedroom")
        self.incidents(wake_h, bed_h)

    def incidents(self, wake_h: float, bed_h: float) -> None:
        prof, rng = self.res.profile, self.rng

        def when() -> int:
            return self.at(rng.uniform(wake_h + 0.3, bed_h - 0.3))

        fall = self.res.device(DeviceKind.FALL_SENSOR)
        if fall is not None and self.chance(prof.fall):
            t = when()
            if rng.random() < prof.false_fall_share:  # dropped the sensor, cancels at once
                self.emit(t, fall, EventType.FALL_DETECTED, confidence=round(rng.uniform(0.4, 0.7), 2))
                self.emit(t + int(rng.uniform(8, 50) * 1000), self.alarm, EventType.ALARM_CANCEL)
            else:
                self.emit(t, fall, EventType.FALL_DETECTED, confidence=round(rng.uniform(0.75, 0.99), 2))
                if rng.random() < 0.4:
                    self.emit(t + int(rng.uniform(60, 240) * 1000), self.alarm, EventType.ALARM_BUTTON)
        if self.chance(prof.button_real):
            self.emit(when(), self.alarm, EventType.ALARM_BUTTON)
        if self.chance(prof.button_mistake):
            t = when()
            self.emit(t, self.alarm, EventType.ALARM_BUTTON)
            self.emit(t + int(rng.uniform(5, 40) * 1000), self.alarm, EventType.ALARM_CANCEL)
        if self.chance(prof.auto_alarm * 0.4):
            self.emit(when(), self.res.device(DeviceKind.AUTO_ALARM), EventType.ALARM_AUTO,
                      source=prof.auto_source)
        if self.door is not None and self.chance(0.02):  # the door does not latch
            t = when()
            if self.free(t - 5 * MINUTE, t + 45 * MINUTE):
                self.busy.append((t, t + 45 * MINUTE))
                self.emit(t, self.door, EventType.DOOR_OPENED, door="front")
                self.emit(t + int(rng.uniform(16, 40) * MINUTE), self.door, EventType.DOOR_CLOSED,
                          door="front")
        smoke = self.res.device(DeviceKind.SMOKE_DETECTOR)
        if smoke is not None and self.chance(prof.smoke):
            meal = rng.choice((8.0, 12.5, 17.5))
            t = self.at(min(max(meal + rng.uniform(-0.5, 0.5), wake_h), bed_h))
            self.emit(t, smoke, EventType.SMOKE_DETECTED)
            self.emit(t + int(rng.uniform(3, 12) * MINUTE), smoke, EventType.SMOKE_CLEARED)

    def home_fixes(self) -> None:
        """Trackers and phones report a position now and then while at home."""
        for dev in self.res.locators():
            step = int(_HOME_FIX_MIN[dev.kind] * MINUTE)
            t = self.plan.start_ms + (hash_offset(dev.id) % step)
            while t < self.plan.end_ms:
                if self.free(t, t + 1, self.plan.away):
                    fix = home_fix(self.rng, self.res.home, t)
                    self.emit(t, dev, EventType.LOCATION, **fix.data())
                t += step


def hash_offset(text: str) -> int:
    """A stable small number from a string (Python's `hash` is salted per process)."""
    value = 0
    for ch in text:
        value = (value * 131 + ord(ch)) % 1_000_003
    return value * 7919


def plan_day(res: SimResident, day: date, rng: random.Random, scale: float = 1.0) -> DayPlan:
    """The resident's local calendar `day`; `scale` multiplies incident probabilities."""
    d = _Day(res, day, rng, scale)
    wake_h = (d.plan.wake_ms - d.plan.start_ms) / 3_600_000
    bed_h = (d.plan.bed_ms - d.plan.start_ms) / 3_600_000
    d.night(0.5, wake_h - 0.5, incidents=True)
    d.daytime()
    if bed_h < 23.0:
        d.night(bed_h + 0.5, 23.9, incidents=False)
    d.home_fixes()
    d.plan.charged = rng.random() >= d.res.profile.forgets_charger
    d.plan.happenings.sort(key=lambda h: h.ts_ms)
    return d.plan


__all__ = ["MINUTE", "DayPlan", "Happening", "hash_offset", "local_ms", "plan_day"]
