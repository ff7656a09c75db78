"""The relatives' page: a calm status and the alert history of their own person, and
nothing of anyone else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.support import System, check_accessible, login, resolve_open_alerts, shot, watch
from tests.fix_db import scalar
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]


def test_a_relative_sees_their_own_person_calmly_and_nobody_else(system: System, context: BrowserContext) -> None:
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, "anne", "/relatives")
    card = page.locator("section.person[data-resident='r-1']")
    expect(card).to_have_attribute("data-state", "ok")
    expect(card).to_contain_text("Alt er rolig")
    expect(card).to_contain_text("All is well")
    expect(page.locator("section.person")).to_have_count(1)
    # The heading names the person, never a bare registry id.
    title = card.locator("h2")
    expect(title).to_contain_text("Kari Nordmann")
    expect(title).not_to_contain_text("r-1")
    check_accessible(page, "relatives-desktop")
    shot(page, "relatives-all-well")
    shot(page, "relatives-desktop")

    # The safety alarm is pressed; the GPS tracker reports a position (consented).
    system.publish("d-1-gps", "location", {"lat": 59.9141, "lon": 10.7525, "accuracy_m": 10})
    system.publish("d-1-alarm", "alarm.button")
    page.wait_for_timeout(300)
    page.reload()
    expect(card).to_have_attribute("data-state", "alert")
    expect(card).to_contain_text("Varsel under behandling av hjemmetjenesten")
    expect(card).to_contain_text("An alert is being handled by home care")
    expect(card).to_contain_text("Trygghetsalarmen ble brukt")
    expect(card).to_contain_text("Hjemmetjenesten er varslet")
    expect(card.locator(".map-box")).to_have_attribute("data-map", "plot")
    text = card.inner_text()
    assert "d-1-" not in text and "alarm.button" not in text, "no sensor detail for relatives"
    check_accessible(page, "relatives-desktop-alert")
    shot(page, "relatives-alert")

    # Home care resolves it with a note: the page is calm again, and the alert stays in
    # the history as closed, with no staff name, note or sensor detail.
    resolve_open_alerts(system, "r-1", note="Kari hadde trykket ved et uhell")
    page.reload()
    expect(card).to_have_attribute("data-state", "ok")
    closed = card.locator("ul.relative-alerts li[data-state='resolved']")
    expect(closed).to_have_count(1)
    expect(closed).to_contain_text("Trygghetsalarmen ble brukt")
    expect(closed).to_contain_text("Avsluttet av hjemmetjenesten")
    expect(closed).to_contain_text("Closed by home care")
    expect(closed.locator(".times")).to_have_count(2)  # when it started and when it ended
    text = card.inner_text()
    assert "uhell" not in text and not re.search(r"\bola\b", text) and "d-1-" not in text
    shot(page, "relatives-history")

    # Nothing about anyone else, and not the timeline of her own person either.
    base = system.base_url
    assert page.request.get(f"{base}/api/residents/r-2/status").status == 404
    assert page.request.get(f"{base}/api/residents/r-404/status").status == 404
    assert page.request.get(f"{base}/api/residents/r-1/events").status == 404
    assert page.request.get(f"{base}/api/alerts").status == 403
    html = page.request.get(f"{base}/relatives").text()
    assert "Kari" not in html and "r-1" not in html

    # The staff console and the research page send her back to her own page.
    for other in ("/", "/research"):
        page.goto(f"{base}{other}")
        expect(page).to_have_url(f"{base}/relatives")
    seen.check()

    # Signing out ends the session.
    page.get_by_role("button", name=re.compile("Logg ut")).click()
    expect(page).to_have_url(f"{base}/login")
    page.goto(f"{base}/relatives")
    expect(page).to_have_url(f"{base}/login")


def test_the_relatives_page_on_a_phone(system: System, phone: BrowserContext) -> None:
    page = phone.new_page()
    seen = watch(page)
    login(page, system.base_url, "anne", "/relatives")
    card = page.locator("section.person[data-resident='r-1']")
    expect(card).to_have_attribute("data-state", re.compile("ok|alert|attention"))
    expect(card.locator("h2")).not_to_contain_text("r-1")
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    header = page.locator(".topbar").bounding_box()
    assert header is not None and header["height"] <= 110, header
    for name in ("Logg ut", "Skjul engelsk"):
        target = page.get_by_role("button", name=re.compile(name)).bounding_box()
        assert target is not None and target["height"] >= 44, (name, target)
    check_accessible(page, "relatives-phone")
    shot(page, "relatives-phone")
    seen.check()


def test_with_map_tiles_the_position_is_on_a_real_map(system: System, context: BrowserContext) -> None:
    """Where the tile server answers (here: the browser is handed a stand-in tile for
    every request to OpenStreetMap), the position is drawn with Leaflet on the tiles."""
    tile = (Path(__file__).resolve().parents[2] / "dashboard/static/vendor/leaflet/images/layers-2x.png").read_bytes()
    context.route("https://tile.openstreetmap.org/**",
                  lambda route: route.fulfill(status=200, content_type="image/png", body=tile))
    event_id = system.publish("d-1-gps", "location", {"lat": 59.9138, "lon": 10.7519, "accuracy_m": 8})
    stored = wait_for(lambda: scalar(system.database, "SELECT count(*) FROM trygg.events WHERE event_id = %s",
                                     event_id), lambda n: n == 1, timeout=5, interval=0.05)
    assert stored == 1
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, "anne", "/relatives")
    box = page.locator("section.person[data-resident='r-1'] .map-box")
    expect(box).to_have_attribute("data-map", "tiles")
    expect(box.locator(".leaflet-tile-loaded").first).to_be_attached()
    expect(box.locator(".map-plot")).to_be_hidden()
    shot(page, "relatives-map-tiles")
    seen.check()
