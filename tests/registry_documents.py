"""Registry documents of the tests.

The registry the tests run on is tests/data/registry.yaml, once; the variants that need
less or other are built from it here, in code. Then hostile documents for the tests of
the registry's limits (trygg/registry_limits.py): each is small to send and costly to
load without them."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

REGISTRY_FILE = Path(__file__).resolve().parent / "data" / "registry.yaml"


@functools.cache
def _registry_file() -> dict[str, Any]:
    document = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def registry_document() -> dict[str, Any]:
    """tests/data/registry.yaml as a document of its own, for the caller to change: three
    teams (east and west escalate to alarm-centre), residents r-1..r-7 with consents and
    every kind of device on r-1, and one user of each role."""
    return copy.deepcopy(_registry_file())


def as_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False, default_flow_style=None)


def resident(document: dict[str, Any], resident_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in document["residents"] if r["id"] == resident_id)
    return found


def keep_devices(person: dict[str, Any], *kinds: str) -> None:
    """Keep the devices d-<n>-<kind> of `person`, in the order given."""
    number = person["id"].removeprefix("r-")
    devices = {d["id"]: d for d in person["devices"]}
    person["devices"] = [devices[f"d-{number}-{kind}"] for kind in kinds]


#: Resident card fields for r-1 (docs/contract.md#the-resident-card). Made up on
#: purpose: no such street or town exists, and +47 400 00 0xx are not real numbers.
KARI_CARD: dict[str, Any] = {
    "address": "Diktervegen 1, 9999 Tenkestad",
    "access": {"key_box": "Nøkkelboks til venstre for døren, kode 0000",
               "door_lock": "Låses opp fra Trygg-appen",
               "notes": "Snill hund i gangen. Inngang på baksiden om vinteren."},
    "contacts": [
        {"name": "Eva Nordmann", "relation": "datter", "phone": "+47 400 00 001", "notes": "Ring etter kl. 16"},
        {"name": "Nils Naboen", "relation": "nabo", "phone": "+47 400 00 002"},
    ],
}


def with_card(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with `KARI_CARD` on r-1."""
    resident(document, "r-1").update(copy.deepcopy(KARI_CARD))
    return document


def api_registry_yaml() -> str:
    """The API tests' world (tests/fix_api.py): the whole file, with the devices the
    stored events and the research views name."""
    document = registry_document()
    keep_devices(resident(document, "r-1"), "alarm", "gps", "motion", "lock")
    keep_devices(resident(document, "r-2"), "alarm", "gps")
    return as_yaml(document)


def small_registry_yaml(extra_devices: int = 0) -> str:
    """Team east (escalating to alarm-centre) with r-1 and r-2, neither with consents or
    zones, and no users: what the gateway, alert and pipeline tests run on. r-1 has a
    location basis, r-2 none; 2 residents, 8 devices, and with `extra_devices` a third
    resident r-load with that many alarm units."""
    document = registry_document()
    document["teams"] = [t for t in document["teams"] if t["id"] != "west"]
    kari, ola = resident(document, "r-1"), resident(document, "r-2")
    for person in (kari, ola):
        person.pop("consents")
        person.pop("safe_zones", None)
    keep_devices(kari, "alarm", "fall", "smoke", "door", "motion", "gps")
    ola.update(name="Ola Nordmann", team="east")
    keep_devices(ola, "alarm", "phone")
    document["residents"] = [kari, ola]
    if extra_devices:
        document["residents"].append({"id": "r-load", "name": "Load", "team": "east", "devices": [
            {"id": f"load-{i}", "kind": "alarm_unit"} for i in range(extra_devices)]})
    del document["users"]
    return as_yaml(document)


def browser_registry_yaml() -> str:
    """The browser tests' system (tests/browser/support.py): r-1 and r-2 of the file,
    r-3 who is followed on the map, and r-4..r-9 (east) consenting to research, enough
    for unsuppressed aggregates; r-1 has a resident card (`KARI_CARD`). No users (the
    tests add theirs with `trygg users add`). Devices beat rarely, so that no
    `device_offline` alert appears while the tests run."""
    document = registry_document()
    kari, per = resident(with_card(document), "r-1"), resident(document, "r-2")
    keep_devices(kari, "alarm", "fall", "gps")
    per.update(name="Per Vestmann", consents={"research": True, "relatives_status": True})
    keep_devices(per, "alarm", "fall")
    astrid = {"id": "r-3", "name": "Astrid Østby", "team": "east", "consents": {"research": True},
              "location_basis": {"kind": "consent", "valid_until": "2099-12-31"},
              "devices": [{"id": "d-3-alarm", "kind": "alarm_unit"}, {"id": "d-3-fall", "kind": "fall_sensor"},
                          {"id": "d-3-smoke", "kind": "smoke_detector"}, {"id": "d-3-phone", "kind": "phone"}]}
    researched = [{"id": f"r-{n}", "name": f"Beboer {n}", "team": "east", "consents": {"research": True},
                   "devices": [{"id": f"d-{n}-alarm", "kind": "alarm_unit"},
                               {"id": f"d-{n}-motion", "kind": "motion_sensor"}]}
                  for n in range(4, 10)]
    document["residents"] = [kari, per, astrid, *researched]
    for person in document["residents"]:
        for device in person["devices"]:
            device["heartbeat_s"] = 3600
    del document["users"]
    return as_yaml(document)


def ingest_registry_yaml() -> str:
    """r-1 alone with a device of every kind and a location basis: every event type
    has a device to come from (tests/test_ingest_properties.py)."""
    document = registry_document()
    kari = resident(document, "r-1")
    kari.pop("consents")
    kari.pop("safe_zones")
    document["teams"] = [t for t in document["teams"] if t["id"] != "west"]
    document["residents"] = [kari]
    del document["users"]
    return as_yaml(document)


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """"Billion laughs": a few hundred bytes that stand for 10⁹ values."""
    lines = ["teams: [{id: east, name: Øst}]", "x0: &a0 [lol]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"residents: *a{levels}"])


def many_aliases(count: int = 400_000) -> str:
    """A resident written once and repeated by alias: each one is validated again."""
    return ("teams: [{id: east, name: Øst}]\n"
            "residents:\n- &r {id: r-1, name: Kari, team: east, devices: [{id: d-1, kind: alarm_unit}]}\n"
            + "- *r\n" * count)


def too_deep(levels: int = 100_000, json: bool = False) -> str:
    nested = "[" * levels + "]" * levels
    return '{"teams": ' + nested + "}" if json else "teams: " + nested


__all__ = ["KARI_CARD", "REGISTRY_FILE", "alias_bomb", "api_registry_yaml", "as_yaml", "browser_registry_yaml",
           "ingest_registry_yaml", "keep_devices", "many_aliases", "registry_document", "resident",
           "small_registry_yaml", "too_deep", "with_card"]
