"""Closed alerts from the database: `GET /api/alerts?state=resolved|cancelled|closed`.

The alert stage keeps only unresolved alerts at hand; what staff resolved (also before a
restart) is in trygg.alerts, written there by the stage's writer. The history here is
written the same way: alerts taken through the real lifecycle (alerts/lifecycle.py) and
stored with the writer's `AlertStore`."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts import lifecycle
from tests.fix_api import World, store_alerts
from trygg.alert import Alert, Transition
from trygg.contract import AlertKind, AlertState, Priority

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def closed_alert(alert_id: str, resident: str, team: str, *, closed_ago: timedelta, by: str = "staff-east",
                 note: str | None = "Besøkt, alt vel", escalated_to: tuple[str, ...] = (),
                 cancelled: bool = False) -> tuple[Alert, list[Transition]]:
    """An alarm opened 10 min before it closed, taken after 1 min (or cancelled by the resident)."""
    opened = NOW - closed_ago - timedelta(minutes=10)
    alert = Alert(alert_id=alert_id, resident_id=resident, team_id=team, kind=AlertKind.ALARM,
                  priority=Priority.HIGH, state=AlertState.OPEN, opened_at=opened, updated_at=opened,
                  teams=(team,), escalated_at=opened)
    alert, steps = lifecycle.opened(alert, "system")
    trail = list(steps)
    for n, other in enumerate(escalated_to, start=1):
        alert, steps = lifecycle.escalate(alert, opened + timedelta(seconds=30 * n), other)
        trail += steps
    if cancelled:
        alert, steps = lifecycle.cancel(alert, "resident", opened + timedelta(minutes=10), "cancelled: alarm.cancel")
    else:
        alert, steps = lifecycle.acknowledge(alert, by, opened + timedelta(minutes=1))
        trail += steps
        alert, steps = lifecycle.resolve(alert, by, opened + timedelta(minutes=10), note)
    return alert, trail + list(steps)


def store(w: World, *written: tuple[Alert, list[Transition]]) -> None:
    store_alerts(w.url, *written)


@pytest.fixture
def history(world: World) -> World:
    """Closed alerts of east, west and one of east escalated to the alarm centre; newest first:
    h-east-1 (1 h ago), h-west (2 h), h-esc (3 h), h-east-cancel (4 h), h-east-old (30 days)."""
    store(world,
          closed_alert("h-east-1", "r-1", "east", closed_ago=timedelta(hours=1)),
          closed_alert("h-west", "r-2", "west", closed_ago=timedelta(hours=2), by="staff-west"),
          closed_alert("h-esc", "r-3", "east", closed_ago=timedelta(hours=3), by="staff-centre",
                       escalated_to=("alarm-centre",)),
          closed_alert("h-east-cancel", "r-4", "east", closed_ago=timedelta(hours=4), cancelled=True),
          closed_alert("h-east-old", "r-1", "east", closed_ago=timedelta(days=30)))
    return world


def ids(w: World, user: str, query: str) -> list[str]:
    response = w.client.get(f"/api/alerts?{query}", headers=w.headers(user))
    assert response.status_code == 200, response.text
    return [a["alert_id"] for a in response.json()]


def test_a_resolved_alert_is_listed_from_the_database(history: World) -> None:
    """The bug of issue 17: `state=resolved` was [] while trygg.alerts held the rows."""
    listed = history.client.get("/api/alerts?state=resolved&team=east", headers=history.headers("staff-east"))
    assert listed.status_code == 200
    first = listed.json()[0]
    assert (first["alert_id"], first["state"], first["acknowledged_by"], first["resolved_by"], first["note"]) == (
        "h-east-1", "resolved", "staff-east", "staff-east", "Besøkt, alt vel")
    assert first["teams"] == ["east"]
    assert [a["alert_id"] for a in listed.json()] == ["h-east-1", "h-esc", "h-east-old"]


def test_closed_is_resolved_and_cancelled_newest_closed_first(history: World) -> None:
    assert ids(history, "operator", "state=closed") == ["h-east-1", "h-west", "h-esc", "h-east-cancel", "h-east-old"]
    assert ids(history, "admin", "state=cancelled") == ["h-east-cancel"]
    assert ids(history, "operator", "state=resolved&team=west") == ["h-west"]


def test_staff_see_their_teams_and_alerts_escalated_to_them(history: World) -> None:
    assert ids(history, "staff-east", "state=closed") == ["h-east-1", "h-esc", "h-east-cancel", "h-east-old"]
    assert ids(history, "staff-west", "state=closed") == ["h-west"]
    assert ids(history, "staff-centre", "state=closed") == ["h-esc"]
    assert ids(history, "staff-west", "state=closed&team=east") == [], "a team filter never widens what staff see"
    for user in ("relative-1", "researcher"):
        assert history.client.get("/api/alerts?state=closed", headers=history.headers(user)).status_code == 403


def test_filters_by_time_and_resident(history: World) -> None:
    since = (NOW - timedelta(hours=3, minutes=30)).isoformat()
    until = (NOW - timedelta(hours=1, minutes=30)).isoformat()
    query = f"state=closed&since={since.replace('+', '%2B')}&until={until.replace('+', '%2B')}"
    assert ids(history, "operator", query) == ["h-west", "h-esc"]
    assert ids(history, "operator", "state=closed&resident=r-1") == ["h-east-1", "h-east-old"]
    assert ids(history, "staff-west", "state=closed&resident=r-1") == []


def test_pages_follow_the_cursor_to_the_end(history: World) -> None:
    seen: list[str] = []
    query = "state=closed&limit=2"
    pages = 0
    while True:
        response = history.client.get(f"/api/alerts?{query}", headers=history.headers("operator"))
        assert response.status_code == 200, response.text
        seen += [a["alert_id"] for a in response.json()]
        pages += 1
        cursor = response.headers.get("X-Next-Before")
        if cursor is None:
            break
        query = f"state=closed&limit=2&before={cursor}"
    assert pages == 3
    assert seen == ["h-east-1", "h-west", "h-esc", "h-east-cancel", "h-east-old"]


def test_a_resolved_alert_is_listed_once_per_audit_row_per_resident(history: World) -> None:
    ids(history, "staff-east", "state=closed")
    rows = [r for r in history.audit_rows() if r[0] == "staff-east"]
    assert sorted(r[2] for r in rows) == ["r-1", "r-3", "r-4"]
    assert all(r[3].startswith("GET /api/alerts") for r in rows)


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("query", [
    "state=closed&limit=0",
    "state=closed&limit=501",
    "state=closed&limit=many",
    "state=closed&before=%%%",
    "state=closed&before=" + _cursor("not json"),
    "state=closed&before=" + _cursor('["2026-01-01T00:00:00", "a-1"]'),  # no offset
    "state=closed&before=" + _cursor('["yesterday", "a-1"]'),
    "state=closed&before=" + _cursor('["2026-01-01T00:00:00+00:00", "a b"]'),
    "state=closed&before=" + _cursor('{"a": 1}'),
    "state=closed&before=" + "A" * 401,
    "state=closed&since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
    "state=closed&since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
    "state=closed&resident=r%201",
    "state=finished",
    "state=open&until=2026-01-01T00:00:00Z",
    "state=open&before=" + _cursor('["2026-01-01T00:00:00+00:00", "a-1"]'),
    "until=9999-12-31T23:59:59-23:59&state=closed",
])
def test_bad_input_is_422_with_a_message(history: World, query: str) -> None:
    response = history.client.get(f"/api/alerts?{query}", headers=history.headers("operator"))
    assert response.status_code == 422, (query, response.text)
    assert response.json()["detail"][0]["msg"]


def test_an_alert_escalated_after_it_was_stored_reaches_the_new_team(world: World) -> None:
    """The writer upserts an alert at every change: its new teams follow it."""
    first = closed_alert("h-late", "r-1", "east", closed_ago=timedelta(minutes=5))
    store(world, first)
    assert ids(world, "staff-centre", "state=closed") == []
    alert = first[0]
    store(world, (replace(alert, teams=("east", "alarm-centre"), version=alert.version + 1), []))
    assert ids(world, "staff-centre", "state=closed") == ["h-late"]
    assert ids(world, "staff-east", "state=closed") == ["h-late"]


def test_open_alerts_keep_coming_from_the_stage(history: World) -> None:
    assert ids(history, "staff-east", "state=open") == ["a-east", "a-east-low"]
    assert ids(history, "staff-east", "state=open&resident=r-3") == ["a-east-low"]
    done = history.client.post("/api/alerts/a-east/resolve", headers=history.headers("staff-east"))
    assert done.status_code == 200
    assert "a-east" not in ids(history, "staff-east", "")


def test_the_teams_an_alert_reached_follow_every_write(world: World) -> None:
    """trygg.alert_reach (migration 0017) is derived from trygg.alerts by triggers: after
    opening, escalating, closing, deleting and truncating it is what the alerts say."""
    derived = ("SELECT DISTINCT t, a.alert_id, a.state, a.closed_at FROM trygg.alerts a,"
               " unnest(array_append(a.teams, a.team_id)) AS t ORDER BY 1, 2")
    kept = "SELECT team_id, alert_id, state, closed_at FROM trygg.alert_reach ORDER BY 1, 2"

    def reach() -> list[tuple[object, ...]]:
        with psycopg.connect(world.url) as conn:
            rows = conn.execute(kept).fetchall()
            assert rows == conn.execute(derived).fetchall()
            return [tuple(r) for r in rows]

    opened = NOW - timedelta(minutes=5)
    alert = Alert(alert_id="reach-1", resident_id="r-1", team_id="east", kind=AlertKind.ALARM,
                  priority=Priority.HIGH, state=AlertState.OPEN, opened_at=opened, updated_at=opened,
                  teams=("east",), escalated_at=opened)
    alert, steps = lifecycle.opened(alert, "system")
    store(world, (alert, list(steps)))
    assert [r[:3] for r in reach()] == [("east", "reach-1", "open")]
    alert, steps = lifecycle.escalate(alert, opened + timedelta(seconds=30), "alarm-centre")
    store(world, (alert, list(steps)))
    assert [r[0] for r in reach()] == ["alarm-centre", "east"]
    alert, steps = lifecycle.resolve(alert, "operator", opened + timedelta(minutes=2), "ok")
    store(world, (alert, list(steps)))
    assert {(r[0], r[2]) for r in reach()} == {("alarm-centre", "resolved"), ("east", "resolved")}
    assert all(r[3] is not None for r in reach())
    store(world, closed_alert("reach-2", "r-3", "west", closed_ago=timedelta(hours=1)))
    with psycopg.connect(world.url) as conn:  # as the owner: the application role never deletes
        conn.execute("DELETE FROM trygg.alerts WHERE alert_id = 'reach-1'")
    assert [r[:2] for r in reach()] == [("west", "reach-2")]
    with psycopg.connect(world.url) as conn:
        conn.execute("TRUNCATE trygg.alerts CASCADE")
    assert reach() == []
