"""The API as staff, relatives and researchers reach it: a registry with teams, residents
and one user per role, stored events, the real alert service behind the dashboard's alerts
port (tests/service_alerts.py), and the app served by uvicorn on a free loopback
port (real HTTP, so streaming and client addresses behave as in production).

The app connects as the least-privileged role `trygg_app` (storage/migrations/0006_roles.sql),
so the tests that use it also prove that role is enough to serve the API. Fixtures `world`
(a world of its own for one test) and `shared_world` (one per test module)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg.types.json import Jsonb

from composition.runtime import open_pool
from dashboard import AlertsPort, StageAlerts, create_app
from dashboard.auth import hash_password
from storage import AlertStore
from storage.registry_store import save_registry
from storage.users_store import upsert_user
from tests.fix_db import create_database, drop_database
from tests.helpers import alert_doc, wait_for
from tests.registry_documents import api_registry_yaml
from tests.service_alerts import ServiceAlerts
from trygg.alert import Alert, Transition
from trygg.registry import parse_registry
from trygg.settings import Settings

PASSWORD = "correct horse battery"
#: what a browser sends with a form posted from Trygg's own page (POST /login needs it)
OUR_PAGE = {"Sec-Fetch-Site": "same-origin"}
SESSION_SECRET = "test-session-secret-0123456789"
PSEUDONYM_KEY = "test-pseudonym-key-0123456789"

#: Three teams, residents r-1..r-7 with consents, one user per role (tests/data/registry.yaml).
REGISTRY_YAML = api_registry_yaml()

#: One user of each kind the authorization matrix asks with.
USERS = ("admin", "operator", "staff-east", "staff-west", "relative-1", "relative-2", "researcher")
#: Staff of the escalation team.
CENTRE = "staff-centre"

#: Strings that must never appear in a refusal: names and ids of residents, positions.
SECRETS = ("Kari", "Nordmann", "Ola", "Vestmann", "r-1", "r-2", "59.91", "10.75", "d-1-")


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)


def settings(data_dir: Path | None = None) -> Settings:
    """Test settings; the data dir (where the audit journal lives) is a fresh temporary
    one unless given."""
    return Settings(session_secret=SESSION_SECRET, pseudonym_key=PSEUDONYM_KEY,  # type: ignore[arg-type]
                    database_url=None, mqtt_url=None,
                    data_dir=data_dir or Path(tempfile.mkdtemp(prefix="trygg-api-")))


def as_app_role(url: str) -> str:
    """The same database, but every session runs as role trygg_app."""
    return psycopg.conninfo.make_conninfo(url, options="-c role=trygg_app")


def alerts_at_start() -> ServiceAlerts:
    """The alert service with three unresolved alerts: two of team east, one of west."""
    return ServiceAlerts(parse_registry(REGISTRY_YAML), at_start=[
        alert_doc("a-east", "r-1", "east"), alert_doc("a-west", "r-2", "west"),
        alert_doc("a-east-low", "r-3", "east", kind="battery_low", priority="low")])


def seed(url: str, now: datetime) -> None:
    """Registry, users with passwords, events and device status."""
    reg = parse_registry(REGISTRY_YAML)
    with psycopg.connect(url) as conn:
        save_registry(conn, reg, actor="test")
        for user in reg.users:
            upsert_user(conn, user.username, user.role, user.teams, user.residents, password_hash())
        rows = []
        for rid, n in (("r-1", 1), ("r-2", 2), ("r-3", 3)):
            for i in range(3):
                ts = now - timedelta(hours=3 - i)
                rows.append((f"d-{n}-alarm", f"hb-{i}", rid, "heartbeat", ts, ts, Jsonb({"battery_pct": 80})))
            ts = now - timedelta(minutes=30)
            rows.append((f"d-{n}-gps", "loc-1", rid, "location", ts, ts,
                         Jsonb({"lat": 59.913912, "lon": 10.752245, "accuracy_m": 12})))
        ts = now - timedelta(minutes=20)
        rows.append(("d-1-lock", "lock-1", "r-1", "door.unlocked", ts, ts, Jsonb({"by": "staff-east"})))
        conn.cursor().executemany(
            "INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
        conn.execute("INSERT INTO trygg.device_status (device_id, online, status_at, last_seen)"
                     " VALUES ('d-1-alarm', true, %s, %s)", (now, now - timedelta(minutes=1)))


@dataclass
class World:
    url: str
    app: FastAPI
    client: httpx.Client
    alerts: ServiceAlerts
    tokens: dict[str, str]

    def headers(self, user: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}

    def audit_stored(self, timeout: float = 10.0) -> None:
        """Wait until the app's audit journal is all in trygg.audit_log (the flusher
        copies rows a moment after they were recorded)."""
        journal = self.app.state.trygg.audit
        assert wait_for(lambda: journal.pending_bytes, lambda n: n == 0, timeout=timeout, interval=0.005) == 0

    def audit_rows(self) -> list[tuple[Any, ...]]:
        """trygg.audit_log's rows as (actor, role, resident_id, action), once the
        journal is stored."""
        self.audit_stored()
        with psycopg.connect(self.url) as conn:
            return conn.execute("SELECT actor, role, resident_id, action FROM trygg.audit_log ORDER BY id"
                                ).fetchall()


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` with uvicorn in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            ws="none", http="h11", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def make_world(url: str, alerts: AlertsPort | None = None, **app_options: Any) -> Iterator[World]:
    """A seeded database, an app connected as trygg_app (its alerts port: `alerts`, or
    the real alert service with `alerts_at_start`), a running client, tokens."""
    seed(url, datetime.now(UTC))
    service = alerts_at_start()
    port = alerts if alerts is not None else StageAlerts(service)
    with tempfile.TemporaryDirectory(prefix="trygg-api-") as data_dir:
        app = create_app(settings(Path(data_dir)), as_app_role(url), port, **app_options)
        expires = int(time.time()) + 3600
        signer = app.state.trygg.signer
        tokens = {u: signer.issue(u, password_hash(), "api", expires) for u in (*USERS, CENTRE)}
        with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
            yield World(url, app, client, service, tokens)


@pytest.fixture
def world(database: str) -> Iterator[World]:
    """A world of its own for one test."""
    with make_world(database) as w:
        yield w


@pytest.fixture(scope="module")
def shared_world(pg_admin_url: str) -> Iterator[World]:
    """One world for a whole module of read-mostly tests (the authorization matrix)."""
    url = create_database(pg_admin_url)
    try:
        with make_world(url) as w:
            yield w
    finally:
        drop_database(pg_admin_url, url)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- research and alert streams ----------------------------------------------------


def hmac_hex(resident_id: str) -> str:
    return hmac.new(PSEUDONYM_KEY.encode(), resident_id.encode(), hashlib.sha256).hexdigest()


#: Values for NOT NULL columns of trygg.alerts the tests do not care about (the alerts
#: stage owns that table and may add columns).
_FILLERS = {"jsonb": Jsonb({}), "ARRAY": [], "integer": 0, "bigint": 0, "text": "", "boolean": False,
            "double precision": 0.0, "timestamp with time zone": datetime(2026, 11, 18, 12, 0, tzinfo=UTC)}


def insert_alert(conn: psycopg.Connection[tuple[object, ...]], values: dict[str, object]) -> None:
    required = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'trygg'"
        " AND table_name = 'alerts' AND is_nullable = 'NO' AND column_default IS NULL").fetchall()
    row = dict(values)
    for name, data_type in required:
        row.setdefault(name, _FILLERS[data_type])
    names = list(row)
    conn.execute(f"INSERT INTO trygg.alerts ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
                 .encode(), [row[n] for n in names])


def give_location_basis(w: World, residents: tuple[str, ...]) -> None:
    """Every resident of the test registry consents to research; `residents` have a
    valid location basis, the others none."""
    with psycopg.connect(w.url) as conn:
        conn.execute("UPDATE trygg.residents SET consents = consents || '{\"research\": true}'::jsonb,"
                     " location_basis = NULL")
        conn.execute("UPDATE trygg.residents SET location_basis = %s WHERE id = ANY(%s)",
                     (Jsonb({"kind": "vedtak", "valid_until": "2099-12-31"}), list(residents)))


def as_research_role(url: str) -> str:
    return psycopg.conninfo.make_conninfo(url, options="-c role=trygg_research")


class EventStream:
    """Reads an SSE response on a thread; lines arrive on a queue."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response: httpx.Response) -> None:
        try:
            for line in response.iter_lines():
                self.lines.put(line)
        except httpx.HTTPError:
            pass

    def next_event(self, timeout: float = 5.0) -> tuple[str, str]:
        """The next comment (`(':', text)`) or event (`(name, data)`)."""
        name, data = "", []
        while True:
            line = self.lines.get(timeout=timeout)
            if line.startswith(":"):
                return ":", line[1:].strip()
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and name:
                return name, "\n".join(data)

    def alerts(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        found = []
        while len(found) < count:
            name, data = self.next_event(timeout)
            if name == "alert":
                found.append(json.loads(data))
        return found


@contextlib.contextmanager
def stream(w: World, user: str) -> Iterator[EventStream]:
    with httpx.Client(base_url=str(w.client.base_url), timeout=10) as client, client.stream(
            "GET", "/api/alerts/stream", headers=w.headers(user)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)


def store_alerts(url: str, *written: tuple[Alert, list[Transition]]) -> None:
    """Write alerts and their transitions as the alert stage's writer does, as the
    application role (whose writes keep trygg.alert_reach through the triggers of
    migration 0017)."""
    with open_pool(as_app_role(url), 1) as pool:
        alert_store = AlertStore(pool)
        try:
            alert_store.write([a for a, _ in written], [t for _, steps in written for t in steps])
        finally:
            alert_store.close()
