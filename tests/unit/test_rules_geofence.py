"""geofence_exit: confirmed exits and returns, no flapping on GPS jitter."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from processors import Processor
from processors.geofence import EARTH_RADIUS_M
from trygg.contract import AlertKind, Event, EventType, Priority
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import validate_registry

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
HOME = (59.9139, 10.7522)  # radius 300 m
_ids = itertools.count(1)


def processor(**resident: Any) -> Processor:
    doc: dict[str, Any] = {
        "id": "r-17",
        "name": "Kari",
        "team": "east",
        "safe_zones": [{"name": "home", "lat": HOME[0], "lon": HOME[1], "radius_m": 300}],
        "location_basis": {"kind": "vedtak", "valid_until": "2027-06-30"},
        "devices": [{"id": "d-gps", "kind": "gps_tracker", "heartbeat_s": 86400}],
    }
    doc.update(resident)
    return Processor(validate_registry({"teams": [{"id": "east", "name": "Øst"}], "residents": [doc]}))


class Walk:
    """Sends one fix a minute, `metres` north of the home centre."""

    def __init__(self, proc: Processor) -> None:
        self.proc = proc
        self.minute = 0
        self.events: list[Event] = []

    def fix(self, metres: float, accuracy: float = 10) -> list[AlertIntent]:
        self.minute += 1
        at = T0 + timedelta(minutes=self.minute)
        lat = HOME[0] + math.degrees(metres / EARTH_RADIUS_M)
        data = {"lat": lat, "lon": HOME[1], "accuracy_m": accuracy}
        event = Event("d-gps", f"e-{next(_ids)}", EventType.LOCATION, at, at, data, "r-17")
        self.events.append(event)
        return [i for i in self.proc.handle(event, at) if i.kind is AlertKind.GEOFENCE_EXIT]


def test_exit_is_confirmed_by_two_fixes_wholly_outside() -> None:
    walk = Walk(processor())
    assert walk.fix(0) == []
    assert walk.fix(400) == []  # one fix outside: not yet
    [intent] = walk.fix(450)
    assert (intent.action, intent.priority) == (IntentAction.OPEN, Priority.HIGH)
    assert intent.source == ("d-gps", walk.events[1].event_id)  # the first outside fix
    assert intent.event is walk.events[2]
    assert intent.location is not None
    assert intent.location["lat"] == walk.events[2].data["lat"]
    assert intent.detail["nearest_zone"] == "home"
    assert intent.detail["distance_m"] == 150


def test_one_fix_outside_then_inside_is_nothing() -> None:
    walk = Walk(processor())
    assert walk.fix(400) == []
    assert walk.fix(100) == []
    assert walk.fix(400) == []
    assert walk.fix(100) == []


def test_jitter_at_the_border_never_flaps() -> None:
    walk = Walk(processor())
    # the resident stands near the border; bad fixes scatter across it
    for metres, accuracy in [(290, 30), (310, 30), (320, 15), (280, 15), (330, 40), (270, 20)] * 5:
        assert walk.fix(metres, accuracy) == []


def test_ambiguous_fixes_neither_confirm_nor_break_a_run() -> None:
    walk = Walk(processor())
    assert walk.fix(400) == []
    assert walk.fix(300, 50) == []  # overlaps the border: neutral
    [intent] = walk.fix(400)
    assert intent.action is IntentAction.OPEN


def test_back_inside_for_two_fixes_cancels() -> None:
    walk = Walk(processor())
    walk.fix(500)
    [opened] = walk.fix(500)
    assert walk.fix(100) == []  # one fix inside: not yet
    assert walk.fix(300, 50) == []  # ambiguous
    [cancel] = walk.fix(50)
    assert (cancel.action, cancel.source) == (IntentAction.CANCEL, opened.source)
    assert cancel.location is not None


def test_jitter_while_outside_does_not_cancel() -> None:
    walk = Walk(processor())
    walk.fix(500)
    walk.fix(500)
    for metres, accuracy in [(100, 10), (500, 10), (100, 10), (290, 30)]:
        intents = walk.fix(metres, accuracy)
        assert all(i.action is IntentAction.OPEN for i in intents)


def test_positions_update_the_open_alert() -> None:
    walk = Walk(processor())
    walk.fix(500)
    [opened] = walk.fix(600)
    [update] = walk.fix(900)
    assert (update.action, update.source) == (IntentAction.OPEN, opened.source)
    assert update.location is not None and opened.location is not None
    assert update.location["lat"] > opened.location["lat"]


def test_resolved_while_outside_stays_quiet_until_back() -> None:
    proc = processor()
    walk = Walk(proc)
    walk.fix(500)
    [first] = walk.fix(500)
    proc.alert_closed("r-17", AlertKind.GEOFENCE_EXIT)
    assert walk.fix(700) == []
    assert walk.fix(800) == []
    walk.fix(0)
    assert walk.fix(0) == []  # back: nothing to cancel
    walk.fix(500)
    [second] = walk.fix(500)
    assert second.action is IntentAction.OPEN and second.source != first.source


def test_residents_without_safe_zones_never_get_the_alert() -> None:
    walk = Walk(processor(safe_zones=[]))
    for metres in [0, 5000, 6000, 7000]:
        assert walk.fix(metres) == []


def test_positions_without_a_valid_location_basis_are_not_used() -> None:
    for basis in [None, {"kind": "consent", "valid_until": "2026-01-01"}]:
        walk = Walk(processor(location_basis=basis))
        for metres in [5000, 6000, 7000]:
            assert walk.fix(metres) == []


def test_old_fixes_delivered_late_are_ignored() -> None:
    proc = processor()
    walk = Walk(proc)
    walk.fix(500)
    at = T0 + timedelta(minutes=5)
    late = Event("d-gps", "e-late", EventType.LOCATION, T0, at, {"lat": 59.95, "lon": 10.75, "accuracy_m": 5})
    assert proc.handle(late, at) == []


def test_polygon_zone() -> None:
    park = [[10.75, 59.91], [10.76, 59.91], [10.76, 59.92], [10.75, 59.92]]
    proc = processor(safe_zones=[{"name": "park", "polygon": park}])
    at = T0
    intents: list[AlertIntent] = []
    for lat in [59.915, 59.93, 59.931]:
        at += timedelta(minutes=1)
        data = {"lat": lat, "lon": 10.755, "accuracy_m": 20}
        event = Event("d-gps", f"e-{next(_ids)}", EventType.LOCATION, at, at, data)
        intents = proc.handle(event, at)
    [intent] = [i for i in intents if i.kind is AlertKind.GEOFENCE_EXIT]
    assert intent.detail["nearest_zone"] == "park"
