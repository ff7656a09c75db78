"""Liveness (`/healthz`), Prometheus metrics (`/metrics`, for allowed scrapers only) and
the request metrics middleware.

`/healthz` says `degraded` when the database or the broker is down, when a durable
local log of this process cannot be written (storage/local_log.py: the spool, the alert
journal, the audit journal — a full disk, an I/O error; `local_log` then names which and
why, e.g. `"disk full: spool"`, docs/local-log.md), or when a connection pool is
exhausted (`pools`: `{"staff": "ok", "research": "exhausted"}`). The staff console shows
a banner while it says `degraded`.

`/metrics` answers only a TCP peer in `TRYGG_METRICS_ALLOW` (default loopback); a
request that a proxy forwarded (any forwarding header) only when that proxy is in
`TRYGG_METRICS_PROXIES` (default none). Headers can refuse, never admit
(docs/security.md "Research and metrics")."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any, Final, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.deps import AppState, State, StateProbe
from storage.local_log import degraded as local_logs_degraded
from trygg.settings import networks

router = APIRouter(tags=["health"])

REQUESTS = Counter("trygg_http_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "trygg_http_request_duration_seconds",
    "Time from request to response headers (streams: to the first byte)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

DB_PROBE_TIMEOUT_S: Final = 2.0
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

Health = Literal["up", "down", "unknown"]
PoolHealth = Literal["ok", "exhausted", "closed"]

#: Headers a proxy adds to say whom it forwards for. A request with any of them came
#: through a proxy, whatever its TCP peer.
FORWARDING_HEADERS: Final = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host", "x-client-ip",
                             "true-client-ip", "cf-connecting-ip", "x-cluster-client-ip", "fastly-client-ip",
                             "x-original-forwarded-for")


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: Health
    broker: Health
    #: present only while a local log cannot be written: "<reason>: <log>", "; "-separated
    local_log: str | None = None
    #: each connection pool: "exhausted" while every connection is lent out and none may be added
    pools: dict[str, PoolHealth]


def pool_health(pool: AsyncConnectionPool | None) -> PoolHealth:
    if pool is None:
        return "closed"
    stats = pool.get_stats()
    lent = stats.get("pool_size", 0) - stats.get("pool_available", 0)
    return "exhausted" if lent >= pool.max_size else "ok"


def _probe(probe: StateProbe | None) -> Health:
    if probe is None:
        return "unknown"
    try:
        value = probe()
    except Exception:
        return "down"
    if isinstance(value, str):
        return value if value in ("up", "down") else "unknown"  # type: ignore[return-value]
    if value is None:
        return "unknown"
    return "up" if value else "down"


async def _database(state: AppState) -> Health:
    if state.db_state is not None:
        return _probe(state.db_state)
    if state.pool is None:
        return "down"
    try:
        async with asyncio.timeout(DB_PROBE_TIMEOUT_S), state.pool.connection(timeout=DB_PROBE_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
    except Exception:
        return "down"
    return "up"


def local_log_state() -> str | None:
    """`"disk full: spool"` (one entry per log that cannot be written), or None."""
    logs = local_logs_degraded()
    return "; ".join(f"{reason}: {label}" for label, reason in logs.items()) or None


@router.get("/healthz", response_model=HealthOut, response_model_exclude_none=True,
            summary="Liveness, and the state of the database, the broker and the local logs")
async def healthz(state: State) -> HealthOut:
    """Always 200 while the process serves requests; `status` is `degraded` when the
    database or broker is down or a local log cannot be written (`local_log` says which)."""
    pools = {"staff": pool_health(state.pool), "research": pool_health(state.research_pool)}
    database = await _database(state)
    broker = _probe(state.broker_state)
    local_log = local_log_state()
    degraded = "down" in (database, broker) or local_log is not None or "exhausted" in pools.values()
    return HealthOut(status="degraded" if degraded else "ok", database=database, broker=broker,
                     local_log=local_log, pools=pools)


def _peer_in(request: Request, allowed: str) -> bool:
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks(allowed))


def may_scrape(request: Request, allow: str, proxies: str) -> bool:
    """The TCP peer may scrape: it is in `allow` and nobody forwarded the request, or it
    is a proxy in `proxies`. Headers are never believed, only used to refuse. (uvicorn
    may replace the peer with an X-Forwarded-For address from a trusted proxy; that
    header stays, so such a request is judged as forwarded and needs its peer in
    `proxies`: it can be refused wrongly, never admitted wrongly.)"""
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return _peer_in(request, proxies)
    return _peer_in(request, allow)


def is_loopback(request: Request) -> bool:
    """The client is on this machine and no proxy forwarded the request."""
    return may_scrape(request, "127.0.0.0/8,::1", "")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: State) -> Response:
    if not may_scrape(request, state.settings.metrics_allow, state.settings.metrics_proxies):
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts requests and times them by route template (not by path: no ids in labels),
    and marks /api answers as not cacheable (they hold personal data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        status = 500
        timed = False
        api = str(scope.get("path", "")).startswith("/api/")

        def observe() -> None:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            LATENCY.labels(method, path).observe(time.perf_counter() - started)

        async def send_wrapper(message: Message) -> None:
            nonlocal status, timed
            if message["type"] == "http.response.start":
                status = message["status"]
                if api:
                    headers = list(message.get("headers", []))
                    if not any(k.lower() == b"cache-control" for k, _ in headers):
                        headers.append((b"cache-control", b"no-store"))
                    message = {**message, "headers": headers}
                observe()
                timed = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not timed:
                observe()
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(method, path, str(status)).inc()


__all__ = ["LATENCY", "REQUESTS", "MetricsMiddleware", "is_loopback", "may_scrape", "pool_health", "router"]
