"""A console that silently stopped updating is dangerous: when the server goes away the
console says so at once, and it is live again when the server returns."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.support import System, login, shot, watch

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]


@pytest.mark.serial
def test_the_console_shows_a_lost_connection_and_recovers(own_system: System, context: BrowserContext) -> None:
    page = context.new_page()
    seen = watch(page)
    login(page, own_system.base_url, "ola", "/")
    conn = page.locator("#conn")
    expect(conn).to_have_attribute("data-state", "live")

    port = own_system.port
    own_system.stop()  # returns when the process has exited
    stopped = time.monotonic()
    expect(conn).to_have_attribute("data-state", "lost", timeout=3000)
    noticed = time.monotonic() - stopped
    assert noticed < 3.0, f"the console noticed the lost connection after {noticed:.1f} s"
    expect(conn).to_contain_text("Tilkobling brutt – prøver igjen")
    shot(page, "console-connection-lost")

    # An alarm pressed while the server is down is on screen once it is back.
    own_system.publish("d-5-alarm", "alarm.button")
    own_system.start(port=port)
    expect(conn).to_have_attribute("data-state", "live", timeout=15000)
    expect(page.locator("#alerts li.alert[data-resident='r-5']")).to_have_attribute("data-state", "open")
    seen.check()
