"""The FastAPI app: `create_app(settings, conninfo, alerts, pools=...)`.

The dashboard reads through two connection pools (`DashboardPools`): staff's, and
research's apart from it so that research never starves staff (docs/security.md
"Research and metrics"). The composition root opens them with `open_pools` and passes
them in (composition/app.py); an app made without them opens its own in its lifespan.
Routes get them, the alerts port and the caller through `Annotated` dependencies
(dashboard/deps.py). Pages (dashboard/pages.py) and static files (dashboard/static/)
are added when they exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from dashboard import (
    api_docs,
    routes_admin,
    routes_alerts,
    routes_audit,
    routes_auth,
    routes_health,
    routes_insights,
    routes_registry,
    routes_research,
    routes_residents,
    routes_shift,
    routes_teams,
)
from dashboard.audit import AuditLog
from dashboard.auth import TokenSigner
from dashboard.body_limit import BodyLimitMiddleware
from dashboard.deps import AlertsPort, AppState, StateProbe
from dashboard.errors import ApiError, AuditJournalError
from dashboard.research import open_research_pool, sync_pseudonyms
from dashboard.routes_health import MetricsMiddleware
from storage.pool import RECONNECT_S
from trygg.logging import get_logger
from trygg.settings import Settings

log = get_logger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def _version() -> str:
    try:
        return package_version("trygg")
    except PackageNotFoundError:
        return "0"


def _pages_router() -> Any | None:
    """`dashboard.pages.router` if that module exists (an error inside it is raised)."""
    try:
        module = importlib.import_module("dashboard.pages")
    except ModuleNotFoundError as exc:
        if exc.name == "dashboard.pages":
            return None
        raise
    return getattr(module, "router", None)


@dataclass(frozen=True, slots=True)
class DashboardPools:
    """Staff's pool, and research's (its own role settings and limits, dashboard/research.py)."""

    staff: AsyncConnectionPool
    research: AsyncConnectionPool


@asynccontextmanager
async def open_pools(settings: Settings, conninfo: str, *, min_size: int = 1, max_size: int = 10,
                     timeout_s: float = 5.0) -> AsyncIterator[DashboardPools]:
    """Open both pools (connecting in the background: PostgreSQL may be down) and close
    them on the way out. `timeout_s`: how long a request waits for a staff connection
    before it answers 503."""
    staff = AsyncConnectionPool(
        conninfo, min_size=min_size, max_size=max_size, max_waiting=256, timeout=timeout_s,
        open=False, name="dashboard", check=AsyncConnectionPool.check_connection, reconnect_timeout=RECONNECT_S,
    )
    research = open_research_pool(settings, conninfo)
    await staff.open(wait=False)
    try:
        await research.open(wait=False)
        try:
            yield DashboardPools(staff, research)
        finally:
            await research.close()
    finally:
        await staff.close()


def create_app(
    settings: Settings,
    conninfo: str,
    alerts: AlertsPort | None = None,
    *,
    pools: DashboardPools | None = None,
    broker_state: StateProbe | None = None,
    db_state: StateProbe | None = None,
    sse_ping_s: float = 15.0,
    token_ttl_s: int = 12 * 3600,
    pool_min_size: int = 1,
    pool_max_size: int = 10,
    db_timeout_s: float = 5.0,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The dashboard's HTTP app.

    Audit rows are journaled under `settings.data_dir / "audit"` and copied to
    trygg.audit_log in the background (dashboard/audit.py).

    - `conninfo`: PostgreSQL URL; run as a member of role `trygg_app` in production
      (docs/privacy.md).
    - `pools`: the pools opened by the caller with `open_pools` (it closes them too);
      None opens them for the app's lifetime, `pool_min_size`, `pool_max_size` and
      `db_timeout_s` sizing staff's.
    - `alerts`: the alerts stage as an `AlertsPort`; None answers the alert routes with
      503 and reads open alerts for `/status` from trygg.alerts.
    - `broker_state`, `db_state`: callables for `/healthz` returning True/False (or
      "up"/"down"); without `db_state` the pool is asked.
    - `sse_ping_s`: seconds between keep-alive comments on `/api/alerts/stream`.
    - `token_ttl_s`: lifetime of bearer tokens and of the session cookie.
    - `db_timeout_s`: how long a request waits for a database connection before it
      answers 503.
    """
    state = AppState(
        settings=settings,
        conninfo=conninfo,
        alerts=alerts,
        signer=TokenSigner(settings.session_secret.get_secret_value()),
        token_ttl_s=token_ttl_s,
        sse_ping_s=sse_ping_s,
        broker_state=broker_state,
        db_state=db_state,
        clock=clock or (lambda: datetime.now(UTC)),
        pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        audit_log = AuditLog(settings.data_dir / "audit", conninfo, retry_max_s=settings.db_retry_s,
                             connect_timeout_s=db_timeout_s)
        audit_log.open()  # no journal, no dashboard: every read must be logged
        state.audit = audit_log
        owned = AsyncExitStack()
        opened = pools if pools is not None else await owned.enter_async_context(open_pools(
            settings, conninfo, min_size=pool_min_size, max_size=pool_max_size, timeout_s=db_timeout_s))
        pool = state.pool = opened.staff
        state.research_pool = opened.research
        flusher = asyncio.create_task(audit_log.run(), name="dashboard.audit-flusher")
        try:
            try:
                async with pool.connection(timeout=5) as conn:
                    written = await sync_pseudonyms(conn, state.pseudonym_key)
                if written:
                    log.info("research_pseudonyms_written", residents=written)
            except (psycopg.Error, PoolTimeout) as exc:
                log.warning("research_pseudonyms_not_synced_at_start", error=str(exc).strip())
            yield
        finally:
            await state.rights.close()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await audit_log.close()
            state.audit = None
            state.pool = None
            state.research_pool = None
            await owned.aclose()

    app = FastAPI(
        title="Trygg",
        version=_version(),
        summary="Alerts, residents, research and administration for municipal home care",
        lifespan=lifespan,
        docs_url=None,  # our own /docs, /redoc, /openapi.json (dashboard/api_docs.py)
        redoc_url=None,
        openapi_url=None,
    )
    app.state.trygg = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(TooManyRequests)
    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database_unavailable", path=request.url.path, error=str(exc).strip()[:200])
        return JSONResponse({"detail": "the database is unavailable; try again shortly"}, status_code=503)

    @app.exception_handler(AuditJournalError)
    async def _no_audit(request: Request, exc: AuditJournalError) -> JSONResponse:
        log.error("audit_row_not_recorded", path=request.url.path, error=str(exc)[:200])
        return JSONResponse({"detail": "the access cannot be logged right now; try again shortly"},
                            status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer, but written as ASCII JSON: the error echoes the input,
        # and input that is not Unicode text (a lone surrogate) would make it a 500.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(psycopg.DataError)
    async def _bad_value(request: Request, exc: Exception) -> JSONResponse:
        first = (str(exc).strip().splitlines() or ["bad value"])[0]
        return JSONResponse({"detail": [{"loc": ["request"], "msg": f"a value cannot be used: {first}",
                                         "type": "value_error"}]}, status_code=422)

    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(MetricsMiddleware)
    for module in (routes_health, routes_auth, routes_alerts, routes_shift, routes_residents, routes_teams,
                   routes_insights, routes_research, routes_registry, routes_admin, routes_audit):
        app.include_router(module.router)
    app.include_router(api_docs.router)
    pages = _pages_router()
    if pages is not None:
        app.include_router(pages)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


__all__ = ["DashboardPools", "create_app", "open_pools"]
