"""The staff console as a home-care worker of team east meets it: a device publishes, the
alert is on screen within a second, coloured by priority and with a sound; "Jeg tar den";
resolve with a note; another console sees every change without reloading."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.support import System, login, shot, watch
from tests.fix_db import scalar
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]


def live_console(page: Page, system: System, user: str) -> None:
    login(page, system.base_url, user, "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#conn")).to_contain_text("Live")


@pytest.mark.serial
def test_a_fall_is_on_screen_within_a_second_then_taken_and_resolved_with_a_note(
    system: System, context: BrowserContext, new_context: Callable[[], BrowserContext],
) -> None:
    # Two positions of the resident's phone earlier: the resident panel draws them.
    system.publish("d-3-phone", "location", {"lat": 59.9140, "lon": 10.7510, "accuracy_m": 20})
    system.publish("d-3-phone", "location", {"lat": 59.9152, "lon": 10.7541, "accuracy_m": 15})

    page = context.new_page()
    seen = watch(page)
    live_console(page, system, "ola")
    sound = page.get_by_role("button", name=re.compile("Slå på lyd"))
    sound.click()  # browsers play sound only after the user has interacted
    expect(page.locator("#sound")).to_have_attribute("aria-pressed", "true")

    other = new_context().new_page()  # a colleague's console on another machine
    live_console(other, system, "ola")

    sent = time.monotonic()
    system.publish("d-3-fall", "fall.detected", {"confidence": 0.93})
    card = page.locator("#alerts li.alert[data-resident='r-3'][data-priority='high']")
    card.wait_for(timeout=1000)
    arrived = time.monotonic() - sent
    assert arrived < 1.0, f"the alert took {arrived:.3f} s to appear"

    expect(card).to_have_attribute("data-state", "open")
    expect(card).to_contain_text("Fall")
    expect(card).to_contain_text("Astrid Østby")
    expect(card.locator(".team")).to_have_text("east")
    expect(card).to_contain_text("Nivå 0")
    assert "rgb(234, 122, 26)" in card.evaluate("el => getComputedStyle(el).borderLeftColor"), "high is orange"
    expect(page.locator("#sound")).to_have_attribute("data-beeps", "1")

    # A smoke alarm (critical) goes to the top although it is newer.
    system.publish("d-3-smoke", "smoke.detected")
    first = page.locator("#alerts li.alert").first
    expect(first).to_have_attribute("data-priority", "critical")
    assert "rgb(179, 38, 30)" in first.evaluate("el => getComputedStyle(el).borderLeftColor"), "critical is red"
    expect(page.locator("#sound")).to_have_attribute("data-beeps", "2")
    shot(page, "console-alerts")

    # The resident panel: status, map (no tiles here: the plain plot), timeline.
    card.get_by_role("button", name=re.compile("Astrid Østby")).click()
    panel = page.locator("#panel")
    expect(panel).to_contain_text("Astrid Østby")
    expect(panel.locator(".badge.status")).to_contain_text("Varsel")
    expect(panel.locator(".timeline")).to_contain_text("Fall registrert")
    expect(panel.locator("#resident-map")).to_have_attribute("data-map", "plot")
    assert panel.locator("#resident-map svg circle.plot-point").count() >= 2
    shot(page, "console-resident-panel")

    # "Jeg tar den": the card says who took it, here and on the other console.
    card.get_by_role("button", name=re.compile("Jeg tar den")).click()
    expect(card).to_have_attribute("data-state", "acknowledged")
    expect(card).to_contain_text("Tatt av ola")
    expect(card.get_by_role("button", name=re.compile("Jeg tar den"))).to_have_count(0)
    on_other = other.locator("#alerts li.alert[data-resident='r-3'][data-priority='high']")
    expect(on_other).to_have_attribute("data-state", "acknowledged")
    expect(on_other).to_contain_text("Tatt av ola")

    # Resolve with a note.
    card.get_by_role("button", name=re.compile("Løs")).click()
    card.get_by_label(re.compile("Notat")).fill("Hjalp henne opp. Ingen skade.")
    card.get_by_role("button", name=re.compile("Marker som løst")).click()
    expect(card).to_have_count(0)
    done = page.locator("#closed li[data-state='resolved']").first
    expect(done).to_contain_text("Løst av ola")
    expect(done).to_contain_text("Hjalp henne opp. Ingen skade.")
    expect(other.locator("#alerts li.alert[data-resident='r-3'][data-priority='high']")).to_have_count(0)
    expect(other.locator("#closed li[data-state='resolved']").first).to_contain_text("Hjalp henne opp")
    shot(page, "console-resolved")

    # The smoke alarm is resolved too, so the shared system is calm for the next tests.
    smoke = page.locator("#alerts li.alert[data-resident='r-3'][data-priority='critical']")
    smoke.get_by_role("button", name=re.compile("Løs")).click()
    smoke.get_by_label(re.compile("Notat")).fill("Brent mat. Luftet ut.")
    smoke.get_by_role("button", name=re.compile("Marker som løst")).click()
    expect(page.locator("#no-alerts")).to_be_visible()

    stored = wait_for(lambda: scalar(system.database, "SELECT count(*) FROM trygg.alerts WHERE resident_id = 'r-3'"
                                     " AND state = 'resolved' AND resolved_by = 'ola'"), lambda n: n == 2, timeout=5)
    assert stored == 2
    seen.check()


def test_pages_need_a_session_and_carry_no_resident_data(system: System, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(f"{system.base_url}/")
    expect(page).to_have_url(f"{system.base_url}/login")

    # A wrong password is said clearly, on the sign-in page.
    page.get_by_label(re.compile("Brukernavn")).fill("ola")
    page.get_by_label(re.compile("Passord")).fill("not the password")
    page.get_by_role("button", name=re.compile("Logg inn")).click()
    expect(page.get_by_role("alert")).to_contain_text("Feil brukernavn eller passord")
    expect(page).to_have_url(f"{system.base_url}/login")
    shot(page, "login-refused")

    login(page, system.base_url, "ola", "/")
    response = page.request.get(f"{system.base_url}/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "https://tile.openstreetmap.org" in csp
    assert response.headers["cache-control"] == "no-store"
    html = response.text()
    for secret in ("Kari", "Astrid", "r-1", "r-3", "d-3-"):
        assert secret not in html
    # Staff see only their own team's residents.
    assert page.request.get(f"{system.base_url}/api/residents/r-2/status").status == 404
