"""Shared set-up of the API tests: a registry with teams, residents and one user per
role, stored events, the real alert service behind the dashboard's alerts port
(tests/service_alerts.py), and the app served by uvicorn on a free loopback port (real
HTTP, so streaming and client addresses behave as in production).

The other tests/test_api_*.py modules import the fixtures from here. The app connects
as the least-privileged role `trygg_app` (storage/migrations/0006_roles.sql), so these
tests also prove that role is enough to serve the API.
"""

from __future__ import annotations

import contextlib
import functools
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

from dashboard import AlertsPort, StageAlerts, create_app
from dashboard.auth import hash_password
from storage.registry_store import save_registry
from storage.users_store import upsert_user
from tests.fix_db import create_database, drop_database
from tests.helpers import wait_for
from tests.service_alerts import ServiceAlerts
from trygg.alert import Alert
from trygg.contract import AlertKind, AlertState, Priority
from trygg.registry import parse_registry
from trygg.settings import Settings

PASSWORD = "correct horse battery"
#: what a browser sends with a form posted from Trygg's own page (POST /login needs it)
OUR_PAGE = {"Sec-Fetch-Site": "same-origin"}
SESSION_SECRET = "test-session-secret-0123456789"
PSEUDONYM_KEY = "test-pseudonym-key-0123456789"

REGISTRY_YAML = """
teams:
  - {id: east, name: "Hjemmetjenesten Øst", escalate_to: alarm-centre}
  - {id: west, name: "Hjemmetjenesten Vest", escalate_to: alarm-centre}
  - {id: alarm-centre, name: "Trygghetsalarmsentralen"}
residents:
  - id: r-1
    name: "Kari Nordmann"
    team: east
    consents: {research: true, relatives_status: true, relatives_location: true}
    location_basis: {kind: vedtak, valid_until: "2099-12-31"}
    safe_zones:
      - {name: home, lat: 59.9139, lon: 10.7522, radius_m: 300}
    devices:
      - {id: d-1-alarm, kind: alarm_unit}
      - {id: d-1-gps, kind: gps_tracker}
      - {id: d-1-motion, kind: motion_sensor}
      - {id: d-1-lock, kind: door_lock}
  - id: r-2
    name: "Ola Vestmann"
    team: west
    consents: {research: false, relatives_status: false}
    devices:
      - {id: d-2-alarm, kind: alarm_unit}
      - {id: d-2-gps, kind: gps_tracker}
  - id: r-3
    name: "Per Utenposisjon"
    team: east
    consents: {research: true, relatives_status: true, relatives_location: true}
    devices:
      - {id: d-3-alarm, kind: alarm_unit}
      - {id: d-3-gps, kind: gps_tracker}
  - {id: r-4, name: "Anna Fire", team: east, consents: {research: true}, devices: [{id: d-4-alarm, kind: alarm_unit}]}
  - {id: r-5, name: "Berit Fem", team: east, consents: {research: true}, devices: [{id: d-5-alarm, kind: alarm_unit}]}
  - {id: r-6, name: "Cato Seks", team: east, consents: {research: true}, devices: [{id: d-6-alarm, kind: alarm_unit}]}
  - {id: r-7, name: "Dina Sju", team: east, consents: {research: false}, devices: [{id: d-7-alarm, kind: alarm_unit}]}
users:
  - {username: admin, role: admin}
  - {username: operator, role: operator}
  - {username: staff-east, role: staff, teams: [east]}
  - {username: staff-west, role: staff, teams: [west]}
  - {username: relative-1, role: relative, residents: [r-1]}
  - {username: relative-2, role: relative, residents: [r-2]}
  - {username: researcher, role: researcher}
  - {username: staff-centre, role: staff, teams: [alarm-centre]}
"""

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


# --- the alerts: the real lifecycle, no broker, no database -----------------------------


def alert_doc(alert_id: str, resident_id: str, team_id: str, kind: str = "fall", priority: str = "high",
              state: str = "open", teams: list[str] | None = None) -> Alert:
    """An alert as the rules raise it (with `teams`: as it is after escalating)."""
    now = datetime.now(UTC)
    ref = {"device_id": f"d-{resident_id[2:]}-alarm", "event_id": "e-1", "type": "fall.detected",
           "ts": now.isoformat(), "received_at": now.isoformat()}
    return Alert(alert_id=alert_id, resident_id=resident_id, team_id=team_id, kind=AlertKind(kind),
                 priority=Priority(priority), state=AlertState(state), opened_at=now, updated_at=now,
                 trigger=ref, last_event=ref, teams=tuple(teams or [team_id]), escalated_at=now,
                 escalation_level=len(teams or [team_id]) - 1)


def alerts_at_start() -> ServiceAlerts:
    """The alert service with three unresolved alerts: two of team east, one of west."""
    return ServiceAlerts(parse_registry(REGISTRY_YAML), at_start=[
        alert_doc("a-east", "r-1", "east"), alert_doc("a-west", "r-2", "west"),
        alert_doc("a-east-low", "r-3", "east", kind="battery_low", priority="low")])


# --- the world -------------------------------------------------------------------------


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

