"""/healthz for anyone, /metrics only on loopback, request metrics by route, and a
database that goes away: 503 with a message, never a 500."""

from __future__ import annotations

import errno
import os

import httpx
import psycopg
import pytest

from dashboard import create_app
from tests.fix_api import World, make_world, seed, serve, settings
from tests.fix_db import PostgresInstance

pytestmark = pytest.mark.integration


def test_healthz_reports_probes(database: str) -> None:
    states = {"broker": True}
    with make_world(database, broker_state=lambda: states["broker"]) as w:
        pools = {"staff": "ok", "research": "ok"}
        assert w.client.get("/healthz").json() == {"status": "ok", "database": "up", "broker": "up", "pools": pools}
        states["broker"] = False
        assert w.client.get("/healthz").json() == {"status": "degraded", "database": "up", "broker": "down",
                                                   "pools": pools}


def test_healthz_names_a_local_log_that_cannot_be_written(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit journal's disk is full: the read is refused, /healthz says degraded and
    names the journal, the metric says so too; the next write that works clears it."""
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    assert world.client.get("/api/residents/r-1/status", headers=world.headers("staff-east")).status_code == 503
    monkeypatch.undo()
    assert world.client.get("/healthz").json() == {"status": "degraded", "database": "up", "broker": "unknown",
                                                   "local_log": "disk full: audit",
                                                   "pools": {"staff": "ok", "research": "ok"}}
    assert 'trygg_local_log_degraded{log="audit"} 1.0' in world.client.get("/metrics").text
    assert world.client.get("/api/residents/r-1/status", headers=world.headers("staff-east")).status_code == 200
    assert world.client.get("/healthz").json()["status"] == "ok"
    assert 'trygg_local_log_degraded{log="audit"} 0.0' in world.client.get("/metrics").text


def test_metrics_on_loopback_only(world: World) -> None:
    world.client.get("/api/residents/r-1/events", headers=world.headers("staff-east"))
    text = world.client.get("/metrics").text
    assert 'trygg_http_requests_total{method="GET",route="/api/residents/{resident_id}/events",status="200"}' in text
    assert "trygg_http_request_duration_seconds_bucket" in text
    assert "r-1" not in text
    proxied = world.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 404


def test_api_answers_are_not_cached(world: World) -> None:
    response = world.client.get("/api/residents", headers=world.headers("admin"))
    assert response.headers["cache-control"] == "no-store"


def test_openapi_at_docs(world: World) -> None:
    assert world.client.get("/docs").status_code == 200
    paths = world.client.get("/openapi.json").json()["paths"]
    for path in ("/healthz", "/api/auth/token", "/api/alerts", "/api/alerts/stream", "/api/alerts/{alert_id}/ack",
                 "/api/alerts/{alert_id}/resolve", "/api/residents", "/api/residents/{resident_id}/events",
                 "/api/residents/{resident_id}/status", "/api/research/events", "/api/research/response-times",
                 "/api/research/export", "/api/registry", "/api/audit"):
        assert path in paths


def test_database_down_is_503_and_health_says_so() -> None:
    server = PostgresInstance()
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE trygg")
        from tests.fix_db import migrate_url

        migrate_url(server.url("trygg"))
        from datetime import UTC, datetime

        seed(server.url("trygg"), datetime.now(UTC))
        app = create_app(settings(), server.url("trygg"), None, db_timeout_s=1.0)
        with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            token = client.post("/api/auth/token", data={"username": "admin", "password": "correct horse battery"}
                                ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get("/api/residents", headers=headers).status_code == 200
            server.stop("immediate")
            down = client.get("/api/residents", headers=headers)
            assert down.status_code == 503
            assert down.json() == {"detail": "the database is unavailable; try again shortly"}
            health = client.get("/healthz")
            assert (health.status_code, health.json()["database"]) == (200, "down")
            server.start()
            for _ in range(50):
                if client.get("/api/residents", headers=headers).status_code == 200:
                    break
            else:
                pytest.fail("the pool did not reconnect")
    finally:
        server.destroy()
