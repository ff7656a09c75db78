"""Staff take and close alarms while PostgreSQL is down (`trygg up`, its own process).

Tokens and session cookies are checked against users seen while the database answered
(dashboard/user_cache.py); the transition goes through the alert stage, which journals
it and stores it when PostgreSQL is back. A forged or unknown token is still refused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import psycopg
import pytest

from dashboard.auth import TokenSigner, hash_password
from storage.users_store import upsert_user
from tests.fix_alerts import Handheld, on_team
from tests.fix_db import PostgresInstance
from tests.fix_mqtt import Publisher
from tests.fix_up import TryggProcess
from tests.helpers import event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "correct horse battery"


def dashboard_url(trygg: TryggProcess) -> str:
    found = wait_for(lambda: re.search(r"dashboard (http://\S+?)/?$", trygg.log.read_text(), re.M),
                     lambda m: m is not None, timeout=30)
    assert found is not None, trygg.log.read_text()[-3000:]
    return found[1]


def transitions(url: str, alert_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT to_state, actor FROM trygg.alert_transitions WHERE alert_id = %s ORDER BY seq", (alert_id,))]


@pytest.mark.serial
def test_staff_acknowledge_and_resolve_while_postgresql_is_down(
    up: Callable[..., TryggProcess], private_postgres: PostgresInstance, handheld: Handheld,
    publisher: Publisher, prefix: str,
) -> None:
    url = private_postgres.url("trygg")
    password_hash = hash_password(PASSWORD)
    with psycopg.connect(url) as conn:
        upsert_user(conn, "ola", "staff", ["east"], [], password_hash)
        upsert_user(conn, "kari", "staff", ["east"], [], password_hash)
    trygg = up(url)
    with httpx.Client(base_url=dashboard_url(trygg), timeout=30) as api, \
            httpx.Client(base_url=dashboard_url(trygg), timeout=30,
                         headers={"Origin": dashboard_url(trygg)}) as browser:  # as from our own page
        token = api.post("/api/auth/token", data={"username": "ola", "password": PASSWORD}).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert browser.post("/login", data={"username": "ola", "password": PASSWORD},
                            headers={"Sec-Fetch-Site": "same-origin"}).status_code == 303
        assert api.get("/api/auth/me", headers=bearer).status_code == 200
        # kari signed in a while ago; the dashboard never saw her token since it started
        kari = TokenSigner("s" * 32).issue("kari", password_hash, "api", int(time.time()) + 3600)

        publisher.publish_all([(f"{prefix}/devices/d-1-alarm/events", event("press-1", "alarm.button")),
                               (f"{prefix}/devices/d-2-alarm/events", event("press-2", "alarm.button"))])
        opened = wait_for(lambda: {a["alert_id"] for a in handheld.alerts(on_team(prefix, "east"))},
                          lambda ids: len(ids) >= 2, timeout=10)
        first, second = sorted(opened)

        private_postgres.stop("immediate")
        started = time.monotonic()
        acked = api.post(f"/api/alerts/{first}/ack", headers=bearer)
        assert acked.status_code == 200, acked.text
        assert time.monotonic() - started < 1.0, "the acknowledgement waited for the database"
        assert acked.json()["acknowledged_by"] == "ola"
        started = time.monotonic()
        resolved = api.post(f"/api/alerts/{first}/resolve", headers=bearer, json={"note": "helped up"})
        assert resolved.status_code == 200, resolved.text
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        by_cookie = browser.post(f"/api/alerts/{second}/resolve", json={"note": "false alarm"})
        assert by_cookie.status_code == 200, by_cookie.text
        assert time.monotonic() - started < 1.0

        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert api.get("/api/auth/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        other_secret = TokenSigner("x" * 32).issue("ola", None, "api", int(time.time()) + 3600)
        assert api.get("/api/auth/me", headers={"Authorization": f"Bearer {other_secret}"}).status_code == 401
        unseen = api.get("/api/auth/me", headers={"Authorization": f"Bearer {kari}"})
        assert unseen.status_code == 503, "a user never checked here cannot be vouched for"

        private_postgres.start()
        stored = wait_for(lambda: transitions(url, first), lambda t: len(t) >= 3, timeout=30)
        assert stored == [("open", "system"), ("acknowledged", "ola"), ("resolved", "ola")]
        assert wait_for(lambda: transitions(url, second), lambda t: len(t) >= 2, timeout=30)[-1] == (
            "resolved", "ola")
