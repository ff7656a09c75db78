"""The audit log (docs/contract.md#7-privacy-and-lawful-care): one row per read of a resident's data, durable before
the response (in the journal, then in trygg.audit_log); refusals write nothing; nobody
can change or delete a row."""

from __future__ import annotations

import csv
import io
import os
import time

import psycopg
import pytest

from tests.fix_api import World, as_app_role
from tests.fix_db import scalar

pytestmark = pytest.mark.integration


def rows_after(w: World, before: int) -> list[tuple[object, ...]]:
    return w.audit_rows()[before:]


@pytest.mark.parametrize(("user", "path"), [
    ("staff-east", "/api/residents/r-1/events"),
    ("operator", "/api/residents/r-1/events?since=2020-01-01T00:00:00Z"),
    ("staff-east", "/api/residents/r-1/status"),
    ("relative-1", "/api/residents/r-1/status"),
    ("admin", "/api/residents/r-1/status"),
])
def test_one_row_per_read_of_one_resident(world: World, user: str, path: str) -> None:
    before = len(world.audit_rows())
    response = world.client.get(path, headers=world.headers(user))
    assert response.status_code == 200
    role = {"staff-east": "staff", "relative-1": "relative"}.get(user, user)
    assert rows_after(world, before) == [(user, role, "r-1", f"GET {path}")]


def test_list_writes_one_row_per_resident_shown(world: World) -> None:
    before = len(world.audit_rows())
    shown = world.client.get("/api/residents", headers=world.headers("staff-east")).json()
    rows = rows_after(world, before)
    assert sorted(r[2] for r in rows) == sorted(r["id"] for r in shown) == ["r-1", "r-3", "r-4", "r-5", "r-6",
                                                                             "r-7"]
    assert {r[3] for r in rows} == {"GET /api/residents"}

    before = len(world.audit_rows())
    alerts = world.client.get("/api/alerts", headers=world.headers("operator")).json()
    assert sorted(r[2] for r in rows_after(world, before)) == sorted({a["resident_id"] for a in alerts})


def test_alert_changes_and_registry_reads_are_logged(world: World) -> None:
    before = len(world.audit_rows())
    assert world.client.post("/api/alerts/a-east/ack", headers=world.headers("staff-east")).status_code == 200
    assert rows_after(world, before) == [("staff-east", "staff", "r-1", "POST /api/alerts/a-east/ack")]
    before = len(world.audit_rows())
    assert world.client.get("/api/registry", headers=world.headers("admin")).status_code == 200
    assert len(rows_after(world, before)) == 7  # every resident in the document


@pytest.mark.parametrize(("user", "path"), [
    ("staff-west", "/api/residents/r-1/events"),
    ("relative-2", "/api/residents/r-1/status"),
    ("researcher", "/api/residents/r-1/status"),
    ("relative-1", "/api/residents"),
    (None, "/api/residents/r-1/status"),
])
def test_refusals_write_nothing(world: World, user: str | None, path: str) -> None:
    before = len(world.audit_rows())
    assert world.client.get(path, headers=world.headers(user)).status_code in (401, 403, 404)
    assert rows_after(world, before) == []


def test_admin_reads_who_accessed_a_resident(world: World) -> None:
    world.client.get("/api/residents/r-1/status", headers=world.headers("relative-1"))
    world.client.get("/api/residents/r-3/events", headers=world.headers("staff-east"))
    response = world.client.get("/api/audit?resident_id=r-1", headers=world.headers("admin"))
    assert response.status_code == 200
    entries = response.json()
    assert [(e["actor"], e["role"], e["action"]) for e in entries] == [
        ("relative-1", "relative", "GET /api/residents/r-1/status")]
    assert entries[0]["at"]


def test_no_response_without_its_audit_row(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the audit row cannot be made durable (the journal's disk fails), the data is not
    sent; once the disk works again, neither is anything lost nor half-written."""
    before = len(world.audit_rows())

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    response = world.client.get("/api/residents/r-1/status", headers=world.headers("staff-east"))
    assert response.status_code == 503
    assert "Kari" not in response.text and "59.9" not in response.text and "r-1" not in response.text
    monkeypatch.undo()

    response = world.client.get("/api/residents/r-3/status", headers=world.headers("staff-east"))
    assert response.status_code == 200
    assert rows_after(world, before) == [("staff-east", "staff", "r-3", "GET /api/residents/r-3/status")]


def test_rows_wait_in_the_journal_while_postgresql_refuses_them(world: World) -> None:
    """A database that refuses the insert does not hold up the response: the row is in the
    journal, and reaches trygg.audit_log once when the database accepts it again."""
    before = len(world.audit_rows())
    with psycopg.connect(world.url, autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON trygg.audit_log FROM trygg_app")
    try:
        response = world.client.get("/api/residents/r-1/status", headers=world.headers("staff-east"))
        assert response.status_code == 200
        assert world.client.get("/api/audit", headers=world.headers("admin")).status_code == 503
        time.sleep(0.3)
        assert world.app.state.trygg.audit.pending_bytes > 0
        assert scalar(world.url, "SELECT count(*) FROM trygg.audit_log") == before
    finally:
        with psycopg.connect(world.url, autocommit=True) as conn:
            conn.execute("GRANT INSERT ON trygg.audit_log TO trygg_app")
    assert rows_after(world, before) == [("staff-east", "staff", "r-1", "GET /api/residents/r-1/status")]


@pytest.mark.parametrize("as_app", [False, True], ids=["owner", "trygg_app"])
@pytest.mark.parametrize("statement", [
    "UPDATE trygg.audit_log SET actor = 'someone-else'",
    "DELETE FROM trygg.audit_log",
    "TRUNCATE trygg.audit_log",
])
def test_audit_rows_cannot_be_changed(world: World, statement: str, as_app: bool) -> None:
    world.client.get("/api/residents/r-1/status", headers=world.headers("staff-east"))
    before = world.audit_rows()
    assert before
    url = as_app_role(world.url) if as_app else world.url
    with psycopg.connect(url) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(statement.encode())
    expected = psycopg.errors.InsufficientPrivilege if as_app else psycopg.errors.RaiseException
    assert isinstance(caught.value, expected), caught.value
    assert world.audit_rows() == before


def test_trygg_app_may_append_and_read_audit_rows(world: World) -> None:
    with psycopg.connect(as_app_role(world.url)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("trygg_app",)
        conn.execute("INSERT INTO trygg.audit_log (actor, role, resident_id, action)"
                     " VALUES ('x', 'admin', NULL, 'test')")
        assert conn.execute("SELECT count(*) FROM trygg.audit_log WHERE actor = 'x'").fetchone() == (1,)


def test_trygg_app_creates_event_partitions_but_cannot_touch_the_trigger(world: World) -> None:
    """The gateway's start-up as trygg_app: next months' partitions are created through
    the owner's SECURITY DEFINER function; the audit trigger is out of reach."""
    with psycopg.connect(as_app_role(world.url)) as conn:
        conn.execute("SELECT trygg.ensure_event_partitions(now(), now() + interval '8 months')")
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TRIGGER audit_log_append_only ON trygg.audit_log")


def test_trygg_app_can_run_migrate_when_nothing_is_left(world: World) -> None:
    from tests.fix_db import migrate_url

    assert migrate_url(as_app_role(world.url)) == []


def test_admin_filters_the_audit_log_by_action_and_pages_back(world: World) -> None:
    for path in ("/api/residents/r-1/status", "/api/residents/r-1/events", "/api/residents/r-3/status"):
        assert world.client.get(path, headers=world.headers("staff-east")).status_code == 200
    admin = world.headers("admin")
    status = world.client.get("/api/audit?actor=staff-east&action=/status", headers=admin).json()
    assert [e["resident_id"] for e in status] == ["r-3", "r-1"]
    first = world.client.get("/api/audit?actor=staff-east&limit=2", headers=admin)
    assert [e["action"] for e in first.json()] == ["GET /api/residents/r-3/status", "GET /api/residents/r-1/events"]
    before = first.headers["X-Next-Before"]
    rest = world.client.get(f"/api/audit?actor=staff-east&limit=2&before={before}", headers=admin)
    assert [e["action"] for e in rest.json()] == ["GET /api/residents/r-1/status"]
    assert "X-Next-Before" not in rest.headers
    assert world.client.get("/api/audit?action=%25", headers=admin).json() == []  # % is a character, not a pattern
    assert world.client.get("/api/audit?action=a%00b", headers=admin).status_code == 422
    assert world.client.get("/api/audit?before=0", headers=admin).status_code == 422


def test_the_audit_csv_is_safe_in_a_spreadsheet(world: World) -> None:
    with psycopg.connect(world.url) as conn:
        conn.execute("INSERT INTO trygg.users (username, role) VALUES ('=cmd|calc', 'staff')")
        conn.execute("INSERT INTO trygg.audit_log (actor, role, resident_id, action)"
                     " VALUES ('=cmd|calc', 'staff', 'r-1', '+SUM(A1)'), ('@x', 'staff', 'r-1', '-1')")
    response = world.client.get("/api/audit.csv?resident_id=r-1", headers=world.headers("admin"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="trygg-audit-r-1.csv"'
    # The spreadsheet format of every CSV staff and admins download (dashboard/spreadsheet.py).
    assert response.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["at", "actor", "role", "resident_id", "action"]
    assert ["'=cmd|calc", "staff", "r-1", "'+SUM(A1)"] in [row[1:] for row in rows]
    assert ["'@x", "staff", "r-1", "'-1"] in [row[1:] for row in rows]
    for row in rows[1:]:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@"), row
    assert world.client.get("/api/audit.csv", headers=world.headers("operator")).status_code == 403
