"""inactivity: no sign of life for inactivity_hours of daytime (07:00–22:00 local)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from processors import Processor
from tests.helpers import one_resident
from trygg.contract import AlertKind, Event, EventType, Priority
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import Registry

OSLO = ZoneInfo("Europe/Oslo")
_ids = itertools.count(1)
DAY = 86400  # heartbeats of one day keep device_offline out of these tests


def oslo(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=OSLO).astimezone(UTC)


def registry(devices: list[dict[str, Any]] | None = None, **resident: Any) -> Registry:
    if devices is None:
        devices = [
            {"id": "d-motion", "kind": "motion_sensor", "heartbeat_s": DAY},
            {"id": "d-alarm", "kind": "alarm_unit", "heartbeat_s": DAY},
            {"id": "d-gps", "kind": "gps_tracker", "heartbeat_s": DAY},
        ]
    return one_resident(*devices, **resident)


def ev(device: str, kind: str, at: datetime, **data: Any) -> Event:
    return Event(device, f"e-{next(_ids)}", EventType(kind), at, at, data, resident_id="r-17")


def inactivity(intents: list[AlertIntent]) -> list[AlertIntent]:
    return [i for i in intents if i.kind is AlertKind.INACTIVITY]


def test_alert_after_twelve_daytime_hours_since_morning_motion() -> None:
    proc = Processor(registry())
    motion = ev("d-motion", "motion", oslo(2026, 11, 23, 7, 0), room="kitchen")
    proc.handle(motion, motion.ts)
    assert inactivity(proc.due(oslo(2026, 11, 23, 18, 59))) == []
    [intent] = inactivity(proc.due(oslo(2026, 11, 23, 19, 0)))
    assert (intent.action, intent.priority) == (IntentAction.OPEN, Priority.MEDIUM)
    assert intent.source == ("d-motion", motion.event_id)
    assert intent.detail["last_activity_at"] == "2026-11-23T06:00:00.000Z"


def test_night_hours_do_not_count() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-motion", "motion", oslo(2026, 11, 23, 20, 0)), oslo(2026, 11, 23, 20, 0))
    # 12 real hours later it is 08:00: only 3 daytime hours have passed
    assert inactivity(proc.due(oslo(2026, 11, 24, 8, 0))) == []
    assert inactivity(proc.due(oslo(2026, 11, 24, 16, 59))) == []
    assert len(inactivity(proc.due(oslo(2026, 11, 24, 17, 0)))) == 1  # 2 h + 10 h


def test_activity_cancels_and_restarts_the_clock() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-motion", "motion", oslo(2026, 11, 23, 7, 0)), oslo(2026, 11, 23, 7, 0))
    [opened] = inactivity(proc.due(oslo(2026, 11, 23, 19, 0)))
    press = ev("d-alarm", "alarm.button", oslo(2026, 11, 23, 19, 30))
    intents = proc.handle(press, press.ts)
    [cancel] = inactivity(intents)
    assert (cancel.action, cancel.source, cancel.event) == (
        IntentAction.CANCEL,
        opened.source,
        press,
    )
    assert [i.kind for i in intents] == [AlertKind.ALARM, AlertKind.INACTIVITY]
    # 19:30 + 2.5 h that evening + 9.5 h next day = 16:30
    assert inactivity(proc.due(oslo(2026, 11, 24, 16, 29))) == []
    assert len(inactivity(proc.due(oslo(2026, 11, 24, 16, 30)))) == 1


def test_heartbeats_are_not_activity() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-motion", "motion", oslo(2026, 11, 23, 7, 0)), oslo(2026, 11, 23, 7, 0))
    for hour in range(8, 19):
        at = oslo(2026, 11, 23, hour, 0)
        proc.handle(ev("d-motion", "heartbeat", at, battery_pct=90), at)
    assert len(inactivity(proc.due(oslo(2026, 11, 23, 19, 0)))) == 1


def test_limit_comes_from_the_registry() -> None:
    proc = Processor(registry(settings={"inactivity_hours": 2}))
    proc.handle(ev("d-motion", "motion", oslo(2026, 11, 23, 21, 0)), oslo(2026, 11, 23, 21, 0))
    # 1 h that evening, 1 h next morning
    assert len(inactivity(proc.due(oslo(2026, 11, 24, 8, 0)))) == 1


def test_residents_without_motion_or_door_sensors_are_not_watched() -> None:
    reg = registry(devices=[{"id": "d-alarm", "kind": "alarm_unit", "heartbeat_s": DAY}])
    proc = Processor(reg)
    start = oslo(2026, 11, 23, 7, 0)
    proc.start_supervision(start, {})
    proc.handle(ev("d-alarm", "alarm.button", start), start)
    assert inactivity(proc.due(start + timedelta(days=6))) == []


def test_clock_starts_at_supervision_when_nothing_is_known() -> None:
    proc = Processor(registry())
    start = oslo(2026, 11, 23, 9, 0)
    proc.start_supervision(start, {})
    [intent] = inactivity(proc.due(oslo(2026, 11, 23, 21, 0)))
    assert intent.source == ("resident:r-17", "inactive@2026-11-23T08:00:00.000Z")


def test_location_counts_only_with_a_valid_location_basis() -> None:
    def run(**resident: Any) -> int:
        proc = Processor(registry(**resident))
        proc.handle(ev("d-motion", "motion", oslo(2026, 11, 23, 7, 0)), oslo(2026, 11, 23, 7, 0))
        at = oslo(2026, 11, 23, 18, 0)
        proc.handle(ev("d-gps", "location", at, lat=59.9, lon=10.7, accuracy_m=10), at)
        return len(inactivity(proc.due(oslo(2026, 11, 23, 19, 0))))

    assert run() == 1  # no basis: the position is not used
    assert run(location_basis={"kind": "vedtak", "valid_until": "2026-11-01"}) == 1  # expired
    assert run(location_basis={"kind": "consent"}) == 0


def test_resolved_inactivity_stays_quiet_until_activity() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-motion", "motion", oslo(2026, 11, 23, 7, 0)), oslo(2026, 11, 23, 7, 0))
    assert len(inactivity(proc.due(oslo(2026, 11, 23, 19, 0)))) == 1
    proc.alert_closed("r-17", AlertKind.INACTIVITY)
    assert inactivity(proc.due(oslo(2026, 11, 26, 19, 0))) == []
    motion = ev("d-motion", "motion", oslo(2026, 11, 27, 7, 0))
    assert inactivity(proc.handle(motion, motion.ts)) == []  # nothing open to cancel
    assert len(inactivity(proc.due(oslo(2026, 11, 27, 19, 0)))) == 1


def test_late_older_activity_does_not_move_the_clock_back() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-motion", "motion", oslo(2026, 11, 23, 10, 0)), oslo(2026, 11, 23, 10, 0))
    old = ev("d-motion", "motion", oslo(2026, 11, 23, 7, 0))
    proc.handle(old, oslo(2026, 11, 23, 10, 1))
    assert inactivity(proc.due(oslo(2026, 11, 23, 19, 0))) == []
    assert len(inactivity(proc.due(oslo(2026, 11, 23, 22, 0)))) == 1
