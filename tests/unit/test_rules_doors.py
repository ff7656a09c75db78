"""door_open and wandering: a door left open by day, leaving home at night."""

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


def oslo(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=OSLO).astimezone(UTC)


def registry(**resident: Any) -> Registry:
    return one_resident({"id": "d-door", "kind": "door_sensor", "heartbeat_s": 86400},
                        {"id": "d-motion", "kind": "motion_sensor", "heartbeat_s": 86400}, **resident)


def ev(device: str, kind: str, at: datetime, **data: Any) -> Event:
    return Event(device, f"e-{next(_ids)}", EventType(kind), at, at, data, resident_id="r-17")


def kinds(intents: list[AlertIntent], kind: AlertKind) -> list[AlertIntent]:
    return [i for i in intents if i.kind is kind]


class Home:
    """A processor for one resident, driven by events at given times."""

    def __init__(self, **resident: Any) -> None:
        self.proc = Processor(registry(**resident))

    def send(self, device: str, kind: str, at: datetime, **data: Any) -> list[AlertIntent]:
        return self.proc.handle(ev(device, kind, at, **data), at)

    def opened(self, at: datetime, door: str = "front") -> Event:
        event = ev("d-door", "door.opened", at, door=door)
        assert kinds(self.proc.handle(event, at), AlertKind.DOOR_OPEN) == []
        return event

    def at(self, when: datetime, kind: AlertKind) -> list[AlertIntent]:
        return kinds(self.proc.due(when), kind)


# ---------------------------------------------------------------- door_open


def test_door_closed_just_before_the_limit_raises_nothing() -> None:
    home = Home()
    opened = oslo(2026, 11, 22, 14, 0)
    home.opened(opened)
    closed = opened + timedelta(minutes=15) - timedelta(seconds=1)
    assert home.send("d-door", "door.closed", closed, door="front") == []
    assert home.at(opened + timedelta(hours=2), AlertKind.DOOR_OPEN) == []


def test_door_open_just_past_the_limit_raises_a_medium_alert() -> None:
    home = Home()
    opened = oslo(2026, 11, 22, 14, 0)
    event = home.opened(opened)
    assert home.at(opened + timedelta(minutes=15) - timedelta(seconds=1), AlertKind.DOOR_OPEN) == []
    [intent] = home.at(opened + timedelta(minutes=15), AlertKind.DOOR_OPEN)
    assert (intent.action, intent.priority) == (IntentAction.OPEN, Priority.MEDIUM)
    assert intent.source == ("d-door", event.event_id)
    assert intent.detail["door"] == "front"
    # closing it afterwards cancels the same alert
    [cancel] = home.send("d-door", "door.closed", opened + timedelta(minutes=16), door="front")
    assert (cancel.action, cancel.kind, cancel.source) == (
        IntentAction.CANCEL,
        AlertKind.DOOR_OPEN,
        intent.source,
    )


def test_door_open_minutes_come_from_the_registry() -> None:
    home = Home(settings={"door_open_minutes": 5})
    opened = oslo(2026, 11, 22, 14, 0)
    home.opened(opened)
    assert len(home.at(opened + timedelta(minutes=5), AlertKind.DOOR_OPEN)) == 1


def test_door_defaults_to_front_and_doors_are_separate() -> None:
    home = Home()
    opened = oslo(2026, 11, 22, 14, 0)
    home.send("d-door", "door.opened", opened)  # no data.door: "front"
    home.send("d-door", "door.opened", opened + timedelta(minutes=1), door="back")
    home.send("d-door", "door.closed", opened + timedelta(minutes=2), door="back")
    [intent] = home.at(opened + timedelta(minutes=30), AlertKind.DOOR_OPEN)
    assert intent.detail["door"] == "front"


def test_two_doors_share_one_alert_cancelled_when_the_last_closes() -> None:
    home = Home()
    opened = oslo(2026, 11, 22, 14, 0)
    home.opened(opened, "front")
    home.opened(opened + timedelta(minutes=1), "back")
    first, second = home.at(opened + timedelta(minutes=20), AlertKind.DOOR_OPEN)
    assert first.detail["door"] == "front" and second.detail["door"] == "back"
    assert home.send("d-door", "door.closed", opened + timedelta(minutes=21), door="front") == []
    [cancel] = home.send("d-door", "door.closed", opened + timedelta(minutes=22), door="back")
    assert cancel.action is IntentAction.CANCEL
    assert cancel.source == first.source  # the alert opened by the first door


def test_late_delivered_close_does_not_close_a_reopened_door() -> None:
    home = Home()
    opened = oslo(2026, 11, 22, 14, 0)
    home.opened(opened)
    # a door.closed from before the opening arrives late
    home.send("d-door", "door.closed", opened - timedelta(minutes=5), door="front")
    assert len(home.at(opened + timedelta(minutes=15), AlertKind.DOOR_OPEN)) == 1


def test_resolved_door_alert_does_not_reopen_until_the_door_closed() -> None:
    home = Home()
    opened = oslo(2026, 11, 22, 14, 0)
    home.opened(opened)
    assert len(home.at(opened + timedelta(minutes=15), AlertKind.DOOR_OPEN)) == 1
    home.proc.alert_closed("r-17", AlertKind.DOOR_OPEN)
    assert home.send("d-door", "door.opened", opened + timedelta(minutes=30)) == []
    assert home.at(opened + timedelta(hours=3), AlertKind.DOOR_OPEN) == []
    assert home.send("d-door", "door.closed", opened + timedelta(hours=3)) == []  # no cancel
    reopened = opened + timedelta(hours=4)
    home.opened(reopened)
    assert len(home.at(reopened + timedelta(minutes=15), AlertKind.DOOR_OPEN)) == 1


def test_door_opened_in_the_evening_and_left_open_into_the_night_is_alerted() -> None:
    home = Home()
    opened = oslo(2026, 11, 22, 22, 50)
    home.opened(opened)
    [intent] = home.at(oslo(2026, 11, 22, 23, 5), AlertKind.DOOR_OPEN)
    assert intent.action is IntentAction.OPEN


# ---------------------------------------------------------------- wandering


def test_night_opening_without_return_raises_wandering() -> None:
    home = Home()
    opened = oslo(2026, 11, 23, 2, 0)
    event = home.opened(opened)
    assert home.at(opened + timedelta(minutes=10) - timedelta(seconds=1), AlertKind.WANDERING) == []
    [intent] = home.at(opened + timedelta(minutes=10), AlertKind.WANDERING)
    assert (intent.action, intent.priority) == (IntentAction.OPEN, Priority.HIGH)
    assert intent.source == ("d-door", event.event_id)
    assert home.at(opened + timedelta(hours=1), AlertKind.DOOR_OPEN) == []  # night: not door_open


def test_door_closed_and_motion_inside_in_time_is_no_wandering() -> None:
    home = Home()
    opened = oslo(2026, 11, 23, 2, 0)
    home.opened(opened)
    home.send("d-door", "door.closed", opened + timedelta(minutes=3))
    home.send("d-motion", "motion", opened + timedelta(minutes=5), room="hall")
    assert home.at(opened + timedelta(hours=1), AlertKind.WANDERING) == []


def test_door_closed_behind_the_resident_without_motion_raises_wandering() -> None:
    home = Home()
    opened = oslo(2026, 11, 23, 2, 0)
    home.opened(opened)
    home.send("d-door", "door.closed", opened + timedelta(minutes=1))
    [intent] = home.at(opened + timedelta(minutes=10), AlertKind.WANDERING)
    # back later: door closed, then motion inside → cancelled
    home.send("d-door", "door.opened", opened + timedelta(minutes=40))
    assert home.send("d-motion", "motion", opened + timedelta(minutes=40, seconds=30)) == []
    home.send("d-door", "door.closed", opened + timedelta(minutes=41))
    [cancel] = home.send("d-motion", "motion", opened + timedelta(minutes=42), room="hall")
    assert (cancel.action, cancel.kind, cancel.source) == (
        IntentAction.CANCEL,
        AlertKind.WANDERING,
        intent.source,
    )


def test_motion_before_the_door_closed_does_not_count() -> None:
    home = Home()
    opened = oslo(2026, 11, 23, 2, 0)
    home.opened(opened)
    home.send("d-motion", "motion", opened + timedelta(minutes=1))
    home.send("d-door", "door.closed", opened + timedelta(minutes=2))
    assert len(home.at(opened + timedelta(minutes=10), AlertKind.WANDERING)) == 1


def test_night_window_across_midnight() -> None:
    home = Home()
    # 22:59 is evening: door_open after 15 min, no wandering
    home.opened(oslo(2026, 11, 22, 22, 44))
    home.send("d-door", "door.closed", oslo(2026, 11, 22, 22, 45))
    home.opened(oslo(2026, 11, 22, 22, 59))
    assert home.at(oslo(2026, 11, 22, 23, 30), AlertKind.WANDERING) == []
    home.send("d-door", "door.closed", oslo(2026, 11, 22, 23, 30))
    # 23:30 and 05:59 are night; 06:00 is morning
    home.opened(oslo(2026, 11, 22, 23, 31))
    assert len(home.at(oslo(2026, 11, 22, 23, 41), AlertKind.WANDERING)) == 1


def test_opening_at_0559_is_night_and_at_0600_is_day() -> None:
    night = Home()
    night.opened(oslo(2026, 11, 23, 5, 59))
    assert len(night.at(oslo(2026, 11, 23, 6, 9), AlertKind.WANDERING)) == 1
    day = Home()
    day.opened(oslo(2026, 11, 23, 6, 0))
    due = day.proc.due(oslo(2026, 11, 23, 6, 15))
    assert [i.kind for i in due] == [AlertKind.DOOR_OPEN]


def test_window_not_across_midnight_from_the_registry() -> None:
    home = Home(night={"start": "01:00", "end": "05:00"})
    home.opened(oslo(2026, 11, 23, 0, 30))
    due = home.proc.due(oslo(2026, 11, 23, 0, 45))
    assert [i.kind for i in due] == [AlertKind.DOOR_OPEN]


def test_dst_spring_forward_night_ends_at_0600_local() -> None:
    # Sunday 2026-03-29: 05:30 CEST is 03:30 UTC (night), 06:00 CEST is 04:00 UTC (day)
    night = Home()
    night.opened(datetime(2026, 3, 29, 3, 30, tzinfo=UTC))
    assert len(night.at(datetime(2026, 3, 29, 3, 40, tzinfo=UTC), AlertKind.WANDERING)) == 1
    day = Home()
    day.opened(datetime(2026, 3, 29, 4, 0, tzinfo=UTC))
    assert day.at(datetime(2026, 3, 29, 4, 10, tzinfo=UTC), AlertKind.WANDERING) == []
    assert len(day.at(datetime(2026, 3, 29, 4, 15, tzinfo=UTC), AlertKind.DOOR_OPEN)) == 1


def test_dst_fall_back_night_ends_at_0600_local() -> None:
    # Sunday 2026-10-25: 05:30 CET is 04:30 UTC (night); 06:00 CET is 05:00 UTC (day).
    # The same 04:30 UTC was 06:30 CEST a day earlier (day).
    night = Home()
    night.opened(datetime(2026, 10, 25, 4, 30, tzinfo=UTC))
    assert len(night.at(datetime(2026, 10, 25, 4, 40, tzinfo=UTC), AlertKind.WANDERING)) == 1
    day_before = Home()
    day_before.opened(datetime(2026, 10, 24, 4, 30, tzinfo=UTC))
    assert day_before.at(datetime(2026, 10, 24, 4, 40, tzinfo=UTC), AlertKind.WANDERING) == []
    # the repeated hour 02:00–03:00 is night both times
    repeated = Home()
    repeated.opened(datetime(2026, 10, 25, 1, 30, tzinfo=UTC))  # 02:30 CET, second time
    assert len(repeated.at(datetime(2026, 10, 25, 1, 40, tzinfo=UTC), AlertKind.WANDERING)) == 1


def test_resolved_wandering_ends_the_watch() -> None:
    home = Home()
    opened = oslo(2026, 11, 23, 2, 0)
    home.opened(opened)
    assert len(home.at(opened + timedelta(minutes=10), AlertKind.WANDERING)) == 1
    home.proc.alert_closed("r-17", AlertKind.WANDERING)
    home.send("d-door", "door.closed", opened + timedelta(minutes=20))
    assert home.send("d-motion", "motion", opened + timedelta(minutes=21)) == []  # no cancel
    again = opened + timedelta(minutes=30)
    home.opened(again)
    assert len(home.at(again + timedelta(minutes=10), AlertKind.WANDERING)) == 1


def test_wander_minutes_come_from_the_registry() -> None:
    home = Home(settings={"wander_minutes": 3})
    opened = oslo(2026, 11, 23, 2, 0)
    home.opened(opened)
    assert len(home.at(opened + timedelta(minutes=3), AlertKind.WANDERING)) == 1


def test_resident_time_zone_is_used() -> None:
    # 14:30 UTC is 23:30 in Tokyo: night there
    home = Home(timezone="Asia/Tokyo")
    opened = datetime(2026, 11, 22, 14, 30, tzinfo=UTC)
    home.opened(opened)
    assert len(home.at(opened + timedelta(minutes=10), AlertKind.WANDERING)) == 1
