"""Cross-site request forgery through a redirect, as it was done against Trygg (issue 14):
a staff member signed in to the console opens a page elsewhere — on another port of the
same host (the same *site*, so the SameSite=Strict cookie goes along) or on another site
— that posts a form to itself and answers `307` to `/api/alerts/{id}/ack` or
`/resolve`. Chromium follows with the cookie and `Origin: null`. The alarm must stay
open (403), and the console itself must still acknowledge and resolve.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from tests.browser.support import System, login, watch
from tests.fix_db import scalar
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

ATTACK_PAGE = (b"<!doctype html><meta charset=utf-8><title>Vinn en premie</title>"
               b"<form method=post action=/go><button>Vinn!</button></form>")


@contextmanager
def attacker(host: str, target: str) -> Iterator[tuple[str, list[str]]]:
    """A page on `host` whose form posts to itself; the answer is `307` to `target`
    (a full URL: the browser repeats the POST there). Yields its URL and the paths
    it was asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(f"GET {self.path}")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(ATTACK_PAGE)))
            self.end_headers()
            self.wfile.write(ATTACK_PAGE)

        def do_POST(self) -> None:
            asked.append(f"POST {self.path}")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="attacker", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def open_alert(system: System, resident: str) -> str:
    alert_id = wait_for(lambda: scalar(system.database, "SELECT alert_id FROM trygg.alerts WHERE resident_id = %s"
                                       " AND state = 'open' ORDER BY opened_at DESC LIMIT 1", resident),
                        lambda a: a is not None, timeout=10)
    assert isinstance(alert_id, str)
    return alert_id


def alert_row(system: System, alert_id: str) -> tuple[object, ...]:
    return (scalar(system.database, "SELECT state FROM trygg.alerts WHERE alert_id = %s", alert_id),
            scalar(system.database, "SELECT acknowledged_by FROM trygg.alerts WHERE alert_id = %s", alert_id),
            scalar(system.database, "SELECT resolved_by FROM trygg.alerts WHERE alert_id = %s", alert_id))


def fall_for_it(page: Page, url: str, api_path: str) -> Response:
    """The staff member opens the page and presses its button; the API's answer."""
    page.goto(url)
    with page.expect_response(lambda r: api_path in r.url) as answer:
        page.get_by_role("button", name="Vinn!").click()
    return answer.value


@pytest.fixture
def staff_context(browser: Browser) -> Iterator[BrowserContext]:
    """A profile that reaches the loopback addresses only (127.0.0.2 is another site)."""
    ctx = browser.new_context(viewport={"width": 1366, "height": 900}, locale="nb-NO", timezone_id="Europe/Oslo")
    ctx.route(re.compile(r"^https?://(?!127\.0\.0\.[12][:/])"), lambda route: route.abort())
    ctx.set_default_timeout(5000)
    try:
        yield ctx
    finally:
        ctx.close()


def test_a_redirect_from_another_origin_cannot_ack_or_resolve_but_the_console_can(
        own_system: System, staff_context: BrowserContext) -> None:
    system = own_system
    console = staff_context.new_page()
    seen = watch(console)
    login(console, system.base_url, "ola", "/")
    expect(console.locator("#conn")).to_have_attribute("data-state", "live")

    system.publish("d-1-alarm", "alarm.button")
    alert_id = open_alert(system, "r-1")
    card = console.locator("#alerts li.alert[data-resident='r-1']")
    expect(card).to_have_attribute("data-state", "open")

    tab = staff_context.new_page()
    for host in ("127.0.0.1", "127.0.0.2"):  # same site, other port; another site
        for step in ("ack", "resolve"):
            path = f"/api/alerts/{alert_id}/{step}"
            with attacker(host, f"{system.base_url}{path}") as (url, asked):
                answer = fall_for_it(tab, url, path)
                assert asked == ["GET /", "POST /go"]
            # same site: the cookie came along, and is refused; another site: no cookie at all
            assert answer.status == (403 if host == "127.0.0.1" else 401), (host, step, answer.status)
            if answer.status == 403:
                assert "Trygg's own pages" in answer.json()["detail"]
            assert alert_row(system, alert_id) == ("open", None, None), (host, step)

    # The API (with the staff member's own session, from the console) says the same.
    listed = console.evaluate("async () => (await fetch('/api/alerts?state=open')).json()")
    assert [a["state"] for a in listed if a["alert_id"] == alert_id] == ["open"]

    # The console itself still takes and resolves the alarm.
    card.get_by_role("button", name=re.compile("Jeg tar den")).click()
    expect(card).to_have_attribute("data-state", "acknowledged")
    card.get_by_role("button", name=re.compile("Løs")).click()
    card.get_by_label(re.compile("Notat")).fill("Falsk alarm, alt i orden.")
    card.get_by_role("button", name=re.compile("Marker som løst")).click()
    expect(card).to_have_count(0)
    assert wait_for(lambda: alert_row(system, alert_id), lambda r: r[0] == "resolved", timeout=5) == (
        "resolved", "ola", "ola")
    seen.check()
