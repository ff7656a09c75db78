"""One-time password links (docs/admin.md "One-time password links", docs/security.md):
made by an admin, used once by the user on Trygg's own page to set a password that the
policy accepts; a new link voids the old one, an expired one is refused, and setting the
password ends every session and token the user had."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from dashboard.deps import SESSION_COOKIE
from tests.fix_api import OUR_PAGE, PASSWORD, World
from tests.fix_db import scalar

pytestmark = pytest.mark.integration

NEW_PASSWORD = "lilla elefant danser tango"


def make_link(w: World, username: str = "staff-east") -> tuple[str, str]:
    response = w.client.post(f"/api/admin/users/{username}/password-link", headers=w.headers("admin"))
    assert response.status_code == 201, response.text
    body = response.json()
    url = urlsplit(body["url"])
    assert url.path == "/password" and url.fragment.startswith("token=") and not url.query
    assert body["expires_at"]
    return url.fragment.removeprefix("token="), body["url"]


def use(w: World, token: str, password: str = NEW_PASSWORD, headers: dict[str, str] | None = None
        ) -> httpx.Response:
    return w.client.post("/api/password-links/use", json={"token": token, "password": password},
                         headers=OUR_PAGE if headers is None else headers)


def sign_in(w: World, username: str, password: str) -> int:
    return w.client.post("/api/auth/token", data={"username": username, "password": password}).status_code


def test_a_link_sets_the_password_once_and_ends_every_session(world: World) -> None:
    login = world.client.post("/login", data={"username": "staff-east", "password": PASSWORD}, headers=OUR_PAGE)
    cookie = {"Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"}
    world.client.cookies.clear()
    assert world.client.get("/api/alerts", headers=cookie).status_code == 200
    assert world.client.get("/api/alerts", headers=world.headers("staff-east")).status_code == 200

    token, _ = make_link(world)
    assert scalar(world.url, "SELECT count(*) FROM trygg.password_links WHERE token_hash LIKE %s",
                  f"%{token}%") == 0  # only its hash is stored
    check = world.client.post("/api/password-links/check", json={"token": token}, headers=OUR_PAGE)
    assert check.status_code == 200 and check.json()["username"] == "staff-east"
    response = use(world, token)
    assert response.status_code == 200, response.text
    assert response.json() == {"username": "staff-east"}

    assert world.client.get("/api/alerts", headers=cookie).status_code == 401
    assert world.client.get("/api/alerts", headers=world.headers("staff-east")).status_code == 401
    assert sign_in(world, "staff-east", PASSWORD) == 401
    assert sign_in(world, "staff-east", NEW_PASSWORD) == 200

    again = use(world, token, "another fine passphrase")
    assert again.status_code == 404 and "used" in again.json()["detail"]
    assert sign_in(world, "staff-east", NEW_PASSWORD) == 200
    actions = [c["action"] for c in world.client.get("/api/admin/changes", headers=world.headers("admin")).json()]
    assert actions == ["user.password_set", "user.password_link"]


def test_a_new_link_voids_the_old_one(world: World) -> None:
    old, _ = make_link(world)
    new, _ = make_link(world)
    assert use(world, old).status_code == 404
    assert use(world, new).status_code == 200


def test_an_expired_link_is_refused(world: World) -> None:
    token, _ = make_link(world)
    with psycopg.connect(world.url) as conn:
        conn.execute("UPDATE trygg.password_links SET expires_at = now() - interval '1 second'")
    assert world.client.post("/api/password-links/check", json={"token": token},
                             headers=OUR_PAGE).status_code == 404
    assert use(world, token).status_code == 404
    assert sign_in(world, "staff-east", PASSWORD) == 200
    make_link(world, "operator")
    assert scalar(world.url, "SELECT username FROM trygg.password_links") == "operator"  # the expired one went


@pytest.mark.parametrize(("password", "says"), [
    ("short", "shorter than 10"),
    ("1234567890", "run of keys"),
    ("passord2024!", "common password"),
    ("staff-east123", "username"),
])
def test_the_password_policy_applies_and_the_link_still_works(world: World, password: str, says: str) -> None:
    token, _ = make_link(world)
    refused = use(world, token, password)
    assert refused.status_code == 422 and says in refused.json()["detail"]
    assert sign_in(world, "staff-east", PASSWORD) == 200
    assert use(world, token).status_code == 200


@pytest.mark.parametrize("token", ["", "x" * 201, "nope", "\u0000", "' OR 1=1 --"])
def test_unknown_and_hostile_tokens(world: World, token: str) -> None:
    response = use(world, token)
    assert response.status_code in (404, 422)
    assert sign_in(world, "staff-east", PASSWORD) == 200


def test_only_from_our_own_page_and_only_for_existing_users(world: World) -> None:
    token, _ = make_link(world)
    assert use(world, token, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert use(world, token, headers={}).status_code == 403
    assert use(world, token).status_code == 200
    missing = world.client.post("/api/admin/users/nobody/password-link", headers=world.headers("admin"))
    assert missing.status_code == 404


def test_the_password_page_is_served_without_a_session(world: World) -> None:
    response = world.client.get("/password")
    assert response.status_code == 200
    assert "password.js" in response.text and "token" not in response.text.split("<script")[0].lower()
