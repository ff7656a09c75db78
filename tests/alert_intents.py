"""Alert intents as the processors hand them to the AlertService, at injected times, and
the small registry the service's unit tests run on (r-1 and r-2 of team east, which
escalates to alarm-centre)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from trygg.contract import AlertKind, Event, EventType, Priority
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import Registry, validate_registry

T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
_ids = itertools.count(1)

PRIORITY = {AlertKind.SMOKE: Priority.CRITICAL, AlertKind.ALARM: Priority.HIGH, AlertKind.FALL: Priority.HIGH,
            AlertKind.DOOR_OPEN: Priority.MEDIUM, AlertKind.DEVICE_OFFLINE: Priority.HIGH,
            AlertKind.BATTERY_LOW: Priority.LOW, AlertKind.GEOFENCE_EXIT: Priority.HIGH}
EVENT_TYPE = {AlertKind.SMOKE: "smoke.detected", AlertKind.ALARM: "alarm.button",
              AlertKind.FALL: "fall.detected", AlertKind.BATTERY_LOW: "battery.low"}


def registry() -> Registry:
    return validate_registry({
        "teams": [{"id": "east", "name": "Øst", "escalate_to": "alarm-centre"},
                  {"id": "alarm-centre", "name": "Alarmsentralen"}],
        "residents": [{"id": "r-1", "name": "Kari", "team": "east"},
                      {"id": "r-2", "name": "Ola", "team": "east"}],
    })


def event(device: str, kind: str, at: datetime, event_id: str | None = None, **data: Any) -> Event:
    return Event(device, event_id or f"e-{next(_ids)}", EventType(kind), at, at, data, resident_id="r-1")


def open_intent(kind: AlertKind = AlertKind.ALARM, at: datetime = T0, *, resident: str = "r-1",
                device: str = "d-1-alarm", event_id: str | None = None, device_id: str | None = None,
                with_event: bool = True, location: dict[str, Any] | None = None) -> AlertIntent:
    ev = event(device, EVENT_TYPE.get(kind, "alarm.button"), at, event_id) if with_event else None
    source = (device, ev.event_id if ev else event_id or f"timer-{next(_ids)}")
    return AlertIntent(IntentAction.OPEN, resident, kind, PRIORITY[kind], at, source, ev,
                       device_id=device_id, location=location)


def cancel_intent(kind: AlertKind, at: datetime, source: tuple[str, str], *, resident: str = "r-1",
                  device_id: str | None = None, only_if_open: bool = False,
                  ev: Event | None = None) -> AlertIntent:
    return AlertIntent(IntentAction.CANCEL, resident, kind, PRIORITY[kind], at, source, ev,
                       device_id=device_id, only_if_open=only_if_open)
