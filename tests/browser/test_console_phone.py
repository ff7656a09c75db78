"""The staff console on the staff's handheld (390×844, touch): a one-line header that stays
on top, the alerts first with several on screen, targets a thumb can hit, and the
resident as a view of its own with a way back to the same place in the list."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.support import System, check_accessible, login, resolve_open_alerts, shot, watch

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

RESIDENTS = ["r-4", "r-5", "r-6", "r-7"]

#: Visible buttons, links and fields smaller than 44×44 CSS pixels (WCAG 2.5.5), by text.
SMALL_TARGETS = """(root) => [...root.querySelectorAll('button, a[href], summary, input, textarea, select')]
  .filter((el) => el.offsetParent !== null && getComputedStyle(el).visibility !== 'hidden')
  .map((el) => [el, el.getBoundingClientRect()])
  .filter(([el, r]) => r.height < 44 || r.width < 44)
  .map(([el, r]) => `${el.tagName} "${el.textContent.trim().slice(0, 30)}"`
                    + ` ${Math.round(r.width)}×${Math.round(r.height)}`)"""


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, selector
    return found


def no_sideways_scrolling(page: Page) -> None:
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"


def test_on_a_phone_the_alerts_come_first_and_the_resident_opens_full_screen(system: System, phone: BrowserContext
                                                                             ) -> None:
    for n in RESIDENTS:
        system.publish(f"d-{n[2:]}-alarm", "alarm.button")
    page = phone.new_page()
    seen = watch(page)
    login(page, system.base_url, "ola", "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    for n in RESIDENTS:
        expect(page.locator(f"#alerts li.alert[data-resident='{n}']")).to_have_count(1)
    cards = page.locator("#alerts li.alert")

    # The header is one line; with the connection bar it takes well under 100 px.
    header = box(page, ".topbar")
    top = box(page, ".console-top")
    assert header["height"] <= 60, f"the header is {header['height']} px high"
    assert top["height"] <= 100, f"header and connection bar take {top['height']} px"
    # At least three alerts are on the first screen, whole.
    whole = page.evaluate("""() => [...document.querySelectorAll('#alerts li.alert')]
      .filter((li) => li.getBoundingClientRect().bottom <= window.innerHeight).length""")
    assert whole >= 3, f"{whole} alert(s) fit on the first screen"
    no_sideways_scrolling(page)
    small = page.evaluate(SMALL_TARGETS, page.locator(".console-top").element_handle())
    small += page.evaluate(SMALL_TARGETS, page.locator("#alerts").element_handle())
    assert not small, f"targets under 44 px: {small}"
    check_accessible(page, "console-phone")
    shot(page, "console-phone")

    # The header stays on top while the list scrolls.
    page.mouse.wheel(0, 600)
    page.wait_for_timeout(200)
    assert box(page, ".topbar")["y"] == 0

    # The menu holds the page links, who is signed in, the language and sign out.
    page.evaluate("window.scrollTo(0, 0)")
    menu = page.get_by_role("button", name=re.compile("Meny"))
    expect(page.locator("#pages")).to_be_hidden()
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#pages").get_by_role("link", name=re.compile("Vakt"))).to_be_visible()
    expect(page.get_by_role("button", name="Logg ut · Sign out")).to_be_visible()
    small = page.evaluate(SMALL_TARGETS, page.locator("#menu").element_handle())
    assert not small, f"menu targets under 44 px: {small}"
    check_accessible(page, "console-phone-menu")
    shot(page, "console-phone-menu")
    page.keyboard.press("Escape")
    expect(page.locator("#pages")).to_be_hidden()
    expect(menu).to_be_focused()

    # The resident: a view of its own, with the way back to the same card.
    last = cards.last
    last.scroll_into_view_if_needed()
    scrolled = page.evaluate("window.scrollY")
    name = last.locator(".resident-link")
    resident_name = name.inner_text().split(" r-")[0]
    name.tap()
    panel = page.locator("#panel")
    expect(panel).to_be_visible()
    expect(page.locator(".alerts-pane")).to_be_hidden()
    expect(panel).to_contain_text(resident_name)
    expect(panel.locator(".timeline")).to_contain_text("Alarmknapp trykket")
    expect(panel).to_contain_text("Trygghetsalarm")
    assert box(page, "#panel")["width"] >= 370
    back = page.get_by_role("button", name=re.compile("Tilbake"))
    expect(back).to_be_visible()
    no_sideways_scrolling(page)
    check_accessible(page, "console-phone-resident")
    shot(page, "console-phone-resident")

    back.tap()
    expect(panel).to_be_hidden()
    expect(page.locator(".alerts-pane")).to_be_visible()
    expect(name).to_be_focused()
    assert abs(page.evaluate("window.scrollY") - scrolled) <= 2

    # The browser's own back button does the same.
    cards.first.locator(".resident-link").tap()
    expect(panel).to_be_visible()
    page.go_back()
    expect(panel).to_be_hidden()
    expect(cards.first.locator(".resident-link")).to_be_focused()
    expect(page).to_have_url(f"{system.base_url}/")

    # Take and resolve with the thumb: the focus follows as on a desktop.
    first = cards.first
    first_id = first.get_attribute("data-alert-id")
    first.get_by_role("button", name=re.compile("Jeg tar den")).tap()
    expect(first).to_have_attribute("data-state", "acknowledged")
    expect(first.get_by_role("button", name=re.compile("Løs"))).to_be_focused()
    first.get_by_role("button", name=re.compile("Løs")).tap()
    first.get_by_label(re.compile("Notat")).fill("Alt i orden.")
    first.get_by_role("button", name=re.compile("Marker som løst")).tap()
    expect(page.locator(f"#alerts li.alert[data-alert-id='{first_id}']")).to_have_count(0)
    focused = page.evaluate("document.activeElement.closest('li.alert')?.dataset.alertId || null")
    assert focused and focused != first_id
    seen.check()

    for n in RESIDENTS:
        resolve_open_alerts(system, n, note="Test")
