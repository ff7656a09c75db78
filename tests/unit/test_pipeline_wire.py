"""Intents survive the trip between `trygg processors` and `trygg alerts` unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from trygg.contract import AlertKind, Event, EventType, Priority
from trygg.pipeline import AlertIntent, IntentAction, intent_from_wire, intent_to_wire


def test_an_intent_with_its_event_round_trips_through_json() -> None:
    at = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
    ev = Event("d-1", "e-1", EventType.LOCATION, at, at, {"lat": 59.9, "lon": 10.7, "accuracy_m": 8}, "r-1")
    intent = AlertIntent(IntentAction.OPEN, "r-1", AlertKind.GEOFENCE_EXIT, Priority.HIGH, at, ("d-1", "e-1"),
                         ev, "d-1", {"lat": 59.9, "lon": 10.7}, {"zone": "home"}, False)
    assert intent_from_wire(json.loads(json.dumps(intent_to_wire(intent)))) == intent


def test_a_timer_intent_without_event_round_trips() -> None:
    at = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
    intent = AlertIntent(IntentAction.CANCEL, "r-2", AlertKind.DEVICE_OFFLINE, Priority.MEDIUM, at,
                         ("d-9", "offline@2026-11-22T12:00:00+00:00"), device_id="d-9", only_if_open=True)
    assert intent_from_wire(json.loads(json.dumps(intent_to_wire(intent)))) == intent
