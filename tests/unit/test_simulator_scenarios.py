"""Scripted scenarios: every file loads, its steps are valid events, its expectations make sense."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from simulators import Scenario, ScenarioError, list_scenarios, load_scenario, parse_scenario
from simulators.geo import distance_m, in_polygon
from trygg.contract import SOURCE_KINDS, AlertKind, AlertState, EventType, parse_event
from trygg.registry import Resident

REQUIRED = {"night_wandering", "fall_then_cancel", "smoke_at_night",
            "tracker_leaves_zone_at_dusk", "button_repeated"}
DAY = date(2026, 11, 20)


def test_the_required_scenarios_exist() -> None:
    assert set(list_scenarios()) >= REQUIRED


@pytest.mark.parametrize("name", list_scenarios())
def test_a_scenario_loads_and_expects_valid_alerts(name: str) -> None:
    sc = load_scenario(name)
    assert sc.name == name and sc.description
    assert sc.expect, "a scenario says which alerts staff should see"
    for e in sc.expect:
        assert e.kind in set(AlertKind) and e.state in set(AlertState)
    assert sc.registry.residents and sc.steps
    assert all(0 <= s.at <= sc.duration_s for s in sc.steps)
    assert [s.at for s in sc.steps] == sorted(s.at for s in sc.steps)


@pytest.mark.parametrize("name", list_scenarios())
def test_every_step_is_an_event_the_gateway_accepts(name: str) -> None:
    sc = load_scenario(name)
    index = sc.registry.device_index()
    t0 = sc.start_on(DAY)
    seen: set[tuple[str, str]] = set()
    for msg in sc.messages(t0):
        event = parse_event(msg.device_id, msg.payload, msg.at())
        assert index[msg.device_id][1].device_kind in SOURCE_KINDS[event.type]
        key = (msg.device_id, event.event_id)
        assert (key in seen) == msg.duplicate  # ids unique per device, except re-sends
        seen.add(key)
    assert sc.events(t0)[0].resident_id == sc.registry.residents[0].id


def test_steps_are_data_on_a_clock_the_caller_chooses() -> None:
    sc = load_scenario("fall_then_cancel")
    t0 = sc.start_on(DAY)
    assert t0 == datetime.combine(DAY, time(10, 15), sc.zone)
    events = sc.events(t0, run="x")
    fall = next(e for e in events if e.type is EventType.FALL_DETECTED)
    assert fall.ts == t0 + timedelta(seconds=30)
    assert fall.event_id == "x-s2"
    assert sum(e.type is EventType.FALL_DETECTED for e in events) == 2  # sent twice, same id
    assert len({e.event_id for e in events if e.type is EventType.FALL_DETECTED}) == 1


def test_a_late_step_happened_before_it_was_published() -> None:
    sc = load_scenario("night_wandering")
    late = [s for s in sc.steps if s.ts_at is not None]
    assert late and all(s.happened_at < s.at for s in late)


def test_playing_live_puts_the_whole_scenario_in_the_recent_past() -> None:
    sc = load_scenario("smoke_at_night")
    now = datetime(2026, 11, 22, 2, 0, tzinfo=sc.zone)
    t0 = sc.latest_start(now)
    assert t0 == datetime(2026, 11, 21, 3, 5, tzinfo=sc.zone)
    assert t0 + timedelta(seconds=sc.duration_s) <= now


def _outside(res: Resident, lat: float, lon: float, accuracy: float) -> bool:
    """The accuracy circle lies wholly outside every safe zone (the scenarios' polygons are
    axis-aligned rectangles, so the nearest point is the clamped one)."""
    for zone in res.safe_zones:
        if zone.polygon is not None:
            ring = tuple(zone.polygon)
            if in_polygon(lat, lon, ring):
                return False
            lats, lons = [p[1] for p in ring], [p[0] for p in ring]
            near_lat = min(max(lat, min(lats)), max(lats))
            near_lon = min(max(lon, min(lons)), max(lons))
            if distance_m(lat, lon, near_lat, near_lon) <= accuracy:
                return False
        else:
            assert zone.lat is not None and zone.lon is not None and zone.radius_m is not None
            if distance_m(lat, lon, zone.lat, zone.lon) - accuracy <= zone.radius_m:
                return False
    return True


def _fixes(sc: Scenario) -> list[bool]:
    res = sc.registry.residents[0]
    return [_outside(res, s.data["lat"], s.data["lon"], s.data["accuracy_m"])
            for s in sc.steps if s.type is EventType.LOCATION]


def test_the_dusk_walk_leaves_for_two_clear_fixes_then_comes_back() -> None:
    outside = _fixes(load_scenario("tracker_leaves_zone_at_dusk"))
    run = "".join("o" if o else "i" for o in outside)
    assert "oo" in run
    assert run.endswith("ii")
    assert run.startswith("ii")


def test_the_night_walk_leaves_and_does_not_come_back() -> None:
    sc = load_scenario("night_wandering")
    outside = _fixes(sc)
    assert outside[-2:] == [True, True]
    res = sc.registry.residents[0]
    door = next(s for s in sc.steps if s.type is EventType.DOOR_OPENED)
    local = (sc.start_on(DAY) + timedelta(seconds=door.at)).time()
    start, end = res.night.start_time(), res.night.end_time()
    assert local >= start or local < end  # the door opens inside the night window


def test_a_bad_scenario_names_every_problem_with_its_path(tmp_path: Path) -> None:
    text = """
start: "02:00"
resident: {id: r-x, profile: active_senior}
steps:
  - {at: 0, device: d-x-alarm, type: fall.detected}
  - {at: 5, device: d-nobody, type: motion}
  - {at: 9, device: d-x-alarm, type: alarm.auto, data: {source: toaster}}
  - {at: 12, resend: s99}
expect: [{kind: fall, state: gone}]
"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, tmp_path / "bad.yaml")
    assert any(e.startswith("expect.0.state") for e in info.value.errors)
    text = text.replace("state: gone", "state: open")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, tmp_path / "bad.yaml")
    joined = "\n".join(info.value.errors)
    assert "steps[0].type" in joined and "cannot send fall.detected" in joined
    assert "steps[1].device" in joined
    assert "steps[2].type" in joined and "steps[2].data" in joined
    assert "steps[3].resend" in joined


def test_an_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(ScenarioError, match="night_wandering"):
        load_scenario("no_such_scenario")
