"""Early signs of decline in the API (docs/api.md "Changes worth a look"): a resident's
days and notices for staff of the resident's team, operators and admins; 404 — the
answer for a resident that does not exist — for everyone else; relatives only with the
`relatives_insights` consent and only a calm sentence; a team's list; marking a notice
seen records who and when (the signed-in user, never a name from the body), once, with
CSRF as every cookie change; every read and mark audited. And research: the daily
features of consenting residents, aggregated with the k ≥ 5 rule and exported with the
per-row rule."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_api import OUR_PAGE, PASSWORD, SECRETS, World, as_research_role, hmac_hex
from trygg.insights import FEATURE_INDEX, FEATURES

pytestmark = pytest.mark.integration

F = len(FEATURES)
TOILET = FEATURE_INDEX["night_toilet_visits"]
REASON_NB = "Nattlige toalettbesøk 4,2 per natt mot vanlig 1,5, siste 14 dager"
REASON_EN = "Night-time toilet visits 4.2 per night against a usual 1.5, last 14 days"


def today() -> date:
    return datetime.now(UTC).astimezone(ZoneInfo("Europe/Oslo")).date()


def add_days(w: World, resident: str, days: int = 60, *, end: date | None = None,
             value: Any = None) -> None:
    """`days` computed days up to `end` (default yesterday): toilet visits about 1.5 a
    night, rising to 4 in the last 10; a baseline band 0.8–2.2 once 14 days are in."""
    last = end or today() - timedelta(days=1)
    rows = []
    for i in range(days):
        day = last - timedelta(days=days - 1 - i)
        vals: list[float | None] = [float(j) for j in range(F)]
        vals[TOILET] = (4.0 if i >= days - 10 else 1.5 + (i % 3 - 1) * 0.25) if value is None else value(i)
        vals[FEATURE_INDEX["walk_km"]] = None  # no GPS: unknown
        base: list[float | None] = [None] * F if i < 14 else [float(j) for j in range(F)]
        low = list(base)
        high = list(base)
        if i >= 14:
            base[TOILET], low[TOILET], high[TOILET] = 1.5, 0.8, 2.2
        rows.append((resident, day, vals, base, low, high, 0, True, False))
    with psycopg.connect(w.url) as conn:
        conn.cursor().executemany(
            "INSERT INTO trygg.insight_days (resident_id, day, vals, usual, band_low, band_high, hours_unheard,"
            " usable, away) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)


def add_notice(w: World, resident: str = "r-1", feature: str = "night_toilet_visits",
               day: date | None = None) -> int:
    with psycopg.connect(w.url) as conn:
        row = conn.execute(
            "INSERT INTO trygg.insight_notices (resident_id, feature, direction, day, value, usual, band_low,"
            " band_high, window_days, reason_nb, reason_en) VALUES (%s, %s, 1, %s, 4.2, 1.5, 0.8, 2.2, 14, %s, %s)"
            " RETURNING notice_id",
            (resident, feature, day or today() - timedelta(days=1), REASON_NB, REASON_EN)).fetchone()
    assert row is not None
    return int(row[0])


#: days back for notices of one feature added by one test several times
DAYS_BACK = itertools.count()


def consent(w: World, resident: str, name: str, given: bool) -> None:
    with psycopg.connect(w.url) as conn:
        conn.execute("UPDATE trygg.residents SET consents = consents || %s WHERE id = %s",
                     (Jsonb({name: given}), resident))


@pytest.fixture(scope="module")
def declining(shared_world: World) -> Iterator[World]:
    """r-1 (east) declining: 60 days and an open notice; r-2 (west) has a notice too."""
    add_days(shared_world, "r-1")
    add_notice(shared_world, "r-1")
    add_notice(shared_world, "r-2")
    yield shared_world


def insights_of(w: World, user: str | None, resident: str = "r-1", query: str = "") -> tuple[int, Any]:
    response = w.client.get(f"/api/residents/{resident}/insights{query}", headers=w.headers(user))
    return response.status_code, response.text


@pytest.mark.parametrize("user", ["staff-east", "operator", "admin"])
def test_care_sees_the_days_the_band_and_the_notice(declining: World, user: str) -> None:
    response = declining.client.get("/api/residents/r-1/insights?days=90", headers=declining.headers(user))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    doc = response.json()
    assert [f["name"] for f in doc["features"]] == [f.name for f in FEATURES]
    toilet = doc["features"][TOILET]
    assert toilet["label"] == ["Nattlige toalettbesøk", "Night-time toilet visits"]
    assert toilet["unit"] == ["per natt", "per night"] and toilet["direction"] == 1
    assert len(doc["days"]) == 60
    last = doc["days"][-1]
    assert last["day"] == (today() - timedelta(days=1)).isoformat()
    assert last["values"][TOILET] == 4.0 and last["values"][FEATURE_INDEX["walk_km"]] is None
    assert (last["usual"][TOILET], last["low"][TOILET], last["high"][TOILET]) == (1.5, 0.8, 2.2)
    assert doc["days"][0]["usual"] == [None] * F  # no baseline yet
    [notice] = doc["notices"]
    assert notice["reason"] == [REASON_NB, REASON_EN]
    assert notice["label"] == ["Nattlige toalettbesøk", "Night-time toilet visits"]
    assert (notice["value"], notice["usual"], notice["low"], notice["high"]) == (4.2, 1.5, 0.8, 2.2)
    assert notice["seen_at"] is None and notice["seen_by"] is None
    short = declining.client.get("/api/residents/r-1/insights?days=7", headers=declining.headers(user)).json()
    assert len(short["days"]) == 7 and len(short["notices"]) == 1


@pytest.mark.parametrize("user", ["staff-west", "staff-centre", "relative-1", "relative-2", "researcher"])
def test_everyone_else_gets_the_answer_of_a_missing_resident(declining: World, user: str) -> None:
    """relative-1 is r-1's relative, with relatives_status but not relatives_insights."""
    answer = insights_of(declining, user)
    assert answer == insights_of(declining, user, "r-404") == (404, '{"detail":"not found"}')
    for secret in (*SECRETS, "toalett", "toilet"):
        assert secret not in answer[1]


def test_a_relative_with_the_consent_reads_a_calm_sentence_and_no_values(declining: World) -> None:
    consent(declining, "r-1", "relatives_insights", True)
    try:
        status, text = insights_of(declining, "relative-1")
        other = insights_of(declining, "relative-2")  # r-2 is not theirs, and r-1 not relative-2's
        also_not_theirs = insights_of(declining, "relative-2", "r-1")
    finally:
        consent(declining, "r-1", "relatives_insights", False)
    assert status == 200, text
    assert other[0] == also_not_theirs[0] == 404
    doc = json.loads(text)
    assert set(doc) == {"resident_id", "notices"}
    [notice] = doc["notices"]
    assert set(notice) == {"day", "summary", "looked_at"}
    assert notice["summary"] == [
        "Hjemmetjenesten har sett en endring i «nattlige toalettbesøk» over noen uker, og følger med.",
        "The home care team noticed a change in night-time toilet visits over a few weeks and is keeping an eye "
        "on it."]
    for raw in ("4,2", "4.2", "1,5", "1.5", "band", "usual", "staff"):
        assert raw not in text


def test_bad_parameters_are_422(declining: World) -> None:
    for query in ("?days=0", "?days=401", "?days=x"):
        assert insights_of(declining, "staff-east", query=query)[0] == 422
    assert insights_of(declining, None)[0] == 401
    for bad in ("r%201", "x" * 65):
        assert insights_of(declining, "admin", bad)[0] in (404, 422)


def test_the_team_list(declining: World) -> None:
    east = declining.client.get("/api/teams/east/insights", headers=declining.headers("staff-east"))
    assert east.status_code == 200, east.text
    doc = east.json()
    assert doc["team"]["name"] == "Hjemmetjenesten Øst"
    assert {n["resident"]["id"] for n in doc["open"]} == {"r-1"}  # r-2 is west's
    item = next(n for n in doc["open"] if n["resident"]["id"] == "r-1")
    assert item["resident"]["name"] == "Kari Nordmann" and item["reason"] == [REASON_NB, REASON_EN]
    west = declining.client.get("/api/teams/west/insights", headers=declining.headers("staff-west")).json()
    assert {n["resident"]["id"] for n in west["open"]} == {"r-2"}
    operator = declining.client.get("/api/teams/west/insights", headers=declining.headers("operator"))
    assert operator.status_code == 200 and operator.json()["open"] == west["open"]
    for user, team, status in (("staff-west", "east", 404), ("staff-east", "nowhere", 404),
                               ("operator", "nowhere", 404), ("relative-1", "east", 403),
                               ("researcher", "east", 403), (None, "east", 401)):
        response = declining.client.get(f"/api/teams/{team}/insights", headers=declining.headers(user))
        assert response.status_code == status, (user, team, response.text)
        if status != 200:
            assert "Kari" not in response.text


def seen(w: World, notice: int | str, user: str | None, body: Any = None,
         headers: dict[str, str] | None = None) -> Any:
    return w.client.post(f"/api/insights/notices/{notice}/seen", json=body,
                         headers=headers if headers is not None else w.headers(user))


def test_marking_seen_records_who_and_when_once(declining: World) -> None:
    notice = add_notice(declining, "r-1", "active_hours")
    before = datetime.now(UTC)
    response = seen(declining, notice, "staff-east", {"note": "  Snakket med Kari; fastlege varslet.  "})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["seen_by"] == "staff-east" and doc["seen_note"] == "Snakket med Kari; fastlege varslet."
    assert before - timedelta(seconds=5) <= datetime.fromisoformat(doc["seen_at"]) <= datetime.now(UTC)
    with psycopg.connect(declining.url) as conn:
        stored = conn.execute("SELECT seen_by, seen_note, seen_at IS NOT NULL FROM trygg.insight_notices"
                              " WHERE notice_id = %s", (notice,)).fetchone()
    assert stored == ("staff-east", "Snakket med Kari; fastlege varslet.", True)
    again = seen(declining, notice, "operator", {"note": "me too"})
    assert again.status_code == 409 and "already" in again.json()["detail"]
    card = declining.client.get("/api/residents/r-1/insights", headers=declining.headers("operator")).json()
    shown = next(n for n in card["notices"] if n["notice_id"] == notice)
    assert (shown["seen_by"], shown["seen_note"]) == ("staff-east", "Snakket med Kari; fastlege varslet.")
    team = declining.client.get("/api/teams/east/insights", headers=declining.headers("staff-east")).json()
    assert notice in {n["notice_id"] for n in team["seen"]}
    assert notice not in {n["notice_id"] for n in team["open"]}


def test_who_may_mark_seen(declining: World) -> None:
    notice = add_notice(declining, "r-1", "door_exits")
    missing = seen(declining, 987654321, "staff-west", {})
    assert (missing.status_code, missing.text) == (404, '{"detail":"not found"}')
    for user in ("staff-west", "staff-centre"):  # not their resident: as if there were no such notice
        response = seen(declining, notice, user, {})
        assert (response.status_code, response.text) == (404, '{"detail":"not found"}')
    for user in ("admin", "relative-1", "researcher"):
        assert seen(declining, notice, user, {}).status_code == 403
    assert seen(declining, notice, None, {}).status_code == 401
    response = seen(declining, notice, "operator")  # no body: no note
    assert response.status_code == 200 and response.json()["seen_note"] is None
    assert response.json()["seen_by"] == "operator"


@pytest.mark.parametrize("body", [
    {"note": "x" * 1001}, {"note": "a\u0000b"}, {"note": 5}, {"note": "ok", "seen_by": "someone-else"}, [],
], ids=["too-long", "nul", "not-text", "seen_by-from-body", "not-an-object"])
def test_a_bad_note_is_422_and_changes_nothing(declining: World, body: Any) -> None:
    notice = add_notice(declining, "r-1", "time_out", today() - timedelta(days=3 + next(DAYS_BACK)))
    response = seen(declining, notice, "staff-east", body)
    assert response.status_code == 422, response.text
    for bad_id in ("0", "-1", "x", str(2**63)):
        assert seen(declining, bad_id, "staff-east", {}).status_code == 422
    with psycopg.connect(declining.url) as conn:
        assert conn.execute("SELECT seen_at FROM trygg.insight_notices WHERE notice_id = %s",
                            (notice,)).fetchone() == (None,)
    assert seen(declining, notice, "staff-east", {"note": "x" * 1000}).status_code == 200


def test_marking_seen_with_the_cookie_needs_our_own_page(declining: World) -> None:
    notice = add_notice(declining, "r-1", "room_transitions")
    login = declining.client.post("/login", data={"username": "staff-east", "password": PASSWORD}, headers=OUR_PAGE)
    assert login.status_code == 303
    cookie = {"Cookie": f"trygg_session={login.cookies['trygg_session']}"}
    declining.client.cookies.clear()
    refused = seen(declining, notice, None, {"note": "x"}, headers={**cookie, "Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403
    assert seen(declining, notice, None, {"note": "x"}, headers=cookie).status_code == 403  # no Origin
    ok = seen(declining, notice, None, {"note": "x"}, headers={**cookie, **OUR_PAGE})
    assert ok.status_code == 200 and ok.json()["seen_by"] == "staff-east"


def test_reads_and_marks_are_audited_refusals_are_not(declining: World) -> None:
    notice = add_notice(declining, "r-1", "first_activity")
    before = len(declining.audit_rows())
    insights_of(declining, "staff-east")
    insights_of(declining, "staff-west")
    declining.client.get("/api/teams/east/insights", headers=declining.headers("operator"))
    seen(declining, notice, "staff-west", {})
    seen(declining, notice, "staff-east", {"note": "ok"})
    rows = declining.audit_rows()[before:]
    assert rows == [
        ("staff-east", "staff", "r-1", "GET /api/residents/r-1/insights"),
        ("operator", "operator", "r-1", "GET /api/teams/east/insights"),
        ("staff-east", "staff", "r-1", f"POST /api/insights/notices/{notice}/seen"),
    ]


# --- research -----------------------------------------------------------------------------

CONSENTING = ("r-1", "r-3", "r-4", "r-5", "r-6")
DAY = date(2026, 11, 18)  # a Wednesday
SINCE, UNTIL = "2026-11-16T00:00:00Z", "2026-11-23T00:00:00Z"


def add_research_days(w: World) -> None:
    """On DAY: active hours 5.0–5.3 for the 5 consenting residents and 2 who do not
    consent; night activity for 4 of them only; one resident's day after unusable."""
    rows = []
    for n, rid in enumerate((*CONSENTING, "r-2", "r-7")):
        vals: list[float | None] = [None] * F
        vals[FEATURE_INDEX["active_hours"]] = 5.0 + n / 20 if rid not in ("r-2", "r-7") else 20.0
        vals[FEATURE_INDEX["night_activity"]] = 30.0 + n if n < 4 else None
        rows.append((rid, DAY, vals, [None] * F, [None] * F, [None] * F, 0, True, False))
        vals_next: list[float | None] = [9.0] * F
        rows.append((rid, DAY + timedelta(days=1), vals_next, [None] * F, [None] * F, [None] * F, 9, n != 0,
                     n == 1))
    with psycopg.connect(w.url) as conn:
        conn.cursor().executemany(
            "INSERT INTO trygg.insight_days (resident_id, day, vals, usual, band_low, band_high, hours_unheard,"
            " usable, away) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


def test_the_research_view_names_the_features_in_their_order(world: World) -> None:
    with psycopg.connect(world.url) as conn:
        conn.execute("INSERT INTO trygg.insight_days (resident_id, day, vals, usual, band_low, band_high,"
                     " hours_unheard, usable, away) VALUES ('r-1', %s, %s, %s, %s, %s, 0, true, false)",
                     (DAY, [float(j) for j in range(F)], [None] * F, [None] * F, [None] * F))
    world.client.get(f"/api/research/insights?since={SINCE}&until={UNTIL}", headers=world.headers("researcher"))
    with psycopg.connect(as_research_role(world.url)) as conn:
        rows = conn.execute("SELECT resident_pseudonym, day, feature, value FROM research.insight_days"
                            " ORDER BY value").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM trygg.insight_days")
    assert rows == [(hmac_hex("r-1"), DAY, f.name, float(j)) for j, f in enumerate(FEATURES)]


def test_research_aggregates_hold_back_groups_under_five(world: World) -> None:
    add_research_days(world)
    response = world.client.get(f"/api/research/insights?since={SINCE}&until={UNTIL}&bucket=day",
                                headers=world.headers("researcher"))
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["min_group"] == 5
    # night activity of 4 residents on DAY; on DAY + 1 only 3 usable days at home
    assert doc["suppressed_groups"] == 1 + F
    [row] = doc["rows"]
    assert (row["bucket_start"], row["feature"], row["residents"], row["days"]) == (
        DAY.isoformat(), "active_hours", 5, 5)  # r-2 and r-7 do not consent: not in it
    assert (row["p25"], row["median"], row["p75"]) == pytest.approx((5.05, 5.1, 5.15))
    weekly = world.client.get(f"/api/research/insights?since={SINCE}&until={UNTIL}&bucket=week"
                              "&feature=active_hours", headers=world.headers("researcher")).json()
    assert [(r["bucket_start"], r["residents"]) for r in weekly["rows"]] == [("2026-11-16", 5)]
    for query, status in (("&feature=nonsense", 422), ("&bucket=hour", 422)):
        assert world.client.get(f"/api/research/insights?since={SINCE}&until={UNTIL}{query}",
                                headers=world.headers("researcher")).status_code == status
    for user in ("staff-east", "admin", "relative-1"):
        assert world.client.get("/api/research/insights", headers=world.headers(user)).status_code == 403
    actions = [r[3] for r in world.audit_rows() if r[0] == "researcher"]
    assert any(a.startswith("GET /api/research/insights?") for a in actions)


def test_research_export_rounds_values_and_keeps_cells_of_five(world: World) -> None:
    add_research_days(world)
    response = world.client.get(f"/api/research/insights/export?since={SINCE}&until={UNTIL}",
                                headers=world.headers("researcher"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    # 5.0 … 5.2 h round to 5.25 (a multiple of the 0.75 h step): one cell of five residents.
    # Night activity (4 residents) and DAY + 1 (3 usable days at home) are left out.
    assert rows == [{"resident_pseudonym": p, "day": DAY.isoformat(), "feature": "active_hours", "value": "5.25"}
                    for p in sorted(hmac_hex(r) for r in CONSENTING)]
    assert "r-2" not in response.text and hmac_hex("r-2") not in response.text
