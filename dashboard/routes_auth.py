"""Signing in: bearer tokens for the API, the session cookie for the pages.

Before a password is checked (dashboard/login_guard.py): `POST /login` must come from
Trygg's own sign-in page (403 otherwise), the account and the client address must not
be waiting out a backoff (429 with `Retry-After`), and the argon2 worker must have room
(503 with `Retry-After`). Every outcome is counted in `trygg_logins_total{result}`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordRequestForm
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from dashboard.auth import MAX_PASSWORD_LENGTH, token_hash
from dashboard.deps import SESSION_COOKIE, CurrentUser, Pool, State, cross_site_reason
from dashboard.errors import WRONG_LOGIN, ErrorOut, Forbidden, NotFound
from dashboard.hashing import HashingBusy
from dashboard.login_guard import Guard, LoginGuard, client_host, get_guard
from dashboard.passwords import password_problem
from dashboard.throttle import Throttled
from dashboard.user_cache import revoke
from storage.admin_store import open_link, use_link
from storage.users_store import UserRow, fetch_user
from trygg.contract import Role
from trygg.logging import get_logger

log = get_logger(__name__)

LOGINS = Counter("trygg_logins", "Sign-in attempts by result: ok, refused (wrong username or password), "
                 "throttled (429), busy (503), cross_site (403)", ["result"])
THROTTLE_EVICTED = Counter("trygg_login_throttle_evicted", "Throttled accounts or addresses forgotten early "
                           "because the table was full (TRYGG_LOGIN_THROTTLE_KEYS)")

#: Where `POST /login` sends each role.
HOME: dict[str, str] = {Role.RELATIVE.value: "/relatives", Role.RESEARCHER.value: "/research",
                        Role.ADMIN.value: "/admin"}

class _GuardedRoute(APIRoute):
    """A sign-in route that refuses what it can from the headers alone, before the form is
    read: the dashboard shares its event loop with the alarm path (composition/app.py), so a
    flood must cost it as little as possible per request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        path = self.path

        async def guarded(request: Request) -> Response:
            refusal = _early_refusal(request, get_guard(request), path == "/login")
            if refusal is None:
                return await handler(request)
            return _login_refused(request, refusal) if path == "/login" else _json_refusal(refusal)

        return guarded


router = APIRouter(tags=["auth"])
sign_in_router = APIRouter(tags=["auth"], route_class=_GuardedRoute)

THROTTLED: Final = "too many sign-in attempts; try again later"
BUSY: Final = "signing in is busy; try again shortly"
CROSS_SITE: Final = ("sign-in is only accepted from Trygg's own sign-in page; programs use "
                     "POST /api/auth/token")

_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "Wrong username or password (the same for an unknown user)"},
    429: {"model": ErrorOut, "headers": _RETRY,
          "description": "Too many failed attempts for this account or from this address: wait Retry-After "
                         "seconds (the right password is refused too until then)"},
    503: {"model": ErrorOut, "headers": _RETRY,
          "description": "Passwords cannot be checked right now (the worker is full, or the database is down)"},
}


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class MeOut(BaseModel):
    username: str
    role: str
    teams: list[str]
    residents: list[str]
    expires_at: int


class Refusal(Exception):
    """A sign-in that was not checked or not accepted, with what to answer."""

    def __init__(self, status: int, detail: str, result: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.result, self.retry_after = status, detail, result, retry_after

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return headers


def _early_refusal(request: Request, guard: LoginGuard, form: bool) -> Refusal | None:
    """What can be refused before the form is read: a form from another site (403), an
    address that must wait (429), a full hashing line (503)."""
    if form and (reason := cross_site_reason(request)) is not None:
        LOGINS.labels("cross_site").inc()
        log.warning("sign_in_form_refused_cross_site", reason=reason)
        return Refusal(403, CROSS_SITE, "cross_site")
    wait = guard.throttle.address_wait(client_host(request))
    if wait > 0:
        LOGINS.labels("throttled").inc()
        return Refusal(429, THROTTLED, "throttled", Throttled(wait).retry_after_s)
    if guard.worker.full:
        LOGINS.labels("busy").inc()
        return Refusal(503, BUSY, "busy", 1)
    return None


def _json_refusal(refusal: Refusal) -> Response:
    return JSONResponse({"detail": refusal.detail}, status_code=refusal.status, headers=refusal.headers)


async def authenticate(guard: LoginGuard, pool: AsyncConnectionPool, username: str, password: str,
                       host: str | None) -> UserRow:
    """The user if the password matches, else `Refusal`. An unknown user and a wrong
    password get the same 401 after the same work (argon2 runs either way), and the
    same throttling."""
    evicted = guard.throttle.evicted
    try:
        attempt = guard.throttle.begin(username, host)
    except Throttled as exc:
        LOGINS.labels("throttled").inc()
        raise Refusal(429, THROTTLED, "throttled", exc.retry_after_s) from None
    finally:
        THROTTLE_EVICTED.inc(guard.throttle.evicted - evicted)
    try:
        if guard.worker.full:  # before the database is asked
            raise HashingBusy
        user = None
        if 0 < len(username) <= 64:
            async with pool.connection() as conn:
                user = await fetch_user(conn, username)
        ok = await guard.worker.verify(user.password_hash if user else None, password)
    except HashingBusy:
        guard.throttle.not_checked(attempt)
        LOGINS.labels("busy").inc()
        raise Refusal(503, BUSY, "busy", 1) from None
    except BaseException:
        guard.throttle.not_checked(attempt)
        raise
    if not ok or user is None:
        LOGINS.labels("refused").inc()
        log.info("sign_in_refused")
        raise Refusal(401, WRONG_LOGIN, "refused")
    guard.throttle.succeeded(attempt)
    LOGINS.labels("ok").inc()
    try:
        Role(user.role)
    except ValueError:
        raise Refusal(401, WRONG_LOGIN, "refused") from None
    return user


@sign_in_router.post("/api/auth/token", response_model=TokenOut, responses=ERRORS,
             summary="Exchange username and password for a bearer token (OAuth2 password form)")
async def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], state: State,
                pool: Pool, guard: Guard) -> TokenOut | Response:
    try:
        user = await authenticate(guard, pool, form.username, form.password, client_host(request))
    except Refusal as refusal:
        return _json_refusal(refusal)
    state.users.remember(user)
    expires = int(time.time()) + state.token_ttl_s
    return TokenOut(access_token=state.signer.issue(user.username, user.password_hash, "api", expires),
                    expires_in=state.token_ttl_s)


@router.get("/api/auth/me", response_model=MeOut, responses={401: {"description": "Not signed in"}},
            summary="Who the token or cookie belongs to")
async def me(who: CurrentUser) -> MeOut:
    return MeOut(username=who.username, role=who.role.value, teams=sorted(who.teams),
                 residents=sorted(who.residents), expires_at=who.expires)


#: What the sign-in page says for each refusal, in Norwegian and English.
_PAGE_TEXT: Final = {
    "refused": ("Feil brukernavn eller passord.", "Wrong username or password."),
    "throttled": ("For mange mislykkede forsøk. Vent {s} {sekunder} og prøv igjen.",
                  "Too many failed attempts. Wait {s} {seconds} and try again."),
    "busy": ("Innlogging er travel akkurat nå. Prøv igjen om litt.", "Signing in is busy. Try again shortly."),
    "cross_site": ("Innlogging godtas bare fra Tryggs egen innloggingsside. Åpne Trygg selv og logg inn der.",
                   "Sign-in is only accepted from Trygg's own sign-in page. Open Trygg yourself and sign in there."),
}


def _login_refused(request: Request, refusal: Refusal) -> Response:
    """JSON for the page's script and programs; a small page for a form posted without
    the script (the browser shows it in place of the sign-in page)."""
    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": refusal.detail}, status_code=refusal.status, headers=refusal.headers)
    wait = refusal.retry_after or 1
    nb, en = (t.format(s=wait, sekunder="sekund" if wait == 1 else "sekunder",
                       seconds="second" if wait == 1 else "seconds") for t in _PAGE_TEXT[refusal.result])
    body = ("<!doctype html><html lang=\"nb\"><meta charset=utf-8><title>Trygg – logg inn</title>"
            "<link rel=\"stylesheet\" href=\"/static/css/trygg.css\"><body class=\"login\"><main class=\"login-main\">"
            "<h1>Trygg</h1><div class=\"notice error\" role=\"alert\">"
            f"<p lang=\"nb\">{html.escape(nb, quote=False)}</p><p lang=\"en\">{html.escape(en, quote=False)}</p></div>"
            "<p><a href=\"/login\">Til innlogging</a> · <a href=\"/login\" lang=\"en\">Back to sign-in</a></p>"
            "</main></body></html>")
    return HTMLResponse(body, status_code=refusal.status,
                        headers={**refusal.headers, "Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'"})


_LOGIN_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}},
                "text/html": {"schema": {"type": "string"}}}


@sign_in_router.post("/login", status_code=303, response_class=RedirectResponse, responses={
    303: {"description": "Signed in: to /, /admin (administrators), /relatives (relatives) or /research "
                        "(researchers)"},
    401: {"description": "Wrong username or password", "content": _LOGIN_ERROR},
    403: {"description": "Not posted from Trygg's own sign-in page (no `Sec-Fetch-Site: same-origin`, "
                         "nor an `Origin` of this host): a possible login CSRF", "content": _LOGIN_ERROR},
    429: {"description": "Too many failed attempts for this account or from this address",
          "headers": _RETRY, "content": _LOGIN_ERROR},
    503: {"description": "Passwords cannot be checked right now", "headers": _RETRY, "content": _LOGIN_ERROR}},
             summary="Sign in to the web pages: sets the trygg_session cookie")
async def login(request: Request, username: Annotated[str, Form(max_length=200)],
                password: Annotated[str, Form(max_length=MAX_PASSWORD_LENGTH)],
                state: State, pool: Pool, guard: Guard) -> Response:
    try:  # a form from another site was refused before it was read (_GuardedRoute)
        user = await authenticate(guard, pool, username, password, client_host(request))
    except Refusal as refusal:
        return _login_refused(request, refusal)
    state.users.remember(user)
    expires = int(time.time()) + state.token_ttl_s
    response = RedirectResponse(HOME.get(user.role, "/"), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, state.signer.issue(user.username, user.password_hash, "session", expires),
        max_age=state.token_ttl_s, path="/", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", status_code=303, response_class=RedirectResponse,
             responses={303: {"description": "Signed out: to /login"}},
             summary="Sign out: clears the trygg_session cookie; it (and a bearer token sent along) stops working")
async def logout(request: Request, state: State, pool: Pool) -> Response:
    now = time.time()
    ended = []
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and (claims := state.signer.verify(cookie, "session", now)):
        ended.append((cookie, claims.expires))
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer ") and (claims := state.signer.verify(bearer[7:].strip(), "api", now)):
        ended.append((bearer[7:].strip(), claims.expires))
    for token_text, expires in ended:  # in memory at once; in PostgreSQL now or when it is back
        await revoke(state.users, pool, token_hash(token_text), expires)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


# --- one-time password links (docs/security.md "One-time password links") ---------------

#: One answer for a link that never existed, was used, was replaced or expired.
LINK_GONE: Final = "this link is not valid: it was used, replaced by a newer one, or it expired; ask for a new one"


def password_link_url(base_url: str, token: str) -> str:
    """The page that sets a password with `token`: in the URL's fragment, which the
    browser never sends to the server (nor to a proxy's log); the page's script posts it."""
    return f"{base_url.rstrip('/')}/password#token={token}"


class LinkIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class NewPasswordIn(LinkIn):
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)


class LinkOut(BaseModel):
    username: str
    expires_at: datetime


class PasswordSetOut(BaseModel):
    username: str


class PasswordRefusedOut(BaseModel):
    """422: why the policy refuses the password (a sentence), or FastAPI's list of
    fields that do not fit."""

    detail: str | list[dict[str, Any]]


_LINK_ERRORS: dict[int | str, dict[str, object]] = {
    403: {"model": ErrorOut, "description": "Not sent from Trygg's own page"},
    404: {"model": ErrorOut, "description": "The link is unknown, used, replaced or expired"},
    503: ERRORS[503],
}


def _link_request(request: Request) -> None:
    """The links are for Trygg's own password page (the same rule as the sign-in form)."""
    if cross_site_reason(request) is not None:
        raise Forbidden("a password is only set from Trygg's own password page")


@sign_in_router.post("/api/password-links/check", response_model=LinkOut, responses=_LINK_ERRORS,
                     summary="Whose a one-time password link is, and until when it works")
async def check_link(request: Request, body: LinkIn, pool: Pool) -> LinkOut:
    _link_request(request)
    async with pool.connection() as conn:
        found = await open_link(conn, body.token)
    if found is None:
        raise NotFound(LINK_GONE)
    return LinkOut(username=found[0], expires_at=found[1])


@sign_in_router.post("/api/password-links/use", response_model=PasswordSetOut,
                     responses={**_LINK_ERRORS, 422: {"model": PasswordRefusedOut, "description": "The password "
                                                      "policy refuses the password (the link still works)"}},
                     summary="Set one's password with a one-time link: the link is used up, every session "
                             "and token of the user stops working")
async def use_password_link(request: Request, body: NewPasswordIn, pool: Pool, guard: Guard) -> Response:
    _link_request(request)
    async with pool.connection() as conn:
        found = await open_link(conn, body.token)
    if found is None:
        raise NotFound(LINK_GONE)
    problem = password_problem(body.password, found[0])
    if problem:
        return JSONResponse({"detail": problem}, status_code=422)
    try:
        hashed = await guard.worker.hash(body.password)
    except HashingBusy:
        return _json_refusal(Refusal(503, BUSY, "busy", 1))
    async with pool.connection() as conn:
        username = await use_link(conn, body.token, hashed)
    if username is None:
        raise NotFound(LINK_GONE)
    log.info("password_set_by_link")
    return JSONResponse(PasswordSetOut(username=username).model_dump())


router.include_router(sign_in_router)  # keeps _GuardedRoute

__all__ = ["HOME", "LINK_GONE", "Refusal", "authenticate", "password_link_url", "router"]
