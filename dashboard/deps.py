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
from typing import Annotated, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyCookie, OAuth2PasswordBearer
from psycopg_pool import AsyncConnectionPool
from pydantic import AfterValidator

from dashboard.audit import AuditLog
from dashboard.auth import TokenClaims, TokenKind, TokenSigner, fingerprint, token_hash
from dashboard.authz import Principal
from dashboard.errors import NOT_FOUND_ERRORS, Forbidden, NotAuthenticated, Unavailable
from dashboard.stream_rights import RightsWatch
from dashboard.user_cache import DatabaseDown, UserCache, lookup
from storage.users_store import UserRow
from trygg.alert import Alert
from trygg.contract import Role
from trygg.settings import Settings

SESSION_COOKIE = "trygg_session"

#: Alerts as the port hands them out (a name of its own: `list` is a method of the port).
AlertList = list[Alert]


class AlertSubscription(Protocol):
    """The alerts stage's stream of one subscriber's changes (alerts/fanout.py)."""

    def get_nowait(self) -> Alert:
        """The next waiting change: the alert after it. Raises asyncio.QueueEmpty when
        none is waiting, another error when the subscriber fell behind and was dropped."""
        ...

    def close(self) -> None:
        ...


class AlertSource(Protocol):
    """What the dashboard uses of the alerts stage (`alerts.AlertStage`). Its methods
    are synchronous and run on the event loop's thread. Unknown alerts raise the
    stage's `AlertNotFound`, a step the lifecycle does not allow `IllegalTransition`,
    a stage still restoring `StageNotReady` (dashboard/errors.py knows them all)."""

    def active(self, teams: frozenset[str] | None = None) -> list[Alert]:
        """The unresolved alerts that reached one of `teams` (None: all), oldest first."""
        ...

    def get(self, alert_id: str) -> Alert:
        ...

    def acknowledge(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        ...

    def resolve(self, alert_id: str, actor: str, note: str | None = None) -> Alert:
        ...

    def subscribe(self, teams: frozenset[str] | None = None, *,
                  wake: Callable[[], None] | None = None) -> AlertSubscription:
        """Every later change of an alert of `teams` (None: all); `wake` is called as
        soon as one is waiting, in the call that made it."""
        ...


class AlertFeed(Protocol):
    """One subscriber's alert changes, in order. The feed calls the `wake` it was
    subscribed with, on the event loop's thread, as soon as a change is waiting — in
    the call that made the change where it can, so the change is written at once."""

    def get_nowait(self) -> Alert | None:
        """The next waiting change, or None. Raises when the subscriber fell behind and
        was dropped, or the stage stopped."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class AlertsPort(Protocol):
    """What the routes need of the alerts.

    Every alert is the kernel's `trygg.alert.Alert`, with `teams` (every team it was
    published to): the caller sees an alert if it reached one of the caller's teams.
    `teams` arguments are the set of teams whose alerts the caller sees, or None for
    all teams. Unknown alerts raise `dashboard.errors.AlertNotFound` (or the alerts
    stage's own `AlertNotFound`), a step the lifecycle does not allow raises
    `IllegalTransition` (either package's).
    """

    async def list(self, teams: frozenset[str] | None, state: str | None,
                   since: datetime | None) -> AlertList:
        """Alerts of `teams`; `state` one of open|acknowledged|resolved|cancelled or None
        (the port's default: unresolved and recently closed); `since`: changed at or
        after (updated_at)."""
        ...

    async def get(self, alert_id: str) -> Alert | None:
        ...

    async def acknowledge(self, alert_id: str, actor: str) -> Alert:
        """open → acknowledged by `actor`; returns the alert after the change."""
        ...

    async def resolve(self, alert_id: str, actor: str, note: str | None) -> Alert:
        """open|acknowledged → resolved with `note`; returns the alert after the change."""
        ...

    def subscribe(self, teams: frozenset[str] | None, wake: Callable[[], None]) -> AlertFeed:
        """Every later change of an alert of `teams`, as the alert after the change;
        `wake` is called (on the loop's thread) whenever one is waiting."""
        ...

    async def open_alerts_of(self, resident_id: str) -> AlertList:
        """The unresolved (open or acknowledged) alerts of one resident."""
        ...


class StageAlerts:
    """`AlertsPort` over the alerts stage, whose methods are synchronous and run on the
    event loop's thread — so the dashboard must be served on that same loop (`trygg
    up`). The stage keeps only unresolved alerts at hand (and recently closed ones by
    id): `list(state="resolved"|"cancelled")` is empty here.
    """

    def __init__(self, stage: AlertSource) -> None:
        self._stage = stage

    async def list(self, teams: frozenset[str] | None, state: str | None,
                   since: datetime | None) -> AlertList:
        if state in ("resolved", "cancelled"):
            return []
        return [a for a in self._stage.active(teams)
                if (state is None or a.state == state) and (since is None or a.updated_at >= since)]

    async def get(self, alert_id: str) -> Alert | None:
        try:
            return self._stage.get(alert_id)
        except NOT_FOUND_ERRORS:
            return None

    async def acknowledge(self, alert_id: str, actor: str) -> Alert:
        return self._stage.acknowledge(alert_id, actor)

    async def resolve(self, alert_id: str, actor: str, note: str | None) -> Alert:
        return self._stage.resolve(alert_id, actor, note)

    def subscribe(self, teams: frozenset[str] | None, wake: Callable[[], None]) -> AlertFeed:
        return SubscriptionFeed(self._stage.subscribe(teams, wake=wake))

    async def open_alerts_of(self, resident_id: str) -> AlertList:
        return [a for a in self._stage.active(None) if a.resident_id == resident_id]


class SubscriptionFeed:
    """An `AlertFeed` over a subscription of the alert stage's hub (alerts/fanout.py):
    the stage's own, or the cluster's alert view's (composition/cluster_view.py)."""

    def __init__(self, subscription: AlertSubscription) -> None:
        self._subscription = subscription

    def get_nowait(self) -> Alert | None:
        try:
            return self._subscription.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._subscription.close()


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
    #: re-checks the rights of every open live stream (dashboard/stream_rights.py)
    rights: RightsWatch = field(init=False)
    #: token checks of stream opens under way (`StreamUser`)
    stream_checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(STREAM_CHECKS))

    def __post_init__(self) -> None:
        self.users = UserCache(self.settings.auth_offline_max_s)
        self.rights = RightsWatch(self.users, self.conninfo, principal_from)


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


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request was signed in with: kept by a live stream, which re-checks it
    while it stays open (dashboard/stream_rights.py)."""

    kind: TokenKind
    token_hash: str
    claims: TokenClaims


def principal_from(user: UserRow | None, revoked: bool, claims: TokenClaims) -> Principal | None:
    """The caller a token stands for, given its user's row as it is now; None if the
    token was signed out, the user is gone, or the password changed since it was issued."""
    if user is None or user.password_hash is None or revoked:
        return None
    if fingerprint(user.password_hash) != claims.fingerprint:
        return None
    try:
        role = Role(user.role)
    except ValueError:
        return None
    return Principal(user.username, role, frozenset(user.teams), frozenset(user.residents), claims.expires)


async def credential_of(state: AppState, pool: AsyncConnectionPool, token: str, kind: TokenKind
                        ) -> tuple[Principal, Credential] | None:
    """The user a token belongs to, if the token is valid and the user still exists with
    the same password. While PostgreSQL is unreachable, the user as this dashboard last
    read it (dashboard/user_cache.py); 503 for a user it has not read recently."""
    claims = state.signer.verify(token, kind, time.time())
    if claims is None:
        return None
    digest = token_hash(token)
    try:
        user, revoked = await lookup(state.users, pool, state.conninfo, claims.username, digest, claims.expires)
    except DatabaseDown:
        raise Unavailable("the database is unavailable; try again shortly") from None
    who = principal_from(user, revoked, claims)
    return None if who is None else (who, Credential(kind, digest, claims))


async def principal_of(state: AppState, pool: AsyncConnectionPool, token: str, kind: TokenKind
                       ) -> Principal | None:
    """`credential_of` without the credential."""
    found = await credential_of(state, pool, token, kind)
    return None if found is None else found[0]


async def current_user(
    request: Request,
    state: State,
    bearer: Annotated[str | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Principal:
    """The caller, from `Authorization: Bearer …` or the session cookie; else 401."""
    pool = get_pool(state)
    found: tuple[Principal, Credential] | None = None
    if bearer:
        found = await credential_of(state, pool, bearer, "api")
    elif cookie:
        found = await credential_of(state, pool, cookie, "session")
        if found is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
            require_same_origin(request)
    if found is None:
        raise NotAuthenticated("sign in: a valid bearer token or session cookie is needed")
    request.state.principal, request.state.credential = found
    return found[0]



#: Why a cookie-authenticated change was refused (403); says what to do, echoes nothing.
CROSS_SITE = ("refused: the session cookie only works for changes made from Trygg's own pages; this request "
              "came from another site or port, through a redirect, or without an origin ({why}). "
              "Open Trygg itself and try again; programs use a bearer token")

_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
_SITES: Final = frozenset({"cross-site", "same-site", "none"})


def _netloc(scheme: str, host: str) -> str:
    """`host[:port]` lower-cased, without the scheme's default port."""
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and host.endswith(f":{default}") and not host.endswith("]"):
        host = host[: -len(default) - 1]
    return host


def cross_site_reason(request: Request) -> str | None:
    """Why `request` may not have come from one of Trygg's own pages, or None if it did.

    Fetch Metadata first: a browser that sends `Sec-Fetch-Site` says where the request
    began, also across redirects (a page elsewhere that answers 307 to our URL makes
    `cross-site` or `same-site`, never `same-origin`); `none` (typed in the address bar)
    never posts a form or a change either. Without it (an old browser, or no browser),
    `Origin` must be present and equal to our own origin: `null` — what Chromium sends
    after a cross-origin redirect — and a missing `Origin` are refused. SameSite=Strict on
    the cookie does not help here: another port of the same host is the same site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        said = site.strip().lower()
        return None if said == "same-origin" else f"Sec-Fetch-Site: {said if said in _SITES else 'unknown'}"
    origin = request.headers.get("origin")
    if origin is None:
        return "no Origin header"
    parts = urlsplit(origin.strip())
    if (parts.scheme not in _DEFAULT_PORTS or not parts.netloc or parts.path or parts.query
            or (request.url.scheme == "https" and parts.scheme != "https")):
        return "Origin: null" if origin.strip() == "null" else "Origin is not ours"
    if _netloc(parts.scheme, parts.netloc) != _netloc(parts.scheme, request.headers.get("host", "")):
        return "Origin is not ours"
    return None


def require_same_origin(request: Request) -> None:
    """Refuse (403) a request a browser did not send from one of Trygg's own pages
    (`cross_site_reason`): every route that changes something with the session cookie
    (via `current_user`); `POST /login` uses the same rule (dashboard/routes_auth.py)."""
    reason = cross_site_reason(request)
    if reason is not None:
        raise Forbidden(CROSS_SITE.format(why=reason))


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



def get_credential(request: Request, who: CurrentUser) -> Credential:
    """What the caller signed in with (after `current_user`)."""
    credential: Credential = request.state.credential
    return credential


CurrentCredential = Annotated[Credential, Depends(get_credential)]


def get_stream_credential(request: Request, who: StreamUser) -> Credential:
    """What the caller of a live stream signed in with (after `stream_user`)."""
    credential: Credential = request.state.credential
    return credential


StreamCredential = Annotated[Credential, Depends(get_stream_credential)]




# --- Request parameters shared by the routes --------------------------------------

#: Ids of residents, teams, alerts, devices (docs/contract.md#3-topics).
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
    "AlertFeed",
    "AlertList",
    "AlertSource",
    "AlertSubscription",
    "Alerts",
    "AlertsPort",
    "AppState",
    "Audit",
    "Credential",
    "CurrentCredential",
    "CurrentUser",
    "Now",
    "Pool",
    "ResearchPool",
    "StageAlerts",
    "State",
    "StateProbe",
    "StreamCredential",
    "StreamUser",
    "UtcTime",
    "bad_parameter",
    "credential_of",
    "cross_site_reason",
    "current_user",
    "get_alerts",
    "get_audit",
    "get_research_pool",
    "get_state",
    "principal_from",
    "require_same_origin",
    "time_range",
]
