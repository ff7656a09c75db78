"""The research page: a chart of events per bucket and type, response times, exports."""

from __future__ import annotations

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.support import System, login, shot, watch

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]


def test_the_research_page_draws_counts_and_response_times(system: System, context: BrowserContext) -> None:
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, "forsker", "/research")

    bars = page.locator("#chart svg rect.bar")
    expect(bars.first).to_be_visible()
    assert bars.count() >= 14, "two weeks of seeded days, several types"
    assert int(page.locator("#chart").get_attribute("data-bars") or 0) == bars.count()
    expect(page.locator("#legend")).to_contain_text("Bevegelse")
    rows = page.locator("#rt-table tbody tr[data-kind='alarm']")
    expect(rows).to_contain_text("Trygghetsalarm")
    expect(rows.locator("td")).to_have_count(8)
    shot(page, "research")

    # Weekly buckets of one type: fewer, taller bars.
    daily = page.locator("#chart").get_attribute("data-bars") or ""
    page.locator("#bucket").select_option("week")
    page.locator("#type").select_option("motion")
    page.get_by_role("button", name="Vis").click()
    # the chart is drawn anew when the answer arrives
    expect(page.locator("#chart")).not_to_have_attribute("data-bars", daily)
    expect(page.locator("#chart svg rect.bar:not([data-type='motion'])")).to_have_count(0)
    expect(page.locator("#chart svg rect.bar[data-type='motion']").first).to_be_visible()
    assert page.locator("#chart svg rect.bar").count() <= 3

    csv_link = page.locator("#export-csv")
    href = csv_link.get_attribute("href") or ""
    assert "format=csv" in href and "since=" in href
    response = page.request.get(f"{system.base_url}{href}")
    assert response.status == 200 and response.headers["content-type"].startswith("text/csv")
    body = response.text()
    assert body.startswith("resident_pseudonym") and "r-4" not in body
    parquet = page.request.get(f"{system.base_url}{page.locator('#export-parquet').get_attribute('href')}")
    assert parquet.status == 200 and parquet.body()[:4] == b"PAR1"
    seen.check()
