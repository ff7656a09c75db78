"""The authorization matrix of docs/contract.md#6-http-api-and-pages: every route × every kind of caller.

403 when the role may never use the route; 404 — with the very body of a resident or
alert that does not exist — when the object is not the caller's; 401 for anonymous
callers. No refusal carries a resident's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fix_api import CENTRE, REGISTRY_YAML, SECRETS, USERS, World
from tests.helpers import alert_doc

pytestmark = pytest.mark.integration

CALLERS = (*USERS, None)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    expect: dict[str | None, int]
    body: dict[str, Any] | None = None
    content: str | None = None
    stream: bool = False


def row(admin: int, operator: int, staff_east: int, staff_west: int, relative_1: int, relative_2: int,
        researcher: int, anonymous: int) -> dict[str | None, int]:
    return dict(zip(CALLERS, (admin, operator, staff_east, staff_west, relative_1, relative_2, researcher,
                              anonymous), strict=True))


ROUTES = [
    Route("alerts.list", "GET", "/api/alerts", row(200, 200, 200, 200, 403, 403, 403, 401)),
    Route("alerts.stream", "GET", "/api/alerts/stream", row(403, 200, 200, 200, 403, 403, 403, 401), stream=True),
    Route("alerts.ack", "POST", "/api/alerts/a-east/ack", row(403, 200, 200, 404, 403, 403, 403, 401)),
    Route("alerts.resolve", "POST", "/api/alerts/a-east/resolve", row(403, 200, 200, 404, 403, 403, 403, 401),
          body={"note": "visited, all well"}),
    Route("alerts.ack-missing", "POST", "/api/alerts/a-nope/ack", row(403, 404, 404, 404, 403, 403, 403, 401)),
    Route("residents.list", "GET", "/api/residents", row(200, 200, 200, 200, 403, 403, 403, 401)),
    Route("resident.events", "GET", "/api/residents/r-1/events", row(200, 200, 200, 404, 404, 404, 404, 401)),
    Route("resident.events-missing", "GET", "/api/residents/r-404/events",
          row(404, 404, 404, 404, 404, 404, 404, 401)),
    Route("resident.status", "GET", "/api/residents/r-1/status", row(200, 200, 200, 404, 200, 404, 404, 401)),
    Route("resident.status-no-consent", "GET", "/api/residents/r-2/status",
          row(200, 200, 404, 200, 404, 404, 404, 401)),
    Route("resident.status-missing", "GET", "/api/residents/r-404/status",
          row(404, 404, 404, 404, 404, 404, 404, 401)),
    Route("resident.card", "GET", "/api/residents/r-1/card", row(200, 200, 200, 404, 404, 404, 404, 401)),
    Route("resident.card-missing", "GET", "/api/residents/r-404/card", row(404, 404, 404, 404, 404, 404, 404, 401)),
    Route("alerts.closed", "GET", "/api/alerts?state=closed", row(200, 200, 200, 200, 403, 403, 403, 401)),
    Route("teams", "GET", "/api/teams", row(200, 200, 200, 200, 403, 403, 403, 401)),
    Route("devices.health", "GET", "/api/devices/health", row(200, 200, 200, 200, 403, 403, 403, 401)),
    Route("shift", "GET", "/api/shift?hours=8", row(200, 200, 200, 200, 403, 403, 403, 401)),
    Route("shift.csv", "GET", "/api/shift.csv?hours=8", row(200, 200, 200, 200, 403, 403, 403, 401)),
    Route("admin.residents", "GET", "/api/admin/residents", row(200, 403, 403, 403, 403, 403, 403, 401)),
    Route("admin.users", "GET", "/api/admin/users", row(200, 403, 403, 403, 403, 403, 403, 401)),
    Route("admin.changes", "GET", "/api/admin/changes", row(200, 403, 403, 403, 403, 403, 403, 401)),
    Route("research.events", "GET", "/api/research/events", row(403, 403, 403, 403, 403, 403, 200, 401)),
    Route("research.response-times", "GET", "/api/research/response-times",
          row(403, 403, 403, 403, 403, 403, 200, 401)),
    Route("research.export", "GET", "/api/research/export?format=csv", row(403, 403, 403, 403, 403, 403, 200, 401)),
    Route("registry.get", "GET", "/api/registry", row(200, 403, 403, 403, 403, 403, 403, 401)),
    Route("registry.put", "PUT", "/api/registry", row(200, 403, 403, 403, 403, 403, 403, 401),
          content=REGISTRY_YAML),
    Route("audit", "GET", "/api/audit?resident_id=r-1", row(200, 403, 403, 403, 403, 403, 403, 401)),
    Route("audit.csv", "GET", "/api/audit.csv?resident_id=r-1", row(200, 403, 403, 403, 403, 403, 403, 401)),
    Route("auth.me", "GET", "/api/auth/me", row(200, 200, 200, 200, 200, 200, 200, 401)),
    Route("healthz", "GET", "/healthz", row(200, 200, 200, 200, 200, 200, 200, 200)),
]

CASES = [pytest.param(route, caller, id=f"{route.name}-{caller or 'anonymous'}")
         for route in ROUTES for caller in CALLERS]


@pytest.fixture
def matrix_world(shared_world: World) -> Iterator[World]:
    shared_world.alerts.reset()
    yield shared_world


def call(world: World, route: Route, caller: str | None) -> tuple[int, str]:
    headers = world.headers(caller)
    if route.content is not None:
        headers["Content-Type"] = "application/yaml"
    if route.stream:
        with world.client.stream(route.method, route.path, headers=headers) as response:
            text = "" if response.status_code == 200 else response.read().decode()
            return response.status_code, text
    response = world.client.request(route.method, route.path, headers=headers, json=route.body,
                                    content=route.content)
    return response.status_code, response.text


@pytest.mark.parametrize(("route", "caller"), CASES)
def test_matrix(matrix_world: World, route: Route, caller: str | None) -> None:
    status, text = call(matrix_world, route, caller)
    assert status == route.expect[caller], text
    if status >= 400:
        for secret in SECRETS:
            assert secret not in text, f"refusal of {route.name} to {caller} leaks {secret!r}: {text}"
    if status == 404:
        assert text == '{"detail":"not found"}'


def test_staff_list_shows_own_teams_only(matrix_world: World) -> None:
    east = matrix_world.client.get("/api/alerts", headers=matrix_world.headers("staff-east")).json()
    west = matrix_world.client.get("/api/alerts", headers=matrix_world.headers("staff-west")).json()
    everyone = matrix_world.client.get("/api/alerts", headers=matrix_world.headers("operator")).json()
    assert {a["alert_id"] for a in east} == {"a-east", "a-east-low"}
    assert {a["alert_id"] for a in west} == {"a-west"}
    assert {a["alert_id"] for a in everyone} == {"a-east", "a-west", "a-east-low"}
    residents = matrix_world.client.get("/api/residents", headers=matrix_world.headers("staff-west")).json()
    assert [r["id"] for r in residents] == ["r-2"]


def test_staff_cannot_widen_the_team_filter(matrix_world: World) -> None:
    response = matrix_world.client.get("/api/alerts?team=west", headers=matrix_world.headers("staff-east"))
    assert response.status_code == 200
    assert response.json() == []
    response = matrix_world.client.get("/api/residents?team=west", headers=matrix_world.headers("staff-east"))
    assert response.json() == []


def test_escalation_team_staff_may_act_on_an_escalated_alert(matrix_world: World) -> None:
    client = matrix_world.client
    assert client.post("/api/alerts/a-east/ack", headers=matrix_world.headers(CENTRE)).status_code == 404
    matrix_world.alerts.put(alert_doc("a-esc", "r-1", "east", teams=["east", "alarm-centre"]))
    listed = client.get("/api/alerts", headers=matrix_world.headers(CENTRE)).json()
    assert [a["alert_id"] for a in listed] == ["a-esc"]
    response = client.post("/api/alerts/a-esc/ack", headers=matrix_world.headers(CENTRE))
    assert response.status_code == 200
    assert response.json()["acknowledged_by"] == CENTRE
    # ... but the resident's timeline stays with the resident's own team.
    assert client.get("/api/residents/r-1/events", headers=matrix_world.headers(CENTRE)).status_code == 404
