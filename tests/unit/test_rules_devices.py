"""device_offline (heartbeat supervision, Last Will) and battery_low (hysteresis)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from processors import Processor
from tests.helpers import one_resident
from trygg.contract import AlertKind, Event, EventType, Priority
from trygg.pipeline import AlertIntent, DeviceStatus, IntentAction
from trygg.registry import Registry

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


def registry() -> Registry:
    return one_resident({"id": "d-alarm", "kind": "alarm_unit", "heartbeat_s": 60},
                        {"id": "d-smoke", "kind": "smoke_detector", "heartbeat_s": 600})


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def ev(device: str, kind: str, at: datetime, **data: Any) -> Event:
    return Event(device, f"e-{next(_ids)}", EventType(kind), at, at, data, resident_id="r-17")


def beat(proc: Processor, device: str, at: datetime, **data: Any) -> list[AlertIntent]:
    return proc.handle(ev(device, "heartbeat", at, **data), at)


def of(intents: list[AlertIntent], kind: AlertKind) -> list[AlertIntent]:
    return [i for i in intents if i.kind is kind]


# ---------------------------------------------------------------- device_offline


def test_heartbeat_late_by_one_second_raises_nothing() -> None:
    proc = Processor(registry())
    beat(proc, "d-alarm", sec(0))
    assert beat(proc, "d-alarm", sec(61)) == []  # one second late
    assert proc.due(sec(180)) == []
    assert proc.next_deadline() == sec(241)


def test_missing_heartbeats_raise_offline_after_three_periods() -> None:
    proc = Processor(registry())
    beat(proc, "d-alarm", sec(0))
    assert proc.due(sec(179.999)) == []
    [intent] = proc.due(sec(180))
    assert (intent.action, intent.kind, intent.priority) == (
        IntentAction.OPEN,
        AlertKind.DEVICE_OFFLINE,
        Priority.HIGH,  # an alarm unit
    )
    assert intent.device_id == "d-alarm"
    assert intent.source == ("d-alarm", "offline@2026-11-22T12:00:00.000Z")
    assert intent.event is None
    assert proc.due(sec(3600)) == []  # raised once


def test_other_device_kinds_are_medium_with_their_own_heartbeat() -> None:
    proc = Processor(registry())
    beat(proc, "d-smoke", sec(0))
    assert proc.due(sec(1799)) == []
    [intent] = proc.due(sec(1800))
    assert (intent.priority, intent.device_id) == (Priority.MEDIUM, "d-smoke")


def test_hearing_the_device_again_cancels() -> None:
    proc = Processor(registry())
    beat(proc, "d-alarm", sec(0))
    [opened] = proc.due(sec(180))
    event = ev("d-alarm", "heartbeat", sec(300))
    [cancel] = proc.handle(event, sec(300))
    assert (cancel.action, cancel.kind, cancel.source, cancel.device_id, cancel.event) == (
        IntentAction.CANCEL,
        AlertKind.DEVICE_OFFLINE,
        opened.source,
        "d-alarm",
        event,
    )
    assert proc.next_deadline() == sec(480)


def test_any_event_counts_as_hearing_the_device() -> None:
    proc = Processor(registry())
    beat(proc, "d-alarm", sec(0))
    proc.handle(ev("d-alarm", "alarm.button", sec(100)), sec(100))
    assert of(proc.due(sec(279)), AlertKind.DEVICE_OFFLINE) == []
    assert len(of(proc.due(sec(280)), AlertKind.DEVICE_OFFLINE)) == 1


def test_last_will_offline_raises_after_the_debounce_and_online_cancels() -> None:
    proc = Processor(registry())
    beat(proc, "d-alarm", sec(0))
    assert proc.handle(DeviceStatus("d-alarm", "r-17", False, sec(10)), sec(10)) == []
    assert proc.due(sec(69.999)) == []  # still within the 60 s debounce
    [opened] = proc.due(sec(70))
    assert (opened.action, opened.kind, opened.priority) == (
        IntentAction.OPEN,
        AlertKind.DEVICE_OFFLINE,
        Priority.HIGH,
    )
    assert opened.detail["reason"] == "status offline"
    assert proc.due(sec(600)) == []  # the silence adds no second alert
    [cancel] = proc.handle(DeviceStatus("d-alarm", "r-17", True, sec(700)), sec(700))
    assert (cancel.action, cancel.source) == (IntentAction.CANCEL, opened.source)
    assert proc.next_deadline() == sec(880)


def test_two_silent_devices_are_two_alerts_each_ended_by_its_own_device() -> None:
    proc = Processor(registry())
    beat(proc, "d-alarm", sec(0))
    beat(proc, "d-smoke", sec(0))
    assert proc.handle(DeviceStatus("d-smoke", "r-17", False, sec(5)), sec(5)) == []
    [smoke] = proc.due(sec(65))  # its Last Will, after the debounce
    [alarm_unit] = proc.due(sec(180))
    assert smoke.source != alarm_unit.source
    [smoke_back] = beat(proc, "d-smoke", sec(200))  # the alarm unit is still silent
    assert smoke_back.action is IntentAction.CANCEL and smoke_back.source == smoke.source
    [alarm_back] = beat(proc, "d-alarm", sec(210))
    assert alarm_back.action is IntentAction.CANCEL
    assert alarm_back.source == alarm_unit.source == ("d-alarm", "offline@2026-11-22T12:00:00.000Z")


def test_resolving_one_devices_offline_alert_leaves_the_other_device_supervised() -> None:
    proc = Processor(registry())
    beat(proc, "d-alarm", sec(0))
    beat(proc, "d-smoke", sec(0))
    proc.handle(DeviceStatus("d-smoke", "r-17", False, sec(5)), sec(5))
    [_smoke] = proc.due(sec(65))
    [_offline] = proc.due(sec(180))
    proc.alert_closed("r-17", AlertKind.DEVICE_OFFLINE, "d-alarm")
    assert beat(proc, "d-alarm", sec(200)) == []  # quiet: its alert was resolved
    [smoke_back] = beat(proc, "d-smoke", sec(210))  # still its own open alert
    assert smoke_back.action is IntentAction.CANCEL and smoke_back.device_id == "d-smoke"


def test_resolved_offline_stays_quiet_until_heard_again() -> None:
    proc = Processor(registry())
    beat(proc, "d-alarm", sec(0))
    assert len(proc.due(sec(180))) == 1
    proc.alert_closed("r-17", AlertKind.DEVICE_OFFLINE, "d-alarm")
    assert proc.handle(DeviceStatus("d-alarm", "r-17", False, sec(200)), sec(200)) == []
    assert proc.due(sec(3600)) == []
    assert beat(proc, "d-alarm", sec(4000)) == []  # heard: nothing to cancel
    [again] = proc.due(sec(4180))
    assert again.source == ("d-alarm", "offline@2026-11-22T13:06:40.000Z")


def test_same_silence_gives_the_same_source_after_a_restart() -> None:
    sources = []
    for _ in range(2):
        proc = Processor(registry())
        proc.start_supervision(sec(100), {"d-alarm": sec(0)}, grace=timedelta(0))
        sources.append(of(proc.due(sec(180)), AlertKind.DEVICE_OFFLINE)[0].source)
    assert sources[0] == sources[1] == ("d-alarm", "offline@2026-11-22T12:00:00.000Z")


# ---------------------------------------------------------------- battery_low


def test_battery_hysteresis_14_20_31() -> None:
    proc = Processor(registry())
    low = ev("d-smoke", "heartbeat", sec(0), battery_pct=14)
    [opened] = proc.handle(low, sec(0))
    assert (opened.action, opened.kind, opened.priority) == (
        IntentAction.OPEN,
        AlertKind.BATTERY_LOW,
        Priority.LOW,
    )
    assert (opened.source, opened.device_id, opened.event) == (
        ("d-smoke", low.event_id),
        "d-smoke",
        low,
    )
    assert beat(proc, "d-smoke", sec(60), battery_pct=20) == []
    assert beat(proc, "d-smoke", sec(120), battery_pct=14) == []  # still the same episode
    assert beat(proc, "d-smoke", sec(180), battery_pct=29) == []
    [cancel] = beat(proc, "d-smoke", sec(240), battery_pct=31)
    assert (cancel.action, cancel.source) == (IntentAction.CANCEL, opened.source)
    [again] = beat(proc, "d-smoke", sec(300), battery_pct=12)
    assert again.action is IntentAction.OPEN and again.source != opened.source


def test_battery_low_event_opens() -> None:
    proc = Processor(registry())
    [opened] = proc.handle(ev("d-alarm", "battery.low", sec(0), battery_pct=18), sec(0))
    assert (opened.kind, opened.detail) == (AlertKind.BATTERY_LOW, {"battery_pct": 18.0})
    assert beat(proc, "d-alarm", sec(60), battery_pct=25) == []
    assert len(beat(proc, "d-alarm", sec(120), battery_pct=30)) == 1  # ≥ 30 cancels


def test_battery_pct_on_any_event() -> None:
    proc = Processor(registry())
    intents = proc.handle(ev("d-alarm", "alarm.button", sec(0), battery_pct=9), sec(0))
    assert {i.kind for i in intents} == {AlertKind.ALARM, AlertKind.BATTERY_LOW}


def test_resolved_battery_alert_stays_quiet_until_recharged() -> None:
    proc = Processor(registry())
    assert len(beat(proc, "d-smoke", sec(0), battery_pct=10)) == 1
    proc.alert_closed("r-17", AlertKind.BATTERY_LOW, "d-smoke")
    assert beat(proc, "d-smoke", sec(60), battery_pct=9) == []
    assert beat(proc, "d-smoke", sec(120), battery_pct=80) == []  # nothing to cancel
    assert len(beat(proc, "d-smoke", sec(180), battery_pct=10)) == 1
