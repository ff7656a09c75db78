"""Alert routes: list filters, acknowledge/resolve with 409 on illegal steps, the SSE
stream with pings and per-team delivery, and the app without an alert stage."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from dashboard.deps import StageAlerts
from tests.fix_api import REGISTRY_YAML, EventStream, World, make_world, password_hash, stream
from tests.helpers import alert_doc, wait_for
from tests.service_alerts import ServiceAlerts
from trygg.alert import Alert
from trygg.registry import parse_registry

pytestmark = pytest.mark.integration


#: An alert in the API and the live stream: the contract's alert JSON and `teams` (docs/api.md).
ALERT_FIELDS = {"alert_id", "resident_id", "team_id", "kind", "priority", "state", "opened_at", "updated_at",
                "event_count", "trigger", "last_event", "location", "escalation_level", "acknowledged_by",
                "resolved_by", "note", "teams"}


def test_an_alert_shows_the_contract_fields_and_its_teams(world: World) -> None:
    listed = world.client.get("/api/alerts?team=east", headers=world.headers("operator")).json()
    assert [set(a) for a in listed] == [ALERT_FIELDS, ALERT_FIELDS]
    assert {(a["alert_id"], tuple(a["teams"])) for a in listed} == {("a-east", ("east",)), ("a-east-low", ("east",))}
    assert listed[0]["opened_at"].endswith("Z")
    ack = world.client.post("/api/alerts/a-east/ack", headers=world.headers("staff-east")).json()
    assert set(ack) == ALERT_FIELDS


def test_acknowledge_then_resolve(world: World) -> None:
    client, staff = world.client, world.headers("staff-east")
    ack = client.post("/api/alerts/a-east/ack", headers=staff)
    assert ack.status_code == 200
    assert (ack.json()["state"], ack.json()["acknowledged_by"]) == ("acknowledged", "staff-east")
    again = client.post("/api/alerts/a-east/ack", headers=world.headers("operator"))
    assert (again.status_code, again.json()) == (409, {"detail": "the alert is already acknowledged"})
    done = client.post("/api/alerts/a-east/resolve", headers=staff, json={"note": "Kari was fine, pendant fell"})
    assert done.status_code == 200
    assert (done.json()["state"], done.json()["note"]) == ("resolved", "Kari was fine, pendant fell")
    late = client.post("/api/alerts/a-east/ack", headers=staff)
    assert (late.status_code, late.json()) == (409, {"detail": "the alert is resolved; it cannot be acknowledged"})
    assert client.post("/api/alerts/a-east/resolve", headers=staff).status_code == 409


def test_resolve_straight_from_open_without_a_body(world: World) -> None:
    response = world.client.post("/api/alerts/a-east-low/resolve", headers=world.headers("staff-east"))
    assert response.status_code == 200
    assert response.json()["note"] is None


@pytest.mark.parametrize(("path", "body"), [
    ("/api/alerts/a-east/resolve", {"note": "x" * 2001}),
    ("/api/alerts/a-east/resolve", {"note": "ok", "extra": 1}),
    ("/api/alerts/a-east/resolve", {"note": 17}),
    ("/api/alerts/a%20east/ack", None),
    ("/api/alerts/" + "a" * 65 + "/ack", None),
])
def test_bad_input_is_422(world: World, path: str, body: dict[str, Any] | None) -> None:
    response = world.client.post(path, headers=world.headers("staff-east"), json=body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("note", [rb'"\ud800"', rb'"on the floor \u0000"'])
def test_a_note_postgresql_could_not_store_is_422_and_the_alert_stays_open(world: World, note: bytes) -> None:
    """A lone surrogate or NUL would be journaled and then refused by PostgreSQL: the
    transition would never be stored. It is refused up front with a message instead."""
    response = world.client.post("/api/alerts/a-east/resolve", content=b'{"note": ' + note + b"}",
                                 headers={**world.headers("staff-east"), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert "note" in response.json()["detail"][0]["loc"]
    done = world.client.post("/api/alerts/a-east/resolve", headers=world.headers("staff-east"),
                             json={"note": "Besøkt, alt vel"})
    assert (done.status_code, done.json()["state"]) == (200, "resolved"), "the refused note changed the alert"
    assert response.json()["detail"][0]["msg"]


def test_list_filters(world: World) -> None:
    client, op = world.client, world.headers("operator")
    client.post("/api/alerts/a-west/ack", headers=op)
    acked = client.get("/api/alerts?state=acknowledged", headers=op).json()
    assert [a["alert_id"] for a in acked] == ["a-west"]
    east = client.get("/api/alerts?team=east", headers=op).json()
    assert {a["alert_id"] for a in east} == {"a-east", "a-east-low"}
    assert client.get("/api/alerts?since=2099-01-01T00:00:00Z", headers=op).json() == []
    for bad in ("state=finished", "since=tomorrow", "team=east%20west", "since=9999-12-31T23:59:59-23:59"):
        response = client.get(f"/api/alerts?{bad}", headers=op)
        assert response.status_code == 422, bad


@pytest.fixture
def fast_world(database: str) -> Iterator[World]:
    with make_world(database, sse_ping_s=0.2) as w:
        yield w


def test_stream_pushes_changes_of_the_callers_teams_and_pings(fast_world: World) -> None:
    w = fast_world
    with stream(w, "staff-east") as east, stream(w, "operator") as everyone:
        assert east.next_event() == (":", "connected")
        assert east.next_event() == (":", "ping")  # within 0.2 s of silence
        assert w.client.post("/api/alerts/a-west/ack", headers=w.headers("staff-west")).status_code == 200
        assert w.client.post("/api/alerts/a-east/ack", headers=w.headers("operator")).status_code == 200
        (change,) = east.alerts(1)
        assert (change["alert_id"], change["state"], change["acknowledged_by"]) == (
            "a-east", "acknowledged", "operator")
        assert set(change) == ALERT_FIELDS
        assert {a["alert_id"] for a in everyone.alerts(2)} == {"a-west", "a-east"}
        w.alerts.put(alert_doc("a-new", "r-1", "east", kind="smoke", priority="critical"))
        (new,) = east.alerts(1)
        assert (new["alert_id"], new["kind"]) == ("a-new", "smoke")
    stream_rows = [r for r in w.audit_rows() if r[3] == "GET /api/alerts/stream"]
    # one row per resident per connection: r-1 twice for east (two alerts), once for the operator
    assert sorted((r[0], r[2]) for r in stream_rows) == [
        ("operator", "r-1"), ("operator", "r-2"), ("staff-east", "r-1")]


@pytest.mark.serial
def test_stream_ends_with_reset_at_once_when_the_server_closes(database: str) -> None:
    with make_world(database, sse_ping_s=30) as w, stream(w, "staff-east") as east:
        assert east.next_event() == (":", "connected")
        assert wait_for(lambda: len(w.alerts.subscribers), lambda n: n == 1) == 1
        loop = w.alerts.loop
        assert loop is not None
        started = time.monotonic()
        loop.call_soon_threadsafe(w.app.state.trygg.closing.set)
        assert east.next_event() == ("reset", "{}")
        assert time.monotonic() - started < 2  # not at the next ping, 30 s later


def test_stream_ends_with_reset_when_the_subscription_ends(fast_world: World) -> None:
    class EndingSubscription:
        def __init__(self, wake: Callable[[], None]) -> None:
            self.changes = [alert_doc("a-last", "r-1", "east")]
            asyncio.get_running_loop().call_later(0.1, wake)

        def get_nowait(self) -> Alert:
            if not self.changes:
                raise RuntimeError("subscriber dropped")
            return self.changes.pop()

        def close(self) -> None:
            pass

    class Ending(ServiceAlerts):
        def subscribe(self, teams: frozenset[str] | None = None, *,  # type: ignore[override]
                      wake: Callable[[], None] | None = None) -> Any:
            assert wake is not None
            return EndingSubscription(wake)

    fast_world.app.state.trygg.alerts = StageAlerts(Ending(parse_registry(REGISTRY_YAML)))
    with stream(fast_world, "staff-east") as east:
        assert east.alerts(1)[0]["alert_id"] == "a-last"
        assert east.next_event() == ("reset", "{}")


def test_without_an_alert_stage(database: str) -> None:
    """`trygg dashboard` alone: alert routes answer 503; the status reads stored alerts."""
    with make_world(database) as w:
        w.app.state.trygg.alerts = None
        assert w.client.get("/api/alerts", headers=w.headers("operator")).status_code == 503
        assert w.client.post("/api/alerts/a-east/ack", headers=w.headers("operator")).status_code == 503
        assert w.client.get("/api/alerts", headers=w.headers("relative-1")).status_code == 403
        status = w.client.get("/api/residents/r-1/status", headers=w.headers("relative-1")).json()
        assert (status["state"], status["open_alerts"]) == ("ok", [])
        from tests.fix_api import insert_alert

        with psycopg.connect(w.url) as conn:
            insert_alert(conn, {"alert_id": "a-stored", "resident_id": "r-1", "team_id": "east", "kind": "fall",
                                "priority": "high", "state": "acknowledged", "opened_at": "2026-11-20T10:00:00Z",
                                "updated_at": "2026-11-20T10:01:00Z"})
        status = w.client.get("/api/residents/r-1/status", headers=w.headers("relative-1")).json()
        assert status["state"] == "alert"
        assert status["open_alerts"] == [{"kind": "fall", "summary": "A possible fall was detected",
                                          "being_handled": True, "opened_at": "2026-11-20T10:00:00Z"}]


def test_the_alert_stage_adapter(database: str) -> None:
    """StageAlerts over the real AlertStage before it runs: reads work, changes are 503."""
    stage_module = pytest.importorskip("alerts.stage")
    stage = stage_module.AlertStage(parse_registry(REGISTRY_YAML))
    with make_world(database, alerts=StageAlerts(stage)) as w:
        assert w.client.get("/api/alerts", headers=w.headers("operator")).json() == []
        response = w.client.post("/api/alerts/a-east/ack", headers=w.headers("operator"))
        assert response.status_code in (404, 503)
        status = w.client.get("/api/residents/r-1/status", headers=w.headers("staff-east"))
        assert status.status_code == 200 and status.json()["open_alerts"] == []


@pytest.mark.serial
def test_a_change_reaches_the_console_while_the_loop_is_still_busy_after_it(fast_world: World) -> None:
    """The stream writes a change in the call that offered it (no task to wake at the
    end of the loop's turn): the console has the alert while the server's loop is still
    busy with whatever came after the change."""
    w = fast_world
    with stream(w, "staff-east") as east:
        assert east.next_event() == (":", "connected")
        wait_for(lambda: len(w.alerts.subscribers), lambda n: n == 1)

        def change_then_busy() -> None:
            w.alerts.put(alert_doc("a-now", "r-1", "east", kind="smoke", priority="critical"))
            time.sleep(1.5)  # the rest of the loop's turn: heartbeats, motion, a database batch …

        loop = w.alerts.loop
        assert loop is not None
        started = time.monotonic()
        loop.call_soon_threadsafe(change_then_busy)
        name, data = east.next_event(timeout=1.0)
        arrived = time.monotonic() - started
        assert (name, json.loads(data)["alert_id"]) == ("alert", "a-now")
        assert arrived < 1.0, f"the alert came after the loop's busy turn ({arrived:.2f} s)"


def test_a_console_that_reads_slowly_gets_every_change_in_order(fast_world: World,
                                                                 request: pytest.FixtureRequest) -> None:
    """While the console does not read, its socket and the server's buffers fill and the
    stream's writes wait; changes made meanwhile are held, none lost, none reordered."""
    w = fast_world
    host, port = httpx.URL(str(w.client.base_url)).host, httpx.URL(str(w.client.base_url)).port
    sock = socket.socket()
    request.addfinalizer(sock.close)  # also when an assertion below fails
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # a console on a slow link
    sock.connect((host, port))
    token = w.tokens["staff-east"]
    sock.sendall(f"GET /api/alerts/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    (sub,) = wait_for(lambda: list(w.alerts.subscribers), lambda subs: len(subs) == 1)
    notes = 250
    for n in range(notes):  # 7.5 MB of alerts: more than the kernel's buffers (4 MiB at most) hold
        w.alerts.put(dataclasses.replace(alert_doc(f"a-{n}", "r-1", "east"), note=f"{n:04d} " + "x" * 30_000))
    console = sub.wake.__self__  # type: ignore[attr-defined]  # the stream the feed wakes
    # The console reads nothing yet: once the kernel's buffers are full (about 4 MiB here,
    # how much exactly depends on the kernel's tuning) a write waits for it, and every
    # change after it waits in the subscription (if any are left to offer).
    assert wait_for(lambda: console._sending, lambda writing: writing is not None, timeout=10) is not None, \
        "the buffers took everything: this test did not make a write wait for the console"
    received = b""
    sock.settimeout(10)
    deadline = time.monotonic() + 20
    with sock:
        while received.count(b"event: alert") < notes:  # pings keep coming: a deadline, not a read timeout
            assert time.monotonic() < deadline, f"{received.count(b'event: alert')} of {notes} alerts arrived"
            chunk = sock.recv(65536)
            assert chunk, "the stream ended early"
            received += chunk
    ids = re.findall(rb"^id: (a-\d+)\r?$", received.replace(b"\r\n", b"\n"), re.MULTILINE)
    assert [i.decode() for i in ids] == [f"a-{n}" for n in range(notes)]


def test_the_stream_ends_with_expired_when_the_session_runs_out(fast_world: World) -> None:
    w = fast_world
    signer = w.app.state.trygg.signer
    token = signer.issue("staff-east", password_hash(), "api", int(time.time()) + 2)
    with httpx.Client(base_url=str(w.client.base_url), timeout=10) as client, client.stream(
            "GET", "/api/alerts/stream", headers={"Authorization": f"Bearer {token}"}) as response:
        events = EventStream(response)
        seen = [events.next_event() for _ in range(3)]
        while seen[-1][0] != "expired":
            seen.append(events.next_event(timeout=4))
        assert seen[0] == (":", "connected")
        assert json.loads(seen[-1][1]) == {"detail": "the session expired; sign in again"}
