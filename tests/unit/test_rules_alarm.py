"""smoke, alarm and fall: what staff see for single-event alarms."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from processors import Processor
from tests.helpers import one_resident
from trygg.contract import AlertKind, Event, EventType, Priority
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import Registry

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
_ids = itertools.count(1)


def registry() -> Registry:
    return one_resident({"id": "d-alarm", "kind": "alarm_unit"}, {"id": "d-auto", "kind": "auto_alarm"},
                        {"id": "d-fall", "kind": "fall_sensor"}, {"id": "d-smoke", "kind": "smoke_detector"})


def ev(device: str, kind: str, at: datetime, event_id: str | None = None, **data: Any) -> Event:
    event_id = event_id or f"e-{next(_ids)}"
    return Event(device, event_id, EventType(kind), at, at, data, resident_id="r-17")


def only(intents: list[AlertIntent]) -> AlertIntent:
    assert len(intents) == 1, intents
    return intents[0]


def test_smoke_opens_a_critical_alert_that_cleared_does_not_end() -> None:
    proc = Processor(registry())
    detected = ev("d-smoke", "smoke.detected", T0)
    intent = only(proc.handle(detected, T0))
    assert (intent.action, intent.kind, intent.priority) == (
        IntentAction.OPEN,
        AlertKind.SMOKE,
        Priority.CRITICAL,
    )
    assert intent.resident_id == "r-17"
    assert intent.source == ("d-smoke", detected.event_id)
    assert intent.event is detected
    assert proc.handle(ev("d-smoke", "smoke.cleared", T0 + timedelta(minutes=1)), T0) == []


def test_every_button_press_opens_again() -> None:
    proc = Processor(registry())
    first = only(proc.handle(ev("d-alarm", "alarm.button", T0), T0))
    second = only(proc.handle(ev("d-alarm", "alarm.button", T0 + timedelta(seconds=5)), T0))
    third = only(proc.handle(ev("d-alarm", "alarm.button", T0 + timedelta(seconds=9)), T0))
    for intent in (first, second, third):
        assert (intent.action, intent.kind, intent.priority) == (
            IntentAction.OPEN,
            AlertKind.ALARM,
            Priority.HIGH,
        )
    assert len({first.source, second.source, third.source}) == 3


def test_auto_alarm_opens_an_alarm_with_its_source() -> None:
    proc = Processor(registry())
    intent = only(proc.handle(ev("d-auto", "alarm.auto", T0, source="epilepsy"), T0))
    assert (intent.kind, intent.priority) == (AlertKind.ALARM, Priority.HIGH)
    assert intent.detail == {"auto_source": "epilepsy"}


def test_fall_opens_a_high_alert() -> None:
    proc = Processor(registry())
    intent = only(proc.handle(ev("d-fall", "fall.detected", T0, confidence=0.93), T0))
    assert (intent.action, intent.kind, intent.priority) == (
        IntentAction.OPEN,
        AlertKind.FALL,
        Priority.HIGH,
    )
    assert intent.detail == {"confidence": 0.93}


def test_cancel_button_cancels_alarm_and_fall_only_if_not_acknowledged() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-fall", "fall.detected", T0), T0)
    cancel = ev("d-alarm", "alarm.cancel", T0 + timedelta(seconds=20))
    intents = proc.handle(cancel, T0 + timedelta(seconds=20))
    assert {(i.action, i.kind) for i in intents} == {
        (IntentAction.CANCEL, AlertKind.ALARM),
        (IntentAction.CANCEL, AlertKind.FALL),
    }
    assert all(i.only_if_open and i.event is cancel for i in intents)
    assert all(i.source == ("d-alarm", cancel.event_id) for i in intents)


def test_reprocessed_event_maps_to_the_same_source() -> None:
    press = ev("d-alarm", "alarm.button", T0, event_id="e-000123")
    before_restart = only(Processor(registry()).handle(press, T0))
    after_restart = only(Processor(registry()).handle(press, T0 + timedelta(minutes=3)))
    assert before_restart.source == after_restart.source == ("d-alarm", "e-000123")


def test_press_after_resolved_alarm_opens_again() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-alarm", "alarm.button", T0), T0)
    proc.alert_closed("r-17", AlertKind.ALARM)
    intent = only(proc.handle(ev("d-alarm", "alarm.button", T0 + timedelta(hours=1)), T0))
    assert intent.action is IntentAction.OPEN


def test_heartbeat_raises_nothing() -> None:
    proc = Processor(registry())
    assert proc.handle(ev("d-alarm", "heartbeat", T0, battery_pct=80), T0) == []


def test_device_not_in_registry_is_ignored() -> None:
    proc = Processor(registry())
    assert proc.handle(ev("d-unknown", "alarm.button", T0), T0) == []
