"""Signing in: bearer tokens, the session cookie, sign-in refusals, token lifetimes."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from dashboard.auth import hash_password
from dashboard.deps import SESSION_COOKIE
from storage.users_store import upsert_user
from tests.fix_api import PASSWORD, World, make_world
from tests.fix_db import PostgresInstance, scalar
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

#: What a browser sends with a form posted from Trygg's own sign-in page (dashboard/login_guard.py).
FROM_OUR_PAGE = {"Sec-Fetch-Site": "same-origin"}


def token_for(w: World, username: str, password: str) -> httpx.Response:
    return w.client.post("/api/auth/token", data={"username": username, "password": password})


def test_password_form_gives_a_working_bearer_token(world: World) -> None:
    response = token_for(world, "staff-east", PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 12 * 3600
    me = world.client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {"username": "staff-east", "role": "staff", "teams": ["east"], "residents": [],
                         "expires_at": me.json()["expires_at"]}


@pytest.mark.parametrize(("username", "password"), [
    ("staff-east", "wrong password"), ("nobody", PASSWORD), ("", PASSWORD), ("staff-east", ""),
])
def test_failed_sign_in_is_401_with_one_message(world: World, username: str, password: str) -> None:
    response = token_for(world, username, password)
    assert response.status_code in (401, 422)
    if response.status_code == 401:
        assert response.json() == {"detail": "wrong username or password"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_user_and_wrong_password_look_the_same(world: World) -> None:
    unknown = token_for(world, "nobody", PASSWORD)
    wrong = token_for(world, "staff-east", "not the password")
    assert (unknown.status_code, unknown.text) == (wrong.status_code, wrong.text) == (
        401, '{"detail":"wrong username or password"}')
    login_unknown = world.client.post("/login", data={"username": "nobody", "password": PASSWORD},
                                      headers=FROM_OUR_PAGE)
    login_wrong = world.client.post("/login", data={"username": "staff-east", "password": "x" * 12},
                                    headers=FROM_OUR_PAGE)
    assert (login_unknown.status_code, login_unknown.text) == (login_wrong.status_code, login_wrong.text)
    assert login_unknown.status_code == 401 and "set-cookie" not in login_unknown.headers


@pytest.mark.parametrize(("user", "home"), [
    ("staff-east", "/"), ("operator", "/"), ("admin", "/admin"), ("relative-1", "/relatives"),
    ("researcher", "/research"),
])
def test_login_sets_a_strict_httponly_cookie_and_redirects_by_role(world: World, user: str, home: str) -> None:
    response = world.client.post("/login", data={"username": user, "password": PASSWORD}, headers=FROM_OUR_PAGE)
    assert response.status_code == 303
    assert response.headers["location"] == home
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Max-Age=43200" in cookie


def test_the_cookie_opens_the_api_and_logout_clears_it(world: World) -> None:
    login = world.client.post("/login", data={"username": "relative-1", "password": PASSWORD}, headers=FROM_OUR_PAGE)
    cookie = login.cookies[SESSION_COOKIE]
    with httpx.Client(base_url=str(world.client.base_url), cookies={SESSION_COOKIE: cookie}) as browser:
        status = browser.get("/api/residents/r-1/status")
        assert status.status_code == 200
        assert status.json()["resident_id"] == "r-1"
        logout = browser.post("/logout")
        assert logout.status_code == 303 and logout.headers["location"] == "/login"
        assert f'{SESSION_COOKIE}=""' in logout.headers["set-cookie"]
        assert "Max-Age=0" in logout.headers["set-cookie"]
        assert browser.get("/api/residents/r-1/status").status_code == 401


def test_cookie_from_another_site_cannot_change_anything(world: World) -> None:
    login = world.client.post("/login", data={"username": "staff-east", "password": PASSWORD}, headers=FROM_OUR_PAGE)
    cookie = {"Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"}
    world.client.cookies.clear()
    evil = world.client.post("/api/alerts/a-east/ack", headers={**cookie, "Origin": "https://evil.example"})
    assert evil.status_code == 403
    ours = world.client.post("/api/alerts/a-east/ack",
                             headers={**cookie, "Origin": str(world.client.base_url).rstrip("/")})
    assert ours.status_code == 200


def test_tokens_are_refused_when_expired_tampered_or_of_the_other_kind(world: World) -> None:
    signer = world.app.state.trygg.signer
    from tests.fix_api import password_hash

    expired = signer.issue("admin", password_hash(), "api", int(time.time()) - 1)
    session = signer.issue("admin", password_hash(), "session", int(time.time()) + 60)
    good = signer.issue("admin", password_hash(), "api", int(time.time()) + 60)
    head, payload, sig = good.split(".")
    forged = f"{head}.{payload[:-2]}AA.{sig}"
    for token in (expired, session, forged, "garbage", good + "x"):
        response = world.client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
    assert world.client.get("/api/auth/me", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    api_as_cookie = world.client.get("/api/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={good}"})
    assert api_as_cookie.status_code == 401


def test_a_new_password_ends_old_tokens_and_role_changes_apply_at_once(world: World) -> None:
    old = token_for(world, "staff-east", PASSWORD).json()["access_token"]
    headers = {"Authorization": f"Bearer {old}"}
    assert world.client.get("/api/residents/r-1/events", headers=headers).status_code == 200
    with psycopg.connect(world.url) as conn:
        upsert_user(conn, "staff-east", "staff", ["west"], [], None)  # moved to west
    assert world.client.get("/api/residents/r-1/events", headers=headers).status_code == 404
    with psycopg.connect(world.url) as conn:
        upsert_user(conn, "staff-east", "staff", ["east"], [], hash_password("a brand new password"))
    assert world.client.get("/api/residents/r-1/events", headers=headers).status_code == 401
    assert token_for(world, "staff-east", PASSWORD).status_code == 401
    assert token_for(world, "staff-east", "a brand new password").status_code == 200


def test_a_user_without_a_password_cannot_sign_in(world: World) -> None:
    with psycopg.connect(world.url) as conn:
        upsert_user(conn, "registry-only", "staff", ["east"], [], None)
    assert token_for(world, "registry-only", "").status_code in (401, 422)
    assert token_for(world, "registry-only", PASSWORD).status_code == 401


def test_every_api_route_needs_a_caller(world: World) -> None:
    for route in world.app.routes:
        path = getattr(route, "path", "")
        methods = getattr(route, "methods", set()) or set()
        if not path.startswith("/api/") or path == "/api/auth/token":
            continue
        concrete = path.replace("{alert_id}", "a-east").replace("{resident_id}", "r-1")
        for method in methods - {"HEAD"}:
            response = world.client.request(method, concrete)
            assert response.status_code == 401, (method, path)


# --- while PostgreSQL is down (dashboard/user_cache.py) --------------------------------


@pytest.mark.serial
def test_while_postgresql_is_down_signed_in_staff_go_on_and_a_sign_out_still_holds(
        private_postgres: PostgresInstance) -> None:
    url = private_postgres.url("trygg")
    with make_world(url) as w:
        login = w.client.post("/login", data={"username": "staff-east", "password": PASSWORD}, headers=FROM_OUR_PAGE)
        base = str(w.client.base_url)
        with httpx.Client(base_url=base, cookies={SESSION_COOKIE: login.cookies[SESSION_COOKIE]},
                          headers={"Origin": base}) as browser:  # as a browser on our own page sends
            assert browser.get("/api/alerts").status_code == 200  # checked against PostgreSQL
            private_postgres.stop()
            started = time.monotonic()
            listed = browser.get("/api/alerts")
            assert listed.status_code == 200 and time.monotonic() - started < 1.0
            assert [a["alert_id"] for a in listed.json()] == ["a-east", "a-east-low"]
            assert browser.post("/api/alerts/a-east/ack").json()["acknowledged_by"] == "staff-east"
            assert browser.post("/logout").status_code == 303
            assert time.monotonic() - started < 2.0, "signing out waited for the database"
            browser.cookies.set(SESSION_COOKIE, login.cookies[SESSION_COOKIE])
            assert browser.get("/api/alerts").status_code == 401, "signed out is signed out, database or not"
        never_seen = w.client.get("/api/alerts", headers=w.headers("staff-west"))
        assert never_seen.status_code == 503

        private_postgres.start()
        stored = wait_for(lambda: (w.client.get("/api/auth/me", headers=w.headers("admin")).status_code,
                                   scalar(url, "SELECT count(*) FROM trygg.revoked_tokens")),
                          lambda r: r == (200, 1), timeout=20, interval=0.2)
        assert stored == (200, 1), "the sign-out reaches PostgreSQL when it is back"


@pytest.mark.serial
def test_with_no_offline_grace_a_check_while_postgresql_is_down_is_503_at_once(
        private_postgres: PostgresInstance) -> None:
    with make_world(private_postgres.url("trygg")) as w:
        w.app.state.trygg.users.max_age_s = 0  # TRYGG_AUTH_OFFLINE_MAX_S=0
        assert w.client.get("/api/alerts", headers=w.headers("staff-east")).status_code == 200
        private_postgres.stop()
        started = time.monotonic()
        assert w.client.get("/api/alerts", headers=w.headers("staff-east")).status_code == 503
        assert time.monotonic() - started < 1.0
