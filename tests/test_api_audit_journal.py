"""The audit journal (dashboard/audit.py): audit rows are durable before the response
even while PostgreSQL is unreachable, reach trygg.audit_log once when it returns, and a
journal replayed after a crash stores each row once. The staff console's stream keeps
going through a database outage."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from composition.broker import free_port
from dashboard.audit import AuditLog
from dashboard.authz import Principal
from tests.fix_api import EventStream, World, as_app_role, make_world, stream
from tests.fix_db import PostgresInstance, scalar
from tests.helpers import alert_doc
from trygg.contract import Role

pytestmark = pytest.mark.integration


def stored(url: str, action_like: str = "%") -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT actor, resident_id, action, at, row_id FROM trygg.audit_log"
                            " WHERE action LIKE %s ORDER BY id", (action_like,)).fetchall()


def subscribed(east: EventStream) -> None:
    """Connected, and subscribed to the alert port (the first ping comes after that)."""
    assert east.next_event() == (":", "connected")
    assert east.next_event() == (":", "ping")


def next_events(east: EventStream, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
    """The next `count` events that are not pings, within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    found: list[tuple[str, str]] = []
    while len(found) < count:
        name, data = east.next_event(max(0.01, deadline - time.monotonic()))
        if name != ":":
            found.append((name, data))
    return found


def test_rows_recorded_while_the_database_is_unreachable_arrive_once(world: World) -> None:
    journal = world.app.state.trygg.audit
    journal.conninfo = f"postgresql://trygg_app@127.0.0.1:{free_port('127.0.0.1', 29400)}/nowhere"
    before = len(world.audit_rows())  # stored up to here; from now on the flusher cannot reach PostgreSQL
    for path in ("/api/residents/r-1/status", "/api/residents/r-3/events", "/api/residents/r-1/status"):
        assert world.client.get(path, headers=world.headers("staff-east")).status_code == 200
    answered = datetime.now(UTC)
    time.sleep(0.5)  # a few of the flusher's attempts
    assert journal.pending_bytes > 0
    assert scalar(world.url, "SELECT count(*) FROM trygg.audit_log") == before
    rows = journal.journal.read(journal.journal.begin, journal.journal.size).rows
    assert [(r.actor, r.resident_id) for r in rows] == [("staff-east", "r-1"), ("staff-east", "r-3"),
                                                        ("staff-east", "r-1")]

    journal.conninfo = as_app_role(world.url)  # PostgreSQL is reachable again
    assert world.audit_rows()[before:] == [
        ("staff-east", "staff", "r-1", "GET /api/residents/r-1/status"),
        ("staff-east", "staff", "r-3", "GET /api/residents/r-3/events"),
        ("staff-east", "staff", "r-1", "GET /api/residents/r-1/status"),
    ]
    rows = stored(world.url, "GET /api/residents/%")[-3:]
    assert all(row[3] <= answered for row in rows), "each row keeps the time it was recorded"
    assert len({row[4] for row in rows}) == 3
    assert journal.journal.path.stat().st_size == 0, "the journal is emptied once stored"


def test_admin_sees_rows_recorded_a_moment_ago(world: World) -> None:
    """`GET /api/audit` stores the journal before it reads, so it never lags behind."""
    journal = world.app.state.trygg.audit
    journal.conninfo = f"postgresql://trygg_app@127.0.0.1:{free_port('127.0.0.1', 29400)}/nowhere"
    assert world.client.get("/api/residents/r-3/status", headers=world.headers("relative-1")).status_code == 404
    assert world.client.get("/api/residents/r-1/status", headers=world.headers("relative-1")).status_code == 200
    entries = world.client.get("/api/audit?resident_id=r-1", headers=world.headers("admin")).json()
    assert [(e["actor"], e["action"]) for e in entries] == [("relative-1", "GET /api/residents/r-1/status")]


@pytest.mark.serial
def test_the_stream_keeps_delivering_while_postgresql_is_down(private_postgres: PostgresInstance) -> None:
    url = private_postgres.url("trygg")
    with make_world(url, sse_ping_s=0.2) as w, stream(w, "staff-east") as east:
        subscribed(east)
        w.alerts.put(alert_doc("a-before", "r-3", "east", kind="battery_low", priority="low"))
        ((name, data),) = next_events(east, 1)
        assert (name, json.loads(data)["alert_id"]) == ("alert", "a-before")
        w.audit_stored()

        private_postgres.stop()
        started = time.monotonic()
        w.alerts.put(alert_doc("a-down-1", "r-1", "east", kind="fall"))
        w.alerts.put(alert_doc("a-down-2", "r-1", "east", kind="smoke", priority="critical"))
        w.alerts.put(alert_doc("a-down-3", "r-4", "east", kind="alarm"))
        events = next_events(east, 3)
        assert [(name, json.loads(data)["alert_id"]) for name, data in events] == [
            ("alert", "a-down-1"), ("alert", "a-down-2"), ("alert", "a-down-3")]
        assert time.monotonic() - started < 2, "no waiting for the database"
        assert east.next_event() == (":", "ping")  # still connected
        assert w.app.state.trygg.audit.pending_bytes > 0

        private_postgres.start()
        rows = [(r[0], r[2]) for r in w.audit_rows() if r[3] == "GET /api/alerts/stream"]
    assert rows == [("staff-east", "r-3"), ("staff-east", "r-1"), ("staff-east", "r-4")]


def test_the_stream_sends_no_alert_whose_audit_row_cannot_be_recorded(
        database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream writes the row into the journal before the alert goes out (its fsync
    follows, shared): a journal that cannot be written means no alert on this stream."""
    def full_disk(fd: int, data: bytes | memoryview) -> int:
        raise OSError(28, "No space left on device")

    with make_world(database, sse_ping_s=0.2) as w, stream(w, "staff-east") as east:
        subscribed(east)
        monkeypatch.setattr(os, "write", full_disk)
        w.alerts.put(alert_doc("a-unlogged", "r-1", "east", kind="fall"))
        assert next_events(east, 1) == [("reset", "{}")]  # the console lists again and reconnects
        monkeypatch.undo()
        assert not any(r[3] == "GET /api/alerts/stream" for r in w.audit_rows())


def test_a_journal_replayed_after_a_crash_stores_each_row_once(database: str, tmp_path: Path) -> None:
    """A crash between the insert and emptying the journal leaves rows that are already
    stored; a journal nobody holds is taken over by the next start, however often."""
    url = as_app_role(database)
    ola = Principal("ola", Role.STAFF, frozenset({"east"}))

    async def run_once(replay: bytes | None = None) -> tuple[int, bytes]:
        if replay is not None:  # what a crashed dashboard left behind
            (tmp_path / "journal-crashed.log").write_bytes(replay + b'{"id": "torn')
        log = AuditLog(tmp_path, url)
        log.open()
        new = await log.flush()  # a start stores what earlier runs left
        snapshot = b""
        if replay is None:
            await log.record(ola, ["r-1", "r-3"], "GET /api/residents")
            await log.record(ola, [None], "GET /api/research/events")
            snapshot = log.journal.path.read_bytes()  # the journal as a crash after the insert leaves it
            new = await log.flush()
        await log.close()
        return new, snapshot

    first, snapshot = asyncio.run(run_once())
    assert first == 3
    assert asyncio.run(run_once(snapshot)) == (0, b"")
    assert asyncio.run(run_once(snapshot)) == (0, b"")
    rows = stored(database)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("ola", "r-1", "GET /api/residents"), ("ola", "r-3", "GET /api/residents"),
        ("ola", None, "GET /api/research/events")]
    assert list(tmp_path.iterdir()) == [], "every journal stored and removed"


def test_a_stop_while_the_database_is_down_leaves_the_journal_for_the_next_start(
        database: str, tmp_path: Path) -> None:
    ola = Principal("ola", Role.STAFF, frozenset({"east"}))
    nowhere = f"postgresql://trygg_app@127.0.0.1:{free_port('127.0.0.1', 29400)}/nowhere"

    async def stop_while_down() -> None:
        log = AuditLog(tmp_path, nowhere)
        log.open()
        await log.record(ola, ["r-1"], "GET /api/residents/r-1/status")
        await log.close(flush_timeout_s=1)

    async def start_again() -> None:
        log = AuditLog(tmp_path, as_app_role(database))
        log.open()
        task = asyncio.create_task(log.run())  # its first round takes over the journal left behind
        for _ in range(250):
            if len(await asyncio.to_thread(stored, database)) == 1:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        await log.close()

    asyncio.run(stop_while_down())
    assert len(list(tmp_path.iterdir())) == 1 and stored(database) == []
    asyncio.run(start_again())
    assert [(r[0], r[1]) for r in stored(database)] == [("ola", "r-1")]
    assert list(tmp_path.iterdir()) == []
