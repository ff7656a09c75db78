"""The registry document: defaults as docs/contract.md says, and every error with its path."""

from __future__ import annotations

import json
import time

import pytest

from tests.registry_documents import alias_bomb, many_aliases, too_deep
from trygg.registry import (
    RegistryError,
    RegistryLimitError,
    dump_registry,
    parse_registry,
    validate_registry,
    validate_registry_json,
)
from trygg.registry_limits import DocumentLimits

GOOD = """
teams:
  - {id: east, name: "Hjemmetjenesten Øst", escalate_to: alarm-centre}
  - {id: alarm-centre, name: "Trygghetsalarmsentralen"}
residents:
  - id: r-17
    name: "Kari Nordmann"
    team: east
    safe_zones:
      - {name: home, lat: 59.9139, lon: 10.7522, radius_m: 300}
      - {name: park, polygon: [[10.75, 59.91], [10.76, 59.91], [10.76, 59.92], [10.75, 59.91]]}
    consents: {research: true, relatives_status: true, relatives_location: false}
    location_basis: {kind: vedtak, valid_until: "2027-06-30"}
    devices:
      - {id: d-17-alarm, kind: alarm_unit, heartbeat_s: 60}
      - {id: d-17-fall, kind: fall_sensor}
users:
  - {username: ola, role: staff, teams: [east]}
  - {username: anne, role: relative, residents: [r-17]}
"""


def test_design_example_loads_with_defaults() -> None:
    reg = parse_registry(GOOD)
    kari = reg.residents[0]
    assert kari.timezone == "Europe/Oslo"
    assert (kari.night.start, kari.night.end) == ("23:00", "06:00")
    assert kari.settings.wander_minutes == 10
    assert kari.settings.inactivity_hours == 12
    assert kari.devices[1].heartbeat_s == 60
    assert kari.consents.research is True
    assert reg.teams[0].escalate_to == "alarm-centre"


def test_consents_default_to_false_and_no_location_basis() -> None:
    reg = parse_registry("teams: [{id: t, name: T}]\nresidents: [{id: r, name: R, team: t}]")
    assert not any(reg.residents[0].consents.model_dump().values())
    assert reg.residents[0].location_basis is None


def errors_of(text: str) -> list[str]:
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    return info.value.errors


def test_unknown_device_kind_is_named_with_its_path() -> None:
    text = GOOD.replace("kind: fall_sensor", "kind: smoke")
    assert errors_of(text) == ["residents[0].devices[1].kind: unknown kind 'smoke'"]


def test_every_error_is_reported_at_once() -> None:
    text = (GOOD.replace("kind: fall_sensor", "kind: smoke")
            .replace("role: staff", "role: boss")
            .replace("timezone", "tz"))
    errors = errors_of(text.replace('radius_m: 300', 'radius_m: -3'))
    assert "residents[0].devices[1].kind: unknown kind 'smoke'" in errors
    assert "users[0].role: unknown role 'boss'" in errors
    assert any(e.startswith("residents[0].safe_zones[0].radius_m") for e in errors)


def test_references_must_exist() -> None:
    text = GOOD.replace("team: east", "team: west").replace("residents: [r-17]", "residents: [r-9]")
    errors = errors_of(text)
    assert "residents[0].team: unknown team 'west'" in errors
    assert "users[1].residents[0]: unknown resident 'r-9'" in errors


def test_duplicate_device_ids_are_refused() -> None:
    text = GOOD.replace("id: d-17-fall", "id: d-17-alarm")
    assert errors_of(text) == ["residents[0].devices[1].id: duplicate device id 'd-17-alarm'"]


def test_bad_yaml_and_bad_fields() -> None:
    assert errors_of("teams: [")[0].startswith("(document): not valid YAML")
    assert errors_of("[1, 2]") == ["(document): the registry must be a mapping with teams and residents"]
    errors = errors_of(GOOD.replace('end: "06:00"', 'x: 1').replace("team: east", "team: east\n    colour: red"))
    assert "residents[0].colour: unknown field" in errors


def test_safe_zone_is_circle_or_polygon() -> None:
    text = GOOD.replace("radius_m: 300}", "}")
    assert any("needs lat, lon and radius_m" in e for e in errors_of(text))


def test_unknown_time_zone_and_bad_night_window() -> None:
    text = GOOD.replace("team: east\n", "team: east\n    timezone: Mars/Olympus\n    night: {start: '25:00'}\n", 1)
    errors = errors_of(text)
    assert "residents[0].timezone: unknown time zone 'Mars/Olympus'" in errors
    assert "residents[0].night.start: '25:00' is not a time HH:MM" in errors


def test_the_stored_json_form_gives_the_same_registry_and_the_same_errors() -> None:
    import json

    from trygg.registry import dump_registry, validate_registry_json

    reg = parse_registry(GOOD)
    assert validate_registry_json(json.dumps(dump_registry(reg))) == reg
    bad = dump_registry(reg)
    bad["residents"][0]["devices"][1]["kind"] = "smoke"
    with pytest.raises(RegistryError) as info:
        validate_registry_json(json.dumps(bad))
    assert info.value.errors == ["residents[0].devices[1].kind: unknown kind 'smoke'"]


def test_large_registries_share_equal_settings_and_read_back_unchanged() -> None:
    doc = {
        "teams": [{"id": "east", "name": "Øst"}],
        "residents": [
            {"id": f"r-{i}", "name": f"R {i}", "team": "east", "night": {"start": "22:00"},
             "settings": {"wander_minutes": 5} if i % 2 else {},
             "devices": [{"id": f"d-{i}", "kind": "alarm_unit", "heartbeat_s": 30}]}
            for i in range(4)
        ],
    }
    reg = validate_registry_json(json.dumps(doc))
    r0, r1, r2 = reg.residents[:3]
    assert r0.night is r1.night and r0.settings is r2.settings and r0.consents is r1.consents
    assert r1.settings is not r0.settings and r1.settings.wander_minutes == 5
    assert r0.night.model_fields_set == {"start"} and r0.night.end == "06:00"
    assert r0.devices[0].heartbeat_s is r1.devices[0].heartbeat_s == 30
    assert dump_registry(reg) == dump_registry(validate_registry(doc))
    assert validate_registry_json(json.dumps(dump_registry(reg))) == reg


# --- limits checked before parsing (trygg/registry_limits.py) ---------------------------


def limit_errors(text: str | bytes, limits: DocumentLimits | None = None) -> tuple[str, int, list[str]]:
    started = time.perf_counter()
    with pytest.raises(RegistryLimitError) as info:
        parse_registry(text, limits)
    assert time.perf_counter() - started < 2, "refused before the document is loaded"
    return info.value.limit, info.value.status, info.value.errors


def test_an_alias_bomb_is_refused_naming_the_limit() -> None:
    limit, status, errors = limit_errors(alias_bomb())
    assert (limit, status) == ("max_alias_values", 422)
    assert errors == ["(document): the YAML aliases stand for more values than the limit of 100,000 (*a4, line 7)"]


def test_400000_aliases_are_refused_at_once() -> None:
    limit, status, errors = limit_errors(many_aliases())
    assert (limit, status) == ("max_aliases", 422)
    assert "more YAML aliases than the limit of 1,000" in errors[0]


def test_deep_nesting_is_refused_in_yaml_and_in_json() -> None:
    for text in (too_deep(), too_deep(json=True)):
        limit, status, errors = limit_errors(text)
        assert (limit, status) == ("max_depth", 422)
        assert errors == ["(document): mappings and lists nested deeper than the limit of 32 levels (line 1)"]


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    limit, _, errors = limit_errors("teams: &t [{id: east, name: Øst}, *t]\nresidents: []")
    assert limit == "max_aliases" and "inside its own anchor" in errors[0]


def test_size_and_value_count_are_413() -> None:
    assert limit_errors(GOOD, DocumentLimits(max_bytes=100))[:2] == ("max_bytes", 413)
    assert limit_errors(GOOD.encode(), DocumentLimits(max_values=50))[:2] == ("max_values", 413)


def test_a_few_aliases_still_load_and_json_reads_as_yaml_does() -> None:
    text = GOOD.replace("consents: {research: true", "consents: &c {research: true").replace(
        "users:", "  - {id: r-18, name: Per, team: east, consents: *c}\nusers:")
    reg = parse_registry(text)
    assert reg.residents[1].consents == reg.residents[0].consents and reg.residents[1].consents.research
    as_json = json.dumps(dump_registry(reg))
    assert parse_registry(as_json) == parse_registry(as_json.encode()) == reg
    assert parse_registry("{teams: [{id: t, name: T}]}").teams[0].id == "t"  # YAML flow, not JSON


# --- the resident card (docs/contract.md#the-resident-card) ---------------------------


def with_card(**fields: object) -> dict[str, object]:
    """GOOD as a document, with resident card `fields` on r-17."""
    document = validate_registry_json(json.dumps(dump_registry(parse_registry(GOOD))))
    raw = dump_registry(document)
    raw["residents"][0].update(fields)
    return raw


def card_errors(**fields: object) -> list[str]:
    with pytest.raises(RegistryError) as caught:
        validate_registry(with_card(**fields))
    return caught.value.errors


CONTACT = {"name": "Eva Nordmann", "relation": "datter", "phone": "+47 400 00 001", "notes": "Ring etter kl. 16"}


def test_the_card_fields_load_and_read_back_unchanged() -> None:
    card = {"address": "Diktervegen 1, 9999 Tenkestad",
            "access": {"key_box": "Til venstre for døren, kode 0000", "door_lock": "Fra appen", "notes": "Hund"},
            "contacts": [CONTACT, {"name": "Nils Naboen", "phone": "+47 (0) 400-00-002"}]}
    reg = validate_registry(with_card(**card))
    kari = reg.residents[0]
    assert kari.address == card["address"]
    assert kari.access is not None and kari.access.key_box == "Til venstre for døren, kode 0000"
    assert [c.phone for c in kari.contacts] == ["+47 400 00 001", "+47 (0) 400-00-002"]
    assert validate_registry(dump_registry(reg)) == reg
    assert validate_registry_json(json.dumps(dump_registry(reg))) == reg


def test_a_resident_without_card_fields_has_none() -> None:
    kari = parse_registry(GOOD).residents[0]
    assert (kari.address, kari.access, kari.contacts) == (None, None, [])


@pytest.mark.parametrize("phone", ["", "12", "ring meg", "+47 400 00 001; DROP", "+47\n400", "1" * 40,
                                   "++47 400", "-47 400 00 001", "+47 400 00 001\x00"])
def test_a_phone_number_that_is_not_one_is_refused_with_its_path(phone: str) -> None:
    errors = card_errors(contacts=[{**CONTACT, "phone": phone}])
    assert any(e.startswith("residents[0].contacts[0].phone:") for e in errors), errors


def test_a_contact_needs_a_name_and_a_phone() -> None:
    errors = card_errors(contacts=[{"relation": "nabo"}])
    assert any(e.startswith("residents[0].contacts[0].name:") for e in errors), errors
    assert any(e.startswith("residents[0].contacts[0].phone:") for e in errors), errors
    assert any(e.startswith("residents[0].contacts[0].name:")
               for e in card_errors(contacts=[{**CONTACT, "name": ""}]))


@pytest.mark.parametrize(("fields", "path"), [
    ({"address": "x" * 301}, "residents[0].address:"),
    ({"access": {"key_box": "x" * 201}}, "residents[0].access.key_box:"),
    ({"access": {"door_lock": "x" * 501}}, "residents[0].access.door_lock:"),
    ({"access": {"notes": "x" * 1001}}, "residents[0].access.notes:"),
    ({"contacts": [{**CONTACT, "name": "x" * 201}]}, "residents[0].contacts[0].name:"),
    ({"contacts": [{**CONTACT, "relation": "x" * 101}]}, "residents[0].contacts[0].relation:"),
    ({"contacts": [{**CONTACT, "notes": "x" * 501}]}, "residents[0].contacts[0].notes:"),
    ({"contacts": [CONTACT] * 11}, "residents[0].contacts:"),
])
def test_too_long_or_too_many_is_refused_with_its_path(fields: dict[str, object], path: str) -> None:
    errors = card_errors(**fields)
    assert any(e.startswith(path) for e in errors), errors


@pytest.mark.parametrize(("fields", "path"), [
    ({"address": "Diktervegen 1\x00"}, "residents[0].address:"),
    ({"access": {"key_box": "kode \x00"}}, "residents[0].access.key_box:"),
    ({"contacts": [{**CONTACT, "name": "Eva\x00"}]}, "residents[0].contacts[0].name:"),
    ({"contacts": [{**CONTACT, "relation": "da\x00tter"}]}, "residents[0].contacts[0].relation:"),
    ({"contacts": [{**CONTACT, "notes": "\x00"}]}, "residents[0].contacts[0].notes:"),
])
def test_text_postgresql_cannot_store_is_refused_with_its_path(fields: dict[str, object], path: str) -> None:
    errors = card_errors(**fields)
    assert any(e.startswith(path) and "cannot be stored" in e for e in errors), errors


def test_a_lone_surrogate_is_refused_with_its_path() -> None:
    assert any(e.startswith("residents[0].access.notes:") for e in card_errors(access={"notes": "\ud800"}))


def test_unknown_card_fields_are_refused() -> None:
    assert any(e.startswith("residents[0].access.code:") for e in card_errors(access={"code": "1234"}))
    assert any(e.startswith("residents[0].contacts[0].email:")
               for e in card_errors(contacts=[{**CONTACT, "email": "eva@example.org"}]))
