"""Sign-in over real HTTP (dashboard/login_guard.py, dashboard/throttle.py,
dashboard/hashing.py): `POST /login` only from our own page, backoff per account and
per address with `Retry-After` (an injected clock: no sleeping), the same for unknown
accounts, a bounded hashing line, metrics. The browser side is in
tests/browser/test_login_guard.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from dashboard.hashing import PasswordWorker
from dashboard.login_guard import LoginGuard
from dashboard.throttle import Backoff, LoginThrottle
from tests.fix_api import PASSWORD, World, make_world

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(database: str) -> Iterator[tuple[World, Clock]]:
    """A world whose sign-in throttle runs on a clock the test moves."""
    clock = Clock()
    with make_world(database) as w:
        w.app.state.login_guard = LoginGuard(
            LoginThrottle(Backoff(free=5, leak_s=300), Backoff(free=20, leak_s=30), clock=clock), PasswordWorker())
        yield w, clock


def token(w: World, username: str, password: str, **kw: object) -> httpx.Response:
    return w.client.post("/api/auth/token", data={"username": username, "password": password}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [
    {}, {"Origin": "null"}, {"Origin": "https://evil.example"}, {"Origin": "http://127.0.0.1:1"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "none"},
], ids=["nothing", "null", "other-site", "other-port", "cross-site", "same-site", "none"])
def test_a_sign_in_form_from_anywhere_but_our_page_is_refused(world: World, headers: dict[str, str]) -> None:
    response = world.client.post("/login", data={"username": "staff-east", "password": PASSWORD}, headers=headers)
    assert response.status_code == 403, response.text
    assert "set-cookie" not in response.headers
    assert "Trygg's own sign-in page" in response.json()["detail"]
    page = world.client.post("/login", data={"username": "staff-east", "password": PASSWORD},
                             headers={**headers, "Accept": "text/html"})
    assert page.status_code == 403 and "set-cookie" not in page.headers
    assert "Innlogging godtas bare fra Tryggs egen innloggingsside" in page.text
    assert "Sign-in is only accepted from Trygg's own sign-in page" in page.text


def test_our_own_page_and_programs_still_sign_in(world: World) -> None:
    base = str(world.client.base_url).rstrip("/")
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Origin": base}):
        response = world.client.post("/login", data={"username": "staff-east", "password": PASSWORD},
                                     headers=headers)
        assert response.status_code == 303 and "trygg_session=" in response.headers["set-cookie"], headers
    assert token(world, "staff-east", PASSWORD).status_code == 200  # no Origin needed for a bearer token


def test_an_account_waits_after_five_failures_even_with_the_right_password(
        clocked: tuple[World, Clock]) -> None:
    w, clock = clocked
    for _ in range(6):
        assert token(w, "staff-east", "wrong password!").status_code == 401
    held = token(w, "staff-east", PASSWORD)
    assert held.status_code == 429 and held.headers["retry-after"] == "1"
    assert held.json() == {"detail": "too many sign-in attempts; try again later"}
    page = w.client.post("/login", data={"username": "staff-east", "password": PASSWORD},
                         headers={"Sec-Fetch-Site": "same-origin", "Accept": "text/html"})
    assert page.status_code == 429 and "Vent 1 sekund og" in page.text and "Wait 1 second and" in page.text
    clock.now += 1
    assert token(w, "staff-east", "wrong again!!").status_code == 401  # the 7th: now 2 s
    clock.now += 1
    assert token(w, "staff-east", PASSWORD).headers["retry-after"] == "1"
    clock.now += 1
    assert token(w, "staff-east", PASSWORD).status_code == 200  # after the backoff
    for _ in range(5):  # and the account starts afresh
        assert token(w, "staff-east", "wrong password!").status_code == 401


def test_an_unknown_account_is_throttled_exactly_like_a_known_one(clocked: tuple[World, Clock]) -> None:
    w, _ = clocked

    def run(username: str) -> list[tuple[int, str, str | None]]:
        out = []
        for _ in range(8):
            r = token(w, username, "wrong password!")
            out.append((r.status_code, r.text, r.headers.get("retry-after")))
        return out

    assert run("staff-west") == run("no-such-person")


def test_an_address_guessing_many_accounts_is_held_up_and_another_address_is_not(
        clocked: tuple[World, Clock]) -> None:
    w, _ = clocked
    for n in range(21):
        assert token(w, f"sprayed-{n}", "Summer2024!").status_code == 401
    assert token(w, "admin", PASSWORD).status_code == 429  # from the same address: held up
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=w.client.base_url, transport=other) as elsewhere:
        assert elsewhere.post("/api/auth/token", data={"username": "admin", "password": PASSWORD}).status_code == 200


def test_a_full_hashing_line_is_refused_at_once_with_503(database: str) -> None:
    with make_world(database) as w:
        w.app.state.login_guard = LoginGuard(
            LoginThrottle(Backoff(free=1000, leak_s=1), Backoff(free=1000, leak_s=1)),
            PasswordWorker(threads=1, max_waiting=1))

        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=w.client.base_url, timeout=30) as client:
                return await asyncio.gather(*(client.post("/api/auth/token", data={
                    "username": f"u{n}", "password": "wrong password!"}) for n in range(12)))

        answers = asyncio.run(flood())
        codes = sorted(r.status_code for r in answers)
        assert set(codes) == {401, 503} and codes.count(401) >= 2, codes
        busy = next(r for r in answers if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json() == {"detail": "signing in is busy; try again shortly"}
        assert token(w, "staff-east", PASSWORD).status_code == 200  # the line drains


def test_outcomes_are_counted_in_metrics(clocked: tuple[World, Clock]) -> None:
    w, _ = clocked
    for _ in range(7):
        token(w, "staff-east", "wrong password!")
    w.client.post("/login", data={"username": "staff-east", "password": PASSWORD})
    metrics = w.client.get("/metrics").text
    for result in ("refused", "throttled", "cross_site"):
        assert f'trygg_logins_total{{result="{result}"}}' in metrics, result
