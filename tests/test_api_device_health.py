"""`GET /api/devices/health` (docs/devices.md): the devices of the caller's teams that need
a visit, what needs one first first — an alarm unit offline, another device offline, a
device never heard from, a low battery — decided as the rules decide device_offline and
battery_low; one audit row per resident shown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.fix_api import World

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(shared_world: World) -> Iterator[World]:
    """Device status rows of every kind of health (heartbeat_s is 60 for every device of
    the API world: silent after 3 min). Team east: r-1, r-3..r-7; west: r-2."""
    now = datetime.now(UTC)

    def ago(**delta: float) -> datetime:
        return now - timedelta(**delta)

    rows = [  # device, online, status_at, last_seen, battery_pct
        ("d-1-alarm", True, ago(hours=1), ago(hours=1), None),  # offline, alarm unit, silent longest
        ("d-3-alarm", None, None, ago(minutes=30), None),  # offline, alarm unit
        ("d-4-alarm", False, ago(minutes=5), ago(minutes=5), None),  # Last Will standing for 5 min
        ("d-1-motion", None, None, ago(hours=2), None),  # offline, not an alarm unit
        # d-1-lock: never heard from
        ("d-1-gps", None, None, ago(seconds=10), 12),  # low battery
        ("d-7-alarm", None, None, ago(seconds=10), 14),  # low battery
        ("d-3-gps", True, ago(seconds=10), ago(seconds=10), 80),  # in order
        ("d-5-alarm", False, ago(seconds=10), ago(seconds=10), None),  # Last Will, within the debounce
        ("d-6-alarm", False, ago(minutes=5), ago(seconds=10), 15),  # Last Will, heard since; 15 % is not low
        ("d-2-alarm", None, None, ago(hours=3), None),  # west: offline
        ("d-2-gps", None, None, ago(seconds=10), None),
    ]
    with psycopg.connect(shared_world.url) as conn:
        conn.execute("DELETE FROM trygg.device_status")
        conn.cursor().executemany(
            "INSERT INTO trygg.device_status (device_id, online, status_at, last_seen, battery_pct, battery_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [(*r, None if r[4] is None else r[3]) for r in rows])
    yield shared_world


def health(w: World, user: str, query: str = "") -> list[tuple[str, str]]:
    response = w.client.get(f"/api/devices/health{query}", headers=w.headers(user))
    assert response.status_code == 200, response.text
    return [(d["id"], d["health"]) for d in response.json()["devices"]]


NEEDING_VISIT_EAST = [
    ("d-1-alarm", "offline"), ("d-3-alarm", "offline"), ("d-4-alarm", "offline"),
    ("d-1-motion", "offline"),
    ("d-1-lock", "never_heard"),
    ("d-1-gps", "low_battery"), ("d-7-alarm", "low_battery"),
]


def test_what_needs_a_visit_first_comes_first(fleet: World) -> None:
    assert health(fleet, "staff-east") == NEEDING_VISIT_EAST


def test_all_devices_on_request_the_ones_in_order_last(fleet: World) -> None:
    # the devices in order by resident name: Berit Fem, Cato Seks, Per Utenposisjon
    assert health(fleet, "staff-east", "?all=true") == [
        *NEEDING_VISIT_EAST, ("d-5-alarm", "ok"), ("d-6-alarm", "ok"), ("d-3-gps", "ok")]


def test_each_device_with_its_resident_team_and_words(fleet: World) -> None:
    response = fleet.client.get("/api/devices/health", headers=fleet.headers("staff-east"))
    devices = {d["id"]: d for d in response.json()["devices"]}
    alarm = devices["d-1-alarm"]
    assert alarm["resident"] == {"id": "r-1", "name": "Kari Nordmann"}
    assert alarm["team"] == {"id": "east", "name": "Hjemmetjenesten Øst"}
    assert alarm["kind_words"] == ["Trygghetsalarm", "Safety alarm"]
    assert alarm["online"] is False
    assert alarm["health_words"][0].startswith("Svarer ikke siden ")
    assert alarm["health_words"][1].startswith("Offline since ")
    assert devices["d-1-gps"]["health_words"] == ["Lavt batteri (12 %)", "Low battery (12 %)"]
    assert devices["d-1-gps"]["battery_pct"] == 12
    assert devices["d-1-lock"]["health_words"] == ["Aldri hørt fra", "Never heard from"]
    assert devices["d-1-lock"]["online"] is None
    assert response.json()["truncated"] is False


def test_teams_in_scope_only(fleet: World) -> None:
    assert health(fleet, "staff-west") == [("d-2-alarm", "offline")]
    assert all(not d.startswith("d-2-") for d, _ in health(fleet, "staff-east"))
    assert health(fleet, "staff-east", "?team=west") == []
    assert health(fleet, "staff-centre") == []
    everyone = health(fleet, "operator")
    assert ("d-2-alarm", "offline") in everyone and ("d-1-alarm", "offline") in everyone
    assert health(fleet, "admin", "?team=east") == NEEDING_VISIT_EAST
    for user in ("relative-1", "researcher"):
        assert fleet.client.get("/api/devices/health", headers=fleet.headers(user)).status_code == 403
    assert fleet.client.get("/api/devices/health").status_code == 401


def test_bounded(fleet: World) -> None:
    response = fleet.client.get("/api/devices/health?limit=2", headers=fleet.headers("staff-east"))
    assert [d["id"] for d in response.json()["devices"]] == ["d-1-alarm", "d-3-alarm"]
    assert response.json()["truncated"] is True
    for bad in ("limit=0", "limit=1001", "team=no%20such", "all=maybe"):
        assert fleet.client.get(f"/api/devices/health?{bad}", headers=fleet.headers("admin")).status_code == 422


def test_one_audit_row_per_resident_shown(fleet: World) -> None:
    before = len(fleet.audit_rows())
    health(fleet, "staff-east")
    rows = fleet.audit_rows()[before:]
    assert sorted(r[2] for r in rows) == ["r-1", "r-3", "r-4", "r-7"]
    assert {(r[0], r[3]) for r in rows} == {("staff-east", "GET /api/devices/health")}
