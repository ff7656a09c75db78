"""Cross-site request forgery: a change made with the session cookie must carry proof
that one of Trygg's own pages sent it (dashboard/deps.py `require_same_origin`) —
`Sec-Fetch-Site: same-origin`, or else an `Origin` equal to the dashboard's own. `null`
(what Chromium sends after a redirect from another origin) and a missing `Origin` are
refused with 403. Bearer tokens and reads are not affected. The browser side of this
(a real 307 from another port and another site) is tests/browser/test_cross_site.py.
"""

from __future__ import annotations

import pytest

from dashboard.deps import SESSION_COOKIE
from tests.fix_api import OUR_PAGE, PASSWORD, World

pytestmark = pytest.mark.integration


def cookie_of(w: World, user: str) -> dict[str, str]:
    login = w.client.post("/login", data={"username": user, "password": PASSWORD}, headers=OUR_PAGE)
    assert login.status_code == 303
    w.client.cookies.clear()
    return {"Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"}


def state_of(w: World, alert_id: str) -> str:
    response = w.client.get("/api/alerts", headers=w.headers("operator"))
    return str(next(a["state"] for a in response.json() if a["alert_id"] == alert_id))


@pytest.mark.parametrize("proof", [
    {}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:1"}, {"Origin": "https://evil.example"},
    {"Origin": "file://"}, {"Origin": "{own}/path"},
    {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "none"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "{own}"},  # a forged Origin does not outvote the browser
    {"Sec-Fetch-Site": "garbage<script>"},
], ids=["no-origin", "null", "other-port", "other-site", "file", "origin-with-path", "same-site",
        "cross-site", "none", "cross-site-with-our-origin", "garbage"])
def test_a_cookie_change_without_proof_of_our_own_page_is_403_and_changes_nothing(
        world: World, proof: dict[str, str]) -> None:
    own = str(world.client.base_url).rstrip("/")
    headers = {**cookie_of(world, "staff-east"), **{k: v.format(own=own) for k, v in proof.items()}}
    for step in ("ack", "resolve"):
        response = world.client.post(f"/api/alerts/a-east/{step}", headers=headers)
        assert response.status_code == 403, (step, response.text)
        detail = response.json()["detail"]
        assert "Trygg's own pages" in detail and "bearer token" in detail
        assert "evil" not in detail and "garbage" not in detail  # nothing sent is echoed
    assert state_of(world, "a-east") == "open"


@pytest.mark.parametrize("proof", [
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "same-origin", "Origin": "null"},  # Fetch Metadata decides when present
    {"Origin": "{own}"},
    {"Origin": "{own_upper}"},
], ids=["fetch-metadata", "fetch-metadata-with-null-origin", "origin", "origin-other-case"])
def test_a_cookie_change_from_our_own_page_works(world: World, proof: dict[str, str]) -> None:
    own = str(world.client.base_url).rstrip("/")
    headers = {**cookie_of(world, "staff-east"),
               **{k: v.format(own=own, own_upper=own.upper().replace("HTTP://", "http://")) for k, v in proof.items()}}
    ack = world.client.post("/api/alerts/a-east/ack", headers=headers)
    assert ack.status_code == 200, ack.text
    assert ack.json()["acknowledged_by"] == "staff-east"
    done = world.client.post("/api/alerts/a-east/resolve", headers=headers, json={"note": "ok"})
    assert done.status_code == 200 and done.json()["resolved_by"] == "staff-east"


def test_bearer_tokens_and_cookie_reads_need_no_origin(world: World) -> None:
    assert world.client.post("/api/alerts/a-east/ack", headers=world.headers("staff-east")).status_code == 200
    cookie = cookie_of(world, "staff-east")
    assert world.client.get("/api/alerts", headers=cookie).status_code == 200
    assert world.client.get("/api/auth/me", headers={**cookie, "Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_a_bad_cookie_is_still_401_not_403(world: World) -> None:
    """No session, nothing to protect: the caller learns to sign in."""
    response = world.client.post("/api/alerts/a-east/ack", headers={"Cookie": f"{SESSION_COOKIE}=v1.x.y",
                                                                     "Origin": "null"})
    assert response.status_code == 401


def test_the_same_check_is_a_public_helper() -> None:
    """`require_same_origin(request)` is public, for a route with no session yet (the
    sign-in form)."""
    from dashboard import deps

    assert "require_same_origin" in deps.__all__
