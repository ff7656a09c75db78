"""The resident card (/residents/{id}) and the devices page (/devices): staff of the
resident's team see address, access and contact persons, staff of another team see
"not found"; a device never heard from is listed as such. Both pages on a desktop and a
phone, checked with axe-core."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.support import System, add_users, check_accessible, login, shot, watch
from tests.registry_documents import KARI_CARD

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def no_horizontal_scroll(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "scrolls sideways"


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_staff_of_the_team_see_address_access_and_contacts(system: System, new_context: Callable[..., BrowserContext],
                                                          device: str) -> None:
    page = new_context(phone=device == "phone").new_page()
    seen = watch(page)
    login(page, system.base_url, "ola", "/")
    page.goto(f"{system.base_url}/residents/r-1")
    card = page.locator("article.card")
    expect(card.locator("h1")).to_have_text("Kari Nordmann")
    expect(card).to_contain_text("Hjemmetjenesten Øst")
    expect(card.locator(".card-address")).to_contain_text(KARI_CARD["address"])
    access = card.locator(".card-access")
    expect(access).to_contain_text("Nøkkelboks")
    expect(access).to_contain_text(KARI_CARD["access"]["key_box"])
    expect(access).to_contain_text(KARI_CARD["access"]["door_lock"])
    expect(access).to_contain_text("Snill hund")
    eva = card.locator(".card-contact").filter(has_text="Eva Nordmann")
    expect(eva).to_contain_text("datter")
    call = eva.get_by_role("link", name=re.compile("Ring Eva Nordmann"))
    expect(call).to_have_attribute("href", "tel:+4740000001")
    box = call.bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] >= 44, box
    fall = card.locator(".card-device[data-device='d-1-fall']")
    expect(fall).to_contain_text("Fallsensor")
    expect(fall).to_have_attribute("data-health", re.compile("never_heard|ok|offline|low_battery"))
    expect(page).to_have_title("Kari Nordmann – Trygg")
    if device == "phone":  # the page links and who is signed in are in the header's menu
        page.get_by_role("button", name=re.compile("Meny")).click()
    expect(page.locator("nav#pages a[href='/devices']")).to_be_visible()
    expect(page.locator("#who")).to_contain_text("Hjemmetjenesten Øst")  # the team by name, not `east`
    no_horizontal_scroll(page)
    check_accessible(page, f"resident-{device}")
    shot(page, f"resident-{device}")
    seen.check()


def test_staff_of_another_team_are_told_it_is_not_found(system: System, context: BrowserContext) -> None:
    west = f"vest-{uuid.uuid4().hex[:6]}"
    add_users(system.env, [(west, "staff", ["--team", "west"])])()
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, west, "/")
    page.goto(f"{system.base_url}/residents/r-1")
    missing = page.locator(".card-missing")
    expect(missing).to_contain_text("Finnes ikke, eller du har ikke tilgang.")
    expect(missing).to_contain_text("Not found, or you may not see it.")
    text = page.locator("main").inner_text()
    for secret in ("Kari", "Diktervegen", "Eva", "400 00", "Nøkkelboks"):
        assert secret not in text
    check_accessible(page, "resident-not-found")
    shot(page, "resident-not-found")
    page.goto(f"{system.base_url}/residents/r-nobody")
    expect(page.locator(".card-missing")).to_contain_text("Finnes ikke")
    seen.check()


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_the_devices_page_lists_a_device_never_heard_from(system: System, new_context: Callable[..., BrowserContext],
                                                          device: str) -> None:
    page = new_context(phone=device == "phone").new_page()
    seen = watch(page)
    login(page, system.base_url, "ola", "/")
    page.goto(f"{system.base_url}/devices")
    fall = page.locator("li.device-row[data-device='d-1-fall']")
    expect(fall).to_have_attribute("data-health", "never_heard")
    expect(fall).to_contain_text("Aldri hørt fra")
    expect(fall).to_contain_text("Never heard from")
    expect(fall).to_contain_text("Fallsensor")
    expect(fall.get_by_role("link", name="Kari Nordmann")).to_have_attribute("href", "/residents/r-1")
    expect(page.locator("#device-count")).to_contain_text("trenger besøk")
    # west's devices are not ola's
    expect(page.locator("li.device-row[data-device^='d-2-']")).to_have_count(0)
    no_horizontal_scroll(page)
    check_accessible(page, f"devices-{device}")
    shot(page, f"devices-{device}")
    if device == "desktop":
        fall.get_by_role("link", name="Kari Nordmann").click()
        page.wait_for_url(f"{system.base_url}/residents/r-1")
        expect(page.locator("article.card h1")).to_have_text("Kari Nordmann")
    seen.check()
