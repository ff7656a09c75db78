"""The admin page as the municipality's IT person meets it: sign in and land on /admin,
add a resident with an alarm unit in the browser, and the running `trygg up` reloads the
registry so that the unit's alarm raises an alert; add a staff member, make a one-time
link, and the staff member sets a password on the link's page and signs in. Residents,
devices and users of this module are prefixed `adm-` (the `system` is shared)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.support import System, add_users, check_accessible, login, shot, watch

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

ADMIN = "adm-admin"
NEW_PASSWORD = "lilla elefant danser tango"


@pytest.fixture(scope="module")
def admin_user(system: System) -> str:
    add_users(system.env, [(ADMIN, "admin", [])])()
    return ADMIN


def fits_the_screen(page: Page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"horizontal scrolling: {width}"


def alerts_of(page: Page, base_url: str, resident_id: str) -> list[dict[str, Any]]:
    response = page.request.get(f"{base_url}/api/alerts")
    assert response.ok, response.text()
    return [a for a in response.json() if a["resident_id"] == resident_id]


def test_admin_adds_a_resident_with_a_device_and_its_alarm_raises_an_alert(
        system: System, admin_user: str, context: BrowserContext) -> None:
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, admin_user, "/admin")
    expect(page.get_by_role("heading", name=re.compile("Beboere og utstyr"))).to_be_visible()
    expect(page.locator("#resident-list li").first).to_be_visible()
    check_accessible(page, "admin-desktop")

    page.get_by_role("button", name=re.compile("Legg til beboer")).click()
    editor = page.locator("#resident-editor")
    expect(editor.get_by_role("heading", name=re.compile("Ny beboer"))).to_be_focused()
    editor.get_by_label(re.compile("^Id")).fill("adm-r-1")
    editor.locator('[data-path="name"]').fill("Aud Admintest")
    editor.get_by_label(re.compile("^Team")).select_option("east")
    editor.get_by_label(re.compile("^Adresse")).fill("Testveien 1, 0150 Oslo")
    editor.get_by_label(re.compile("^Nøkkelboks")).fill("Ved garasjen, kode 2468")
    editor.get_by_role("button", name=re.compile("Legg til kontakt")).click()
    editor.locator('[data-path="contacts.0.name"]').fill("Per Admintest")
    editor.locator('[data-path="contacts.0.phone"]').fill("not a phone")
    editor.get_by_label(re.compile("^Forskning")).check()
    editor.get_by_label(re.compile("^Grunnlag Basis")).select_option("vedtak")
    editor.get_by_label(re.compile("^Gyldig til")).fill("2030-12-31")
    editor.get_by_role("button", name=re.compile("^Lagre")).click()

    # The bad phone number: a bilingual notice, and the message beside the field.
    expect(page.locator("#notice")).to_contain_text("Noen felt er ikke gyldige")
    expect(page.locator("#notice")).to_contain_text("Some fields are not valid")
    phone = editor.locator('[data-path="contacts.0.phone"]')
    expect(phone).to_have_attribute("aria-invalid", "true")
    expect(phone.locator("xpath=..").locator(".field-error")).to_contain_text("phone")
    phone.fill("+47 912 34 567")
    editor.get_by_role("button", name=re.compile("^Lagre")).click()
    expect(page.locator("#notice")).to_contain_text("Beboeren er lagt til")
    expect(editor.get_by_role("heading", name=re.compile("Endre Aud Admintest"))).to_be_visible()

    editor.get_by_label(re.compile("^Id for nytt utstyr")).fill("adm-d-1")
    editor.get_by_label(re.compile("^Type Kind")).last.select_option("alarm_unit")
    editor.get_by_role("button", name=re.compile("Legg til utstyr")).click()
    expect(page.locator("#notice")).to_contain_text("Utstyret er lagt til")
    expect(editor.locator(".devices li")).to_contain_text("adm-d-1")
    shot(page, "admin-desktop")

    # The running service reloads the registry within seconds; until then the unit is
    # unknown and its events are refused, so press the button until an alert is raised.
    deadline = time.monotonic() + 45
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        system.publish("adm-d-1", "alarm.button")
        time.sleep(1.5)
        found = alerts_of(page, system.base_url, "adm-r-1")
    assert found, "no alert from the device added on the admin page"
    assert found[0]["kind"] == "alarm" and found[0]["team_id"] == "east"

    page.get_by_role("link", name=re.compile("Endringslogg")).click()
    expect(page.locator("#change-list")).to_contain_text("device.add")
    expect(page.locator("#change-list")).to_contain_text("resident.create")
    expect(page.locator("#change-list")).not_to_contain_text("2468")
    page.get_by_role("link", name=re.compile("Tilgangslogg")).click()
    page.get_by_label(re.compile("^Beboer \\(id\\)")).fill("adm-r-1")
    page.get_by_role("button", name=re.compile("^Vis")).last.click()
    expect(page.locator("#audit-list")).to_contain_text(ADMIN)
    expect(page.locator("#audit-csv")).to_have_attribute("href", re.compile("resident_id=adm-r-1"))
    seen.check()


def test_a_new_staff_member_sets_a_password_with_a_one_time_link_and_signs_in(
        system: System, admin_user: str, context: BrowserContext,
        new_context: Callable[..., BrowserContext]) -> None:
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, admin_user, "/admin")
    page.get_by_role("link", name=re.compile("Brukere")).click()
    page.get_by_role("button", name=re.compile("Legg til bruker")).click()
    editor = page.locator("#user-editor")
    editor.get_by_label(re.compile("^Brukernavn")).fill("adm-nurse")
    editor.get_by_label(re.compile("^Rolle")).select_option("staff")
    editor.get_by_label("Hjemmetjenesten Øst").check()
    editor.get_by_role("button", name=re.compile("^Lagre")).click()
    expect(page.locator("#notice")).to_contain_text("Brukeren er lagt til")
    row = page.locator("#user-list li", has_text="adm-nurse")
    expect(row).to_contain_text("Uten passord")
    row.get_by_role("button", name=re.compile("Lag engangslenke")).click()
    link = page.locator("#link-url")
    expect(link).to_have_value(re.compile(r"/password#token="))
    url = link.input_value()
    seen.check()

    phone = new_context(phone=True).new_page()
    seen_phone = watch(phone)
    phone.goto(url)
    expect(phone.locator("#for-user")).to_contain_text("adm-nurse")
    assert "token" not in phone.url  # taken out of the address bar
    phone.get_by_label(re.compile("^Nytt passord")).fill("adm-nurse-1")
    phone.get_by_label(re.compile("^Gjenta")).fill("adm-nurse-1")
    phone.get_by_role("button", name=re.compile("Lagre passord")).click()
    expect(phone.locator("#notice")).to_contain_text("Passordet godtas ikke")
    expect(phone.locator("#notice")).to_contain_text("The password is not accepted")
    phone.get_by_label(re.compile("^Nytt passord")).fill(NEW_PASSWORD)
    phone.get_by_label(re.compile("^Gjenta")).fill(NEW_PASSWORD)
    check_accessible(phone, "password-phone")
    fits_the_screen(phone)
    phone.get_by_role("button", name=re.compile("Lagre passord")).click()
    expect(phone.locator("#notice")).to_contain_text("Passordet er lagret")
    shot(phone, "password-phone")
    phone.get_by_role("link", name=re.compile("Til innlogging")).click()
    phone.get_by_label(re.compile("Brukernavn")).fill("adm-nurse")
    phone.get_by_label(re.compile("Passord")).fill(NEW_PASSWORD)
    phone.get_by_role("button", name=re.compile("Logg inn")).click()
    phone.wait_for_url(f"{system.base_url}/")
    seen_phone.check()

    phone.goto(url)  # used up
    expect(phone.locator("#notice")).to_contain_text("Lenken virker ikke lenger")


def test_the_admin_page_on_a_phone(system: System, admin_user: str, phone: BrowserContext) -> None:
    page = phone.new_page()
    seen = watch(page)
    login(page, system.base_url, admin_user, "/admin")
    expect(page.locator("#resident-list li").first).to_be_visible()
    page.get_by_role("button", name=re.compile("Endre")).first.click()
    expect(page.locator("#resident-editor h2")).to_be_focused()
    fits_the_screen(page)
    check_accessible(page, "admin-phone")
    shot(page, "admin-phone")
    page.get_by_role("link", name=re.compile("Brukere")).click()
    expect(page.locator("#user-list li").first).to_be_visible()
    fits_the_screen(page)
    check_accessible(page, "admin-phone-users")
    seen.check()
