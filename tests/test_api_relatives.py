"""The relatives' alert history (`GET /api/residents/{id}/alert-history`): recent alerts
of their own person, closed ones too, in plain words and without sensor detail; never
another resident's, never without the `relatives_status` consent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_api import World, insert_alert

pytestmark = pytest.mark.integration

NOTE = "Kari var i stua, alarmen gikk av ved et uhell"


def stored_alert(alert_id: str, resident_id: str, kind: str, state: str, opened: datetime,
                 closed: datetime | None = None) -> dict[str, object]:
    device = f"d-{resident_id[2:]}-alarm"
    ref = Jsonb({"device_id": device, "event_id": f"e-{alert_id}", "type": "alarm.button",
                 "ts": opened.isoformat(), "received_at": opened.isoformat()})
    return {"alert_id": alert_id, "resident_id": resident_id, "team_id": "east", "kind": kind, "priority": "high",
            "state": state, "opened_at": opened, "updated_at": closed or opened, "closed_at": closed,
            "acknowledged_at": closed, "acknowledged_by": "staff-east" if closed else None,
            "resolved_at": closed if state == "resolved" else None,
            "resolved_by": "staff-east" if state == "resolved" else None, "note": NOTE if closed else None,
            "trigger": ref, "last_event": ref, "device_id": device, "escalated_at": opened,
            "location": Jsonb({"lat": 59.913912, "lon": 10.752245}), "teams": ["east"]}


@pytest.fixture
def history(world: World) -> World:
    now = datetime.now(UTC)
    with psycopg.connect(world.url) as conn:
        for values in (
            stored_alert("a-fall-resolved", "r-1", "fall", "resolved", now - timedelta(days=2),
                         now - timedelta(days=2) + timedelta(minutes=12)),
            stored_alert("a-door-cancelled", "r-1", "door_open", "cancelled", now - timedelta(days=9),
                         now - timedelta(days=9) + timedelta(minutes=20)),
            stored_alert("a-too-old", "r-1", "alarm", "resolved", now - timedelta(days=45),
                         now - timedelta(days=45) + timedelta(minutes=5)),
            stored_alert("a-other", "r-2", "smoke", "resolved", now - timedelta(days=1), now - timedelta(hours=20)),
            stored_alert("a-other-east", "r-3", "wandering", "resolved", now - timedelta(days=1),
                         now - timedelta(hours=23)),
        ):
            insert_alert(conn, values)
    return world


def test_a_relative_sees_recent_alerts_closed_ones_too_without_sensor_detail(history: World) -> None:
    response = history.client.get("/api/residents/r-1/alert-history", headers=history.headers("relative-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resident_id"] == "r-1"
    # newest first: the open fall from the alert stage, then the stored ones of the last 30 days
    assert [(a["kind"], a["state"]) for a in body["alerts"]] == [
        ("fall", "open"), ("fall", "resolved"), ("door_open", "cancelled")]
    open_now, resolved, cancelled = body["alerts"]
    assert open_now["closed_at"] is None
    assert resolved == {"kind": "fall", "summary": "A possible fall was detected", "state": "resolved",
                        "opened_at": resolved["opened_at"], "closed_at": resolved["closed_at"]}
    opened = datetime.fromisoformat(resolved["opened_at"])
    assert datetime.fromisoformat(resolved["closed_at"]) - opened == timedelta(minutes=12)
    assert cancelled["summary"] == "A door has been open for a while"
    for secret in ("d-1-", "e-a-", "a-fall", "staff-east", "Kari", "59.91", "10.75", "alarm.button", "east",
                   "priority", "note"):
        assert secret not in response.text, secret


def test_days_and_limit(history: World) -> None:
    relative = history.headers("relative-1")
    longer = history.client.get("/api/residents/r-1/alert-history?days=60", headers=relative).json()
    assert [a["kind"] for a in longer["alerts"]] == ["fall", "fall", "door_open", "alarm"]
    one = history.client.get("/api/residents/r-1/alert-history?limit=1", headers=relative).json()
    assert [(a["kind"], a["state"]) for a in one["alerts"]] == [("fall", "open")]
    for bad in ("days=0", "days=91", "limit=0", "limit=101", "days=x"):
        assert history.client.get(f"/api/residents/r-1/alert-history?{bad}", headers=relative).status_code == 422


@pytest.mark.parametrize(("user", "resident", "status"), [
    ("relative-1", "r-1", 200),
    ("relative-1", "r-2", 404),   # another resident
    ("relative-1", "r-3", 404),   # another resident, consenting to relatives
    ("relative-2", "r-2", 404),   # own resident, without the relatives_status consent
    ("relative-1", "r-404", 404),
    ("researcher", "r-1", 404),
    ("staff-west", "r-1", 404),
    ("staff-east", "r-1", 200),
    ("operator", "r-2", 200),
    ("admin", "r-3", 200),
    (None, "r-1", 401),
])
def test_who_may_read_the_history(history: World, user: str | None, resident: str, status: int) -> None:
    before = len(history.audit_rows())
    response = history.client.get(f"/api/residents/{resident}/alert-history", headers=history.headers(user))
    assert response.status_code == status
    rows = history.audit_rows()[before:]
    if status == 200:
        assert all(a["kind"] != "smoke" or resident == "r-2" for a in response.json()["alerts"])
        assert rows == [(user, {"relative-1": "relative", "staff-east": "staff"}.get(str(user), user), resident,
                         f"GET /api/residents/{resident}/alert-history")]
    else:
        assert rows == []
        assert "fall" not in response.text and "smoke" not in response.text and "wandering" not in response.text
