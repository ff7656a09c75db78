"""The shift report: `GET /api/shift` and `GET /api/shift.csv` (docs/shift.md).

The history is written as the alert stage's writer writes it: alerts taken through the
real lifecycle (alerts/lifecycle.py) and stored with `AlertStore`."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from alerts import lifecycle
from tests.fix_api import World, store_alerts
from trygg.alert import Alert, Transition
from trygg.contract import AlertKind, AlertState, Priority

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def alert_of(alert_id: str, resident: str, team: str, opened_ago: timedelta, *, escalated_to: tuple[str, ...] = (),
             kind: AlertKind = AlertKind.ALARM) -> tuple[Alert, list[Transition]]:
    opened = NOW - opened_ago
    alert = Alert(alert_id=alert_id, resident_id=resident, team_id=team, kind=kind, priority=Priority.HIGH,
                  state=AlertState.OPEN, opened_at=opened, updated_at=opened, teams=(team,), escalated_at=opened)
    alert, steps = lifecycle.opened(alert, "system")
    trail = list(steps)
    for n, other in enumerate(escalated_to, start=1):
        alert, steps = lifecycle.escalate(alert, opened + timedelta(seconds=30 * n), other)
        trail += steps
    return alert, trail


def taken(written: tuple[Alert, list[Transition]], by: str, after_s: int, resolved_after_s: int | None = None,
          note: str | None = None) -> tuple[Alert, list[Transition]]:
    alert, trail = written
    alert, steps = lifecycle.acknowledge(alert, by, alert.opened_at + timedelta(seconds=after_s))
    trail = trail + list(steps)
    if resolved_after_s is not None:
        alert, steps = lifecycle.resolve(alert, by, alert.opened_at + timedelta(seconds=resolved_after_s), note)
        trail += steps
    return alert, trail


def store(w: World, *written: tuple[Alert, list[Transition]]) -> None:
    store_alerts(w.url, *written)


@pytest.fixture
def shift(world: World) -> World:
    """s-1: r-1 (east) taken after 60 s, resolved after 600 s with a note, 2 h ago.
    s-2: r-3 (east) escalated to the alarm centre, taken by staff-centre, resolved straight
    from open, 5 h ago. s-3: r-4 (east) cancelled by the resident, 1 h ago. s-4: r-5 (east)
    still open, opened 3 days ago. s-5: r-2 (west), 30 min ago, taken. s-6: r-6 (east),
    resolved 10 h ago. s-old: r-1, 3 days ago, resolved 3 days ago."""
    resolved_from_open = alert_of("s-2", "r-3", "east", timedelta(hours=5), escalated_to=("alarm-centre",))
    a2, steps2 = resolved_from_open
    a2, more = lifecycle.resolve(a2, "staff-centre", a2.opened_at + timedelta(seconds=300), "=HYPERLINK(\"x\")")
    cancelled, steps3 = alert_of("s-3", "r-4", "east", timedelta(hours=1, minutes=5))
    cancelled, cancel_steps = lifecycle.cancel(cancelled, "resident", NOW - timedelta(hours=1),
                                               "cancelled: alarm.cancel")
    store(world,
          taken(alert_of("s-1", "r-1", "east", timedelta(hours=2)), "staff-east", 60, 600, "Kari hadde falt; ok nå"),
          (a2, steps2 + list(more)),
          (cancelled, steps3 + list(cancel_steps)),
          alert_of("s-4", "r-5", "east", timedelta(days=3), kind=AlertKind.BATTERY_LOW),
          taken(alert_of("s-5", "r-2", "west", timedelta(minutes=30)), "staff-west", 45),
          taken(alert_of("s-6", "r-6", "east", timedelta(hours=10, minutes=20)), "staff-east", 30, 1200),
          taken(alert_of("s-old", "r-1", "east", timedelta(days=3)), "staff-east", 30, 90))
    return world


def get(w: World, user: str, query: str) -> dict[str, object]:
    response = w.client.get(f"/api/shift?{query}", headers=w.headers(user))
    assert response.status_code == 200, response.text
    doc: dict[str, object] = response.json()
    return doc


def alert_ids(doc: dict[str, object]) -> list[str]:
    return [a["alert_id"] for a in doc["alerts"]]  # type: ignore[attr-defined, index]


def test_the_shift_of_a_team_lists_times_who_and_notes(shift: World) -> None:
    doc = get(shift, "staff-east", "team=east&hours=8")
    assert doc["teams"] == [{"id": "east", "name": "Hjemmetjenesten Øst", "escalate_to": "alarm-centre"}]
    assert alert_ids(doc) == ["s-3", "s-1", "s-2", "s-4"], "newest opening first; still-open s-4 is carried over"
    by_id = {a["alert_id"]: a for a in doc["alerts"]}  # type: ignore[attr-defined]
    first = by_id["s-1"]
    assert (first["resident_name"], first["kind"], first["state"]) == ("Kari Nordmann", "alarm", "resolved")
    assert (first["acknowledged_by"], first["seconds_to_take"], first["closed_by"], first["seconds_to_resolve"]) == (
        "staff-east", 60, "staff-east", 600)
    assert [(n["by"], n["text"]) for n in first["notes"]] == [("staff-east", "Kari hadde falt; ok nå")]
    escalated = by_id["s-2"]
    assert (escalated["escalation_level"], escalated["teams"]) == (1, ["east", "alarm-centre"])
    assert (escalated["acknowledged_by"], escalated["seconds_to_take"], escalated["seconds_to_resolve"]) == (
        "staff-centre", 300, 300)
    assert [n["text"] for n in escalated["notes"]] == ['=HYPERLINK("x")'], "no note of the implicit acknowledgement"
    cancelled = by_id["s-3"]
    assert (cancelled["state"], cancelled["closed_by"], cancelled["seconds_to_resolve"], cancelled["notes"]) == (
        "cancelled", "resident", None, [])
    still_open = by_id["s-4"]
    assert (still_open["state"], still_open["closed_at"], still_open["seconds_to_take"]) == ("open", None, None)
    assert doc["summary"] == {"alerts": 4, "open": 1, "acknowledged": 0, "resolved": 2, "cancelled": 1,
                              "median_seconds_to_take": 180, "median_seconds_to_resolve": 450}


def test_the_length_of_the_shift(shift: World) -> None:
    assert "s-6" not in alert_ids(get(shift, "operator", "team=east&hours=8"))
    assert "s-6" in alert_ids(get(shift, "operator", "team=east&hours=12"))
    assert "s-old" not in alert_ids(get(shift, "operator", "team=east&hours=24"))


def test_who_sees_which_team(shift: World) -> None:
    assert alert_ids(get(shift, "staff-west", "hours=24")) == ["s-5"]
    assert alert_ids(get(shift, "staff-centre", "hours=24")) == ["s-2"], "escalated to the centre"
    everything = get(shift, "admin", "hours=24")
    assert set(alert_ids(everything)) == {"s-1", "s-2", "s-3", "s-4", "s-5", "s-6"}
    assert {t["id"] for t in everything["teams"]} == {"east", "west", "alarm-centre"}  # type: ignore[attr-defined]
    for user, query in (("staff-west", "team=east"), ("operator", "team=nowhere"), ("staff-east", "team=nowhere")):
        response = shift.client.get(f"/api/shift?{query}", headers=shift.headers(user))
        assert (response.status_code, response.json()) == (404, {"detail": "not found"}), (user, query)
        assert shift.client.get(f"/api/shift.csv?{query}", headers=shift.headers(user)).status_code == 404
    for user in ("relative-1", "researcher"):
        assert shift.client.get("/api/shift", headers=shift.headers(user)).status_code == 403
        assert shift.client.get("/api/shift.csv", headers=shift.headers(user)).status_code == 403
    assert shift.client.get("/api/shift").status_code == 401


def test_one_audit_row_per_resident_shown(shift: World) -> None:
    get(shift, "staff-east", "team=east&hours=8")
    shift.client.get("/api/shift.csv?team=east&hours=8", headers=shift.headers("staff-east"))
    rows = [r for r in shift.audit_rows() if r[0] == "staff-east"]
    assert sorted(r[2] for r in rows if r[3].startswith("GET /api/shift?")) == ["r-1", "r-3", "r-4", "r-5"]
    assert sorted(r[2] for r in rows if r[3].startswith("GET /api/shift.csv")) == ["r-1", "r-3", "r-4", "r-5"]


def test_the_csv_opens_in_norwegian_excel_and_runs_no_formula(shift: World) -> None:
    response = shift.client.get("/api/shift.csv?team=east&hours=8&tz=Europe/Oslo",
                                headers=shift.headers("staff-east"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="trygg-vakt-east-') and disposition.endswith('-8t.csv"')
    body = response.content
    assert body.startswith(b"\xef\xbb\xbf"), "UTF-8 with BOM"
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][:4] == ["alert_id", "resident_id", "resident_name", "team_id"]
    by_id = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert list(by_id) == ["s-3", "s-1", "s-2", "s-4"]
    first = by_id["s-1"]
    opened = (NOW - timedelta(hours=2)).astimezone(ZoneInfo("Europe/Oslo")).strftime("%Y-%m-%d %H:%M:%S")
    assert (first["resident_name"], first["opened_at"], first["seconds_to_take"], first["seconds_to_resolve"]) == (
        "Kari Nordmann", opened, "60", "600")
    assert first["notes"].endswith("staff-east: Kari hadde falt; ok nå")
    assert by_id["s-2"]["notes"].endswith('staff-centre: =HYPERLINK("x")'), "inside a cell, not at its start"
    assert by_id["s-2"]["teams"] == "east alarm-centre"
    assert by_id["s-4"]["closed_at"] == "" and by_id["s-4"]["seconds_to_take"] == ""


def test_a_cell_that_starts_like_a_formula_is_written_as_text(world: World) -> None:
    written = taken(alert_of("f-1", "r-1", "east", timedelta(hours=1)), "staff-east", 10, 20, "@SUM(A1:A9)")
    store(world, written)
    with psycopg.connect(world.url) as conn:
        conn.execute("UPDATE trygg.residents SET name = %s WHERE id = 'r-1'", ("=cmd|' /C calc'!A0",))
    response = world.client.get("/api/shift.csv?hours=8", headers=world.headers("operator"))
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["resident_name"] == "'=cmd|' /C calc'!A0"
    assert row["notes"].split(": ", 1)[1] == "@SUM(A1:A9)" and not row["notes"].startswith(("=", "+", "-", "@"))
    report = world.client.get("/api/shift?hours=8", headers=world.headers("operator")).json()
    assert report["alerts"][0]["resident_name"] == "=cmd|' /C calc'!A0", "only the CSV is changed"


@pytest.mark.parametrize("query", [
    "hours=9", "hours=0", "hours=-8", "hours=eight", "hours=8.5", "hours=99999999999999999999",
    "team=east%20west", "team=" + "e" * 65,
])
def test_bad_input_is_422_with_a_message(shift: World, query: str) -> None:
    for path in ("/api/shift", "/api/shift.csv"):
        response = shift.client.get(f"{path}?{query}", headers=shift.headers("operator"))
        assert response.status_code == 422, (path, query, response.text)
        assert response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("tz", ["Mars/Olympus", "../../etc/passwd", "Europe", "x" * 65, "Europe/Oslo\x00"])
def test_a_bad_time_zone_is_422(shift: World, tz: str) -> None:
    response = shift.client.get("/api/shift.csv", params={"tz": tz}, headers=shift.headers("operator"))
    assert response.status_code == 422, (tz, response.text)
