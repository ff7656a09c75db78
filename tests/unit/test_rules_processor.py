"""The Processor facade: restarts (export/restore, start_supervision), registry reloads."""

from __future__ import annotations

import copy
import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from processors import RESTART_GRACE, Processor, StateError
from processors.geofence import EARTH_RADIUS_M
from trygg.contract import AlertKind, Event, EventType
from trygg.pipeline import AlertIntent, DeviceStatus, IntentAction
from trygg.registry import Registry, validate_registry

T0 = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)  # 14:00 in Oslo
HOME = (59.9139, 10.7522)
_ids = itertools.count(1)


def doc() -> dict[str, Any]:
    return {
        "teams": [{"id": "east", "name": "Øst"}],
        "residents": [
            {
                "id": "r-17",
                "name": "Kari",
                "team": "east",
                "safe_zones": [{"name": "home", "lat": HOME[0], "lon": HOME[1], "radius_m": 300}],
                "location_basis": {"kind": "consent"},
                "devices": [
                    {"id": "d-17-alarm", "kind": "alarm_unit"},
                    {"id": "d-17-door", "kind": "door_sensor", "heartbeat_s": 600},
                    {"id": "d-17-motion", "kind": "motion_sensor", "heartbeat_s": 600},
                    {"id": "d-17-gps", "kind": "gps_tracker"},
                    {"id": "d-17-smoke", "kind": "smoke_detector", "heartbeat_s": 3600},
                ],
            },
            {
                "id": "r-18",
                "name": "Ola",
                "team": "east",
                "devices": [{"id": "d-18-alarm", "kind": "alarm_unit"}],
            },
        ],
    }


def registry(document: dict[str, Any] | None = None) -> Registry:
    return validate_registry(document or doc())


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def ev(device: str, kind: str, at: datetime, **data: Any) -> Event:
    return Event(device, f"e-{next(_ids)}", EventType(kind), at, at, data)


def north(metres: float) -> dict[str, float]:
    return {"lat": HOME[0] + math.degrees(metres / EARTH_RADIUS_M), "lon": HOME[1], "accuracy_m": 10}


def of(intents: list[AlertIntent], kind: AlertKind) -> list[AlertIntent]:
    return [i for i in intents if i.kind is kind]


def busy_morning(proc: Processor) -> dict[str, AlertIntent]:
    """Door left open, a walk outside, a low smoke-detector battery, r-18 silent."""
    proc.start_supervision(T0, {})
    raised: dict[str, AlertIntent] = {}
    for device in ("d-17-alarm", "d-18-alarm"):
        proc.handle(ev(device, "heartbeat", T0), T0)
    proc.handle(ev("d-17-door", "door.opened", sec(10), door="front"), sec(10))
    proc.handle(ev("d-17-gps", "location", sec(20), **north(500)), sec(20))
    [raised["geofence"]] = proc.handle(ev("d-17-gps", "location", sec(50), **north(600)), sec(50))
    [raised["battery"]] = proc.handle(ev("d-17-smoke", "heartbeat", sec(60), battery_pct=9), sec(60))
    for n in range(60, 241, 60):
        proc.handle(ev("d-17-alarm", "heartbeat", sec(n)), sec(n))
        proc.handle(ev("d-17-gps", "heartbeat", sec(n)), sec(n))
    [raised["offline"]] = of(proc.due(sec(240)), AlertKind.DEVICE_OFFLINE)
    assert raised["offline"].device_id == "d-18-alarm"
    return raised


def test_restart_rebuilds_state_without_spurious_or_duplicate_intents() -> None:
    before = Processor(registry())
    raised = busy_morning(before)
    snapshot = json.loads(json.dumps(before.export_state()))

    # the process restarts 30 s later
    restart = sec(270)
    after = Processor(registry())
    after.restore_state(snapshot)
    assert after.export_state() == snapshot
    last_seen = {"d-17-alarm": sec(240), "d-17-gps": sec(240), "d-17-smoke": sec(60)}
    after.start_supervision(restart, last_seen)
    assert after.due(restart + RESTART_GRACE) == []  # nothing heard recently is offline

    # the same conditions continue: no second alert, and they end with the same sources
    [back] = after.handle(DeviceStatus("d-18-alarm", "r-18", True, sec(280)), sec(280))
    assert (back.action, back.source) == (IntentAction.CANCEL, raised["offline"].source)
    assert after.handle(ev("d-17-smoke", "heartbeat", sec(290), battery_pct=8), sec(290)) == []
    [charged] = after.handle(ev("d-17-smoke", "heartbeat", sec(300), battery_pct=90), sec(300))
    assert (charged.action, charged.source) == (IntentAction.CANCEL, raised["battery"].source)
    [update] = after.handle(ev("d-17-gps", "location", sec(310), **north(700)), sec(310))
    assert (update.action, update.source) == (IntentAction.OPEN, raised["geofence"].source)

    # the front door opened before the restart is still alerted at 14:15
    door = of(after.due(sec(10 + 15 * 60)), AlertKind.DOOR_OPEN)
    assert len(door) == 1 and door[0].action is IntentAction.OPEN


def test_restart_after_a_long_downtime_waits_for_the_broker_backlog() -> None:
    proc = Processor(registry())
    restart = sec(3600)  # down for an hour
    proc.start_supervision(restart, {"d-17-alarm": T0, "d-18-alarm": T0})
    assert of(proc.due(restart + RESTART_GRACE - timedelta(seconds=1)), AlertKind.DEVICE_OFFLINE) == []
    # the queued heartbeats of d-17-alarm arrive; d-18-alarm stays silent
    proc.handle(ev("d-17-alarm", "heartbeat", sec(3630)), sec(3630))
    [offline] = of(proc.due(restart + RESTART_GRACE), AlertKind.DEVICE_OFFLINE)
    assert offline.source == ("d-18-alarm", "offline@2026-11-22T13:00:00.000Z")


def test_devices_never_seen_start_counting_at_start_up() -> None:
    proc = Processor(registry())
    proc.start_supervision(T0, {})
    assert of(proc.due(sec(179)), AlertKind.DEVICE_OFFLINE) == []
    offline = of(proc.due(sec(180)), AlertKind.DEVICE_OFFLINE)
    assert {i.device_id for i in offline} == {"d-17-alarm", "d-17-gps", "d-18-alarm"}
    assert all(i.source[1] == "offline@never" for i in offline)


def test_restore_skips_residents_and_devices_no_longer_registered() -> None:
    before = Processor(registry())
    busy_morning(before)
    snapshot = before.export_state()
    smaller = doc()
    smaller["residents"] = smaller["residents"][:1]
    smaller["residents"][0]["devices"] = [d for d in smaller["residents"][0]["devices"] if d["id"] != "d-17-smoke"]
    after = Processor(registry(smaller))
    after.restore_state(snapshot)
    state = after.export_state()
    assert list(state["residents"]) == ["r-17"]
    assert "d-17-smoke" not in state["residents"]["r-17"]["devices"]["devices"]
    assert state["residents"]["r-17"]["devices"]["battery"]["alerted"] == {}


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda s: s.update(version=99), "version"),
        (
            lambda s: s["residents"]["r-17"]["doors"]["doors"]["front"].update(changed_at="soon"),
            "residents.r-17.doors.doors.front.changed_at",
        ),
        (
            lambda s: s["residents"]["r-17"]["geo"].update(where="nearby"),
            "residents.r-17.geo.where",
        ),
    ],
)
def test_unreadable_snapshot_is_refused_with_its_path(mutate: Any, path: str) -> None:
    before = Processor(registry())
    busy_morning(before)
    snapshot = copy.deepcopy(before.export_state())
    mutate(snapshot)
    after = Processor(registry())
    with pytest.raises(StateError) as caught:
        after.restore_state(snapshot)
    assert caught.value.path == path
    assert after.export_state()["residents"] == {}


def test_reload_keeps_state_of_what_still_exists() -> None:
    proc = Processor(registry())
    proc.start_supervision(T0, {})
    proc.handle(ev("d-17-door", "door.opened", sec(0)), sec(0))
    changed = doc()
    changed["residents"][0]["name"] = "Kari N."
    assert proc.set_registry(registry(changed), sec(60)) == []
    assert len(of(proc.due(sec(15 * 60)), AlertKind.DOOR_OPEN)) == 1


def test_reload_with_a_removed_device_cancels_its_alert() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-17-smoke", "heartbeat", sec(0), battery_pct=5), sec(0))
    changed = doc()
    changed["residents"][0]["devices"] = changed["residents"][0]["devices"][:4]
    [cancel] = proc.set_registry(registry(changed), sec(60))
    assert (cancel.action, cancel.kind, cancel.device_id) == (
        IntentAction.CANCEL,
        AlertKind.BATTERY_LOW,
        "d-17-smoke",
    )
    assert of(proc.due(sec(7 * 3600)), AlertKind.DEVICE_OFFLINE) == []


def test_reload_rearms_changed_heartbeats_and_new_devices() -> None:
    proc = Processor(registry())
    proc.handle(ev("d-18-alarm", "heartbeat", sec(0)), sec(0))
    changed = doc()
    changed["residents"][1]["devices"] = [
        {"id": "d-18-alarm", "kind": "alarm_unit", "heartbeat_s": 300},
        {"id": "d-18-fall", "kind": "fall_sensor", "heartbeat_s": 60},
    ]
    proc.set_registry(registry(changed), sec(100))
    # the new fall sensor counts from the reload, the alarm unit from its last heartbeat
    assert proc.due(sec(279)) == []
    assert [i.device_id for i in proc.due(sec(280))] == ["d-18-fall"]
    assert proc.due(sec(899)) == []
    assert [i.device_id for i in proc.due(sec(900))] == ["d-18-alarm"]


def test_reload_without_a_resident_forgets_it_and_its_timers() -> None:
    proc = Processor(registry())
    proc.start_supervision(T0, {})
    proc.handle(ev("d-18-alarm", "heartbeat", sec(0)), sec(0))
    smaller = doc()
    smaller["residents"] = smaller["residents"][:1]
    proc.set_registry(registry(smaller), sec(10))
    due = proc.due(sec(24 * 3600))
    assert due and all(i.resident_id == "r-17" for i in due)
    assert "r-18" not in proc.export_state()["residents"]


def test_next_deadline_follows_the_timers() -> None:
    proc = Processor(registry())
    assert proc.next_deadline() is None
    proc.handle(ev("d-17-door", "door.opened", sec(0)), sec(0))
    assert proc.next_deadline() == sec(15 * 60)  # door sensor heartbeat: 30 min
    proc.handle(ev("d-17-door", "door.closed", sec(60)), sec(60))
    assert proc.next_deadline() == sec(60 + 1800)


def test_device_clock_ahead_does_not_postpone_an_alert() -> None:
    proc = Processor(registry())
    future = ev("d-17-door", "door.opened", sec(3 * 3600))  # device clock 3 h ahead
    proc.handle(future, sec(0))
    assert len(of(proc.due(sec(15 * 60)), AlertKind.DOOR_OPEN)) == 1
