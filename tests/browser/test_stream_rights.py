"""The console follows its user's rights while it is open (dashboard/stream_rights.py):
moved from east to west with `trygg users add`, a staff member's open console drops
east's alarm and shows west's within seconds, without a reload; signed out in another
tab, the console goes to the sign-in page."""

from __future__ import annotations

import subprocess
import time

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.support import USERS_ADD_COMMAND, System, login, watch

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.serial
def test_an_open_console_follows_a_move_and_a_sign_out(own_system: System, context: BrowserContext) -> None:
    system = own_system
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, "ola", "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    system.publish("d-1-alarm", "alarm.button")  # Kari, east
    east = page.locator("#alerts li.alert[data-resident='r-1']")
    expect(east).to_have_count(1)

    moved = subprocess.run([*USERS_ADD_COMMAND, "ola", "--role", "staff", "--team", "west"], env=system.env,
                           capture_output=True, text=True, timeout=60)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    changed = time.monotonic()
    expect(east).to_have_count(0, timeout=3000)  # within 1 s of the change, plus the console's 300 ms
    assert time.monotonic() - changed < 2.0
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    system.publish("d-2-alarm", "alarm.button")  # Per, west
    expect(page.locator("#alerts li.alert[data-resident='r-2']")).to_have_count(1)

    other = context.new_page()  # the same session in another tab signs out
    other.goto(f"{system.base_url}/")
    other.get_by_role("button", name="Logg ut · Sign out").click()
    other.wait_for_url(f"{system.base_url}/login")
    signed_out = time.monotonic()
    page.wait_for_url(f"{system.base_url}/login", timeout=3000)
    assert time.monotonic() - signed_out < 1.5
    seen.check()
