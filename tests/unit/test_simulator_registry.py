"""Registries made by the simulators: they validate, and the demo file matches its generator."""

from __future__ import annotations

from datetime import UTC, datetime

from simulators import (
    DEMO_REGISTRY_PATH,
    Fleet,
    build_residents,
    demo_fleet,
    demo_registry,
    demo_registry_yaml,
    fleet_registry,
    load_registry,
    registry_yaml,
)
from simulators.registry_gen import load_devices
from trygg.contract import DeviceKind, Role
from trygg.registry import parse_registry, validate_registry


def test_a_fleet_registry_validates_and_knows_every_device() -> None:
    fleet = Fleet(3, 40, datetime(2026, 11, 20, tzinfo=UTC))
    reg = fleet.registry()
    assert validate_registry(reg.model_dump(mode="json")) == reg
    assert {r.id for r in reg.residents} == {r.id for r in fleet.residents}
    assert set(reg.device_index()) == {d for group in fleet.device_groups() for d in group}


def test_a_registry_round_trips_through_yaml() -> None:
    reg = fleet_registry(build_residents(8, 12))
    assert parse_registry(registry_yaml(reg)) == reg


def test_the_demo_file_is_what_the_generator_makes() -> None:
    text = DEMO_REGISTRY_PATH.read_text(encoding="utf-8")
    assert text == demo_registry_yaml(), (
        "simulators/demo_registry.yaml is stale: regenerate it with "
        'uv run python -c "from simulators.registry_gen import main; main()"'
    )
    assert parse_registry(text) == demo_registry()


def test_the_demo_fleet_sends_from_the_devices_of_the_demo_registry() -> None:
    assert demo_fleet().registry() == demo_registry()


def test_the_demo_has_teams_that_escalate_to_the_alarm_centre() -> None:
    reg = demo_registry()
    teams = {t.id: t for t in reg.teams}
    assert {"east", "west", "north", "alarm-centre"} <= set(teams)
    for team in ("east", "west", "north"):
        assert teams[team].escalate_to == "alarm-centre"
    assert teams["alarm-centre"].escalate_to is None
    assert {r.team for r in reg.residents} == {"east", "west", "north"}


def test_the_demo_has_about_fifty_residents_with_every_device_kind() -> None:
    reg = demo_registry()
    assert 45 <= len(reg.residents) <= 60
    kinds = {d.device_kind for r in reg.residents for d in r.devices}
    assert kinds == set(DeviceKind)


def test_the_demo_has_a_user_of_every_role_and_staff_in_every_team() -> None:
    reg = demo_registry()
    assert {u.role for u in reg.users} == set(Role)
    staffed = {t for u in reg.users if u.role == "staff" for t in u.teams}
    assert {"east", "west", "north"} <= staffed
    relative = next(u for u in reg.users if u.role == "relative")
    linked = next(r for r in reg.residents if r.id in relative.residents)
    assert linked.consents.relatives_status


def test_every_tracker_wearer_has_a_location_basis_and_a_safe_zone() -> None:
    reg = demo_registry()
    wearers = [r for r in reg.residents
               if any(d.device_kind in (DeviceKind.GPS_TRACKER, DeviceKind.PHONE) for d in r.devices)]
    assert wearers
    for res in wearers:
        assert res.location_basis is not None, res.id
        assert res.safe_zones, res.id


def test_homes_are_in_oslo_or_bergen() -> None:
    for res in demo_registry().residents:
        home = res.safe_zones[0]
        assert home.lat is not None and home.lon is not None
        in_oslo = 59.8 < home.lat < 60.05 and 10.6 < home.lon < 10.95
        in_bergen = 60.3 < home.lat < 60.45 and 5.25 < home.lon < 5.45
        assert in_oslo or in_bergen, (res.id, home)


def test_the_load_registry_holds_the_load_devices() -> None:
    reg = load_registry(25)
    assert set(reg.device_index()) == {device_id for device_id, _ in load_devices(25)}
