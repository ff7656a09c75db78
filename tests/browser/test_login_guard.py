"""Sign-in in a real browser against `trygg up` (dashboard/login_guard.py): a page on
another site that posts the sign-in form with the attacker's own account no longer
switches a signed-in nurse's console to that account (login CSRF); signing in from
Trygg's own page still works; the page says in both languages when to try again after
too many wrong passwords; and `X-Forwarded-For` is not believed unless a trusted proxy
is configured."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.support import PASSWORD, System, login, running_system, shot, watch
from tests.fix_mqtt import MosquittoInstance

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

USERS = [("ola", "staff", ["--team", "east"]), ("mallory", "staff", ["--team", "west"])]


@pytest.fixture(scope="module")
def signin_system(mosquitto: MosquittoInstance, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[System]:
    """A `trygg up` of this module: its throttle state is its own. An address's failures
    are forgotten only after an hour here, so that the count does not depend on how fast
    this machine checks 21 passwords (each check and its rest took over 1.5 s under load,
    and a 30 s leak then forgave the 21st failure)."""
    with running_system(mosquitto, pg_admin_url, tmp_path_factory.mktemp("trygg-signin"),
                        {"TRYGG_LOGIN_ACCOUNT_FREE": "2", "TRYGG_LOGIN_ADDRESS_LEAK_S": "3600"}) as running:
        yield running


@pytest.fixture
def attacker_site(signin_system: System) -> Iterator[str]:
    """Another site (`http://localhost:PORT`, not Trygg's `http://127.0.0.1:PORT`) whose
    page posts Trygg's sign-in form with the attacker's account as soon as it opens."""
    page = (f'<!doctype html><title>Gratis kaffe</title><form id="f" method="post" '
            f'action="{signin_system.base_url}/login"><input name="username" value="mallory">'
            f'<input name="password" value="{PASSWORD}"></form>'
            '<script>document.getElementById("f").submit()</script>').encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def who_is_signed_in(page: Page) -> str | None:
    me = page.evaluate("async () => { const r = await fetch('/api/auth/me'); return r.ok ? (await r.json()).username"
                       " : null; }")
    return None if me is None else str(me)


def test_a_page_on_another_site_cannot_switch_a_nurse_to_another_account(
        signin_system: System, context: BrowserContext, attacker_site: str) -> None:
    base = signin_system.base_url
    context.route(re.compile(rf"^{re.escape(attacker_site)}"), lambda route: route.continue_())
    page = context.new_page()
    seen = watch(page)
    login(page, base, "ola", "/")  # signing in from Trygg's own page works
    assert who_is_signed_in(page) == "ola"

    page.goto(attacker_site)  # the nurse opens a link; the page posts the form at once
    page.wait_for_url(re.compile(rf"^{re.escape(base)}/"))
    page.wait_for_load_state()
    shown = page.locator("main").inner_text()
    shot(page, "login-cross-site-refused")

    other = context.new_page()  # the console, opened again
    other.goto(f"{base}/")
    assert other.url == f"{base}/", "still signed in"
    assert who_is_signed_in(other) == "ola", "the console still belongs to the nurse, not to the attacker"
    assert "Innlogging godtas bare fra Tryggs egen innloggingsside" in shown, shown
    assert "Sign-in is only accepted from Trygg's own sign-in page" in shown, shown
    seen.check()


def test_the_sign_in_page_says_when_to_try_again_after_wrong_passwords(
        signin_system: System, context: BrowserContext) -> None:
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{signin_system.base_url}/login")
    notice = page.locator("#login-error")
    for _ in range(10):
        page.get_by_label(re.compile("Brukernavn")).fill("nobody-here")
        page.get_by_label(re.compile("Passord")).fill("not the password")
        button = page.get_by_role("button", name=re.compile("Logg inn"))
        button.click()  # the page's script disables the button until the answer is shown
        expect(button).to_be_enabled()
        expect(notice).to_be_visible()
        if "For mange" in notice.inner_text():
            break
    expect(notice).to_contain_text(re.compile(r"For mange mislykkede forsøk\. Vent \d+ sekund(er)? og"))
    expect(notice).to_contain_text(re.compile(r"Too many failed attempts\. Wait \d+ seconds? and"))
    shot(page, "login-throttled")
    seen.check()


def test_x_forwarded_for_is_not_believed_without_a_trusted_proxy(signin_system: System) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.3")  # an address of its own
    with httpx.Client(base_url=signin_system.base_url, transport=transport, timeout=30) as client:
        codes = [client.post("/api/auth/token", data={"username": f"sprayed-{n}", "password": "Summer2024!"},
                             headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(22)]
    assert codes[:20] == [401] * 20 and codes[-1] == 429, codes
