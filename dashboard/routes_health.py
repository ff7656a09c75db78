"""Liveness (`/healthz`), Prometheus metrics (`/metrics`, loopback only) and the request
metrics middleware.

`/healthz` says `degraded` when the database or the broker is down, or when a durable
local log of this process cannot be written (storage/local_log.py: the spool, the alert
journal, the audit journal — a full disk, an I/O error); `local_log` then names which and
why, e.g. `"disk full: spool"` (docs/local-log.md). The staff console shows a banner
while it says `degraded`."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any, Final, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.deps import AppState, State, StateProbe
from storage.local_log import degraded as local_logs_degraded

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


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: Health
    broker: Health
    #: present only while a local log cannot be written: "<reason>: <log>", "; "-separated
    local_log: str | None = None


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
    database = await _database(state)
    broker = _probe(state.broker_state)
    local_log = local_log_state()
    degraded = "down" in (database, broker) or local_log is not None
    return HealthOut(status="degraded" if degraded else "ok", database=database, broker=broker,
                     local_log=local_log)


def is_loopback(request: Request) -> bool:
    """The client is on this machine and no proxy forwarded the request."""
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    if not is_loopback(request):
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


__all__ = ["LATENCY", "REQUESTS", "MetricsMiddleware", "is_loopback", "router"]
