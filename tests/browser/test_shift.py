"""The shift page as a team leader of team east meets it: an alarm was raised, taken and
resolved with a note; the shift view lists it with its times, who took it and the note, on
a desktop and on a phone, and the CSV of it downloads."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.support import System, check_accessible, login, shot, watch
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

NOTE = "Besøkt – alt vel, trykket ved en feil"


def api(page: Page, system: System, method: str, path: str, **body: Any) -> Any:
    """The API with the page's session cookie, as Trygg's own pages call it."""
    response = page.request.fetch(f"{system.base_url}{path}", method=method,
                                  headers={"Origin": system.base_url}, data=body or None)
    assert response.ok, f"{method} {path}: {response.status} {response.text()}"
    return response.json()


def resolved_alarm(page: Page, system: System) -> str:
    """An alarm of Beboer 9 (east), taken and resolved by ola; its id once it is stored."""
    system.publish("d-9-alarm", "alarm.button")
    opened = wait_for(lambda: api(page, system, "GET", "/api/alerts?state=open&resident=r-9"), bool, timeout=10)
    assert opened, "the alarm did not open"
    alert_id = str(opened[0]["alert_id"])
    api(page, system, "POST", f"/api/alerts/{alert_id}/ack")
    api(page, system, "POST", f"/api/alerts/{alert_id}/resolve", note=NOTE)
    stored = wait_for(lambda: api(page, system, "GET", "/api/alerts?state=resolved&resident=r-9&limit=5"),
                      lambda found: any(a["alert_id"] == alert_id for a in found), timeout=10)
    assert stored, "the resolved alarm was not stored"
    return alert_id


def no_sideways_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_the_shift_lists_a_resolved_alarm_with_its_times_and_who_took_it(
        system: System, context: BrowserContext, phone: BrowserContext) -> None:
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, "ola", "/")
    alert_id = resolved_alarm(page, system)

    page.goto(f"{system.base_url}/shift")
    expect(page.locator("#pages a[aria-current='page']")).to_contain_text("Vakt")
    expect(page.locator("#team option")).to_contain_text(["Alle mine team · All my teams", "Hjemmetjenesten Øst"])
    row = page.locator(f"tr[data-alert='{alert_id}']")
    expect(row).to_be_visible()
    expect(row.locator("th")).to_have_text("Beboer 9")
    expect(row).to_contain_text("Trygghetsalarm")
    expect(row.locator("td[data-label^='Tatt']")).to_contain_text(re.compile(r"ola\s+etter \d+ s"))
    expect(row.locator("td[data-label^='Løst']")).to_contain_text(re.compile(r"ola\s+etter \d+ s"))
    expect(row.locator("td[data-label^='Notater']")).to_contain_text(f"ola: {NOTE}")
    summary = page.locator("#summary")
    expect(summary).to_contain_text("Median tid til tatt")
    assert int(summary.locator("dd").first.inner_text()) >= 1

    # 24 hours: the choice is kept in the address and the CSV link follows it.
    page.get_by_label(re.compile("24 timer")).check()
    expect(page).to_have_url(re.compile(r"hours=24"))
    expect(page.locator("#download")).to_have_attribute("href", re.compile(r"/api/shift\.csv\?hours=24&tz="))
    expect(row).to_be_visible()
    check_accessible(page, "shift-desktop")
    shot(page, "shift-desktop")

    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile("Last ned CSV")).click()
    assert re.fullmatch(r"trygg-vakt-alle-\d{8}-\d{4}-24t\.csv", download.value.suggested_filename)
    body = download.value.path().read_bytes()
    assert body.startswith(b"\xef\xbb\xbf") and body.splitlines()[0].decode("utf-8-sig").startswith("alert_id;")
    text = body.decode("utf-8-sig")
    assert alert_id in text and "Beboer 9" in text and NOTE in text
    seen.check()

    # On a phone: the same alert as a card, nothing wider than the screen.
    small = phone.new_page()
    seen_small = watch(small)
    login(small, system.base_url, "ola", "/")
    small.goto(f"{system.base_url}/shift?hours=24")
    card = small.locator(f"tr[data-alert='{alert_id}']")
    expect(card).to_be_visible()
    expect(card).to_contain_text("Beboer 9")
    expect(card).to_contain_text(NOTE)
    assert no_sideways_scroll(small), "the shift page scrolls sideways on a phone"
    box = card.bounding_box()
    assert box is not None and box["width"] <= 390
    check_accessible(small, "shift-phone")
    shot(small, "shift-phone")
    seen_small.check()
