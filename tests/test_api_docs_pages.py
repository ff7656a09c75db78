"""`/docs`, `/redoc` and `/openapi.json` (dashboard/api_docs.py): the pages carry the same
security headers as every other page — a policy with no inline script and no other
origin, the viewers served from the package — and `TRYGG_DOCS_REQUIRE_LOGIN=true` puts
all three behind sign-in. Before, `/docs` had no Content-Security-Policy and nothing
needed a sign-in; then it loaded the viewers from a CDN and was blank without internet
(issue 17; tests/browser/test_docs_offline.py renders them with the network blocked).
"""

from __future__ import annotations

import re

import pytest

from dashboard.deps import SESSION_COOKIE
from tests.fix_api import OUR_PAGE, PASSWORD, World
from trygg.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_pages_have_the_pages_security_headers_and_no_inline_script(world: World, path: str) -> None:
    response = world.client.get(path)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert "http" not in csp, "the policy names no other origin"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", response.text, re.S)
    assert scripts and all(' src="' in attrs and not body.strip() for attrs, body in scripts), "inline script"
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert assets and all(url.startswith("/") for url in assets), f"an asset from elsewhere: {assets}"
    for url in assets:
        if url.startswith("/static/"):
            served = world.client.get(url)
            assert served.status_code == 200 and len(served.content) > 100, url


def test_without_the_setting_the_docs_are_open(world: World) -> None:
    assert world.client.get("/openapi.json").json()["info"]["title"] == "Trygg"
    assert world.client.get("/docs").status_code == 200


def test_with_docs_require_login_only_signed_in_users_see_them(world: World) -> None:
    settings: Settings = world.app.state.trygg.settings
    settings.docs_require_login = True  # TRYGG_DOCS_REQUIRE_LOGIN=true
    for path in ("/docs", "/redoc"):
        response = world.client.get(path)
        assert (response.status_code, response.headers["location"]) == (303, "/login"), path
    schema = world.client.get("/openapi.json")
    assert schema.status_code == 401 and "paths" not in schema.text
    assert world.client.get("/openapi.json", headers={"Authorization": "Bearer v1.x.y"}).status_code == 401

    assert world.client.get("/openapi.json", headers=world.headers("relative-1")).status_code == 200
    login = world.client.post("/login", data={"username": "researcher", "password": PASSWORD}, headers=OUR_PAGE)
    cookie = {"Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}"}
    world.client.cookies.clear()
    assert world.client.get("/docs", headers=cookie).status_code == 200
    assert "paths" in world.client.get("/openapi.json", headers=cookie).json()


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYGG_DOCS_REQUIRE_LOGIN", "true")
    assert Settings().docs_require_login is True  # type: ignore[call-arg]
    monkeypatch.delenv("TRYGG_DOCS_REQUIRE_LOGIN")
    assert Settings().docs_require_login is False  # type: ignore[call-arg]
