"""Heartbeat supervision of a whole fleet with the compact timer tables (docs/contract.md#4-rules-and-alerts
device_offline, #9-performance-budgets memory): exact deadlines, reloads and restarts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from processors import Processor
from trygg.contract import AlertKind, Event, EventType
from trygg.pipeline import AlertIntent, IntentAction
from trygg.registry import Registry, validate_registry

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KINDS = ["alarm_unit", "fall_sensor", "smoke_detector", "door_sensor", "motion_sensor"]
RESIDENTS = 200
_ids = itertools.count(1)


def fleet(residents: int = RESIDENTS, *, drop: set[str] | None = None) -> dict[str, Any]:
    drop = drop or set()
    return {
        "teams": [{"id": "east", "name": "Øst"}],
        "residents": [
            {
                "id": f"r-{i}",
                "name": f"Resident {i}",
                "team": "east",
                "devices": [
                    {"id": f"d-{i}-{k}", "kind": kind}
                    for k, kind in enumerate(KINDS)
                    if f"d-{i}-{k}" not in drop
                ],
            }
            for i in range(residents)
        ],
    }


def registry(**kwargs: Any) -> Registry:
    return validate_registry(fleet(**kwargs))


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def beat(proc: Processor, device: str, at: datetime) -> list[AlertIntent]:
    event = Event(device, f"e-{next(_ids)}", EventType.HEARTBEAT, at, at, {})
    return proc.handle(event, at)


def offline(intents: list[AlertIntent]) -> set[str]:
    return {
        str(i.device_id) for i in intents if i.kind is AlertKind.DEVICE_OFFLINE and i.action is IntentAction.OPEN
    }


def all_devices(residents: int = RESIDENTS) -> list[str]:
    return [f"d-{i}-{k}" for i in range(residents) for k in range(len(KINDS))]


def test_heard_one_second_before_the_deadline_is_not_offline_silent_past_it_is() -> None:
    proc = Processor(registry())
    proc.start_supervision(T0, {}, grace=timedelta(0))
    devices = all_devices()
    heard = devices[::2]
    for device in heard:
        assert beat(proc, device, sec(179)) == []  # one second before 3 × 60 s
    assert proc.due(sec(179.999999)) == []
    silent = offline(proc.due(sec(180)))
    assert silent == set(devices[1::2])
    assert proc.due(sec(358.999999)) == []  # the heard ones: 179 + 180
    assert offline(proc.due(sec(359))) == set(heard)
    assert offline(proc.due(sec(24 * 3600))) == set()  # once each


def test_the_deadline_is_exact_to_the_microsecond() -> None:
    proc = Processor(registry(residents=1))
    at = sec(0.123457)
    beat(proc, "d-0-0", at)
    deadline = at + timedelta(seconds=180)
    assert proc.next_deadline() == deadline
    assert proc.due(deadline - timedelta(microseconds=1)) == []
    assert offline(proc.due(deadline)) == {"d-0-0"}


def test_a_device_heard_again_after_going_offline_is_supervised_again() -> None:
    proc = Processor(registry(residents=2))
    proc.start_supervision(T0, {}, grace=timedelta(0))
    assert len(offline(proc.due(sec(180)))) == 10
    [cancel] = beat(proc, "d-1-3", sec(200))
    assert (cancel.action, cancel.device_id) == (IntentAction.CANCEL, "d-1-3")
    assert proc.timer_count == 1 + 2  # its heartbeat, and both residents' inactivity clocks
    assert proc.due(sec(379)) == []
    [again] = proc.due(sec(380))
    assert again.device_id == "d-1-3" and again.source == ("d-1-3", "offline@2026-11-22T12:03:20.000Z")


def test_a_device_removed_by_a_reload_is_no_longer_supervised() -> None:
    proc = Processor(registry())
    proc.start_supervision(T0, {}, grace=timedelta(0))
    armed = proc.timer_count
    removed = {"d-7-0", "d-150-4"}
    assert proc.set_registry(registry(drop=removed), sec(10)) == []
    assert proc.timer_count == armed - len(removed)
    fired = offline(proc.due(sec(24 * 3600)))
    assert fired == set(all_devices()) - removed


def test_a_device_moved_to_another_resident_is_supervised_once_from_the_reload() -> None:
    proc = Processor(registry(residents=2))
    proc.start_supervision(T0, {}, grace=timedelta(0))
    moved = fleet(residents=2)
    device = moved["residents"][0]["devices"].pop(0)
    moved["residents"][1]["devices"].append(device)
    proc.set_registry(validate_registry(moved), sec(100))
    [intent] = [i for i in proc.due(sec(280)) if i.device_id == "d-0-0"]
    assert intent.resident_id == "r-1"
    assert [i for i in proc.due(sec(3600)) if i.device_id == "d-0-0"] == []


def test_restart_arms_from_the_last_seen_times_without_a_flood() -> None:
    restart = sec(3600)
    last_seen = {device: restart - timedelta(seconds=n % 120) for n, device in enumerate(all_devices())}
    proc = Processor(registry())
    proc.start_supervision(restart, last_seen)  # default grace: 2 minutes
    assert proc.due(restart + timedelta(seconds=119)) == []
    # nothing is declared offline before the grace, then each from its own last-seen time
    expected: dict[datetime, set[str]] = {}
    for device, seen in last_seen.items():
        expected.setdefault(max(seen + timedelta(seconds=180), restart + timedelta(minutes=2)), set()).add(device)
    for deadline in sorted(expected):
        assert proc.due(deadline - timedelta(microseconds=1)) == []
        assert offline(proc.due(deadline)) == expected[deadline]
    assert offline(proc.due(sec(24 * 3600))) == set()

