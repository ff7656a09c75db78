"""Live streams keep only the rights their user has now (dashboard/stream_rights.py):
a staff member moved from east to west, a session signed out, a token whose password
changed — each open `GET /api/alerts/stream` ends within a second of the change (the
app served by uvicorn, PostgreSQL real, changes made by `trygg users add`, a registry
load, `POST /logout`). Before, the scope was fixed at connect and only the 12 h expiry
was checked.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from dashboard.auth import token_hash
from dashboard.deps import SESSION_COOKIE
from storage.registry_store import save_registry
from tests.fix_api import OUR_PAGE, PASSWORD, REGISTRY_YAML, World, make_world, password_hash
from tests.fix_db import PostgresInstance
from tests.helpers import alert_doc, wait_for
from tests.registry_documents import as_yaml
from trygg.registry import parse_registry

pytestmark = pytest.mark.integration

NEW_PASSWORD = "a brand new password 2"


class TimedStream:
    """An SSE response read on a thread: (wall time it arrived, event name, data)."""

    def __init__(self, response: httpx.Response) -> None:
        self.events: queue.Queue[tuple[float, str, str]] = queue.Queue()
        self.closed = threading.Event()
        threading.Thread(target=self._read, args=(response,), daemon=True).start()

    def _read(self, response: httpx.Response) -> None:
        name, data = "", []
        try:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and name:
                    self.events.put((time.time(), name, "\n".join(data)))
                    name, data = "", []
        except httpx.HTTPError:
            pass
        finally:
            self.closed.set()

    def next(self, timeout: float = 5.0) -> tuple[float, str, Any]:
        at, name, data = self.events.get(timeout=timeout)
        return at, name, json.loads(data) if data else None

    def alert_ids(self, count: int) -> list[str]:
        found = []
        while len(found) < count:
            _, name, data = self.next()
            assert name == "alert", (name, data)
            found.append(data["alert_id"])
        return found


@contextmanager
def stream(w: World, headers: dict[str, str]) -> Iterator[TimedStream]:
    with httpx.Client(base_url=str(w.client.base_url), timeout=10) as client, client.stream(
            "GET", "/api/alerts/stream", headers=headers) as response:
        assert response.status_code == 200, response.read()
        yield TimedStream(response)


def watched(w: World, count: int) -> None:
    """Wait until `count` streams are open (subscribed to the alerts)."""
    assert wait_for(lambda: len(w.alerts.subscribers), lambda n: n == count, timeout=5) == count


def updated_at(url: str, username: str) -> float:
    """When PostgreSQL changed the user's row (transaction start: before the commit)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT updated_at FROM trygg.users WHERE username = %s", (username,)).fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0].timestamp()


def users_add(url: str, *args: str, password: str | None = None) -> None:
    """`trygg users add …`, the real command in its own process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({"TRYGG_DATABASE_URL": url, "TRYGG_LOG_FORMAT": "console"})
    done = subprocess.run([sys.executable, "-m", "trygg", "users", "add", *args],
                          input=password, text=True, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def world(database: str) -> Iterator[World]:
    with make_world(database, sse_ping_s=30) as w:
        yield w


@pytest.mark.serial
def test_a_staff_member_moved_from_east_to_west_stops_getting_east_and_gets_west(world: World) -> None:
    w = world
    with stream(w, w.headers("staff-east")) as east:
        watched(w, 1)
        w.alerts.put(alert_doc("a-east-1", "r-1", "east"))
        assert east.alert_ids(1) == ["a-east-1"]

        users_add(w.url, "staff-east", "--role", "staff", "--team", "west")
        at, name, data = east.next()
        changed = updated_at(w.url, "staff-east")
        assert (name, data["detail"]) == ("reset", "your role, teams or residents changed: list again and reconnect")
        assert at - changed < 1.0, f"the stream went on for {at - changed:.2f} s after the move"
        assert east.closed.wait(2), "the stream ends after its reset"
    watched(w, 0)

    # Reconnected (as the console does 300 ms after a reset): west's alarms, not east's.
    with stream(w, w.headers("staff-east")) as moved:
        watched(w, 1)
        w.alerts.put(alert_doc("a-east-2", "r-1", "east"))
        w.alerts.put(alert_doc("a-west-2", "r-2", "west"))
        assert moved.alert_ids(1) == ["a-west-2"]

        # A registry load moves her back: the stream ends again, as quickly.
        doc = yaml.safe_load(REGISTRY_YAML)
        next(u for u in doc["users"] if u["username"] == "staff-east")["teams"] = ["east", "alarm-centre"]
        with psycopg.connect(w.url) as conn:
            save_registry(conn, parse_registry(as_yaml(doc)), actor="test")
        at, name, _ = moved.next()
        assert name == "reset" and at - updated_at(w.url, "staff-east") < 1.0


def test_a_cookie_stream_ends_at_sign_out_here_or_on_another_dashboard(world: World) -> None:
    w = world
    login = w.client.post("/login", data={"username": "staff-east", "password": PASSWORD}, headers=OUR_PAGE)
    w.client.cookies.clear()
    # a second session of hers, signed in a second later (on another dashboard)
    sessions = [login.cookies[SESSION_COOKIE], w.app.state.trygg.signer.issue(
        "staff-east", password_hash(), "session", int(time.time()) + 3601)]
    here, elsewhere = ({"Cookie": f"{SESSION_COOKIE}={c}"} for c in sessions)
    with stream(w, here) as first, stream(w, elsewhere) as second, stream(w, w.headers("staff-east")) as other:
        watched(w, 3)
        logout = w.client.post("/logout", headers={**here, "Origin": str(w.client.base_url).rstrip("/")})
        signed_out = time.time()
        assert logout.status_code == 303
        at, name, data = first.next()
        assert name == "expired" and "signed out" in data["detail"]
        assert at - signed_out < 1.0

        # Signed out on another dashboard (only the table says so): at the next check.
        with psycopg.connect(w.url) as conn:
            conn.execute("INSERT INTO trygg.revoked_tokens (token_hash, expires_at)"
                         " VALUES (%s, now() + interval '2 hours')", (token_hash(sessions[1]),))
        revoked = time.time()
        at, name, _ = second.next()
        assert name == "expired" and at - revoked < 1.0

        # The same user's bearer stream was not signed out: it goes on.
        w.alerts.put(alert_doc("a-after", "r-1", "east"))
        assert other.alert_ids(1) == ["a-after"]
    assert w.client.get("/api/alerts/stream", headers=here).status_code == 401


def test_a_bearer_stream_ends_when_the_password_changes(world: World) -> None:
    w = world
    token = w.client.post("/api/auth/token", data={"username": "staff-east", "password": PASSWORD}).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    with stream(w, bearer) as old, stream(w, w.headers("staff-west")) as bystander:
        watched(w, 2)
        users_add(w.url, "staff-east", "--role", "staff", "--team", "east", "--password-stdin",
                  password=NEW_PASSWORD + "\n")
        at, name, data = old.next()
        assert name == "expired" and "password changed" in data["detail"]
        assert at - updated_at(w.url, "staff-east") < 1.0
        w.alerts.put(alert_doc("a-west-9", "r-2", "west"))
        assert bystander.alert_ids(1) == ["a-west-9"]
    assert w.client.get("/api/auth/me", headers=bearer).status_code == 401
    fresh = w.client.post("/api/auth/token", data={"username": "staff-east", "password": NEW_PASSWORD})
    assert fresh.status_code == 200


def test_while_postgresql_is_down_streams_go_on_and_a_sign_out_here_still_ends_its_stream(
        private_postgres: PostgresInstance) -> None:
    with make_world(private_postgres.url("trygg"), sse_ping_s=30) as w:
        login = w.client.post("/login", data={"username": "staff-east", "password": PASSWORD}, headers=OUR_PAGE)
        w.client.cookies.clear()
        cookie = {"Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"}
        with stream(w, cookie) as session, stream(w, w.headers("staff-east")) as bearer:
            watched(w, 2)
            private_postgres.stop()
            time.sleep(1.5)  # checks that cannot reach PostgreSQL end nothing
            w.alerts.put(alert_doc("a-down", "r-1", "east"))
            assert session.alert_ids(1) == bearer.alert_ids(1) == ["a-down"]

            logout = w.client.post("/logout", headers=cookie)
            signed_out = time.time()
            assert logout.status_code == 303
            at, name, _ = session.next()
            assert name == "expired" and at - signed_out < 1.0
            w.alerts.put(alert_doc("a-down-2", "r-1", "east"))
            assert bearer.alert_ids(1) == ["a-down-2"]
            private_postgres.start()
