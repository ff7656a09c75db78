"""axe-core (tests/browser/vendor/axe-core) on the pages no other module owns: the
sign-in page on a desktop and on a phone. Each page's own module runs the same check
(`check_accessible`) on its page in the states it tests. And the header every care page
shares: one line with a menu on a phone."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.support import System, check_accessible, login, shot, watch

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_login_page_has_no_serious_violations(system: System, new_context: Callable[..., BrowserContext],
                                              device: str) -> None:
    page = new_context(phone=device == "phone").new_page()
    seen = watch(page)
    page.goto(f"{system.base_url}/login")
    check_accessible(page, f"login-{device}")
    shot(page, f"login-{device}")
    seen.check()


@pytest.mark.parametrize("path", ["/shift", "/devices", "/residents/r-1"])
def test_on_a_phone_every_care_page_has_a_one_line_header_with_a_menu(
        system: System, phone: BrowserContext, path: str) -> None:
    page = phone.new_page()
    seen = watch(page)
    login(page, system.base_url, "ola", "/")
    page.goto(f"{system.base_url}{path}")
    header = page.locator("header.topbar")
    toggle = page.get_by_role("button", name=re.compile("Meny"))
    expect(toggle).to_be_visible()
    box = header.bounding_box()
    assert box is not None and box["height"] <= 70, f"the header of {path} is {box} on a phone"
    expect(page.locator("#pages")).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    menu = page.locator("#menu")
    targets = [menu.get_by_role("link", name=re.compile(name)) for name in ("Varsler", "Vakt", "Utstyr")]
    for link in [*targets, menu.get_by_role("button", name=re.compile("Logg ut"))]:
        expect(link).to_be_visible()
        target = link.bounding_box()
        assert target is not None and target["height"] >= 40, target
    check_accessible(page, f"menu{path.replace('/', '-')}-phone")
    page.keyboard.press("Escape")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(toggle).to_be_focused()
    seen.check()
