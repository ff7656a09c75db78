"""An event or a device status survives the way between two instances (trygg/pipeline.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from trygg.contract import Event, EventType
from trygg.pipeline import DeviceStatus, item_from_wire, item_to_wire


def test_an_event_and_a_status_come_back_as_they_went() -> None:
    at = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    event = Event("d.7", "e-1", EventType.ALARM_BUTTON, at, at, {"battery": 80}, "r-1", '{"x": "ø"}')
    back = item_from_wire(item_to_wire(event))
    assert back == event and isinstance(back, Event) and back.text == event.text
    status = DeviceStatus("d.7", "r-1", False, at)
    assert item_from_wire(item_to_wire(status)) == status
