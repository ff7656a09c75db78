"""Signing in: bearer tokens for the API, the session cookie for the pages."""

from __future__ import annotations

import asyncio
import html
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import OAuth2PasswordRequestForm
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from dashboard.auth import MAX_PASSWORD_LENGTH, token_hash, verify_password
from dashboard.deps import SESSION_COOKIE, CurrentUser, Pool, State
from dashboard.errors import WRONG_LOGIN, NotAuthenticated, responses
from dashboard.user_cache import revoke
from storage.users_store import UserRow, fetch_user
from trygg.contract import Role
from trygg.logging import get_logger

log = get_logger("dashboard")

LOGINS = Counter("trygg_logins", "Sign-in attempts", ["result"])

#: Where `POST /login` sends each role.
HOME: dict[str, str] = {Role.RELATIVE.value: "/relatives", Role.RESEARCHER.value: "/research"}

router = APIRouter(tags=["auth"])

ERRORS = responses(401)


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


async def authenticate(pool: AsyncConnectionPool, username: str, password: str) -> UserRow | None:
    """The user if the password matches; the same None for an unknown user and a wrong
    password, after the same work (argon2 runs either way, in a worker thread)."""
    user = None
    if 0 < len(username) <= 64:
        async with pool.connection() as conn:
            user = await fetch_user(conn, username)
    ok = await asyncio.to_thread(verify_password, user.password_hash if user else None, password)
    LOGINS.labels("ok" if ok else "refused").inc()
    if not ok or user is None:
        log.info("sign-in refused")
        return None
    try:
        Role(user.role)
    except ValueError:
        return None
    return user


@router.post("/api/auth/token", response_model=TokenOut, responses=ERRORS,
             summary="Exchange username and password for a bearer token (OAuth2 password form)")
async def token(form: Annotated[OAuth2PasswordRequestForm, Depends()], state: State, pool: Pool) -> TokenOut:
    user = await authenticate(pool, form.username, form.password)
    if user is None:
        raise NotAuthenticated(WRONG_LOGIN)
    state.users.remember(user)
    expires = int(time.time()) + state.token_ttl_s
    return TokenOut(access_token=state.signer.issue(user.username, user.password_hash, "api", expires),
                    expires_in=state.token_ttl_s)


@router.get("/api/auth/me", response_model=MeOut, responses={401: {"description": "Not signed in"}},
            summary="Who the token or cookie belongs to")
async def me(who: CurrentUser) -> MeOut:
    return MeOut(username=who.username, role=who.role.value, teams=sorted(who.teams),
                 residents=sorted(who.residents), expires_at=who.expires)


def _login_refused(request: Request) -> Response:
    if "text/html" in request.headers.get("accept", ""):
        body = (f"<!doctype html><meta charset=utf-8><title>Trygg</title>"
                f"<p>{html.escape(WRONG_LOGIN.capitalize())}.</p><p><a href=\"/login\">Try again</a></p>")
        return HTMLResponse(body, status_code=401)
    return JSONResponse({"detail": WRONG_LOGIN}, status_code=401)


@router.post("/login", status_code=303, response_class=RedirectResponse, responses={
    303: {"description": "Signed in: to /, /relatives (relatives) or /research (researchers)"},
    401: {"description": "Wrong username or password",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}},
                      "text/html": {"schema": {"type": "string"}}}}},
             summary="Sign in to the web pages: sets the trygg_session cookie")
async def login(request: Request, username: Annotated[str, Form(max_length=200)],
                password: Annotated[str, Form(max_length=MAX_PASSWORD_LENGTH)],
                state: State, pool: Pool) -> Response:
    user = await authenticate(pool, username, password)
    if user is None:
        return _login_refused(request)
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


__all__ = ["HOME", "authenticate", "router"]
