"""Research never starves staff (STYLE.md "A shared pool is partitioned by who may starve
whom"; docs/security.md "Research and metrics"): exports read from a pool of their own,
staff routes and the live stream from theirs, and /healthz says which is exhausted.

A real PostgreSQL and a real dashboard (uvicorn on a loopback port); the exports are
real HTTP clients that read the first bytes and then stop reading."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Iterator

import httpx
import psycopg
import pytest

from tests import fix_api
from tests.fix_api import PASSWORD, World, make_world
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

EXPORTS = 10
#: How long the stalled exports are given to fill what they can before staff ask.
SETTLE_S = 3.0
SINCE, UNTIL = "2026-11-18T00:00:00Z", "2026-11-19T00:00:00Z"


def many_events(url: str, per_resident: int = 20_000) -> None:
    """Heartbeats of the five consenting residents on 2026-11-18, one a second: a CSV of
    ~14 MB, more than the socket buffers of a slow client hold, so a client that stops reading
    keeps its export (and whatever it holds) open."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO trygg.events (device_id, event_id, resident_id, type, ts, received_at, data)"
            " SELECT 'd-' || substr(r, 3) || '-alarm', 'bulk-' || n, r, 'heartbeat', t, t, '{\"battery_pct\": 50}'"
            " FROM unnest(ARRAY['r-1', 'r-3', 'r-4', 'r-5', 'r-6']) AS r,"
            "      generate_series(1, %s) AS n,"
            "      LATERAL (SELECT timestamptz '2026-11-18 01:00:00+00' + n * interval '1 second') AS x(t)",
            (per_resident,))


@pytest.fixture
def busy_world(database: str) -> Iterator[World]:
    many_events(database)
    with make_world(database) as w:
        yield w


@contextlib.contextmanager
def held_exports(w: World, count: int = EXPORTS, settle_s: float = SETTLE_S) -> Iterator[list[int]]:
    """Ten researchers' CSV exports that read their first bytes and then stop reading
    (sockets with a small receive buffer, as a slow client over a slow link); yields
    their status codes. They are closed on leaving."""
    host, port = str(w.client.base_url).removeprefix("http://").split(":")
    request = (f"GET /api/research/export?since={SINCE}&until={UNTIL}&format=csv HTTP/1.1\r\n"
               f"Host: {host}:{port}\r\nAuthorization: {w.headers('researcher')['Authorization']}\r\n\r\n").encode()
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.sendall(request)
            sockets.append(sock)
        statuses = [int(sock.recv(64).split(b" ")[1]) for sock in sockets]  # the first bytes, then nothing more
        time.sleep(settle_s)  # the exports fill the socket buffers and stall
        yield statuses
    finally:
        for sock in sockets:
            sock.close()


async def timed(step: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await step
    return response, time.perf_counter() - started


async def open_stream(client: httpx.AsyncClient, token: str, hold: asyncio.Event | None = None
                      ) -> tuple[int, float]:
    """Opens the live stream and reads until `: connected`; (status, seconds). With
    `hold`, keeps the stream open until it is set."""
    started = time.perf_counter()
    async with client.stream("GET", "/api/alerts/stream", headers={"Authorization": f"Bearer {token}"}) as response:
        chunks = response.aiter_text()  # kept until the end: dropping it would close the stream
        if response.status_code == 200:
            async for chunk in chunks:
                if "connected" in chunk:
                    break
        took = time.perf_counter() - started
        if hold is not None:
            await hold.wait()
        await chunks.aclose()
        return response.status_code, took


@pytest.mark.serial
def test_slow_exports_do_not_stop_staff(busy_world: World) -> None:
    """While ten exports hold what they got, staff list alerts, sign in and open the
    stream each within a second; /healthz says the research pool is exhausted."""
    asyncio.run(slow_exports_and_staff(busy_world))


async def slow_exports_and_staff(busy_world: World) -> None:
    with held_exports(busy_world) as statuses:
        await staff_while_exports_are_held(busy_world, statuses)


async def staff_while_exports_are_held(busy_world: World, held_exports: list[int]) -> None:
    assert held_exports.count(200) >= 1, held_exports
    assert set(held_exports) <= {200, 503}, held_exports  # a busy research pool is 503 for research only
    async with httpx.AsyncClient(base_url=str(busy_world.client.base_url), timeout=30) as staff:
        health = (await staff.get("/healthz")).json()
        assert health["status"] == "degraded", health
        assert health["pools"] == {"staff": "ok", "research": "exhausted"}, health
        for _ in range(3):
            listed, seconds = await timed(staff.get("/api/alerts", headers=busy_world.headers("staff-east")))
            assert (listed.status_code, seconds < 1.0) == (200, True), (listed.text, seconds)
            signed_in, seconds = await timed(staff.post("/api/auth/token",
                                                        data={"username": "staff-east", "password": PASSWORD}))
            assert (signed_in.status_code, seconds < 1.0) == (200, True), (signed_in.text, seconds)
            status, seconds = await open_stream(staff, signed_in.json()["access_token"])
            assert (status, seconds < 1.0) == (200, True), seconds
        ok_or_busy = await staff.get("/api/research/events", params={"since": SINCE, "until": UNTIL},
                                     headers=busy_world.headers("researcher"))
        assert ok_or_busy.status_code in (200, 503)


def test_a_stalled_export_gives_its_connection_back(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exports whose clients stop reading hold the research pool (2 connections);
    after TRYGG_RESEARCH_IDLE_TIMEOUT_S they give their connections back and research
    answers again."""
    base = fix_api.settings
    monkeypatch.setattr(fix_api, "settings", lambda data_dir=None: base(data_dir).model_copy(
        update={"research_idle_timeout_s": 2.0}))
    many_events(database)
    with make_world(database) as w, held_exports(w, count=2, settle_s=0.5) as statuses:
        assert statuses == [200, 200]
        assert w.client.get("/healthz").json()["pools"]["research"] == "exhausted"
        health = wait_for(lambda: w.client.get("/healthz").json(), lambda h: h["pools"]["research"] == "ok",
                          timeout=10)
        assert health["pools"] == {"staff": "ok", "research": "ok"} and health["status"] == "ok"
        again = w.client.get("/api/research/events", params={"since": SINCE, "until": UNTIL},
                             headers=w.headers("researcher"))
        assert again.status_code == 200


def test_a_research_query_past_its_time_is_503_with_advice(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base = fix_api.settings
    monkeypatch.setattr(fix_api, "settings", lambda data_dir=None: base(data_dir).model_copy(
        update={"research_statement_timeout_s": 0.001}))
    many_events(database)
    with make_world(database) as w:
        response = w.client.get("/api/research/export", params={"since": SINCE, "until": UNTIL},
                                headers=w.headers("researcher"))
        assert response.status_code == 503
        assert "shorter period" in response.json()["detail"]
        assert w.client.get("/api/alerts", headers=w.headers("staff-east")).status_code == 200


def test_four_hundred_stream_opens_leave_staff_routes_alone(database: str) -> None:
    """400 consoles open the stream at once while the operator, not seen before by this
    dashboard, lists alerts and a staff member signs in: no staff route answers 503,
    and every stream opens. Before, the flood's token checks filled the staff pool's
    queue, the dashboard took the busy pool for a database that is down, and every user
    it had not read yet got 503."""
    with make_world(database) as w:
        asyncio.run(stream_flood(w))


async def stream_flood(w: World) -> None:
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=0)
    hold = asyncio.Event()
    async with httpx.AsyncClient(base_url=str(w.client.base_url), timeout=60, limits=limits) as client:
        token = w.tokens["staff-east"]
        streams = [asyncio.create_task(open_stream(client, token, hold)) for _ in range(400)]
        sign_in = client.post("/api/auth/token", data={"username": "staff-west", "password": PASSWORD})
        staff = await asyncio.gather(*(client.get("/api/alerts", headers=w.headers("operator")) for _ in range(20)),
                                     sign_in)
        assert Counter(r.status_code for r in staff) == Counter({200: 21}), [r.text for r in staff]
        # Every stream open, and none of them holds a staff connection.
        for _ in range(300):  # this loop runs the clients: wait without blocking it
            stats = w.app.state.trygg.pool.get_stats()
            if len(w.alerts.subscribers) == 400 and stats.get("pool_available", 0) == stats["pool_size"]:
                break
            await asyncio.sleep(0.1)
        assert len(w.alerts.subscribers) == 400
        assert stats.get("pool_available", 0) == stats["pool_size"] and not stats.get("requests_waiting")
        assert w.client.get("/healthz").json()["pools"] == {"staff": "ok", "research": "ok"}
        hold.set()
        opened = await asyncio.gather(*streams)
    assert Counter(status for status, _ in opened) == Counter({200: 400})
