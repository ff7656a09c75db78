"""The resident card (`GET /api/residents/{id}/card`, docs/contract.md#the-resident-card):
address, access, contact persons, team and devices' health, for staff of the resident's
team, operators and admins; 404 — the very answer for a resident that does not exist —
for everyone else; every read audited; none of it in the residents list or the
relatives' status."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
import yaml

from dashboard.routes_teams import clock_words, health_words
from tests.fix_api import REGISTRY_YAML, SECRETS, World
from tests.registry_documents import KARI_CARD, with_card

pytestmark = pytest.mark.integration

ZONE = ZoneInfo("Europe/Oslo")
#: Text only the card holds.
CARD_TEXT = ("Diktervegen", "Nøkkelboks", "0000", "400 00 001", "Eva Nordmann", "Snill hund")


@pytest.fixture(scope="module")
def carded(shared_world: World) -> Iterator[World]:
    """The API world with `KARI_CARD` on r-1, put through PUT /api/registry (validated
    like any registry document)."""
    response = shared_world.client.put("/api/registry", headers=shared_world.headers("admin"),
                                       json=with_card(yaml.safe_load(REGISTRY_YAML)))
    assert response.status_code == 200, response.text
    yield shared_world


def card_of(w: World, user: str | None, resident_id: str = "r-1") -> tuple[int, str]:
    response = w.client.get(f"/api/residents/{resident_id}/card", headers=w.headers(user))
    return response.status_code, response.text


@pytest.mark.parametrize("user", ["staff-east", "operator", "admin"])
def test_staff_of_the_team_operators_and_admins_see_the_whole_card(carded: World, user: str) -> None:
    response = carded.client.get("/api/residents/r-1/card", headers=carded.headers(user))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    card = response.json()
    assert card["id"] == "r-1"
    assert card["name"] == "Kari Nordmann"
    assert card["team"] == {"id": "east", "name": "Hjemmetjenesten Øst"}
    assert card["address"] == KARI_CARD["address"]
    assert card["access"] == KARI_CARD["access"]
    assert card["contacts"] == [{"relation": None, "notes": None, **c} for c in KARI_CARD["contacts"]]
    devices = {d["id"]: d for d in card["devices"]}
    assert sorted(devices) == ["d-1-alarm", "d-1-gps", "d-1-lock", "d-1-motion"]
    alarm = devices["d-1-alarm"]  # heard a minute ago (tests/fix_api.py seed)
    assert alarm["kind_words"] == ["Trygghetsalarm", "Safety alarm"]
    assert (alarm["health"], alarm["online"], alarm["health_words"]) == ("ok", True, ["I orden", "OK"])
    assert alarm["last_seen"] is not None
    lock = devices["d-1-lock"]  # no status: never heard from
    assert (lock["health"], lock["online"], lock["last_seen"]) == ("never_heard", None, None)
    assert lock["health_words"] == ["Aldri hørt fra", "Never heard from"]
    assert lock["kind_words"] == ["Elektronisk dørlås", "Electronic door lock"]


@pytest.mark.parametrize("user", ["staff-west", "staff-centre", "relative-1", "relative-2", "researcher"])
def test_everyone_else_gets_the_answer_of_a_missing_resident(carded: World, user: str) -> None:
    status, text = card_of(carded, user)
    missing = card_of(carded, user, "r-404")
    assert (status, text) == missing == (404, '{"detail":"not found"}')
    for secret in (*SECRETS, *CARD_TEXT):
        assert secret not in text


def test_anonymous_and_bad_ids(carded: World) -> None:
    assert card_of(carded, None)[0] == 401
    for bad in ("r%201", "x" * 65, "r-1%00"):
        assert card_of(carded, "admin", bad)[0] in (404, 422)


def test_every_read_is_audited_refusals_are_not(carded: World) -> None:
    def card_rows() -> list[tuple[object, ...]]:
        return [r for r in carded.audit_rows() if r[3] == "GET /api/residents/r-1/card"]

    before = len(card_rows())
    card_of(carded, "staff-east")
    card_of(carded, "staff-west")
    card_of(carded, "operator")
    rows = card_rows()[before:]
    assert rows == [("staff-east", "staff", "r-1", "GET /api/residents/r-1/card"),
                    ("operator", "operator", "r-1", "GET /api/residents/r-1/card")]


def test_the_card_is_in_no_other_answer(carded: World) -> None:
    listed = carded.client.get("/api/residents", headers=carded.headers("staff-east"))
    status = carded.client.get("/api/residents/r-1/status", headers=carded.headers("relative-1"))
    assert listed.status_code == status.status_code == 200
    for text in (listed.text, status.text):
        for secret in CARD_TEXT:
            assert secret not in text
    assert {"address", "access", "contacts"}.isdisjoint(listed.json()[0])


def test_device_health_in_words(carded: World) -> None:
    """Offline since the last time heard (the resident's time zone), low battery with its
    percentage, as the rules decide: 3 × heartbeat_s silent, battery below 15 %."""
    now = datetime.now(UTC)
    silent = now - timedelta(minutes=10)  # heartbeat_s 60: silent after 3 min
    with psycopg.connect(carded.url) as conn:
        conn.execute("DELETE FROM trygg.device_status WHERE device_id LIKE 'd-1-%'")
        conn.execute("INSERT INTO trygg.device_status (device_id, online, status_at, last_seen, battery_pct,"
                     " battery_at) VALUES ('d-1-alarm', true, %s, %s, 80, %s), ('d-1-gps', NULL, NULL, %s, 12, %s),"
                     " ('d-1-motion', NULL, NULL, %s, NULL, NULL)",
                     (silent, silent, silent, now, now, now - timedelta(seconds=170)))
    try:
        response = carded.client.get("/api/residents/r-1/card", headers=carded.headers("staff-east"))
        devices = {d["id"]: d for d in response.json()["devices"]}
    finally:
        with psycopg.connect(carded.url) as conn:
            conn.execute("DELETE FROM trygg.device_status WHERE device_id LIKE 'd-1-%'")
            conn.execute("INSERT INTO trygg.device_status (device_id, online, status_at, last_seen)"
                         " VALUES ('d-1-alarm', true, %s, %s)", (now, now - timedelta(minutes=1)))
    oslo = silent.astimezone(ZONE).strftime("%H:%M")
    alarm = devices["d-1-alarm"]
    assert (alarm["health"], alarm["online"], alarm["battery_pct"]) == ("offline", False, 80)
    if silent.astimezone(ZONE).date() == now.astimezone(ZONE).date():
        assert alarm["health_words"] == [f"Svarer ikke siden {oslo}", f"Offline since {oslo}"]
    gps = devices["d-1-gps"]
    assert (gps["health"], gps["online"], gps["health_words"]) == (
        "low_battery", True, ["Lavt batteri (12 %)", "Low battery (12 %)"])
    assert devices["d-1-motion"]["health"] == "ok"  # 170 s: within 3 × 60 s



def test_times_in_words_in_the_residents_time_zone() -> None:
    now = datetime(2026, 12, 5, 22, 30, tzinfo=UTC)  # 23:30 in Oslo
    assert clock_words(datetime(2026, 12, 5, 13, 2, tzinfo=UTC), "Europe/Oslo", now) == ("14:02", "14:02")
    assert clock_words(datetime(2026, 12, 3, 13, 2, tzinfo=UTC), "Europe/Oslo", now) == (
        "3.12. kl. 14:02", "3 Dec 14:02")
    assert clock_words(datetime(2025, 7, 1, 6, 5, tzinfo=UTC), "Europe/Oslo", now) == (
        "1.7.2025 kl. 08:05", "1 Jul 2025 08:05")
    # after midnight in Oslo, yesterday's 23:50 is not "today"
    assert clock_words(datetime(2026, 12, 5, 22, 50, tzinfo=UTC), "Europe/Oslo",
                       datetime(2026, 12, 5, 23, 10, tzinfo=UTC)) == ("5.12. kl. 23:50", "5 Dec 23:50")
    assert clock_words(datetime(2026, 12, 5, 13, 2, tzinfo=UTC), "Mars/Olympus", now) == ("14:02", "14:02")
    assert health_words("offline", None, None, "Europe/Oslo", now) == ["Svarer ikke", "Offline"]
