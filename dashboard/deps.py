"""What routes get through `Annotated` dependencies: the pool, the alerts port, the
caller, the clock — all owned by the app's lifespan (dashboard/app.py).

Pages (dashboard/pages.py) use the same ones::

    from dashboard.deps import CurrentUser, Pool

    @router.get("/relatives")
    async def relatives(who: CurrentUser, pool: Pool) -> HTMLResponse: ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyCookie, OAuth2PasswordBearer
from psycopg_pool import AsyncConnectionPool
from pydantic import AfterValidator

from dashboard.audit import AuditLog
from dashboard.auth import TokenKind, TokenSigner, fingerprint, token_hash
from dashboard.authz import Principal
from dashboard.errors import NOT_FOUND_ERRORS, Forbidden, NotAuthenticated, Unavailable
from dashboard.user_cache import DatabaseDown, UserCache, lookup
from trygg.contract import Role
from trygg.settings import Settings

SESSION_COOKIE = "trygg_session"

#: An alert as a JSON object: the §3 wire form, optionally with `teams` (every team it
#: was published to, the resident's team first).
AlertDoc = dict[str, Any]
AlertDocs = list[AlertDoc]


class AlertFeed(Protocol):
    """One subscriber's alert changes, in order. The feed calls the `wake` it was
    subscribed with, on the event loop's thread, as soon as a change is waiting — in
    the call that made the change where it can, so the change is written at once."""

    def get_nowait(self) -> AlertDoc | None:
        """The next waiting change, or None. Raises when the subscriber fell behind and
        was dropped, or the stage stopped."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class AlertsPort(Protocol):
    """What the dashboard needs from the alerts stage.

    Every alert is the §3 wire form (`AlertDoc`). `teams` arguments are the set of teams
    whose alerts the caller sees, or None for all teams; an alert belongs to a team if
    it was published to it (its own team or an escalation team). Unknown alerts raise
    `dashboard.errors.AlertNotFound` (or the alerts stage's own `AlertNotFound`), a step
    the lifecycle does not allow raises `IllegalTransition` (either package's).
    """

    async def list(self, teams: frozenset[str] | None, state: str | None,
                   since: datetime | None) -> AlertDocs:
        """Alerts of `teams`; `state` one of open|acknowledged|resolved|cancelled or None
        (the port's default: unresolved and recently closed); `since`: changed at or
        after (updated_at)."""
        ...

    async def get(self, alert_id: str) -> AlertDoc | None:
        ...

    async def acknowledge(self, alert_id: str, actor: str) -> AlertDoc:
        """open → acknowledged by `actor`; returns the alert after the change."""
        ...

    async def resolve(self, alert_id: str, actor: str, note: str | None) -> AlertDoc:
        """open|acknowledged → resolved with `note`; returns the alert after the change."""
        ...

    def subscribe(self, teams: frozenset[str] | None, wake: Callable[[], None]) -> AlertFeed:
        """Every later change of an alert of `teams`, as the alert after the change;
        `wake` is called (on the loop's thread) whenever one is waiting."""
        ...

    async def open_alerts_of(self, resident_id: str) -> AlertDocs:
        """The unresolved (open or acknowledged) alerts of one resident."""
        ...


class StageAlerts:
    """`AlertsPort` over the alerts stage (`alerts.stage.AlertStage`), whose methods are
    synchronous and run on the event loop's thread — so the dashboard must be served on
    that same loop (`trygg up`).

    Every alert handed out carries `teams` (all teams it reached), so that staff of an
    escalation team may act on it. The stage keeps only unresolved alerts at hand:
    `list(state="resolved"|"cancelled")` is empty here.
    """

    def __init__(self, stage: Any) -> None:
        self._stage = stage

    def _with_teams(self, doc: AlertDoc) -> AlertDoc:
        service = getattr(self._stage, "service", None)
        try:
            teams = list(service.get(doc["alert_id"]).teams) if service is not None else []
        except Exception:
            teams = []
        return {**doc, "teams": teams or [doc.get("team_id")]}

    async def list(self, teams: frozenset[str] | None, state: str | None,
                   since: datetime | None) -> AlertDocs:
        if state in ("resolved", "cancelled"):
            return []
        out = []
        for doc in self._stage.active(teams):
            if state is not None and doc.get("state") != state:
                continue
            if since is not None and datetime.fromisoformat(str(doc["updated_at"])) < since:
                continue
            out.append(self._with_teams(doc))
        return out

    async def get(self, alert_id: str) -> AlertDoc | None:
        try:
            doc: AlertDoc = self._stage.get(alert_id)
        except NOT_FOUND_ERRORS:
            return None
        return self._with_teams(doc)

    async def acknowledge(self, alert_id: str, actor: str) -> AlertDoc:
        return self._with_teams(self._stage.acknowledge(alert_id, actor))

    async def resolve(self, alert_id: str, actor: str, note: str | None) -> AlertDoc:
        return self._with_teams(self._stage.resolve(alert_id, actor, note))

    def subscribe(self, teams: frozenset[str] | None, wake: Callable[[], None]) -> AlertFeed:
        return _StageFeed(self, self._stage.subscribe(teams, wake=wake))

    async def open_alerts_of(self, resident_id: str) -> AlertDocs:
        return [d for d in self._stage.active(None) if d.get("resident_id") == resident_id]


class _StageFeed:
    """An `AlertFeed` over the alert hub's subscription (alerts/fanout.py)."""

    def __init__(self, port: StageAlerts, subscription: Any) -> None:
        self._port = port
        self._subscription = subscription

    def get_nowait(self) -> AlertDoc | None:
        try:
            return self._port._with_teams(self._subscription.get_nowait())
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._port._stage.unsubscribe(self._subscription)


StateProbe = Callable[[], "bool | str | None"]


@dataclass
class AppState:
    """Everything the lifespan owns; one per app, at `app.state.trygg`."""

    settings: Settings
    conninfo: str
    alerts: AlertsPort | None
    signer: TokenSigner
    token_ttl_s: int
    sse_ping_s: float
    broker_state: StateProbe | None = None
    db_state: StateProbe | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    pool: AsyncConnectionPool | None = None
    #: research queries and exports only: a pool of their own, so that research never
    #: starves staff (docs/security.md "Research and metrics")
    research_pool: AsyncConnectionPool | None = None
    #: the audit journal and its flusher (dashboard/audit.py)
    audit: AuditLog | None = None
    pseudonym_key: bytes = b""
    #: set when the server is shutting down: live streams end with a `reset`
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    #: users as last read from PostgreSQL, for token checks while it is down
    users: UserCache = field(init=False)
    #: token checks of stream opens under way (`StreamUser`)
    stream_checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(STREAM_CHECKS))

    def __post_init__(self) -> None:
        self.users = UserCache(self.settings.auth_offline_max_s)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.trygg
    return state


State = Annotated[AppState, Depends(get_state)]


def get_pool(state: State) -> AsyncConnectionPool:
    if state.pool is None:
        raise Unavailable("the database pool is not open")
    return state.pool


Pool = Annotated[AsyncConnectionPool, Depends(get_pool)]


def get_research_pool(state: State) -> AsyncConnectionPool:
    if state.research_pool is None:
        raise Unavailable("the research database pool is not open")
    return state.research_pool


ResearchPool = Annotated[AsyncConnectionPool, Depends(get_research_pool)]


def get_audit(state: State) -> AuditLog:
    if state.audit is None:
        raise Unavailable("the audit log is not open")
    return state.audit


Audit = Annotated[AuditLog, Depends(get_audit)]


def get_alerts(state: State) -> AlertsPort:
    if state.alerts is None:
        raise Unavailable("the alert stage is not running in this process")
    return state.alerts


Alerts = Annotated[AlertsPort, Depends(get_alerts)]


def get_now(state: State) -> datetime:
    return state.clock()


Now = Annotated[datetime, Depends(get_now)]

bearer_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False,
                                     description="A token from POST /api/auth/token")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                             description="The web session cookie set by POST /login")


async def principal_of(state: AppState, pool: AsyncConnectionPool, token: str, kind: TokenKind
                       ) -> Principal | None:
    """The user a token belongs to, if the token is valid and the user still exists with
    the same password. While PostgreSQL is unreachable, the user as this dashboard last
    read it (dashboard/user_cache.py); 503 for a user it has not read recently."""
    claims = state.signer.verify(token, kind, time.time())
    if claims is None:
        return None
    try:
        user, revoked = await lookup(state.users, pool, state.conninfo, claims.username, token_hash(token),
                                     claims.expires)
    except DatabaseDown:
        raise Unavailable("the database is unavailable; try again shortly") from None
    if user is None or user.password_hash is None or revoked:
        return None
    if fingerprint(user.password_hash) != claims.fingerprint:
        return None
    try:
        role = Role(user.role)
    except ValueError:
        return None
    return Principal(user.username, role, frozenset(user.teams), frozenset(user.residents), claims.expires)


async def current_user(
    request: Request,
    state: State,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Principal:
    """The caller, from `Authorization: Bearer …` or the session cookie; else 401."""
    pool = get_pool(state)
    who: Principal | None = None
    if bearer:
        who = await principal_of(state, pool, bearer, "api")
    elif cookie:
        who = await principal_of(state, pool, cookie, "session")
        if who is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
            _same_origin(request)
    if who is None:
        raise NotAuthenticated("sign in: a valid bearer token or session cookie is needed")
    request.state.principal = who
    return who


def _same_origin(request: Request) -> None:
    """A state-changing request authenticated by the cookie must come from our own pages
    (SameSite=Strict already keeps other sites' requests cookie-less; this is a second
    lock for old browsers)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return
    host = request.headers.get("host", "")
    if origin.split("://", 1)[-1] != host:
        raise Forbidden("the session cookie is only accepted from Trygg's own pages")


CurrentUser = Annotated[Principal, Depends(current_user)]

#: Token checks of live-stream opens at a time. A flood of consoles (re)connecting at
#: once checks its tokens this many at a time, so it never fills the staff pool or its
#: queue: other staff requests still get a connection at once, instead of waiting behind
#: the flood until the busy pool is taken for a database that is down (dashboard/
#: user_cache.py) and users not read recently get 503. The stream itself holds no
#: connection once open.
STREAM_CHECKS = 3


async def stream_user(
    request: Request,
    state: State,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Principal:
    """`current_user` for opening a live stream: at most STREAM_CHECKS at a time."""
    async with state.stream_checks:
        return await current_user(request, state, bearer, cookie)


StreamUser = Annotated[Principal, Depends(stream_user)]




# --- Request parameters shared by the routes --------------------------------------

#: Ids of residents, teams, alerts, devices (DESIGN.md §3).
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


def _to_utc(value: datetime) -> datetime:
    """Times without an offset are taken as UTC; every time is handed on in UTC."""
    try:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is out of range") from None


UtcTime = Annotated[datetime, AfterValidator(_to_utc)]


def bad_parameter(name: str, message: str, where: str = "query") -> RequestValidationError:
    """A 422 shaped like FastAPI's own, for checks that span several parameters."""
    return RequestValidationError([{"loc": (where, name), "msg": message, "type": "value_error"}])


def time_range(since: datetime | None, until: datetime | None, now: datetime,
               default_span: timedelta, default_until: timedelta = timedelta(0)
               ) -> tuple[datetime, datetime]:
    """[since, until) with defaults: until = now + default_until, since = until - span."""
    try:
        end = until if until is not None else now + default_until
        start = since if since is not None else end - default_span
    except OverflowError:
        raise bad_parameter("since", "is out of range") from None
    if start >= end:
        raise bad_parameter("until", "must be later than since")
    return start, end


__all__ = [
    "ID_PATTERN",
    "SESSION_COOKIE",
    "AlertDoc",
    "AlertDocs",
    "AlertFeed",
    "Alerts",
    "AlertsPort",
    "AppState",
    "Audit",
    "CurrentUser",
    "Now",
    "Pool",
    "ResearchPool",
    "StageAlerts",
    "State",
    "StateProbe",
    "StreamUser",
    "UtcTime",
    "bad_parameter",
    "current_user",
    "get_alerts",
    "get_audit",
    "get_research_pool",
    "get_state",
    "time_range",
]
